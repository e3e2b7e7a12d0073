"""The daemon's control message set: SUBMIT's body, the job id of the others, LIST's page, and
the three messages of an upload.

As for BUILD, the wire reads types and shapes; the values' rules (layouts, N_BYTES, batch
sizes) are the tree library's, applied by the daemon (daemon/job.py).

An upload sends one CSV through the control socket, for a client with no file system in common
with the daemon:

    UPLOAD  name, size            -> REPLY upload (its id), chunk_bytes, window
    CHUNK   upload, offset, data  -> REPLY upload, received    (once the bytes are written)
    FINISH  upload, sha256        -> REPLY upload, size, sha256 (once the file is whole and synced)

Chunks go in order, each at most chunk_bytes, and at most `window` of them unanswered: the
client sends the next one only when the daemon has written the earlier ones. Then SUBMIT names
the uploads (`uploads`, instead of `csvs`).

LIST answers a page of jobs, newest first (by the time they were submitted, then by id):

    LIST    limit, since, after   -> REPLY jobs (records), next (a cursor, or nil: no more)

at most `limit` of them (default LIST_LIMIT), only those submitted at or after `since` (unix
seconds), and only those after the cursor `after` (a `next` of an earlier page): the next page
goes on where the last one stopped, whatever was submitted or deleted meanwhile.
"""
import math
import re
from dataclasses import dataclass

from .envelope import _JOB_ID, ProtocolError, field, job_id
from .protocol import MAX_EXECUTORS, Code

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAME_MAX_BYTES = 255           # a file name (NAME_MAX)
LIST_LIMIT = 100               # jobs of a LIST page unless it says
LIST_MAX = 1000                # at most (a reply's array holds at most 1024: envelope.parse)


@dataclass
class SubmitRequest:
    csvs: list
    executors: int
    spawner: str
    layout: str
    n_bytes: int
    batch_size: int = None    # None: one mini-tree per CSV
    uploads: list = None      # upload ids (UPLOAD ... FINISH) instead of csvs; None: csvs
    username_encoding: str = "bytes"   # SPEC section 7: "bytes" or "keccak256"
    sorted: bool = False               # SPEC section 7: one tree over the entries sorted by username

    def body(self):
        body = {"csvs": list(self.csvs), "executors": self.executors, "spawner": self.spawner,
                "layout": self.layout, "n_bytes": self.n_bytes, "batch_size": self.batch_size}
        if self.uploads is not None:
            body["uploads"] = list(self.uploads)
        # written only when not the default, so a request of an older client reads the same
        if self.username_encoding != "bytes":
            body["username_encoding"] = self.username_encoding
        if self.sorted:
            body["sorted"] = True
        return body


def read_submit(body, spawners):
    """A SUBMIT body -> SubmitRequest; `spawners` are the names this daemon offers. It names
    either paths (`csvs`) or finished uploads (`uploads`, and `csvs` empty or absent)."""
    csvs, uploads = body.get("csvs"), body.get("uploads")
    if uploads is not None:
        if not isinstance(uploads, list) or not uploads or not all(
                isinstance(u, str) and _UPLOAD_ID.fullmatch(u) for u in uploads):
            raise ProtocolError(Code.BAD_FIELD, "field 'uploads': expected a non-empty list of "
                                "upload ids (32 hex digits)")
        if len(set(uploads)) != len(uploads):
            raise ProtocolError(Code.BAD_FIELD, "field 'uploads': an upload is named twice")
        if csvs not in (None, []):
            raise ProtocolError(Code.BAD_FIELD, "fields 'csvs' and 'uploads': give one of them, "
                                "not both")
        csvs = []
    elif not isinstance(csvs, list) or not csvs or not all(isinstance(c, str) and c for c in csvs):
        raise ProtocolError(Code.BAD_FIELD, "field 'csvs': expected a non-empty list of paths")
    executors = field(body, "executors", int, "an integer executor count")
    spawner = field(body, "spawner", str, "a spawner name")
    layout = field(body, "layout", str, "a layout name")
    n_bytes = field(body, "n_bytes", int, "an integer N_BYTES")
    batch_size = body.get("batch_size")
    if not 1 <= executors <= MAX_EXECUTORS:
        raise ProtocolError(Code.BAD_FIELD, f"field 'executors': 1 to {MAX_EXECUTORS}")
    if spawner not in spawners:
        raise ProtocolError(Code.BAD_FIELD, f"field 'spawner': {spawner!r} is not available "
                            f"here (available: {', '.join(spawners)})")
    if batch_size is not None and type(batch_size) is not int:
        raise ProtocolError(Code.BAD_FIELD, "field 'batch_size': a power of two, or nil")
    encoding = body.get("username_encoding", "bytes")
    if not isinstance(encoding, str):
        raise ProtocolError(Code.BAD_FIELD, "field 'username_encoding': expected a name")
    is_sorted = body.get("sorted", False)
    if type(is_sorted) is not bool:
        raise ProtocolError(Code.BAD_FIELD, "field 'sorted': expected true or false")
    return SubmitRequest(csvs, executors, spawner, layout, n_bytes, batch_size, uploads, encoding,
                         is_sorted)


