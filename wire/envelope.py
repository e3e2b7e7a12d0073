"""The one serialize/deserialize pair of the envelope, and the readers of a body's fields.

frames() and parse() are the only places a message is packed or unpacked; the message sets
(worker_messages.py, control_messages.py) only read fields from a parsed body.
"""
import re

import msgpack

from .protocol import COMMAND_NAMES, DEFAULT_MAX_MESSAGE_BYTES, HEADER, Code

_JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class ProtocolError(Exception):
    """A message that cannot be accepted; carries the ERROR code to answer with."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = Code(code), message


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


def error_body(code, message, job=None, batch=None):
    body = {"code": int(code), "message": message}
    if job is not None:
        body["job"] = job
    if batch is not None:
        body["batch"] = batch
    return body


def field(body, name, kind, what):
    value = body.get(name)
    if type(value) is not kind:
        raise ProtocolError(Code.BAD_FIELD, f"field {name!r}: expected {what}")
    return value


def job_id(body):
    job = field(body, "job", str, "a job id string")
    if not _JOB_ID.fullmatch(job):
        raise ProtocolError(Code.BAD_FIELD, "field 'job': 1 to 128 of [A-Za-z0-9._:-]")
    return job


def rule(check, *args, code=Code.BAD_FIELD, **kwargs):
    """check(*args): a rule of the user's domain (the tree library's limits, say), whose
    ValueError becomes a ProtocolError with the same words."""
    try:
        return check(*args, **kwargs)
    except ValueError as error:
        raise ProtocolError(code, str(error)) from None
