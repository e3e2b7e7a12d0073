"""A job: its record (persisted as JSON) and the runner thread that carries it out.

The runner starts a loader thread that reads and checks the CSVs, starts the job's workers
meanwhile, and hands each idle executor the next batch as soon as one is ready (with
--batch-size, batches stream out of the reader while it goes on; a CSV error later on still
fails the job, and no tree is written). A slow worker never holds the others back; each
mini-tree is placed by its batch index; the batches of dead workers are retried elsewhere;
the aggregated tree is written atomically. Whatever happens, the job's workers are
terminated when the runner ends.
"""
import collections
import json
import logging
import os
import queue
import threading
import time

import zmq

from ..cython_ext import store
from ..cython_ext.csv_reader import CsvError, read_csvs, stream_csvs
from ..cython_ext.tree import (AggregationMerkleSumTree, Levels, MerkleSumTree, RangeCheckError,
                               depth_for)
from ..worker import protocol as wire
from ..worker.protocol import BuildRequest, Code, ProtocolError
from .integrity import IntegrityError, check_minitree
from .spawners import SPAWNERS, SpawnError

log = logging.getLogger("summa.daemon")

QUEUED, LOADING, RUNNING, DONE, FAILED, CANCELLED = (
    "queued", "loading", "running", "done", "failed", "cancelled")
FINISHED = (DONE, FAILED, CANCELLED)
# a worker's ERROR about these is the worker's trouble, not the data's: try elsewhere
TRANSIENT = (Code.CANCELLED, Code.SHUTTING_DOWN, Code.INTERNAL)
POLL_MS = 50
LOADING_POLL_MS = 10   # while batches may still arrive from the reader


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
            "spec": spec.body(), "submitted": time.time(), "started": None, "loaded": None,
            "finished": None, "quarantined": [],
            "progress": {"batches_done": 0, "batches": None, "entries_done": 0, "entries": None,
                         "worker_seconds": 0.0},
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
            try:
                with open(path + ".tmp", "w", encoding="utf-8") as handle:
                    handle.write(snapshot)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(path + ".tmp", path)
            except OSError as error:
                # the record stays right in memory; on disk the last good one stays whole
                log.error("job %s: cannot write its record %s: %s", self.id, path, error.strerror)
                try:
                    os.unlink(path + ".tmp")
                except OSError:
                    pass

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.record))


class _Stop(Exception):
    """Stops the reader of a job that has ended."""


class Loader(threading.Thread):
    """Reads the job's CSVs; its queue gets ("batch", b)..., then ("end", None) or ("error", why)."""

    def __init__(self, spec, stop):
        super().__init__(name="csv-loader", daemon=True)
        self.spec, self.stop, self.out = spec, stop, queue.Queue()

    def _emit(self, batch):
        if self.stop.is_set():
            raise _Stop()
        self.out.put(("batch", batch))

    def run(self):
        spec = self.spec
        try:
            if spec.batch_size:
                stream_csvs(spec.csvs, spec.batch_size, self._emit, spec.n_bytes)
            else:   # one mini-tree per CSV: the depth needs every file's count first
                for batch in read_csvs(spec.csvs, spec.n_bytes):
                    self._emit(batch)
            self.out.put(("end", None))
        except _Stop:
            pass
        except CsvError as error:
            self.out.put(("error", str(error)))
        except Exception as error:
            log.exception("reading the CSVs failed")
            self.out.put(("error", f"internal error while reading: {type(error).__name__}: {error}"))


