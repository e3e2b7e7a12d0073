"""The checker thread: every returned subtree is checked here, off the heartbeat path, then
written at its place in the result files (ResultWriter.write_unit) and dropped.

A check may be long (verify_full rebuilds the whole mini-tree), and a loop busy with it would
read no PONG meanwhile; so the dispatcher hands each RESULT over and goes on, and the verdict
comes back on a queue, with a one-byte wake-up on an inproc socket its poller watches. The
kernel releases the GIL, so a rebuild here slows no socket loop.
"""
import logging
import queue
import threading
from dataclasses import dataclass

import zmq

from .. import wire
from ..cython_ext import _kernel
from ..mst.limits import tree_bytes
from .integrity import IntegrityError, check_minitree

log = logging.getLogger("summa.daemon")


@dataclass
class Returned:
    """A RESULT the dispatcher accepted for checking, and what it was the answer to."""
    executor: object
    index: int
    batch: object          # the EntryBatch of the unit that was sent
    depth: int             # the unit depth it was sent with
    body: dict


class Fatal(str):
    """A verdict that fails the job: the check could not be done (a full disk, a bug)."""


def shape_problem(body, job_id, batch, depth):
    """Why a RESULT body cannot be the mini-tree of `batch`, or None."""
    n = len(batch.currencies)
    if (body.get("job"), body.get("depth"), body.get("count"), body.get("n_currencies")) != \
            (job_id, depth, batch.count, n):
        return "its job, depth, count or currency count differ from the request"
    expected = tree_bytes(depth, n)
    if not isinstance(body.get("nodes"), bytes) or len(body["nodes"]) != expected:
        return f"nodes must be {expected} bytes"
    return None


class Checker(threading.Thread):
    def __init__(self, context, job_id, layout, sample, full, writer):
        super().__init__(name=f"check-{job_id}", daemon=True)
        self.context, self.job_id = context, job_id
        self.layout, self.sample, self.full, self.writer = layout, sample, full, writer
        self.inbox, self.verdicts = queue.Queue(), queue.Queue()
        self.control = _kernel.Control()       # stops a rebuild when the job ends
        self.address = f"inproc://summa-checker-{id(self)}"
        self.wake = wire.new_socket(context, zmq.PULL)
        self.wake.bind(self.address)

    def check(self, returned):
        self.inbox.put(returned)

    def take_verdicts(self):
        """(Returned, problem or None) for every check finished since the last call."""
        while self.wake.poll(0):
            self.wake.recv()
        while True:
            try:
                yield self.verdicts.get_nowait()
            except queue.Empty:
                return

    def run(self):
        push = wire.new_socket(self.context, zmq.PUSH)
        push.connect(self.address)
        try:
            for returned in iter(self.inbox.get, None):
                try:
                    problem = self._problem(returned)
                except _kernel.Cancelled:
                    return
                except OSError as error:      # the disk, not the worker: the job cannot go on
                    problem = Fatal(f"cannot write the result to {self.writer.target}: "
                                    f"{error.strerror or error}")
                except Exception as error:    # a bug: fail the job rather than hang it
                    log.exception("checking a result failed")
                    problem = Fatal(f"internal error while checking: {type(error).__name__}: {error}")
                self.verdicts.put((returned, problem))
                push.send(b"")
        finally:
            push.close(linger=0)

    def _problem(self, returned):
        depth = returned.depth
        problem = shape_problem(returned.body, self.job_id, returned.batch, depth)
        if problem is None:
            try:
                check_minitree(returned.body["nodes"], returned.batch, depth, self.layout,
                               self.sample, self.full, control=self.control)
            except IntegrityError as error:
                problem = f"integrity error: {error}"
        if problem is None:
            problem = self.writer.write_unit(returned.index, returned.body["nodes"])
        return problem

    def stop(self):
        self.control.cancel()
        self.inbox.put(None)
        if self.is_alive():
            self.join(timeout=10)
        self.wake.close(linger=0)
