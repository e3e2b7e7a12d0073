"""The socket factory: every socket of the project is made here, so that limits and CURVE
are set in one place."""
import zmq

from .protocol import DEFAULT_MAX_MESSAGE_BYTES


def new_socket(context, kind, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, curve=None):
    """linger 0, a size limit on messages, and CURVE when `curve` (a keys.Curve) is given: a
    server socket when it has no server_public (peers are then checked by the context's
    authenticator against the list of the role it admits, its ZAP domain), a client socket
    otherwise."""
    sock = context.socket(kind)
    sock.linger = 0
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey = curve.public, curve.secret
        if curve.server_public is None:
            sock.zap_domain = (curve.admits or "").encode()    # none: the authenticator admits nobody
            sock.curve_server = True
        else:
            sock.curve_serverkey = curve.server_public
    return sock


class SocketClient:
    """A client that owns one socket, `self.socket`: close() and a with-block."""

    def close(self):
        self.socket.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
