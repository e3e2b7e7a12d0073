"""Distribution and retries: every work unit built once, by whichever executor is free.

The dispatcher's loop owns the executors' sockets. It takes work units from the loader as
they come (descriptors: where their entries are stored; only units in flight hold entries),
hands each idle executor the next one, reads what the workers say, pings the busy ones, and retries
elsewhere the units of workers that died, went silent, lost them or lied. It never does
CPU-heavy work: returned subtrees go to the checker thread (checker.py), which checks them
and writes them at their place in the result files, so a long check cannot make a healthy
worker look silent; a worker is declared dead only after its sockets were read once more
(answers that came while the loop was busy count).

Units are placed by serial, so the result is the same whatever the number of executors or
the order of completion. Only each unit's root stays in memory.
"""
import collections
import logging
import time

import zmq

from .. import wire
from ..mst.csv_job import EntryBatch
from ..mst.limits import record_bytes
from ..wire import Code, ProtocolError
from .checker import Checker, Fatal, Returned
from .executor import PIPELINE
from .job import CANCELLED, FAILED, LOADING, RUNNING, JobEnded
from .spawners import SpawnError

log = logging.getLogger("summa.daemon")

# a worker's ERROR about these is the worker's trouble, not the data's: try elsewhere
TRANSIENT = (Code.CANCELLED, Code.SHUTTING_DOWN, Code.INTERNAL)
POLL_MS = 50
LOADING_POLL_MS = 10   # while batches may still arrive from the reader


