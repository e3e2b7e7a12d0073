"""The daemon's client side: one request, one answer, every wait bounded by a poll timeout."""
import zmq

from .. import wire
from ..wire import Code

DEFAULT_DAEMON = "tcp://127.0.0.1:5555"


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

    def request(self, command, body=None):
        self.socket.send_multipart(wire.frames(command, body or {}))
        if not self.socket.poll(int(self.timeout * 1000)):
            # the request may still be queued in the socket: start afresh for the next one
            self.socket.close(linger=0)
            self.socket = self._connect()
            hint = "is summa-daemon running, and does it know this client's key?" if self.curve \
                else "is summa-daemon running?"
            raise DaemonError(None, f"no answer from the daemon at {self.endpoint} within "
                              f"{self.timeout:g} s ({hint})")
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

    def list(self):
        return self._field(self.request(wire.LIST), "jobs", list)

    def shutdown(self):
        return self.request(wire.SHUTDOWN)
