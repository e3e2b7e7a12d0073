"""The daemon's proof server: PROOF requests answered in their own thread, in batches.

The control loop (broker.py) hands every PROOF request, its frames untouched, to this thread
over an inproc PUSH/PULL pair and goes back to its socket: SUBMIT, STATUS, CANCEL and the job
runners' cancellations never wait behind a proof. This thread takes every request waiting (up
to MAX_BATCH; when fewer than GATHER_MIN wait and clients are seen in parallel, it first
sleeps GATHER_S once for more: a kernel call costs the same for 1 to 8 paths, so 8 clients
whose requests trickle in one by one would cost about twice the CPU per proof), checks each
as the control loop checks any request (the envelope, then the daemon's on_proof: BAD_FIELD,
NO_SUCH_JOB, NOT_READY for a job that is not done), groups them by job, verifies each job's
proofs side by side (StoredTree.proofs_or_errors: each distinct node hashed once, in three
kernel calls for the whole batch, with the GIL released while it hashes) and sends the
batch's answers, as the frames each client gets, back over a second inproc pair in one
message; the control loop forwards them. Answers are those of the control
protocol: REPLY {"proof": ...}, or ERROR with the request's code (NOT_FOUND for no such
username, NOT_READY when the result cannot be opened, INTERNAL with the StoreError's message
when the store is damaged: never a wrong proof).

The loaded results (a small LRU of CACHED_RESULTS, each with its verified node cache of at
most cache_bytes: the daemon's proof_cache_mb) belong to this thread alone. When no request
waits, the thread fills the cache of the result it used last, a fraction of a millisecond at a
time (StoredTree.warm: about 7 s of one core for 128 MiB, kernel time with the GIL released),
so that proofs soon stop their climb at unit level cache_level instead of the unit root.
A deleted job's result is dropped (forget(): its files' mappings go) before the next batch.
"""
import collections
import logging
import os
import threading
import time

import zmq

from .. import wire
from ..mst import store
from ..wire import Code

log = logging.getLogger("summa.daemon")

CACHED_RESULTS = 4
MAX_BATCH = 256                        # requests verified together, at most
POLL_MS = 100
GATHER_MIN = 8                         # fewer waiting, with clients in parallel: wait for more ...
GATHER_S = 200e-6                      # ... this long, once (a batch of 8 costs ~3.5 proofs alone)
CONTROL_MAX_MESSAGE_BYTES = 16 << 20   # as the control socket's (broker.py)
MORE, NOBLOCK = int(zmq.SNDMORE), int(zmq.NOBLOCK)   # plain ints: no enum arithmetic per frame