class Dispatcher:
    def __init__(self, job, config, context, spawner, executors, loader, writer, jobs_dir):
        self.job, self.config, self.context = job, config, context
        self.spawner, self.loader, self.writer, self.jobs_dir = spawner, loader, writer, jobs_dir
        self.curve = config.worker_curve()
        self.window = config.heartbeat_interval * config.heartbeat_liveness
        self.units, self.attempts, self.roots = [], [], {}
        self.pending = collections.deque()
        self.depth, self.shape, self.done = None, None, 0
        self.batch_units_done, self.batches_done = collections.Counter(), 0
        self.last_failure = "none"
        self.poller = zmq.Poller()
        self.owner = {}                    # socket -> its executor
        self.executors = []
        self.wire_id = job.wire_id          # what workers see: this attempt's own id
        self.checker = Checker(context, self.wire_id, job.spec.layout, config.verify_leaves,
                               config.verify_full, writer)
        self.poller.register(self.checker.wake, zmq.POLLIN)
        self.checker.start()
        for executor in executors:
            self._add(executor)

    def run(self):
        """Returns (TreeShape, unit roots by serial) once every unit is built, checked, stored."""
        while not (self.shape and self.done == self.shape.units):
            self._check_cancel()
            self._take_loaded()
            self._hand_out(time.monotonic())
            for sock, _ in self.poller.poll(POLL_MS if self.shape else LOADING_POLL_MS):
                if sock is self.checker.wake:
                    self._take_verdicts()
                elif sock in self.owner:       # else: dropped a moment ago
                    self._on_message(self.owner[sock], sock)
            self._heartbeats(time.monotonic())
        return self.shape, self.roots

    def close(self):
        self.checker.stop()
        for executor in self.executors:
            executor.close()

    # ---- steps of the loop ------------------------------------------------------------------

    def _check_cancel(self):
        if self.job.cancel_requested.is_set():
            raise JobEnded(CANCELLED, "cancelled")

    def _take_loaded(self):
        for kind, item in self.loader.drain():
            if kind == "error":
                raise JobEnded(FAILED, item)
            if kind == "depth":
                self.depth = item
            elif kind == "unit":
                self.units.append(item)
                self.attempts.append(0)
                root = self.writer.reuse(item.serial)
                if root is None:
                    self.pending.append(item.serial)
                else:                           # stored and journaled by an earlier attempt
                    self._done(item, root, reused=True)
            elif kind == "end":
                self.shape = item
                self.batches_done = sum(self.batch_units_done[b] == item.units_in(c)
                                        for b, c in enumerate(item.counts))
                self.job.update(self.jobs_dir, loaded=time.time(), pins=self.loader.pins, progress={
                    "batches": len(item.counts), "entries": item.entries, "units": item.units,
                    "batches_done": self.batches_done})
        if self.depth is not None and self.job.state == LOADING:
            self.job.update(self.jobs_dir, state=RUNNING)

    def _hand_out(self, now):
        if self.depth is None:
            return
        # first every idle executor; then a second unit to queue behind the one it builds,
        # while there are more units left than executors (never at the job's tail)
        for limit in (1, PIPELINE):
            for executor in self.executors:
                if limit > 1 and len(self.pending) <= len(self.executors):
                    return
                if self.pending and executor.usable(now, limit):
                    serial = self.pending.popleft()
                    if not executor.start(self.wire_id, serial, self._build_frames(serial), now):
                        self.pending.appendleft(serial)     # to the next executor free

    def _payload(self, unit):
        """A unit's entries, read back from the result files when it is first handed out, kept
        until it is checked (a retry sends the same bytes)."""
        if unit.payload is None:
            usernames, balances = self.writer.read_entries(unit.position, unit.count)
            unit.payload = EntryBatch(self.loader.path_of(unit.position), self.loader.currencies,
                                      unit.count, usernames, balances)
        return unit.payload

    def _build_frames(self, serial):
        spec, payload = self.job.spec, self._payload(self.units[serial])
        request = wire.BuildRequest(self.wire_id, serial, payload.count, len(payload.currencies),
                                    spec.layout, spec.n_bytes, self.depth, payload.usernames,
                                    payload.balances, currencies=payload.currencies,
                                    username_encoding=spec.username_encoding, is_sorted=spec.sorted)
        return wire.frames(wire.BUILD, request.body())

    def _heartbeats(self, now):
        for executor in list(self.executors):
            executor.heartbeat(now, self.config.heartbeat_interval)
            if executor.silent(now, self.window):
                self._read_all(executor)          # what came while this loop was busy counts
                if executor in self.executors and executor.silent(now, self.window):
                    self._on_silence(executor, now)

    def _read_all(self, executor):
        for sock in executor.sockets:
            while executor in self.executors and sock.poll(0):
                self._on_message(executor, sock)

    def _on_silence(self, executor, now):
        for serial in list(executor.held):        # a worker on probation holds none
            self._retry(serial, f"{executor.name} stopped answering "
                        f"(no reply for {self.window:g} s)")
        executor.held.clear()
        self._replace(executor, now)

    # ---- what workers say -------------------------------------------------------------------

    def _on_message(self, executor, sock):
        try:
            command, body = executor.receive(sock)
        except ProtocolError as error:
            log.warning("job %s: unreadable message from %s: %s", self.job.id, executor.name, error)
            return
        if sock is not executor.socket:
            return                     # the heartbeat connection: it answered, that is all
        if command in (wire.RESULT, wire.ERROR) and body.get("job") not in (None, self.wire_id):
            log.warning("job %s: dropped a late answer from %s for %s (an earlier attempt)",
                     self.job.id, executor.name, body.get("job"))
            return
        lost = executor.lost_unit(command, body)
        if lost is not None:
            del executor.held[lost]
            self._retry(lost, f"{executor.name} no longer holds it (restarted, or dropped its "
                        f"connections)")
            return
        index = body.get("batch")
        if command == wire.PONG or type(index) is not int or index not in executor.held:
            return                     # a heartbeat, or an answer to a unit already retried
        del executor.held[index]
        if command == wire.ERROR:
            self._on_error(executor, index, body)
        else:                          # a RESULT, or what claims to be one: the checker says
            self.checker.check(Returned(executor, index, self.units[index].payload, self.depth, body))

    def _on_error(self, executor, index, body):
        self._check_cancel()           # a worker obeying our own cancellation is no failure
        code, message = body.get("code"), body.get("message", "?")
        if code in TRANSIENT:
            self._retry(index, f"{executor.name}: {message}")
            return
        raise JobEnded(FAILED, f"{self.units[index].payload.path}: {message}")

    def _take_verdicts(self):
        for returned, problem in self.checker.take_verdicts():
            if isinstance(problem, Fatal):
                raise JobEnded(FAILED, problem)
            if problem:
                self._retry(returned.index, f"{returned.executor.name} returned a bad subtree: "
                            f"{problem}")
                self._quarantine(returned.executor, problem)
                continue
            unit = self.units[returned.index]
            nodes = returned.body["nodes"]
            seconds = returned.body.get("seconds")
            self.job.count(worker_seconds=seconds if isinstance(seconds, float) else 0.0)
            self._done(unit, bytes(nodes[len(nodes) - record_bytes(len(unit.payload.currencies)):]))

    def _done(self, unit, root, reused=False):
        """A unit checked and stored (journaled), now or by an earlier attempt: only its root stays."""
        self.roots[unit.serial] = root
        unit.payload = None
        self.done += 1
        self.batch_units_done[unit.batch] += 1
        self.job.count(units_done=1, entries_done=unit.count, **({"units_reused": 1} if reused else {}))
        shape = self.shape
        if shape is not None and \
                self.batch_units_done[unit.batch] == shape.units_in(shape.counts[unit.batch]):
            self.batches_done += 1
            self.job.update(None, progress={"batches_done": self.batches_done})

    # ---- retries and workers ----------------------------------------------------------------

    def _retry(self, index, reason):
        self.attempts[index] += 1
        self.last_failure = f"work unit {index}: {reason}"
        log.warning("job %s: work unit %d attempt %d failed: %s", self.job.id, index,
                    self.attempts[index], reason)
        if self.attempts[index] > self.config.max_retries:
            raise JobEnded(FAILED, f"work unit {index} ({self.units[index].payload.path}) failed "
                           f"{self.attempts[index]} times; last: {reason}")
        self.job.count(retries=1)
        self.pending.appendleft(index)

    def _add(self, executor):
        for sock in executor.connect(self.context, curve=self.curve):
            self.poller.register(sock, zmq.POLLIN)
            self.owner[sock] = executor
        self.executors.append(executor)

    def _drop(self, executor):
        for sock in executor.sockets:
            self.poller.unregister(sock)
            del self.owner[sock]
        executor.close()
        self.executors.remove(executor)

    def _adopt(self, successor):
        if successor is not None:
            self.job.count(replacements=1)
            self._add(successor)
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
        if executor.name not in self.job.record["quarantined"]:
            log.warning("job %s: %s quarantined: %s", self.job.id, executor.name, problem)
            self.job.update(None, quarantined=self.job.record["quarantined"] + [executor.name])
        # it may have gone silent while its result was checked: then a reconnect to the same
        # address may stand in its place, and is just as untrusted
        executor = next((e for e in self.executors if e is executor or e.endpoint == executor.endpoint),
                        None)
        if executor is None:
            return
        for serial in list(executor.held):   # what it took on while its result was checked
            self._retry(serial, f"{executor.name} was quarantined")
        executor.held.clear()
        self._drop(executor)
        try:
            successor = self.spawner.quarantine(executor)
        except (SpawnError, OSError) as error:
            log.warning("job %s: no fresh worker instead of %s: %s", self.job.id, executor.name, error)
            successor = None
        self._adopt(successor)
