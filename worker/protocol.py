"""The wire protocol spoken by the daemon, the client and the worker.

Every message is three frames, as in the ZeroMQ guide's Majordomo protocol (a ROUTER socket
puts the peer's identity frame in front):

    HEADER   b"SUMMA01": protocol name and version; anything else is refused
    COMMAND  one byte, below
    BODY     one msgpack map

Entries and nodes travel as packed binary (32-byte little-endian field words), never as
lists of ints or hex strings. This module knows nothing above the wire: it imports only
pyzmq and msgpack, and every socket of the project is made by new_socket() below, so that
authentication and encryption plug in at one place later.
"""
import enum
import re
from dataclasses import dataclass

import msgpack
import zmq

HEADER = b"SUMMA01"

BUILD = b"\x01"    # client -> worker: build the mini-tree of a batch
RESULT = b"\x02"   # worker -> client: the mini-tree
ERROR = b"\x03"    # worker -> client: a code and a one-line message
PING = b"\x04"     # either way: are you alive?
PONG = b"\x05"     # the answer, with the worker's load
CANCEL = b"\x06"   # client -> worker or daemon: stop job J (the daemon also publishes it)

# the daemon's control socket (summa-submit -> summa-daemon); answers are REPLY or ERROR
SUBMIT = b"\x10"   # a build job: csvs, executors, spawner, layout, n_bytes, batch_size
STATUS = b"\x11"   # one job's state and progress
PROOF = b"\x12"    # an inclusion proof from a finished job
LIST = b"\x13"     # every job the daemon knows
SHUTDOWN = b"\x14" # stop the daemon gracefully
REPLY = b"\x15"    # the daemon's answer to any of the above

COMMAND_NAMES = {BUILD: "BUILD", RESULT: "RESULT", ERROR: "ERROR", PING: "PING", PONG: "PONG",
                 CANCEL: "CANCEL", SUBMIT: "SUBMIT", STATUS: "STATUS", PROOF: "PROOF",
                 LIST: "LIST", SHUTDOWN: "SHUTDOWN", REPLY: "REPLY"}

WORD = 32
LAYOUTS = ("interleaved", "sum-first")
MAX_CURRENCIES = 64
MAX_DEPTH = 30
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30   # a 2^20-entry batch of 16 currencies is 544 MiB
MAX_JOB_ID = 128
_JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


CANCEL_TOPICS = b"cancel."   # what workers subscribe to; the only subscription the daemon keeps


def cancel_topic(job):
    """The PUB/SUB topic on which the daemon announces that `job` is cancelled."""
    return CANCEL_TOPICS + job.encode()


class Code(enum.IntEnum):
    BAD_VERSION = 1         # the header frame is not HEADER
    UNKNOWN_COMMAND = 2
    MALFORMED = 3           # wrong frame count, or a body that is not a msgpack map
    BAD_FIELD = 4           # a missing field, a wrong type, or a wrong length
    CURRENCY_MISMATCH = 5   # balances that do not match n_currencies
    OVERFLOW = 6            # a balance total beyond N_BYTES
    CANCELLED = 7           # the job was cancelled; this batch was dropped or aborted
    SHUTTING_DOWN = 8       # the worker or daemon is stopping and takes no more work
    INTERNAL = 9            # a bug on the answering side; the message says what
    NO_SUCH_JOB = 10        # the daemon knows no job by that id
    NOT_READY = 11          # the job has no result (yet, or ever): no proof to give
    NOT_FOUND = 12          # the username is not in the job's tree


