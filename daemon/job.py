"""A job: its spec, checked by the tree library's rules, and its record, persisted as JSON at
every change of state (DATA_DIR/jobs/JOB.json), so that it survives the daemon."""
import json
import logging
import os
import threading
import time

from .. import wire
from ..mst.limits import check_n_bytes, check_power_of_two, check_username_encoding, layout_code
from ..mst.store_v1 import fsync_dir

log = logging.getLogger("summa.daemon")

QUEUED, LOADING, RUNNING, DONE, FAILED, CANCELLED = (
    "queued", "loading", "running", "done", "failed", "cancelled")
FINISHED = (DONE, FAILED, CANCELLED)


class JobEnded(Exception):
    """Ends a job early: state FAILED or CANCELLED, with a one-line reason."""

    def __init__(self, state, reason):
        super().__init__(reason)
        self.state, self.reason = state, reason


def check_submit(body, spawners):
    """A SUBMIT body -> SubmitRequest: the wire's types, then the values' rules."""
    spec = wire.read_submit(body, spawners)
    wire.rule(layout_code, spec.layout, "field 'layout'")
    wire.rule(check_n_bytes, spec.n_bytes, "field 'n_bytes'")
    if spec.batch_size is not None:
        wire.rule(check_power_of_two, spec.batch_size, "field 'batch_size'")
    wire.rule(check_username_encoding, spec.username_encoding, "field 'username_encoding'")
    return spec


class Job:
    def __init__(self, job_id, spec, record=None):
        self.id, self.spec = job_id, spec
        self.lock = threading.Lock()
        self.cancel_requested = threading.Event()
        self.committed = False     # its result is being published: no cancellation can win
        self.interrupted = False   # stopped by a daemon shutdown, to resume at the next start
        self.record = record or {
            "job": job_id, "state": QUEUED, "error": None, "root": None,
            "spec": spec.body(), "submitted": time.time(), "started": None, "loaded": None,
            "finished": None, "quarantined": [],
            "progress": {"batches_done": 0, "batches": None, "entries_done": 0, "entries": None,
                         "worker_seconds": 0.0, "retries": 0, "replacements": 0},
        }

    @property
    def attempt(self):
        return self.record.get("attempt", 1)

    @property
    def wire_id(self):
        """The job id workers see: each resumed attempt has its own, so that answers a worker
        still owed an earlier attempt are told apart (and dropped)."""
        return self.wire_id_of(self.attempt)

    def wire_id_of(self, attempt):
        return self.id if attempt <= 1 else f"{self.id}.{attempt}"

    @property
    def state(self):
        return self.record["state"]

    @property
    def progress(self):
        return self.record["progress"]

    def request_cancel(self):
        """Ask the job to stop; False when it is too late (its result is being published)."""
        with self.lock:
            if self.committed:
                return False
            self.cancel_requested.set()
            return True

    def commit(self):
        """The point of no return, just before the result's rename: JobEnded when a cancel
        came first; after it, request_cancel() says it is too late. One lock decides."""
        with self.lock:
            if self.cancel_requested.is_set():
                raise JobEnded(CANCELLED, "cancelled")
            self.committed = True

    def count(self, **increments):
        """Add to progress counters (in memory; the next state change persists them)."""
        with self.lock:
            progress = self.record["progress"]
            for name, step in increments.items():
                progress[name] = progress.get(name, 0) + step

    def update(self, jobs_dir, **changes):
        """Change the record and persist it atomically (temp file, fsync, rename)."""
        with self.lock:
            progress = changes.pop("progress", None)
            self.record.update(changes)
            if progress:
                self.record["progress"].update(progress)
            if changes.get("state") in FINISHED:
                self.record["finished"] = time.time()
            snapshot = json.dumps(self.record, indent=1)
        if jobs_dir:
            path = os.path.join(jobs_dir, f"{self.id}.json")
            try:
                with open(path + ".tmp", "w", encoding="utf-8") as handle:
                    handle.write(snapshot)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(path + ".tmp", path)
                fsync_dir(jobs_dir)        # the rename itself must survive a crash
            except OSError as error:
                # the record stays right in memory; on disk the last good one stays whole
                log.error("job %s: cannot write its record %s: %s", self.id, path, error.strerror)
                try:
                    os.unlink(path + ".tmp")
                except OSError:
                    pass

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.record))
