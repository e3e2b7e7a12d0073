"""The mini-tree generator server: one socket thread, N compute threads.

The socket thread owns every socket (ZeroMQ sockets are not thread-safe). It answers PING at
once, checks each BUILD and queues it, obeys CANCEL from the ROUTER or the cancel SUB, and
forwards what the compute threads produce. Compute threads run the kernel with the GIL
released, so a long build never delays a PONG; each sends its reply through its own inproc
PUSH socket back to the socket thread.

A memory guard (wire/memory.py) watches the heap: over the limit, the worker drops every
connection and all its work, and listens afresh; PONG tells a client whether the worker
still holds the batch it asked about, so a lost one is sent again.
"""
import collections
import json
import logging
import queue
import threading
import time

import zmq

from .. import wire
from ..cython_ext import _kernel
from ..mst.tree import MerkleSumTree, RangeCheckError
from ..wire import Code, ProtocolError
from ..wire.keys import SOCKET_ROLES, start_authenticator
from ..wire.memory import MemoryGuard, default_budget, over_limit_message, rebind
from .build_request import check_build

log = logging.getLogger("summa.worker")

POLL_MS = 100                 # how often the loop looks at the stop flag
REMEMBERED_CANCELS = 4096     # cancelled job ids kept, to refuse their late batches
BASE_MEMORY_BYTES = 256 << 20   # the heap of an idle worker is far less


def default_memory_limit(max_message_bytes, threads):
    """What a worker may legitimately hold: per compute thread its request, its tree and the
    packed answer; one more request being read and one queued; some room for the rest. At
    most three quarters of the memory available."""
    return default_budget((3 * threads + 2) * max_message_bytes + BASE_MEMORY_BYTES)


class _Task:
    def __init__(self, identity, request):
        self.identity, self.request, self.control = identity, request, _kernel.Control()