class ProtocolError(Exception):
    """A message that cannot be accepted; carries the ERROR code to answer with."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = Code(code), message


def new_socket(context, kind, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, curve=None):
    """Every socket of the project comes from here: linger 0, a size limit on messages, and
    CURVE when `curve` (a keys.Curve) is given: a server socket when it has no server_public
    (peers are then checked by the context's authenticator), a client socket otherwise."""
    sock = context.socket(kind)
    sock.linger = 0
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey = curve.public, curve.secret
        if curve.server_public is None:
            sock.curve_server = True
        else:
            sock.curve_serverkey = curve.server_public
    return sock


def frames(command, body):
    return [HEADER, command, msgpack.packb(body, use_bin_type=True)]


def parse(parts, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
    """[HEADER, COMMAND, BODY] -> (command, body dict); ProtocolError when anything is off."""
    if len(parts) != 3:
        raise ProtocolError(Code.MALFORMED, f"expected 3 frames (header, command, body), got {len(parts)}")
    header, command = bytes(parts[0]), bytes(parts[1])
    body = getattr(parts[2], "buffer", parts[2])   # a zmq.Frame is read in place, not copied
    if header != HEADER:
        raise ProtocolError(Code.BAD_VERSION, f"unsupported protocol header {header[:16]!r}, "
                            f"this side speaks {HEADER!r}")
    if command not in COMMAND_NAMES:
        raise ProtocolError(Code.UNKNOWN_COMMAND, f"unknown command byte {command[:4]!r}")
    try:
        decoded = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True,
                                  max_bin_len=max_message_bytes, max_str_len=1 << 16,
                                  max_array_len=1 << 10, max_map_len=64, max_ext_len=0)
    except Exception as error:   # msgpack raises several unrelated types for bad input
        raise ProtocolError(Code.MALFORMED, f"{COMMAND_NAMES[command]} body is not valid "
                            f"msgpack ({type(error).__name__})") from None
    if not isinstance(decoded, dict):
        raise ProtocolError(Code.MALFORMED, f"{COMMAND_NAMES[command]} body is not a map")
    return command, decoded


def _field(body, name, kind, what):
    value = body.get(name)
    if type(value) is not kind:
        raise ProtocolError(Code.BAD_FIELD, f"field {name!r}: expected {what}")
    return value


def _job(body):
    job = _field(body, "job", str, "a job id string")
    if not _JOB_ID.fullmatch(job):
        raise ProtocolError(Code.BAD_FIELD, "field 'job': 1 to 128 of [A-Za-z0-9._:-]")
    return job


@dataclass
class BuildRequest:
    job: str
    batch: int
    count: int
    n_currencies: int
    layout: str
    n_bytes: int
    depth: int
    usernames: bytes
    balances: bytes
    as_json: bool = False
    currencies: list = None

    def body(self):
        body = {"job": self.job, "batch": self.batch, "count": self.count,
                "n_currencies": self.n_currencies, "layout": self.layout,
                "n_bytes": self.n_bytes, "depth": self.depth, "usernames": self.usernames,
                "balances": self.balances, "json": self.as_json}
        if self.currencies:
            body["currencies"] = list(self.currencies)
        return body


def check_build(body):
    """A BUILD body -> BuildRequest, every field checked; ProtocolError otherwise."""
    job = _job(body)
    batch = _field(body, "batch", int, "an integer batch index")
    count = _field(body, "count", int, "an integer entry count")
    n_currencies = _field(body, "n_currencies", int, "an integer currency count")
    layout = _field(body, "layout", str, "a layout name")
    n_bytes = _field(body, "n_bytes", int, "an integer N_BYTES")
    depth = _field(body, "depth", int, "an integer tree depth")
    usernames = _field(body, "usernames", bytes, "packed 32-byte username words")
    balances = _field(body, "balances", bytes, "packed 32-byte balance words")
    as_json = body.get("json", False)
    currencies = body.get("currencies")
    if batch < 0:
        raise ProtocolError(Code.BAD_FIELD, "field 'batch': must not be negative")
    if not 1 <= n_currencies <= MAX_CURRENCIES:
        raise ProtocolError(Code.BAD_FIELD, f"field 'n_currencies': 1 to {MAX_CURRENCIES}")
    if layout not in LAYOUTS:
        raise ProtocolError(Code.BAD_FIELD, f"field 'layout': one of {', '.join(LAYOUTS)}")
    if not 1 <= n_bytes <= 31:
        raise ProtocolError(Code.BAD_FIELD, "field 'n_bytes': 1 to 31")
    if not 0 <= depth <= MAX_DEPTH or not 1 <= count <= 1 << depth:
        raise ProtocolError(Code.BAD_FIELD, f"fields 'count' and 'depth': need 1 <= count <= "
                            f"2^depth and depth <= {MAX_DEPTH}, got {count} and {depth}")
    if len(usernames) != WORD * count:
        raise ProtocolError(Code.BAD_FIELD, f"field 'usernames': {len(usernames)} bytes, "
                            f"expected {WORD * count} for {count} entries")
    if len(balances) != WORD * count * n_currencies:
        if len(balances) % (WORD * count) == 0:
            raise ProtocolError(Code.CURRENCY_MISMATCH, f"field 'balances' holds "
                                f"{len(balances) // (WORD * count)} currencies per entry, "
                                f"n_currencies says {n_currencies}")
        raise ProtocolError(Code.BAD_FIELD, f"field 'balances': {len(balances)} bytes, expected "
                            f"{WORD * count * n_currencies} for {count} entries x {n_currencies}")
    if type(as_json) is not bool:
        raise ProtocolError(Code.BAD_FIELD, "field 'json': expected true or false")
    if currencies is not None and (not isinstance(currencies, list) or len(currencies) != n_currencies
                                   or not all(isinstance(c, str) for c in currencies)):
        raise ProtocolError(Code.CURRENCY_MISMATCH, f"field 'currencies': expected "
                            f"{n_currencies} names")
    return BuildRequest(job, batch, count, n_currencies, layout, n_bytes, depth, usernames,
                        balances, as_json, currencies)


def check_cancel(body):
    return _job(body)


def check_job(body):
    """The job id of a STATUS, CANCEL or PROOF request."""
    return _job(body)


@dataclass
class SubmitRequest:
    csvs: list
    executors: int
    spawner: str
    layout: str
    n_bytes: int
    batch_size: int = None    # None: one mini-tree per CSV

    def body(self):
        return {"csvs": list(self.csvs), "executors": self.executors, "spawner": self.spawner,
                "layout": self.layout, "n_bytes": self.n_bytes, "batch_size": self.batch_size}


def check_submit(body, spawners):
    csvs = body.get("csvs")
    if not isinstance(csvs, list) or not csvs or not all(isinstance(c, str) and c for c in csvs):
        raise ProtocolError(Code.BAD_FIELD, "field 'csvs': expected a non-empty list of paths")
    executors = _field(body, "executors", int, "an integer executor count")
    spawner = _field(body, "spawner", str, "a spawner name")
    layout = _field(body, "layout", str, "a layout name")
    n_bytes = _field(body, "n_bytes", int, "an integer N_BYTES")
    batch_size = body.get("batch_size")
    if not 1 <= executors <= 1024:
        raise ProtocolError(Code.BAD_FIELD, "field 'executors': 1 to 1024")
    if spawner not in spawners:
        raise ProtocolError(Code.BAD_FIELD, f"field 'spawner': {spawner!r} is not available "
                            f"here (available: {', '.join(spawners)})")
    if layout not in LAYOUTS:
        raise ProtocolError(Code.BAD_FIELD, f"field 'layout': one of {', '.join(LAYOUTS)}")
    if not 1 <= n_bytes <= 31:
        raise ProtocolError(Code.BAD_FIELD, "field 'n_bytes': 1 to 31")
    if batch_size is not None and (type(batch_size) is not int or batch_size < 1
                                   or batch_size & (batch_size - 1) or batch_size > 1 << MAX_DEPTH):
        raise ProtocolError(Code.BAD_FIELD, "field 'batch_size': a power of two, or nil")
    return SubmitRequest(csvs, executors, spawner, layout, n_bytes, batch_size)


def error_body(code, message, job=None, batch=None):
    body = {"code": int(code), "message": message}
    if job is not None:
        body["job"] = job
    if batch is not None:
        body["batch"] = batch
    return body
