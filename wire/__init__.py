"""What goes over the wire: one envelope, two message sets, the socket factory; and beside
them CURVE keys (wire.keys), the memory guard (wire.memory) and the serve loop (wire.serve).

Imports only pyzmq, msgpack and the standard library: a client of the daemon or of a worker
needs neither the kernel nor the tree library. `from summa_aggregation import wire` gives the
message API in one name: wire.frames(wire.BUILD, ...), wire.parse(...), wire.new_socket(...).
"""
from .control_messages import (LIST_LIMIT, LIST_MAX, ListRequest, SubmitRequest, UploadRequest,
                               check_job, check_upload, list_cursor, read_chunk, read_cursor,
                               read_finish, read_list, read_submit, read_upload)
from .envelope import ProtocolError, error_body, frames, parse, rule
from .protocol import (BUILD, CANCEL, CANCEL_TOPICS, CHUNK, COMMAND_NAMES, DEFAULT_MAX_MESSAGE_BYTES,
                       DELETE, ERROR, FINISH, HEADER, LIST, MAX_EXECUTORS, PING, PONG, PROOF, REPLY, RESULT,
                       SHUTDOWN, STATUS, SUBMIT, UPLOAD, Code, cancel_topic)
from .sockets import SocketClient, new_socket
from .worker_messages import BuildRequest, check_cancel, read_build

__all__ = ["BUILD", "BuildRequest", "CANCEL", "CANCEL_TOPICS", "CHUNK", "COMMAND_NAMES", "Code",
           "DEFAULT_MAX_MESSAGE_BYTES", "DELETE", "ERROR", "FINISH", "HEADER", "LIST", "LIST_LIMIT",
           "LIST_MAX", "ListRequest", "MAX_EXECUTORS", "PING", "PONG", "PROOF", "ProtocolError", "REPLY",
           "RESULT", "SHUTDOWN", "STATUS", "SUBMIT", "UPLOAD", "SocketClient", "SubmitRequest",
           "UploadRequest", "cancel_topic", "check_cancel", "check_job", "check_upload", "error_body",
           "frames", "list_cursor", "new_socket", "parse", "read_build", "read_chunk", "read_cursor",
           "read_finish", "read_list", "read_submit", "read_upload", "rule"]