def check_job(body):
    """The job id of a STATUS, CANCEL, PROOF or DELETE request."""
    return job_id(body)


@dataclass
class ListRequest:
    limit: int = LIST_LIMIT
    since: float = None       # unix seconds: only jobs submitted at or after; None: all
    after: str = None         # a cursor (a LIST reply's `next`): the page goes on after it

    def body(self):
        body = {"limit": self.limit}
        if self.since is not None:
            body["since"] = self.since
        if self.after is not None:
            body["after"] = self.after
        return body


def list_cursor(submitted, job):
    """The cursor of a LIST page that stopped at this job: its sort key, (submitted, job)."""
    return f"{float(submitted)!r}/{job}"


def read_cursor(text):
    """A cursor -> (submitted, job), or ValueError."""
    submitted, sep, job = text.partition("/")
    value = float(submitted)
    if not sep or not math.isfinite(value) or not _JOB_ID.fullmatch(job):
        raise ValueError(text)
    return value, job


def read_list(body):
    """A LIST body -> ListRequest; every field may be absent or nil (an empty body is today's
    LIST: the newest LIST_LIMIT jobs)."""
    limit, since, after = body.get("limit"), body.get("since"), body.get("after")
    if limit is None:
        limit = LIST_LIMIT
    elif type(limit) is not int or not 1 <= limit <= LIST_MAX:
        raise ProtocolError(Code.BAD_FIELD, f"field 'limit': 1 to {LIST_MAX} jobs, or nil")
    if since is not None and (type(since) not in (int, float) or not math.isfinite(since)):
        raise ProtocolError(Code.BAD_FIELD, "field 'since': unix seconds (a number), or nil")
    if after is not None:
        try:
            if type(after) is not str:
                raise ValueError(after)
            read_cursor(after)
        except ValueError:
            raise ProtocolError(Code.BAD_FIELD, "field 'after': a cursor, as a LIST reply's "
                                "'next' gives it, or nil") from None
    return ListRequest(limit, None if since is None else float(since), after)


def check_upload(body):
    """The upload id of a CHUNK or FINISH request."""
    upload = field(body, "upload", str, "an upload id string")
    if not _UPLOAD_ID.fullmatch(upload):
        raise ProtocolError(Code.BAD_FIELD, "field 'upload': 32 hex digits (an id the daemon "
                            "gave in its answer to UPLOAD)")
    return upload


def name_problem(name):
    """Why `name` cannot be an uploaded file's name, or None: a plain file name only."""
    if "/" in name or name in (".", ".."):
        return "a file name, not a path (no '/', not '.' or '..')"
    if _CONTROL.search(name):
        return "a file name without control characters"
    if not name or name.startswith("."):
        return "a file name that does not start with '.'"
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        return f"a file name of at most {NAME_MAX_BYTES} bytes"
    return None


@dataclass
class UploadRequest:
    name: str     # the file's name, which its job's errors show; a plain name, no directory
    size: int     # the bytes the chunks will carry, in all

    def body(self):
        return {"name": self.name, "size": self.size}


def read_upload(body):
    """An UPLOAD body -> UploadRequest (the daemon's own limits come after)."""
    name = field(body, "name", str, "a file name")
    problem = name_problem(name)
    if problem:
        raise ProtocolError(Code.BAD_FIELD, f"field 'name': {name!r}: expected {problem}")
    size = field(body, "size", int, "an integer byte count")
    if size < 0:
        raise ProtocolError(Code.BAD_FIELD, "field 'size': a byte count, at least 0")
    return UploadRequest(name, size)


def read_chunk(body):
    """A CHUNK body -> (upload id, offset, data)."""
    upload = check_upload(body)
    offset = field(body, "offset", int, "an integer byte offset")
    data = field(body, "data", bytes, "binary data")
    if offset < 0:
        raise ProtocolError(Code.BAD_FIELD, "field 'offset': a byte offset, at least 0")
    return upload, offset, data


def read_finish(body):
    """A FINISH body -> (upload id, SHA-256 as 64 lowercase hex digits)."""
    upload = check_upload(body)
    digest = field(body, "sha256", str, "a SHA-256 in hex")
    if not _SHA256.fullmatch(digest):
        raise ProtocolError(Code.BAD_FIELD, "field 'sha256': 64 lowercase hex digits")
    return upload, digest
