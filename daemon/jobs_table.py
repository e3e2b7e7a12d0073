"""The daemon's job table: the unfinished jobs in memory, the finished ones on disk.

A queued, loading or running job is a Job (job.py) here, its record in memory, as it changes.
Once it is finished (done, failed, cancelled) its record does not change any more: the table
keeps only a small index entry of it (Finished: id, state, submitted, finished) and reads its
record from DATA_DIR/jobs/JOB.json when STATUS or LIST asks for it. So the daemon's memory does
not grow with the jobs it has run (tests/test_retention.py measures it).

    table[job_id] = job    add a job (an unfinished one stays a Job, a finished one is indexed)
    table[job_id]          the Job of an unfinished job (KeyError for a finished one)
    table.get(job_id)      its Job or Finished entry (both have .id and .state), or None
    table.settle(job_id)   a Job that has just finished becomes an index entry
    table.forget(job_id)   a deleted job goes
    table.record(entry)    the job's record, as STATUS answers it
    table.page(...)        a LIST page, newest first

Only the control loop changes the table. The proof server's thread reads it (get()) at the same
time: each change is a single dict operation, and settle() indexes a job before it drops the
Job, so a reader always finds a job that is there.
"""
import bisect
import json
import os

from .. import wire
from ..wire import Code, ProtocolError
from .job import FINISHED


class Finished:
    """The index entry of a finished job: what LIST's order, retention and PROOF's check need."""
    __slots__ = ("id", "state", "submitted", "finished")

    def __init__(self, job_id, state, submitted, finished):
        self.id, self.state, self.submitted, self.finished = job_id, state, submitted, finished

    @property
    def age_key(self):
        """Oldest finished first (a record without a finish time: when it was submitted)."""
        return (self.finished if self.finished is not None else self.submitted, self.id)


def _key(record, job_id):
    submitted = record.get("submitted")
    return (float(submitted) if isinstance(submitted, (int, float)) else 0.0, job_id)


class JobTable:
    def __init__(self, jobs_dir):
        self.jobs_dir = jobs_dir
        self._unfinished = {}        # job id -> Job, in the order they came
        self.finished_index = {}     # job id -> Finished
        self._order = []             # (submitted, job id) of every job, sorted: LIST's order

    # ---- the unfinished jobs, as a dict ----

    def __getitem__(self, job_id):
        job = self._unfinished.get(job_id)
        if job is None:
            if job_id in self.finished_index:
                raise KeyError(f"job {job_id} is finished: its record is on disk (JobTable.get, .record)")
            raise KeyError(job_id)
        return job

    def __setitem__(self, job_id, job):
        assert job_id == job.id, (job_id, job.id)
        self.add(job)

    def __contains__(self, job_id):
        return job_id in self._unfinished or job_id in self.finished_index

    def __len__(self):
        return len(self._unfinished) + len(self.finished_index)

    def unfinished(self):
        return list(self._unfinished.values())

    # ---- changes (the control loop's) ----

    def add(self, job):
        """A new job, or one reloaded at start: a Job while unfinished, else its index entry."""
        if job.id in self:
            self.forget(job.id)
        key = _key(job.record, job.id)
        if not self._order or self._order[-1] < key:
            self._order.append(key)          # the usual case: the newest so far
        else:
            bisect.insort(self._order, key)
        if job.state in FINISHED:
            self.finished_index[job.id] = self._entry(job, key)
        else:
            self._unfinished[job.id] = job

    def settle(self, job_id):
        """A Job that has finished becomes an index entry (its record is on disk: Job.update
        wrote it); True when it did."""
        job = self._unfinished.get(job_id)
        if job is None or job.state not in FINISHED:
            return False
        self.finished_index[job_id] = self._entry(job, _key(job.record, job_id))   # first: a reader never misses it
        del self._unfinished[job_id]
        return True

    def forget(self, job_id):
        """The job is gone (deleted): neither its Job nor its index entry stays."""
        job, entry = self._unfinished.pop(job_id, None), self.finished_index.pop(job_id, None)
        if job is None and entry is None:
            return
        key = (entry.submitted, entry.id) if entry is not None else _key(job.record, job_id)
        at = bisect.bisect_left(self._order, key)
        if at < len(self._order) and self._order[at] == key:
            del self._order[at]

    @staticmethod
    def _entry(job, key):
        finished = job.record.get("finished")
        state = FINISHED[FINISHED.index(job.state)]      # the constant, not the record's copy
        return Finished(key[1], state, key[0],           # the key's own objects: no copies
                        float(finished) if isinstance(finished, (int, float)) else None)

    # ---- reading ----

    def get(self, job_id):
        """The Job of an unfinished job, the Finished entry of a finished one, or None."""
        job = self._unfinished.get(job_id)
        return job if job is not None else self.finished_index.get(job_id)

    def record(self, entry):
        """The record of a job (a Job or Finished from get()): a finished one's from disk."""
        if not isinstance(entry, Finished):
            return entry.snapshot()
        path = os.path.join(self.jobs_dir, f"{entry.id}.json")
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
            if not isinstance(record, dict) or record.get("job") != entry.id:
                raise ValueError("not this job's record")
            return record
        except (OSError, ValueError) as error:
            raise ProtocolError(Code.INTERNAL, f"job {entry.id}: cannot read its record {path}: "
                                f"{getattr(error, 'strerror', None) or error}") from None

    def page(self, limit, since=None, after=None):
        """(records, next cursor or None): up to `limit` jobs, newest first, submitted at or
        after `since`, and before the cursor `after` (a `next` from an earlier page)."""
        order = self._order
        end = len(order) if after is None else bisect.bisect_left(order, wire.read_cursor(after))
        start = 0 if since is None else bisect.bisect_left(order, (since, ""))
        first = max(start, end - limit)
        keys = order[first:end][::-1]
        records = []
        for key in keys:
            entry = self.get(key[1])
            if entry is None:                    # (never: every key has its job)
                continue
            try:
                records.append(self.record(entry))
            except ProtocolError as error:       # listed all the same, saying why it is bare
                records.append({"job": entry.id, "state": entry.state, "submitted": entry.submitted,
                                "finished": entry.finished, "error": error.message, "progress": {}})
        return records, (wire.list_cursor(*keys[-1]) if keys and first > start else None)

    def expired(self, keep_results, keep_days, now):
        """The finished jobs retention deletes, oldest finished first: those beyond the newest
        keep_results (0: no limit), and those finished more than keep_days ago (0: none)."""
        if not keep_results and not keep_days:
            return []
        entries = sorted(self.finished_index.values(), key=lambda e: e.age_key)
        over = max(0, len(entries) - keep_results) if keep_results else 0
        if keep_days:
            cutoff = now - keep_days * 86400
            while over < len(entries) and entries[over].age_key[0] < cutoff:
                over += 1
        return [entry.id for entry in entries[:over]]
