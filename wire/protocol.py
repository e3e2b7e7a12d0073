"""The protocol's constants: the header, both command sets, the error codes, the limits.

Every message is three frames, as in the ZeroMQ guide's Majordomo protocol (a ROUTER socket
puts the peer's identity frame in front):

    HEADER   b"SUMMA01": protocol name and version; anything else is refused
    COMMAND  one byte, below
    BODY     one msgpack map

Two message sets share the envelope (envelope.py): the worker's (worker_messages.py) and the
daemon's control socket (control_messages.py). Entries and nodes travel as packed binary,
never as lists of ints or hex strings. Nothing here knows what a tree is.
"""
import enum

HEADER = b"SUMMA01"

# the worker's set (daemon or any client -> summa-worker)
BUILD = b"\x01"    # build the mini-tree of a batch
RESULT = b"\x02"   # the mini-tree
ERROR = b"\x03"    # a code and a one-line message (the answer to anything, in both sets)
PING = b"\x04"     # either way: are you alive?
PONG = b"\x05"     # the answer, with the worker's load
CANCEL = b"\x06"   # stop job J (the daemon also publishes it, and takes it from clients)

# the daemon's control set (summa-submit or any client -> summa-daemon); answers are REPLY or ERROR
SUBMIT = b"\x10"   # a build job: csvs, executors, spawner, layout, n_bytes, batch_size
STATUS = b"\x11"   # one job's state and progress
PROOF = b"\x12"    # an inclusion proof from a finished job
LIST = b"\x13"     # the jobs the daemon knows, a page at a time (newest first)
SHUTDOWN = b"\x14" # stop the daemon gracefully
REPLY = b"\x15"    # the daemon's answer to any of the above
UPLOAD = b"\x16"   # begin sending a CSV to the daemon: its name and size; REPLY names the upload
CHUNK = b"\x17"    # the next bytes of an upload, at their offset (at most the chunk size it was given)
FINISH = b"\x18"   # the upload is whole: the SHA-256 of what was sent; REPLY once it is on disk
DELETE = b"\x19"   # remove a finished job: its record and its result directory

COMMAND_NAMES = {BUILD: "BUILD", RESULT: "RESULT", ERROR: "ERROR", PING: "PING", PONG: "PONG",
                 CANCEL: "CANCEL", SUBMIT: "SUBMIT", STATUS: "STATUS", PROOF: "PROOF",
                 LIST: "LIST", SHUTDOWN: "SHUTDOWN", REPLY: "REPLY", UPLOAD: "UPLOAD",
                 CHUNK: "CHUNK", FINISH: "FINISH", DELETE: "DELETE"}

CANCEL_TOPICS = b"cancel."   # what workers subscribe to; the only subscription the daemon keeps

DEFAULT_MAX_MESSAGE_BYTES = 1 << 30   # a 2^20-entry batch of 16 currencies is 544 MiB
MAX_EXECUTORS = 1024                  # what one SUBMIT may ask for


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
    NO_SUCH_UPLOAD = 13     # the daemon knows no upload by that id (or no longer: it was refused, expired or used)
    OVER_LIMIT = 14         # an upload beyond the daemon's limits (max_upload_mb, max_uploads, free disk)
    NOT_FINISHED = 15       # DELETE of a job that is queued or running: cancel it first


def cancel_topic(job):
    """The PUB/SUB topic on which the daemon announces that `job` is cancelled."""
    return CANCEL_TOPICS + job.encode()
