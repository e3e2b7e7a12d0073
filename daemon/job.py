"""A job: its record (persisted as JSON) and the runner thread that carries it out.

The runner loads and checks the CSVs, starts the job's workers, hands each idle executor the
next batch (so a slow worker never holds the others back), places each mini-tree by its
batch index, retries the batches of dead workers elsewhere, and writes the aggregated tree
atomically. Whatever happens, the job's workers are terminated when the runner ends.
"""
import collections
import json
import logging
import os
import threading
import time

import zmq

from ..cython_ext import store
from ..cython_ext.csv_reader import CsvError, read_csvs, rebatch
from ..cython_ext.tree import (AggregationMerkleSumTree, Levels, MerkleSumTree, RangeCheckError,
                               depth_for)
from ..worker import protocol as wire
from ..worker.protocol import BuildRequest, Code, ProtocolError
from .spawners import SPAWNERS, SpawnError

log = logging.getLogger("summa.daemon")

QUEUED, LOADING, RUNNING, DONE, FAILED, CANCELLED = (
    "queued", "loading", "running", "done", "failed", "cancelled")
FINISHED = (DONE, FAILED, CANCELLED)
# a worker's ERROR about these is the worker's trouble, not the data's: try elsewhere
TRANSIENT = (Code.CANCELLED, Code.SHUTTING_DOWN, Code.INTERNAL)
POLL_MS = 50


class JobEnded(Exception):
    """Ends a job early: state FAILED or CANCELLED, with a one-line reason."""

    def __init__(self, state, reason):
        super().__init__(reason)
        self.state, self.reason = state, reason


class Job:
    def __init__(self, job_id, spec, record=None):
        self.id, self.spec = job_id, spec
        self.lock = threading.Lock()
        self.cancel_requested = threading.Event()
        self.record = record or {
            "job": job_id, "state": QUEUED, "error": None, "root": None,
            "spec": spec.body(), "submitted": time.time(), "started": None, "finished": None,
            "progress": {"batches_done": 0, "batches": None, "entries_done": 0, "entries": None},
        }

    @property
    def state(self):
        return self.record["state"]

    def update(self, jobs_dir, **changes):
        """Change the record and persist it atomically (temp file, fsync, rename)."""
        with self.lock:
            progress = changes.pop("progress", None)
            self.record.update(changes)
            if progress:
                self.record["progress"].update(progress)
            if changes.get("state") in FINISHED:
                self.record["finished"] = time.time()
            snapshot = json.dumps(self.record, indent=1)
        if jobs_dir:
            path = os.path.join(jobs_dir, f"{self.id}.json")
            with open(path + ".tmp", "w", encoding="utf-8") as handle:
                handle.write(snapshot)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(path + ".tmp", path)

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.record))


