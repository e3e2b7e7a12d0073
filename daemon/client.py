"""The daemon's client side: one request, one answer, every wait bounded by a poll timeout
(an upload keeps a few chunk requests in flight: its window)."""
import errno
import hashlib
import os
import stat

import zmq

from .. import wire
from ..wire import Code

DEFAULT_DAEMON = "tcp://127.0.0.1:5555"
FINISH_SECONDS = 120     # at least, for FINISH: the daemon syncs the file to disk first
MAX_CHUNK_BYTES = 16 << 20
MAX_WINDOW = 64


class DaemonError(Exception):
    """The daemon answered ERROR (code set), or could not be reached (code None)."""

    def __init__(self, code, message):
        super().__init__(message)
        try:
            self.code = Code(code) if code is not None else None
        except ValueError:        # a code this client does not know: keep the number
            self.code = code
        self.message = message


class DaemonClient(wire.SocketClient):
    def __init__(self, endpoint=DEFAULT_DAEMON, timeout=10.0, context=None, keys=None):
        """keys: a KeyDir; the client then speaks CURVE with its client pair."""
        self.endpoint, self.timeout = endpoint, timeout
        self.context = context or zmq.Context.instance()
        self.curve = keys.curve("client").for_server(keys.public("daemon")) if keys else None
        self.socket = self._connect()

    def _connect(self):
        sock = wire.new_socket(self.context, zmq.DEALER, curve=self.curve)
        sock.connect(self.endpoint)
        return sock

    def request(self, command, body=None, timeout=None):
        self._send(command, body)
        return self._answer(timeout)

    def _send(self, command, body=None):
        self.socket.send_multipart(wire.frames(command, body or {}))

    def _reset(self):
        """A fresh socket: what the old one had queued, or answers still to come, are gone."""
        self.socket.close(linger=0)
        self.socket = self._connect()

    def _answer(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        if not self.socket.poll(int(timeout * 1000)):
            # the request may still be queued in the socket: start afresh for the next one
            self._reset()
            hint = "is summa-daemon running, and does it know this client's key?" if self.curve \
                else "is summa-daemon running?"
            raise DaemonError(None, f"no answer from the daemon at {self.endpoint} within "
                              f"{timeout:g} s ({hint})")
        try:
            reply, body = wire.parse(self.socket.recv_multipart())
        except wire.ProtocolError as error:
            raise DaemonError(None, f"the daemon at {self.endpoint} answered something "
                              f"unreadable: {error.message}") from None
        if reply == wire.ERROR:
            raise DaemonError(body.get("code", Code.INTERNAL), str(body.get("message", "?")))
        if reply != wire.REPLY:
            raise DaemonError(None, f"the daemon at {self.endpoint} answered "
                              f"{wire.COMMAND_NAMES[reply]}, not REPLY")
        return body

    def _field(self, body, name, kind):
        value = body.get(name)
        if not isinstance(value, kind):
            raise DaemonError(None, f"the daemon at {self.endpoint} answered without a "
                              f"valid {name!r}")
        return value

    def submit(self, spec):
        return self._field(self.request(wire.SUBMIT, spec.body()), "job", str)

    def status(self, job):
        return self.request(wire.STATUS, {"job": job})

    def cancel(self, job):
        return self.request(wire.CANCEL, {"job": job})

    def proof(self, job, username):
        return self._field(self.request(wire.PROOF, {"job": job, "username": username}), "proof", dict)

    def list_page(self, limit=None, since=None, after=None):
        """One LIST page, newest first: (records, next), next being the `after` of the page
        that follows, or None when there is no more. since: unix seconds (jobs submitted at
        or after it)."""
        body = {k: v for k, v in (("limit", limit), ("since", since), ("after", after)) if v is not None}
        answer = self.request(wire.LIST, body)
        cursor = answer.get("next")
        if cursor is not None and not isinstance(cursor, str):
            raise DaemonError(None, f"the daemon at {self.endpoint} answered without a valid 'next'")
        return self._field(answer, "jobs", list), cursor

    def list(self, since=None):
        """Every job's record (submitted at or after `since`), newest first, page by page."""
        jobs, cursor = self.list_page(wire.LIST_MAX, since)
        while cursor is not None:
            more, cursor = self.list_page(wire.LIST_MAX, since, cursor)
            jobs.extend(more)
        return jobs

    def delete(self, job):
        """Remove a finished job, its record and result (a queued or running one is refused:
        DaemonError NOT_FINISHED)."""
        return self.request(wire.DELETE, {"job": job})

    def shutdown(self):
        return self.request(wire.SHUTDOWN)

    def upload(self, path, name=None):
        """Send the regular file at `path` to the daemon (UPLOAD, CHUNKs, FINISH) and return the
        upload id, for SubmitRequest(uploads=[...]). The chunks are the size the daemon asks
        for, and at most its window of them wait for an answer: the client goes at the pace the
        daemon writes. OSError when the file cannot be read here."""
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", path)
            os.set_blocking(fd, True)
            try:
                return self._upload(fd, info.st_size, name or os.path.basename(path), path)
            except BaseException:
                self._reset()           # answers to chunks still on their way are dropped
                raise
        finally:
            os.close(fd)

    def _upload(self, fd, size, name, path):
        begun = self.request(wire.UPLOAD, wire.UploadRequest(name, size).body())
        upload = self._field(begun, "upload", str)
        chunk, window = self._field(begun, "chunk_bytes", int), self._field(begun, "window", int)
        if not (0 < chunk <= MAX_CHUNK_BYTES and 0 < window <= MAX_WINDOW):
            raise DaemonError(None, f"the daemon at {self.endpoint} answered UPLOAD with a chunk "
                              f"size {chunk} or window {window} out of range")
        digest, sent, acked, waiting = hashlib.sha256(), 0, 0, []
        while acked < size:
            while sent < size and len(waiting) < window:
                data = os.pread(fd, min(chunk, size - sent), sent)
                if not data:
                    raise OSError(errno.EIO, "the file became shorter while it was sent", path)
                digest.update(data)
                self._send(wire.CHUNK, {"upload": upload, "offset": sent, "data": data})
                sent += len(data)
                waiting.append(sent)
            received = self._field(self._answer(), "received", int)
            if received != waiting.pop(0):
                raise DaemonError(None, f"the daemon at {self.endpoint} acknowledged {received} "
                                  f"bytes of upload {upload} out of order")
            acked = received
        finished = self.request(wire.FINISH, {"upload": upload, "sha256": digest.hexdigest()},
                                timeout=max(self.timeout, FINISH_SECONDS))
        if self._field(finished, "sha256", str) != digest.hexdigest():
            raise DaemonError(None, f"the daemon at {self.endpoint} stored upload {upload} with "
                              f"another SHA-256")
        return upload
