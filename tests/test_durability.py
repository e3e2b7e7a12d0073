"""Renames that must survive a crash: each new name is fsynced in its directory, after the
rename (a job's record, summa-aggregate's --out, the daemon's result directory)."""
import os
import re

import pytest

from summa_aggregation.daemon import aggregate
from summa_aggregation.daemon.job import Job

pytestmark = pytest.mark.timeout(120)
FIXTURE = os.path.join(os.path.dirname(__file__), "data", "fixtures", "entry_16.csv")


@pytest.fixture
def fsynced(monkeypatch):
    """The directories fsynced from now on, each with whether `watch` existed at that moment."""
    seen, watch, honest = [], [], os.fsync

    def spy(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(path):
            seen.append((path, all(os.path.lexists(w) for w in watch)))
        return honest(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen, watch


def test_a_job_record_is_fsynced_in_its_directory_after_the_rename(tmp_path, fsynced):
    seen, watch = fsynced
    record = tmp_path / "jobs" / "j1.json"
    os.makedirs(record.parent)
    watch.append(str(record))
    Job("j1", None, record={"state": "queued"}).update(str(record.parent), state="running")
    assert (str(record.parent), True) in seen


def test_summa_aggregate_fsyncs_the_parent_of_out_after_the_rename(tmp_path, fsynced, capsys):
    seen, watch = fsynced
    out = tmp_path / "result"
    watch.append(str(out))
    assert aggregate.main([FIXTURE, "--out", str(out), "--workers", "1"]) == 0
    assert (str(tmp_path), True) in seen
    assert [name for name in os.listdir(tmp_path) if name != "result"] == []   # its work dir went too
    # where it was written: the README's name for it
    partial = re.compile(re.escape(str(tmp_path)) + r"/\.summa-aggregate-[^/]+/results/\.[0-9a-f-]+\.partial-[^/]+")
    assert any(partial.fullmatch(path) for path, _ in seen), seen
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert "`.summa-aggregate-XXXXXXXX/results/.JOB.partial-XXXXXXXX/`" in readme
    assert "`results/.JOB.partial-XXXXXXXX`" in readme
