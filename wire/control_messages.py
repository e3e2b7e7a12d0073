"""The daemon's control message set: SUBMIT's body, and the job id of the others.

As for BUILD, the wire reads types and shapes; the values' rules (layouts, N_BYTES, batch
sizes) are the tree library's, applied by the daemon (daemon/job.py).
"""
from dataclasses import dataclass

from .envelope import ProtocolError, field, job_id
from .protocol import MAX_EXECUTORS, Code


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


def read_submit(body, spawners):
    """A SUBMIT body -> SubmitRequest; `spawners` are the names this daemon offers."""
    csvs = body.get("csvs")
    if not isinstance(csvs, list) or not csvs or not all(isinstance(c, str) and c for c in csvs):
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
    return SubmitRequest(csvs, executors, spawner, layout, n_bytes, batch_size)


def check_job(body):
    """The job id of a STATUS, CANCEL or PROOF request."""
    return job_id(body)
