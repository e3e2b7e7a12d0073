"""Deleting finished jobs (`summa-submit delete`, keep_results, keep_days), crash-safe.

A job is its record (DATA_DIR/jobs/JOB.json) and, when done, its result directory
(DATA_DIR/results/JOB). delete_files() removes both in this order:

    1. rename results/JOB to results/.JOB.deleting-XXXXXXXX (the trash), fsync results/
    2. unlink jobs/JOB.json, fsync jobs/
    3. remove the trash (the Trash thread, in the background)

The rename is the point of no return: a trash directory says "this job is being deleted".
finish_deletions(), at every start before the records are read, finishes what a crash
interrupted: for every trash directory, it unlinks the job's record (fsynced) and then removes
the trash. So after a crash at any point the job is either listed with its whole result (the
crash came before 1 was durable) or not listed at all (after it); never listed without its
result, and never a half-removed directory under the result's own name. A failed or cancelled
job has no result: step 2 alone deletes it.
"""
import glob
import logging
import os
import queue
import secrets
import shutil
import threading

from ..mst.store_v1 import fsync_dir
from ..wire.envelope import _JOB_ID

log = logging.getLogger("summa.daemon")

DELETING = ".deleting-"        # results/.JOB.deleting-XXXXXXXX: a result being deleted


def _record(jobs_dir, job_id):
    return os.path.join(jobs_dir, f"{job_id}.json")


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def delete_files(jobs_dir, results_dir, job_ids, hook=None):
    """Delete these finished jobs' records and results (steps 1 and 2 above; every rename is
    made durable before any record goes). Returns (deleted ids, trash directories for the Trash
    thread, {job id: why it was not deleted}). hook(step), if given, is called after each step
    ("renamed", "unlinked"): the tests stop there, as a crash would."""
    trash, errors = {}, {}
    for job_id in job_ids:
        result = os.path.join(results_dir, job_id)
        if not os.path.lexists(result):
            trash[job_id] = None
            continue
        target = os.path.join(results_dir, f".{job_id}{DELETING}{secrets.token_hex(4)}")
        try:
            os.rename(result, target)
        except OSError as error:
            errors[job_id] = f"cannot rename {result}: {error.strerror}"
            continue
        trash[job_id] = target
    if any(trash.values()):
        fsync_dir(results_dir)
    if hook:
        hook("renamed")
    deleted = []
    for job_id, target in trash.items():
        try:
            _unlink(_record(jobs_dir, job_id))
        except OSError as error:
            if target is not None and not _put_back(target, os.path.join(results_dir, job_id)):
                # the trash stays: the next start finishes the deletion; hidden until then
                log.error("job %s: its result is in %s and its record could not be removed "
                          "(%s): the next start finishes deleting it", job_id, target, error.strerror)
                trash[job_id] = None
                deleted.append(job_id)
            else:
                errors[job_id] = f"cannot remove its record: {error.strerror}"
            continue
        _unlink(_record(jobs_dir, job_id) + ".tmp")
        deleted.append(job_id)
    if trash:
        fsync_dir(jobs_dir)
    if hook:
        hook("unlinked")
    return deleted, [trash[job_id] for job_id in deleted if trash[job_id]], errors


def _put_back(target, result):
    """Undo step 1 (the job stays, whole); False when that failed too."""
    try:
        os.rename(target, result)
        fsync_dir(os.path.dirname(result))
        return True
    except OSError:
        return False


def finish_deletions(jobs_dir, results_dir):
    """At start, before the records are read: every deletion a crash interrupted is finished
    (its record unlinked and fsynced). Returns (trash directories to remove, ids of jobs whose
    record could not be removed: the table must not list them)."""
    trashes, stuck, unlinked = [], set(), False
    for target in sorted(glob.glob(os.path.join(results_dir, f".*{DELETING}*"))):
        job_id = os.path.basename(target)[1:].rsplit(DELETING, 1)[0]
        if _JOB_ID.fullmatch(job_id) and not os.path.lexists(os.path.join(results_dir, job_id)):
            try:
                _unlink(_record(jobs_dir, job_id))
                unlinked = True
            except OSError as error:
                log.error("job %s: cannot finish deleting it (%s): its record stays, hidden, and "
                          "so does %s", job_id, error.strerror, target)
                stuck.add(job_id)
                continue
            log.info("job %s: finished deleting it (interrupted by a crash)", job_id)
        trashes.append(target)
    if unlinked:
        fsync_dir(jobs_dir)
    return trashes, stuck


class Trash(threading.Thread):
    """Removes trash directories one after another, so that a big result's files never hold up
    the control loop; what it has not removed when the daemon stops, the next start removes."""

    def __init__(self):
        super().__init__(name="trash", daemon=True)
        self.waiting = queue.Queue()
        self.removed = 0

    def put(self, target):
        if self.ident is None:
            self.start()
        self.waiting.put(target)

    def run(self):
        while True:
            target = self.waiting.get()
            if target is None:
                return
            shutil.rmtree(target, ignore_errors=True)
            self.removed += 1

    def stop(self, seconds=10):
        """Remove what waits, for at most `seconds`; what is left, the next start removes."""
        if self.ident is None:
            return
        self.waiting.put(None)
        self.join(seconds)
