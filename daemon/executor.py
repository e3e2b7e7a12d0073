"""An executor: the daemon's one-to-one handle on a worker, over two DEALER connections.

    work       BUILDs out; RESULTs or ERRORs back; PINGs that name a work unit, whose PONGs
               say whether the worker still holds it
    heartbeat  PINGs and PONGs only: the liveness of the worker

A batch of hundreds of MiB takes a while to cross a slow link, and libzmq delivers a message
only when it has arrived whole: PINGs and PONGs on the work connection wait behind it. On a
connection of their own they do not, so liveness measures whether the worker answers, not how
big its batch is (Paranoid Pirate: PING every interval; dead after interval x liveness without
an answer to a PING). The PONG that names the batch stays on the work connection: it comes
after any answer sent before it, so "not held" means the batch was really lost (the worker
restarted in place, or dropped its connections), never that its RESULT is still on the way.

An executor holds up to PIPELINE units: the worker queues the next one while it builds the
current one, so it never waits for the daemon between two units (the dispatcher gives a second
unit only while there is work for every idle executor too, so the last units are not stuck
behind a busy worker while another one idles).

A dead executor is replaced through its spawner; one that cannot be replaced by a fresh worker
reconnects with a doubling back-off and is on probation, getting no batch until it answers a
PING; after max_retries silent spells in a row the job gives up on that address.
"""
import time

import zmq

from .. import wire

HEARTBEAT_MAX_MESSAGE_BYTES = 64 << 10   # PONGs are a few dozen bytes
PIPELINE = 2                             # units an executor may hold: one built, one queued


def _send(sock, frames, copy=True):
    """False when libzmq cannot take the message now: a DEALER whose connection is being
    re-made (after the peer broke a limit, say) has no pipe, and a blocking send would hang
    the dispatcher's loop, and with it every worker of the job."""
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=copy)
        return True
    except zmq.Again:
        return False


class Executor:
    def __init__(self, endpoint, name=None, handle=None):
        self.endpoint, self.name = endpoint, name or endpoint
        self.handle = handle           # the spawner's own record (a process, a container...)
        self.socket = None             # the work connection
        self.heartbeat_socket = None   # the heartbeat connection
        self.job = None                # the job id of the units it holds
        self.held = {}                 # unit -> the first PING sent after its BUILD, oldest first
        self.ping_seq = 0
        self.next_ping = 0.0
        self.unanswered_since = None   # when the oldest PING not answered by anything went out
        self.ready_at = 0.0            # not used before this time (reconnect back-off)
        self.backoff = 0.0
        self.probation = False         # a reconnected worker must answer a PING before work
        self.failures = 0              # silent spells of this address so far

    def connect(self, context, max_message_bytes=wire.DEFAULT_MAX_MESSAGE_BYTES, curve=None):
        self.socket = wire.new_socket(context, zmq.DEALER, max_message_bytes, curve=curve)
        self.socket.connect(self.endpoint)
        self.heartbeat_socket = wire.new_socket(context, zmq.DEALER, HEARTBEAT_MAX_MESSAGE_BYTES,
                                                curve=curve)
        self.heartbeat_socket.connect(self.endpoint)
        return self.sockets

    @property
    def sockets(self):
        return tuple(s for s in (self.socket, self.heartbeat_socket) if s is not None)

    def usable(self, now, limit=1):
        """Whether it may take a unit now, holding fewer than `limit` (at most PIPELINE)."""
        return len(self.held) < min(limit, PIPELINE) and not self.probation and self.ready_at <= now

    def start(self, job, batch, frames, now):
        """Send a BUILD; False when the worker cannot take it now: it then has to answer a
        PING before it gets work again (probation)."""
        if not _send(self.socket, frames, copy=False):
            self.probation = True
            return False
        if not self.held:
            self.next_ping = now         # the first PING right behind the BUILD
        self.job = job
        self.held[batch] = self.ping_seq + 1
        return True

    def heartbeat(self, now, interval):
        """Send the PINGs that are due to a busy (or probationary) worker."""
        if (not self.held and not self.probation) or self.ready_at > now or now < self.next_ping:
            return
        self.ping_seq += 1
        # a PING libzmq cannot take now is not sent, and counts as unanswered all the same
        _send(self.heartbeat_socket, wire.frames(wire.PING, {"seq": self.ping_seq}))
        for batch in self.held:
            _send(self.socket, wire.frames(wire.PING, {
                "seq": self.ping_seq, "job": self.job, "batch": batch}))
        if self.unanswered_since is None:
            self.unanswered_since = now
        self.next_ping = now + interval

    def silent(self, now, window):
        """True when a PING has gone unanswered for longer than `window` seconds."""
        return self.unanswered_since is not None and now - self.unanswered_since > window

    def receive(self, sock):
        """The worker's next (command, body) on `sock`; any message at all proves it is alive."""
        self.unanswered_since = None
        self.probation = False
        limit = wire.DEFAULT_MAX_MESSAGE_BYTES if sock is self.socket else HEARTBEAT_MAX_MESSAGE_BYTES
        return wire.parse(sock.recv_multipart(copy=False), limit)

    def lost_unit(self, command, body):
        """The unit that `body` (from the work connection), a PONG, says the worker does not
        hold (any more), or None. Only a PING sent after the BUILD counts: it reached the
        worker after the BUILD did."""
        seq, batch = body.get("seq"), body.get("batch")
        if command == wire.PONG and body.get("holds") is False and body.get("job") == self.job \
                and type(batch) is int and batch in self.held and type(seq) is int \
                and seq >= self.held[batch]:
            return batch
        return None

    def successor(self, now, first_backoff=0.25, max_backoff=8.0):
        """A fresh executor for the same endpoint, usable after a doubling back-off."""
        nxt = Executor(self.endpoint, self.name, self.handle)
        nxt.backoff = min(max(self.backoff * 2, first_backoff), max_backoff)
        nxt.ready_at = now + nxt.backoff
        nxt.probation = True
        nxt.failures = self.failures + 1
        return nxt

    def close(self):
        for sock in self.sockets:
            sock.close(linger=0)
        self.socket = self.heartbeat_socket = None


def wait_until_answering(endpoint, context, seconds, interval=0.2, curve=None):
    """True once a worker at `endpoint` answers PING within `seconds`, else False.

    Used by spawners whose workers start out of sight (containers, Swarm replicas)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock = wire.new_socket(context, zmq.DEALER, curve=curve)   # fresh: no stale queued PINGs
        try:
            sock.connect(endpoint)
            sock.send_multipart(wire.frames(wire.PING, {"seq": 0}))
            if sock.poll(int(min(interval, max(deadline - time.monotonic(), 0)) * 1000) + 1):
                command, _ = wire.parse(sock.recv_multipart())
                if command == wire.PONG:
                    return True
        except wire.ProtocolError:
            pass
        finally:
            sock.close(linger=0)
        time.sleep(min(interval, max(deadline - time.monotonic(), 0)))
    return False