class JobRunner(threading.Thread):
    def __init__(self, job, config, context, events_address, cancel_endpoint, jobs_dir, results_dir,
                 spawner_options=None):
        super().__init__(name=f"job-{job.id}", daemon=True)
        self.job, self.config, self.context = job, config, context
        self.events_address, self.cancel_endpoint = events_address, cancel_endpoint
        self.jobs_dir, self.results_dir = jobs_dir, results_dir
        self.spawner_options = spawner_options or {}
        self.spawner, self.executors = None, []
        self.last_failure = "none"

    # ---- the whole job ----------------------------------------------------------------------

    def run(self):
        job = self.job
        # the daemon's loop owns the PUB socket; this asks it to publish our cancellation
        self.events = wire.new_socket(self.context, zmq.PUSH)
        self.events.connect(self.events_address)
        self.stop_loading = threading.Event()
        outcome = (FAILED, "internal error: the job ended without an outcome", None)
        try:
            job.update(self.jobs_dir, state=LOADING, started=time.time())
            loader = Loader(job.spec, self.stop_loading)
            loader.start()
            self._spawn(self._executor_count())     # while the loader reads
            batches, depth, nodes = self._distribute(loader)
            outcome = (DONE, None, self._aggregate_and_store(batches, depth, nodes))
        except JobEnded as ended:
            outcome = (ended.state, ended.reason, None)
        except Exception as error:   # a bug: the job fails, the daemon keeps serving
            log.exception("job %s failed unexpectedly", job.id)
            outcome = (FAILED, f"internal error: {type(error).__name__}: {error}", None)
        finally:
            if outcome[0] != DONE:
                self.events.send(job.id.encode())   # every worker of the job stops work on it
            self.stop_loading.set()
            self._release()
            # only now, with its workers gone, does the job count as finished
            state, reason, root = outcome
            log.info("job %s %s%s", job.id, state, f": {reason}" if reason else "")
            job.update(self.jobs_dir, state=state, root=root, error=reason if state == FAILED else None)

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

    def _executor_count(self):
        spec = self.job.spec
        return spec.executors if spec.batch_size else min(spec.executors, len(spec.csvs))

    def _spawn(self, count):
        factory = SPAWNERS[self.job.spec.spawner]
        self.spawner = factory(self.config, self.cancel_endpoint, **self.spawner_options)
        try:
            executors = self.spawner.spawn_executors(count)
        except (SpawnError, OSError) as error:
            raise JobEnded(FAILED, f"could not start workers: {error}") from None
        self.curve = self.config.worker_curve()
        for executor in executors:
            executor.connect(self.context, curve=self.curve)
        self.executors = executors

    def _request_frames(self, batches, index, depth):
        spec, batch = self.job.spec, batches[index]
        request = BuildRequest(self.job.id, index, batch.count, len(batch.currencies), spec.layout,
                               spec.n_bytes, depth, batch.usernames, batch.balances,
                               currencies=batch.currencies)
        return wire.frames(wire.BUILD, request.body())

    def _distribute(self, loader):
        """Every batch built once, by whichever executor is free, as batches arrive.

        Returns (batches, depth, node buffers)."""
        batches, nodes, attempts, pending = [], [], [], collections.deque()
        depth, loaded, done = None, False, 0
        poller = self.poller = zmq.Poller()
        for executor in self.executors:
            poller.register(executor.socket, zmq.POLLIN)
        interval, liveness = self.config.heartbeat_interval, self.config.heartbeat_liveness
        while not (loaded and done == len(batches)):
            self._check_cancel()
            for kind, item in self._drain(loader):
                if kind == "error":
                    raise JobEnded(FAILED, item)
                if kind == "end":
                    loaded = True
                    depth = self._depth(batches) if depth is None else depth
                    self.job.update(self.jobs_dir, loaded=time.time(), progress={
                        "batches": len(batches), "entries": sum(b.count for b in batches)})
                    continue
                batches.append(item)
                nodes.append(None)
                attempts.append(0)
                pending.append(len(batches) - 1)
                if depth is None and self.job.spec.batch_size:
                    depth = self._depth(batches)
            if depth is not None and self.job.state == LOADING:
                self.job.update(self.jobs_dir, state=RUNNING)
            now = time.monotonic()
            for executor in self.executors:
                if depth is not None and pending and executor.usable(now):
                    index = pending.popleft()
                    executor.start(self.job.id, index, self._request_frames(batches, index, depth), now)
            for sock, _ in poller.poll(POLL_MS if loaded else LOADING_POLL_MS):
                executor = next((e for e in self.executors if e.socket is sock), None)
                if executor is not None:     # None: quarantined a moment ago
                    done += self._on_message(executor, batches, depth, nodes, pending, attempts)
            now = time.monotonic()
            for executor in list(self.executors):
                if executor.heartbeat(now, interval, liveness):
                    if executor.batch is not None:   # a worker on probation holds no batch
                        self._retry(executor.batch, f"{executor.name} stopped answering "
                                    f"(no reply for {interval * liveness:g} s)", pending, attempts)
                    self._replace(executor, now)
        return batches, depth, nodes

    @staticmethod
    def _drain(loader):
        while True:
            try:
                yield loader.out.get_nowait()
            except queue.Empty:
                return

    def _depth(self, batches):
        """The mini-tree depth, known once the largest batch is: with a batch size, the first
        batch is full (or it is the only one); otherwise after every file was read."""
        return depth_for(max(b.count for b in batches))

    def _on_message(self, executor, batches, depth, nodes, pending, attempts):
        """Handle one message from a worker; returns 1 when it completed a batch."""
        try:
            command, body = executor.receive(time.monotonic())
        except ProtocolError as error:
            log.warning("job %s: unreadable message from %s: %s", self.job.id, executor.name, error)
            return 0
        index = executor.batch
        if executor.lost_batch(command, body):
            executor.batch = None
            self._retry(index, f"{executor.name} no longer holds it (restarted, or dropped its "
                        f"connections)", pending, attempts)
            return 0
        if command == wire.PONG or index is None or body.get("batch") != index:
            return 0                   # a heartbeat, or an answer to a batch already retried
        executor.batch = None
        if command == wire.ERROR:
            self._check_cancel()       # a worker obeying our own cancellation is no failure
            code, message = body.get("code"), body.get("message", "?")
            where = f"batch {index} ({batches[index].path})"
            if code in TRANSIENT:
                self._retry(index, f"{executor.name}: {message}", pending, attempts)
                return 0
            raise JobEnded(FAILED, f"{where}: {message}")
        problem = self._check_result(body, batches[index], depth)
        if problem is None:
            try:
                check_minitree(body["nodes"], batches[index], depth, self.job.spec.layout,
                               self.config.verify_leaves, self.config.verify_full)
            except IntegrityError as error:
                problem = f"integrity error: {error}"
        if problem:
            self._retry(index, f"{executor.name} returned a bad mini-tree: {problem}", pending, attempts)
            self._quarantine(executor, problem)
            return 0
        nodes[index] = body["nodes"]
        progress = self.job.record["progress"]
        seconds = body.get("seconds") if isinstance(body.get("seconds"), float) else 0.0
        self.job.update(None, progress={"batches_done": progress["batches_done"] + 1,
                                        "entries_done": progress["entries_done"] + batches[index].count,
                                        "worker_seconds": progress["worker_seconds"] + seconds})
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
        self.last_failure = f"batch {index}: {reason}"
        log.warning("job %s: batch %d attempt %d failed: %s", self.job.id, index, attempts[index], reason)
        if attempts[index] > self.config.max_retries:
            raise JobEnded(FAILED, f"batch {index} failed {attempts[index]} times; last: {reason}")
        pending.appendleft(index)

    def _drop(self, executor):
        self.poller.unregister(executor.socket)
        executor.close()
        self.executors.remove(executor)

    def _adopt(self, successor):
        if successor is not None:
            successor.connect(self.context, curve=self.curve)
            self.poller.register(successor.socket, zmq.POLLIN)
            self.executors.append(successor)
        if not self.executors:
            raise JobEnded(FAILED, "no worker left: every worker died or was quarantined, and "
                           f"none could be replaced; last: {self.last_failure}")

    def _replace(self, executor, now):
        """A worker that went silent: another one takes its place (or it is retried later)."""
        self._drop(executor)
        try:
            successor = self.spawner.replace(executor, now)
        except (SpawnError, OSError) as error:
            log.warning("job %s: could not replace %s: %s", self.job.id, executor.name, error)
            successor = None
        if successor is not None and successor.failures > self.config.max_retries:
            log.warning("job %s: giving up on %s after %d silent reconnects", self.job.id,
                        executor.name, executor.failures)
            successor = None
        self._adopt(successor)

    def _quarantine(self, executor, problem):
        """A worker that returned a wrong mini-tree is never used again by this job."""
        self.last_failure = f"{executor.name} quarantined: {problem}"
        log.warning("job %s: %s quarantined: %s", self.job.id, executor.name, problem)
        self.job.update(None, quarantined=self.job.record["quarantined"] + [executor.name])
        self._drop(executor)
        try:
            successor = self.spawner.quarantine(executor)
        except (SpawnError, OSError) as error:
            log.warning("job %s: no fresh worker instead of %s: %s", self.job.id, executor.name, error)
            successor = None
        self._adopt(successor)

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
        target = os.path.join(self.results_dir, self.job.id)
        try:
            store.save(tree, target, spec.n_bytes, {"job": self.job.id, "inputs": list(spec.csvs)})
        except OSError as error:   # a full or failing disk: nothing half-written stays behind
            raise JobEnded(FAILED, f"cannot write the result to {target}: "
                           f"{error.strerror or error}") from None
        return tree.root.to_json()