def proof_cache_bytes(config, heap_budget):
    """Each loaded result's verified node cache: proof_cache_mb, and never more than a quarter
    of the daemon's heap budget for all CACHED_RESULTS together (the caches are heap the
    memory guard counts: on a small machine they must not make it drop clients)."""
    return min(config.proof_cache_mb << 20, heap_budget // (4 * CACHED_RESULTS))


def send_frames(sock, frames, flags=0):
    """sock.send_multipart(frames, flags), without its per-frame checks (the hot path)."""
    last = len(frames) - 1
    send = sock.send
    for i, frame in enumerate(frames):
        send(frame, flags | MORE if i < last else flags, copy=False)


def recv_frames(sock, flags=0):
    """sock.recv_multipart(flags, copy=False), reading each frame's more flag."""
    parts = [sock.recv(flags, copy=False)]
    while parts[-1].more:
        parts.append(sock.recv(flags, copy=False))
    return parts


class ProofServer(threading.Thread):
    """check(body) -> (job id, username), or ProtocolError: the daemon's checks of a PROOF body
    (it reads the daemon's job table, which only the control loop changes)."""

    def __init__(self, context, results_dir, requests_address, replies_address, check,
                 cache_bytes=store.CACHE_BYTES):
        super().__init__(name="proof-server", daemon=True)
        self.context, self.results_dir, self.check = context, results_dir, check
        self.cache_bytes = cache_bytes
        self.requests_address, self.replies_address = requests_address, replies_address
        self.results = collections.OrderedDict()   # job id -> loaded tree
        self.cold = collections.OrderedDict()      # loaded results whose cache is not full yet
        self.stopping = threading.Event()
        self.ready = threading.Event()     # both inproc sockets connected: requests may come
        self.served = self.batches = 0
        self.forgotten = collections.deque()   # deleted jobs whose results go (the control loop's)

    def run(self):
        requests = self.context.socket(zmq.PULL)
        requests.linger = 0
        requests.rcvhwm = 0
        requests.connect(self.requests_address)
        replies = self.context.socket(zmq.PUSH)
        replies.linger = 0
        replies.sndhwm = 0
        replies.connect(self.replies_address)
        self.ready.set()
        last = 0                               # the size of the last batch
        try:
            while not self.stopping.is_set():
                self._drop_forgotten()
                if not requests.poll(0 if self.cold else POLL_MS):
                    self._warm()
                    continue
                batch = []
                self._drain(requests, batch)
                if len(batch) < GATHER_MIN and max(len(batch), last) > 1:
                    time.sleep(GATHER_S)           # the GIL and the cores go to the clients meanwhile
                    self._drain(requests, batch)
                last = len(batch)
                if batch:
                    send_frames(replies, [frame for answer in self.answer(batch) for frame in answer])
        finally:
            requests.close(linger=0)
            replies.close(linger=0)

    @staticmethod
    def _drain(requests, batch):
        while len(batch) < MAX_BATCH:
            try:
                batch.append(recv_frames(requests, NOBLOCK))
            except zmq.Again:
                return

    def stop(self):
        """Stop after the batch in hand (within POLL_MS when idle)."""
        self.stopping.set()

    def forget(self, job):
        """The job was deleted: drop its loaded result (its maps of files that are gone), in
        this thread, within POLL_MS. Called from the control loop, once the job's id is out of
        the job table, so no later request can load it again."""
        self.forgotten.append(job)

    def _drop_forgotten(self):
        while self.forgotten:
            job = self.forgotten.popleft()
            self.results.pop(job, None)
            self.cold.pop(job, None)

    # ---- answers ------------------------------------------------------------------------------

    def answer(self, batch):
        """PROOF requests (identity, then the envelope's frames) -> [identity, *frames] answers,
        in order."""
        out = [None] * len(batch)
        jobs = collections.OrderedDict()
        for position, parts in enumerate(batch):
            identity, body = parts[0].bytes, {}
            try:
                _, body = wire.parse(parts[1:], CONTROL_MAX_MESSAGE_BYTES)
                job, username = self.check(body)
            except wire.ProtocolError as error:
                job = body.get("job") if isinstance(body, dict) else None
                out[position] = [identity, *wire.frames(wire.ERROR, wire.error_body(
                    error.code, error.message, job if isinstance(job, str) else None))]
                continue
            except Exception as error:     # a bug must not take the daemon down
                log.exception("request failed")
                out[position] = [identity, *wire.frames(wire.ERROR, wire.error_body(
                    Code.INTERNAL, f"{type(error).__name__}: {error}"))]
                continue
            jobs.setdefault(job, []).append((position, identity, username))
        for job, items in jobs.items():
            try:
                answers = self._proofs(job, [username for _, _, username in items])
            except wire.ProtocolError as error:
                answers = [error] * len(items)
            except Exception as error:      # a bug must not take the server down
                log.exception("proofs of job %s failed", job)
                answers = [wire.ProtocolError(Code.INTERNAL, f"{type(error).__name__}: {error}")] * len(items)
            for (position, identity, username), answer in zip(items, answers):
                out[position] = [identity, *self._frames(job, username, answer)]
        self.served += len(batch)
        self.batches += 1
        return out

    # ---- filling the verified node caches when there is nothing to answer -----------------------

    def _warm(self):
        """One small step (WARM_PAIRS node pairs, under a millisecond) of filling the cache of
        the most recently used result that is not full yet."""
        if not self.cold:
            return
        job = next(reversed(self.cold))
        tree = self.results.get(job)
        try:
            more = tree is not None and tree.warm()
        except Exception:                  # never fatal: the proofs verify without the cache
            log.exception("job %s: filling the verified node cache failed", job)
            more = False
        if not more:
            del self.cold[job]

    def _proofs(self, job, usernames):
        tree = self._result(job)
        return tree.proofs_or_errors(usernames)

    @staticmethod
    def _frames(job, username, answer):
        if isinstance(answer, dict):
            return wire.frames(wire.REPLY, {"proof": answer})
        if isinstance(answer, wire.ProtocolError):
            error = answer
        elif isinstance(answer, store.StoreError):     # damaged since it was opened: say so, never lie
            log.error("job %s: %s", job, answer)
            error = wire.ProtocolError(Code.INTERNAL, f"job {job}: {answer}")
        elif isinstance(answer, (KeyError, ValueError)):
            error = wire.ProtocolError(Code.NOT_FOUND, f"username {username!r} is not in job {job}")
        else:
            log.error("job %s: proof of %r: %s: %s", job, username, type(answer).__name__, answer)
            error = wire.ProtocolError(Code.INTERNAL, f"{type(answer).__name__}: {answer}")
        return wire.frames(wire.ERROR, wire.error_body(error.code, error.message, job))

    def _result(self, job):
        if job not in self.results:
            try:
                self.results[job], _ = store.load(os.path.join(self.results_dir, job),
                                                cache_bytes=self.cache_bytes)
            except store.StoreError as error:
                raise wire.ProtocolError(Code.NOT_READY, f"job {job}: {error}") from None
            if hasattr(self.results[job], "warm"):
                self.cold[job] = True
            while len(self.results) > CACHED_RESULTS:
                gone, _ = self.results.popitem(last=False)
                self.cold.pop(gone, None)
        self.results.move_to_end(job)
        if job in self.cold:
            self.cold.move_to_end(job)
        return self.results[job]