class JobRunner(threading.Thread):
    def __init__(self, job, config, context, events_address, cancel_endpoint, jobs_dir, results_dir,
                 spawner_options=None):
        super().__init__(name=f"job-{job.id}", daemon=True)
        self.job, self.config, self.context = job, config, context
        self.events_address, self.cancel_endpoint = events_address, cancel_endpoint
        self.jobs_dir, self.results_dir = jobs_dir, results_dir
        self.spawner_options = spawner_options or {}
        self.spawner, self.executors = None, []

    # ---- the whole job ----------------------------------------------------------------------

    def run(self):
        job = self.job
        # the daemon's loop owns the PUB socket; this asks it to publish our cancellation
        self.events = wire.new_socket(self.context, zmq.PUSH)
        self.events.connect(self.events_address)
        try:
            job.update(self.jobs_dir, state=LOADING, started=time.time())
            batches, depth = self._load()
            job.update(self.jobs_dir, state=RUNNING,
                       progress={"batches": len(batches), "entries": sum(b.count for b in batches)})
            nodes = self._distribute(batches, depth)
            root = self._aggregate_and_store(batches, depth, nodes)
            job.update(self.jobs_dir, state=DONE, root=root)
            log.info("job %s done", job.id)
        except JobEnded as ended:
            self._end(ended.state, ended.reason)
        except Exception as error:   # a bug: the job fails, the daemon keeps serving
            log.exception("job %s failed unexpectedly", job.id)
            self._end(FAILED, f"internal error: {type(error).__name__}: {error}")
        finally:
            self._release()

    def _end(self, state, reason):
        log.info("job %s %s: %s", self.job.id, state, reason)
        self.events.send(self.job.id.encode())   # every worker of the job stops work on it
        self.job.update(self.jobs_dir, state=state, error=reason if state == FAILED else None)

    def _release(self):
        self.events.close(linger=1000)   # let the cancellation request reach the loop
        for executor in self.executors:
            executor.close()
        if self.spawner is not None:
            try:
                self.spawner.terminate_executors()
            except Exception:
                log.exception("job %s: terminating its workers failed", self.job.id)

    def _check_cancel(self):
        if self.job.cancel_requested.is_set():
            raise JobEnded(CANCELLED, "cancelled")

    # ---- steps ------------------------------------------------------------------------------

    def _load(self):
        spec = self.job.spec
        try:
            batches = read_csvs(spec.csvs, spec.n_bytes)
        except CsvError as error:
            raise JobEnded(FAILED, str(error)) from None
        if spec.batch_size:
            batches = rebatch(batches, spec.batch_size)
        self._check_cancel()
        return batches, depth_for(max(b.count for b in batches))

    def _spawn(self, count):
        factory = SPAWNERS[self.job.spec.spawner]
        self.spawner = factory(self.cancel_endpoint, self.config.worker_threads, **self.spawner_options)
        try:
            executors = self.spawner.spawn_executors(count)
        except (SpawnError, OSError) as error:
            raise JobEnded(FAILED, f"could not start workers: {error}") from None
        for executor in executors:
            executor.connect(self.context)
        self.executors = executors

    def _request_frames(self, batches, index, depth):
        spec, batch = self.job.spec, batches[index]
        request = BuildRequest(self.job.id, index, batch.count, len(batch.currencies), spec.layout,
                               spec.n_bytes, depth, batch.usernames, batch.balances,
                               currencies=batch.currencies)
        return wire.frames(wire.BUILD, request.body())

    def _distribute(self, batches, depth):
        """Every batch built once, by whichever executor is free; returns the node buffers."""
        self._spawn(min(self.job.spec.executors, len(batches)))
        pending = collections.deque(range(len(batches)))
        attempts = [0] * len(batches)
        nodes = [None] * len(batches)
        remaining = len(batches)
        poller = zmq.Poller()
        for executor in self.executors:
            poller.register(executor.socket, zmq.POLLIN)
        interval, liveness = self.config.heartbeat_interval, self.config.heartbeat_liveness
        while remaining:
            self._check_cancel()
            now = time.monotonic()
            for executor in self.executors:
                if executor.idle and pending and executor.ready_at <= now:
                    index = pending.popleft()
                    executor.start(index, self._request_frames(batches, index, depth), now)
            for sock, _ in poller.poll(POLL_MS):
                executor = next(e for e in self.executors if e.socket is sock)
                done = self._on_message(executor, batches, depth, nodes, pending, attempts)
                remaining -= done
            now = time.monotonic()
            for executor in list(self.executors):
                if executor.heartbeat(now, interval, liveness):
                    self._retry(executor.batch, f"{executor.name} stopped answering "
                                f"(no reply for {interval * liveness:g} s)", pending, attempts)
                    self._replace(executor, poller, now)
        return nodes

    def _on_message(self, executor, batches, depth, nodes, pending, attempts):
        """Handle one message from a worker; returns 1 when it completed a batch."""
        try:
            command, body = executor.receive(time.monotonic())
        except ProtocolError as error:
            log.warning("job %s: unreadable message from %s: %s", self.job.id, executor.name, error)
            return 0
        index = executor.batch
        if command == wire.PONG or index is None or body.get("batch") != index:
            return 0                   # a heartbeat, or an answer to a batch already retried
        executor.batch = None
        if command == wire.ERROR:
            code, message = body.get("code"), body.get("message", "?")
            where = f"batch {index} ({batches[index].path})"
            if code in TRANSIENT:
                self._retry(index, f"{executor.name}: {message}", pending, attempts)
                return 0
            raise JobEnded(FAILED, f"{where}: {message}")
        problem = self._check_result(body, batches[index], depth)
        if problem:
            self._retry(index, f"{executor.name} returned a bad mini-tree: {problem}", pending, attempts)
            return 0
        nodes[index] = body["nodes"]
        progress = self.job.record["progress"]
        self.job.update(None, progress={"batches_done": progress["batches_done"] + 1,
                                        "entries_done": progress["entries_done"] + batches[index].count})
        return 1

    def _check_result(self, body, batch, depth):
        n = len(batch.currencies)
        expected = 32 * (n + 1) * ((2 << depth) - 1)
        if (body.get("job"), body.get("depth"), body.get("count"), body.get("n_currencies")) != \
                (self.job.id, depth, batch.count, n):
            return "its job, depth, count or currency count differ from the request"
        if not isinstance(body.get("nodes"), bytes) or len(body["nodes"]) != expected:
            return f"nodes must be {expected} bytes"
        return None

    def _retry(self, index, reason, pending, attempts):
        attempts[index] += 1
        log.warning("job %s: batch %d attempt %d failed: %s", self.job.id, index, attempts[index], reason)
        if attempts[index] > self.config.max_retries:
            raise JobEnded(FAILED, f"batch {index} failed {attempts[index]} times; last: {reason}")
        pending.appendleft(index)

    def _replace(self, executor, poller, now):
        poller.unregister(executor.socket)
        executor.close()
        self.executors.remove(executor)
        try:
            successor = self.spawner.replace(executor, now)
        except (SpawnError, OSError) as error:
            log.warning("job %s: could not replace %s: %s", self.job.id, executor.name, error)
            successor = None
        if successor is not None:
            successor.connect(self.context)
            poller.register(successor.socket, zmq.POLLIN)
            self.executors.append(successor)
        if not self.executors:
            raise JobEnded(FAILED, "no worker left: every worker died and none could be replaced")

    def _aggregate_and_store(self, batches, depth, nodes):
        spec = self.job.spec
        n = len(batches[0].currencies)
        minis = [MerkleSumTree(Levels(buffer, depth, n), bytes(b.usernames), b.count, spec.layout,
                               b.currencies) for b, buffer in zip(batches, nodes)]
        try:
            tree = AggregationMerkleSumTree(minis, spec.layout, spec.n_bytes)
        except RangeCheckError as error:
            raise JobEnded(FAILED, str(error)) from None
        self._check_cancel()
        store.save(tree, os.path.join(self.results_dir, self.job.id), spec.n_bytes,
                   {"job": self.job.id, "inputs": list(spec.csvs)})
        return tree.root.to_json()
