"""An executor: the daemon's one-to-one handle on a worker, over a DEALER socket.

The job's distribution loop (job.py) drives it: start() sends a batch, receive() takes what
the worker says, and heartbeat() pings a busy worker and tells when it has been silent for
interval x liveness (Paranoid Pirate). A dead executor is replaced through its spawner; one
that cannot be replaced by a fresh worker reconnects with a doubling back-off and is on
probation, getting no batch until it answers a PING; after max_retries silent spells in a row
the job gives up on that address. A busy executor's PING names its batch; a PONG saying the
worker does not hold it (the worker restarted in place, or dropped its connections) means the
batch was lost and goes to another worker.
"""

import time

import zmq

from ..worker import protocol as wire


class Executor:
    def __init__(self, endpoint, name=None, handle=None):
        self.endpoint, self.name = endpoint, name or endpoint
        self.handle = handle           # the spawner's own record (a process, a container...)
        self.socket = None
        self.job = None                # the job id of that batch
        self.batch_ping = 0            # the first PING sent after that batch's BUILD
        self.batch = None              # the batch index it builds, None when idle
        self.sent_at = self.last_heard = self.next_ping = 0.0
        self.ready_at = 0.0            # not used before this time (reconnect back-off)
        self.backoff = 0.0
        self.ping_seq = 0
        self.probation = False         # a reconnected worker must answer a PING before work
        self.failures = 0              # silent spells of this address so far

    def connect(self, context, max_message_bytes=wire.DEFAULT_MAX_MESSAGE_BYTES, curve=None):
        self.socket = wire.new_socket(context, zmq.DEALER, max_message_bytes, curve=curve)
        self.socket.connect(self.endpoint)
        return self.socket

    @property
    def idle(self):
        return self.batch is None

    def usable(self, now):
        return self.batch is None and not self.probation and self.ready_at <= now

    def start(self, job, batch, frames, now):
        self.job, self.batch = job, batch
        self.batch_ping = self.ping_seq + 1
        self.socket.send_multipart(frames, copy=False)
        self.sent_at = self.last_heard = now
        self.next_ping = now

    def heartbeat(self, now, interval, liveness):
        """Ping a busy (or probationary) worker when due; True when it has been silent too long."""
        if self.batch is None and not self.probation:
            return False
        if self.ready_at > now:
            return False
        if self.probation and not self.last_heard:
            self.last_heard = now      # the probation clock starts after the back-off
        if now - self.last_heard > interval * liveness:
            return True
        if now >= self.next_ping:
            self.ping_seq += 1
            ping = {"seq": self.ping_seq}
            if self.batch is not None:
                ping.update(job=self.job, batch=self.batch)
            self.socket.send_multipart(wire.frames(wire.PING, ping))
            self.next_ping = now + interval
        return False

    def lost_batch(self, command, body):
        """True when `body` is a PONG saying the worker does not hold our batch (any more).
        Only a PING sent after the BUILD counts: it reached the worker after the BUILD did."""
        seq = body.get("seq")
        return command == wire.PONG and self.batch is not None and body.get("holds") is False \
            and body.get("job") == self.job and body.get("batch") == self.batch \
            and type(seq) is int and seq >= self.batch_ping

    def receive(self, now):
        """The worker's next (command, body); any message at all proves it is alive."""
        self.last_heard = now
        self.probation = False
        return wire.parse(self.socket.recv_multipart(copy=False))

    def successor(self, now, first_backoff=0.25, max_backoff=8.0):
        """A fresh executor for the same endpoint, usable after a doubling back-off."""
        nxt = Executor(self.endpoint, self.name, self.handle)
        nxt.backoff = min(max(self.backoff * 2, first_backoff), max_backoff)
        nxt.ready_at = now + nxt.backoff
        nxt.probation = True
        nxt.failures = self.failures + 1
        return nxt

    def close(self):
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None


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