class Worker:
    def __init__(self, bind, cancel_endpoint=None, threads=1,
                 max_message_bytes=wire.DEFAULT_MAX_MESSAGE_BYTES, context=None, keys=None,
                 max_memory_bytes=None):
        self.context = context or zmq.Context.instance()
        self.max_message_bytes = max_message_bytes
        curve, self.authenticator = None, None
        if keys is not None:    # CURVE: only daemon keys (keys/authorized/daemon) get through
            curve = keys.curve("worker")
            self.authenticator = start_authenticator(self.context, keys, "summa-worker", ("worker",))
            curve = curve.admitting(SOCKET_ROLES["worker"])
        self.curve = curve
        self.router = wire.new_socket(self.context, zmq.ROUTER, max_message_bytes, curve=curve)
        self.router.bind(bind)
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.max_memory_bytes = max_memory_bytes or default_memory_limit(max_message_bytes, threads)
        self.guard = MemoryGuard(self.context, self.max_memory_bytes, "summa-worker")
        self.memory_alarm = self.guard.subscribe()
        self.sub = None
        if cancel_endpoint:
            self.sub = wire.new_socket(self.context, zmq.SUB,
                                       curve=curve.for_server(keys.public("daemon")) if curve else None)
            self.sub.setsockopt(zmq.SUBSCRIBE, wire.CANCEL_TOPICS)
            self.sub.connect(cancel_endpoint)
        self._results_address = f"inproc://summa-worker-results-{id(self)}"
        self.results = wire.new_socket(self.context, zmq.PULL)
        self.results.bind(self._results_address)
        self.tasks = queue.Queue()
        self.active = {}                     # job -> set of its queued and running tasks
        self.active_lock = threading.Lock()
        self.cancelled = collections.OrderedDict()
        self.stopping = threading.Event()
        self.running = 0                     # builds in a compute thread right now
        self.threads = [threading.Thread(target=self._compute, name=f"summa-compute-{i}", daemon=True)
                        for i in range(threads)]

    # ---- the socket thread ---------------------------------------------------------------

    def serve(self):
        """Run until stop() is called (from any thread or a signal handler's queue)."""
        for thread in self.threads:
            thread.start()
        self.poller = zmq.Poller()
        for sock in filter(None, (self.router, self.sub, self.results, self.memory_alarm)):
            self.poller.register(sock, zmq.POLLIN)
        try:
            while not self.stopping.is_set():
                for sock, _ in self.poller.poll(POLL_MS):
                    if sock is self.router:
                        self._on_request(self.router.recv_multipart(copy=False))
                    elif sock is self.sub:
                        self._on_cancel_broadcast(self.sub.recv_multipart())
                    elif sock is self.memory_alarm:
                        self._on_memory_alarm()
                    elif sock is self.results:
                        self._forward_results()
                    # else: the router an alarm just replaced
        finally:
            self._shut_down()

    def stop(self):
        self.stopping.set()

    def _forward_results(self):
        """Every answer the compute threads have queued (a PING may have taken them already,
        after the poll said there were some: never block here)."""
        while self.results.poll(0):
            self.router.send_multipart(self.results.recv_multipart(copy=False), copy=False)

    def _on_memory_alarm(self):
        log.warning(over_limit_message(self.memory_alarm, self.max_memory_bytes,
                                       f"dropping every connection to {self.endpoint} and all work"))
        with self.active_lock:
            for tasks in self.active.values():
                for task in tasks:
                    task.control.cancel()    # answers go to connections that are gone
        self.poller.unregister(self.router)
        self.router = rebind(self.router, lambda: wire.new_socket(
            self.context, zmq.ROUTER, self.max_message_bytes, curve=self.curve), self.endpoint)
        self.poller.register(self.router, zmq.POLLIN)

    def _holds(self, job, batch):
        with self.active_lock:
            return any(task.request.batch == batch for task in self.active.get(job, ()))

    def _reply(self, identity, command, body):
        self.router.send_multipart([identity, *wire.frames(command, body)])

    def _on_request(self, parts):
        identity, body = parts[0].bytes, {}
        try:
            command, body = wire.parse(parts[1:], self.max_message_bytes)
            self._dispatch(identity, command, body)
        except ProtocolError as error:
            log.warning("refused a message: %s", error.message)
            job, batch = body.get("job"), body.get("batch")
            self._reply(identity, wire.ERROR, wire.error_body(
                error.code, error.message, job if isinstance(job, str) else None,
                batch if type(batch) is int else None))

    def _dispatch(self, identity, command, body):
        if command == wire.PING:
            pong = {"seq": body.get("seq"), "queued": self.tasks.qsize(), "running": self.running,
                    "threads": len(self.threads)}
            job, batch = body.get("job"), body.get("batch")
            if isinstance(job, str) and type(batch) is int:
                # a finished task leaves `active` only after its answer is queued for us, so
                # the answer goes out first, and a client told "not held" has had it already
                pong.update(job=job, batch=batch, holds=self._holds(job, batch))
                self._forward_results()
            self._reply(identity, wire.PONG, pong)
        elif command == wire.BUILD:
            self._accept(identity, check_build(body, self.max_message_bytes))
        elif command == wire.CANCEL:
            self._cancel(wire.check_cancel(body))
        else:
            raise ProtocolError(Code.UNKNOWN_COMMAND, f"a worker does not take "
                                f"{wire.COMMAND_NAMES[command]}")

    def _accept(self, identity, request):
        if request.job in self.cancelled:
            raise ProtocolError(Code.CANCELLED, f"job {request.job} was cancelled")
        task = _Task(identity, request)
        with self.active_lock:
            self.active.setdefault(request.job, set()).add(task)
        self.tasks.put(task)

    def _on_cancel_broadcast(self, parts):
        topic = bytes(parts[0])
        if topic.startswith(wire.CANCEL_TOPICS):
            self._cancel(topic[len(wire.CANCEL_TOPICS):].decode(errors="replace"))

    def _cancel(self, job):
        """Abort the job's running builds and drop its queued ones (each answers CANCELLED)."""
        self.cancelled[job] = True
        while len(self.cancelled) > REMEMBERED_CANCELS:
            self.cancelled.popitem(last=False)
        with self.active_lock:
            for task in self.active.get(job, ()):
                task.control.cancel()
        log.info("job %s cancelled", job)

    def _shut_down(self):
        with self.active_lock:
            for tasks in self.active.values():
                for task in tasks:
                    task.control.cancel()
        for _ in self.threads:
            self.tasks.put(None)
        for thread in self.threads:
            thread.join(timeout=2)
        # replies the compute threads sent while we were stopping still reach their clients
        if not self.router.closed:      # closed: a memory reset that could not bind again
            self._forward_results()
        for sock in filter(None, (self.router, self.sub, self.results, self.memory_alarm)):
            sock.close(linger=0)
        self.guard.stop()
        if self.authenticator is not None:
            self.authenticator.stop()

    # ---- compute threads -------------------------------------------------------------------

    def _compute(self):
        out = wire.new_socket(self.context, zmq.PUSH, self.max_message_bytes)
        out.connect(self._results_address)
        try:
            for task in iter(self.tasks.get, None):
                with self.active_lock:
                    self.running += 1
                try:
                    command, body = self._build(task)
                finally:
                    with self.active_lock:
                        self.running -= 1
                out.send_multipart([task.identity, *wire.frames(command, body)], copy=False)
                with self.active_lock:
                    siblings = self.active.get(task.request.job)
                    if siblings is not None:
                        siblings.discard(task)
                        if not siblings:
                            del self.active[task.request.job]
        finally:
            out.close(linger=0)

    def _build(self, task):
        request = task.request
        began = time.perf_counter()
        try:
            if task.control.cancelled:
                raise _kernel.Cancelled()
            tree = MerkleSumTree.build(request.usernames, request.balances, request.count,
                                       request.n_currencies, layout=request.layout,
                                       depth=request.depth, n_bytes=request.n_bytes,
                                       currencies=request.currencies, control=task.control)
        except _kernel.Cancelled:
            reason = "the worker is shutting down" if self.stopping.is_set() else \
                f"job {request.job} was cancelled"
            code = Code.SHUTTING_DOWN if self.stopping.is_set() else Code.CANCELLED
            return wire.ERROR, wire.error_body(code, reason, request.job, request.batch)
        except RangeCheckError as error:
            return wire.ERROR, wire.error_body(Code.OVERFLOW, str(error), request.job, request.batch)
        except (_kernel.KernelError, ValueError) as error:
            return wire.ERROR, wire.error_body(Code.BAD_FIELD, str(error), request.job, request.batch)
        except Exception as error:   # keep serving; the daemon decides what a failed batch means
            log.exception("build of job %s batch %s failed", request.job, request.batch)
            return wire.ERROR, wire.error_body(Code.INTERNAL, f"{type(error).__name__}: {error}",
                                               request.job, request.batch)
        if request.as_json:
            tree.is_sorted = request.is_sorted
            return wire.RESULT, {"job": request.job, "batch": request.batch,
                                 "json": json.dumps(tree.to_json())}
        return wire.RESULT, {"job": request.job, "batch": request.batch, "depth": tree.depth,
                             "count": tree.count, "n_currencies": tree.n_currencies,
                             "nodes": tree.levels.nodes, "seconds": time.perf_counter() - began}

