"""The kernel's cancellation flag and progress counter (_kernel.Control)."""
import os
import random
import threading
import time

import pytest

from summa_aggregation.cython_ext import _kernel
from summa_aggregation.mst.tree import AggregationMerkleSumTree, MerkleSumTree

BIG = 1 << 16


def packed(count, n_currencies=1, seed=0):
    """Random packed words: 31-byte usernames (always below p), balances below 2^32."""
    rng = random.Random(seed)
    usernames = b"".join(rng.randbytes(31) + b"\0" for _ in range(count))
    balances = b"".join(rng.randbytes(4) + bytes(28) for _ in range(count * n_currencies))
    return usernames, balances


@pytest.fixture(scope="module")
def big_input():
    return packed(BIG)


def test_cancel_a_running_build(big_input, kernel_backend):
    usernames, balances = big_input
    total = 2 * BIG - 1
    control = _kernel.Control()
    outcome = {}

    def build():
        try:
            outcome["tree"] = MerkleSumTree.build(usernames, balances, BIG, 1, control=control)
        except BaseException as error:  # noqa: recorded for the main thread to check
            outcome["error"] = error

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while control.done == 0 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.0005)  # polling the progress counter, not waiting for a guess
    started = control.done
    assert started > 0, "the build never reported progress"
    control.cancel()
    assert control.cancelled
    thread.join(timeout=30)
    assert not thread.is_alive(), "the build did not stop after cancel()"
    assert "tree" not in outcome
    assert isinstance(outcome.get("error"), _kernel.Cancelled), outcome
    stopped = control.done
    assert started <= stopped < total // 2, (started, stopped, total)
    assert control.done == stopped  # nothing runs after the exception


def test_cancelled_before_the_call(kernel_backend):
    usernames, balances = packed(256, 2)
    control = _kernel.Control()
    control.cancel()
    with pytest.raises(_kernel.Cancelled):
        MerkleSumTree.build(usernames, balances, 256, 2, control=control)
    assert control.done == 0
    out = bytearray(32 * 3 * 256)
    with pytest.raises(_kernel.Cancelled):
        _kernel.hash_leaves(usernames, balances, 256, 2, out, control)
    with pytest.raises(_kernel.Cancelled):
        _kernel.hash_level(bytes(out), 128, 2, 0, bytearray(32 * 3 * 128), control)
    assert control.done == 0 and out == bytearray(len(out))


def test_cancelled_aggregation():
    minis = [MerkleSumTree.from_entries([(f"u{i}", [i])]) for i in range(3)]
    control = _kernel.Control()
    control.cancel()
    with pytest.raises(_kernel.Cancelled):
        AggregationMerkleSumTree(minis, control=control)


def test_control_defaults():
    control = _kernel.Control()
    assert control.done == 0 and not control.cancelled


@pytest.mark.parametrize("count, n_currencies, layout", [
    (64, 1, "interleaved"), (64, 3, "sum-first"), (1, 2, "interleaved"), (2, 1, "sum-first"),
    (37, 2, "interleaved"), (1000, 1, "sum-first"),
])
def test_done_counts_hashed_nodes(count, n_currencies, layout, kernel_backend):
    usernames, balances = packed(count, n_currencies, seed=count)
    control = _kernel.Control()
    tree = MerkleSumTree.build(usernames, balances, count, n_currencies, layout=layout, control=control)
    plain = MerkleSumTree.build(usernames, balances, count, n_currencies, layout=layout)
    assert tree.root == plain.root
    d = tree.depth
    # the entries' leaves and every internal node; padding leaves are copies of a cached zero leaf
    assert control.done == count + (2 ** d - 1)
    if count == 2 ** d:
        assert control.done == 2 ** (d + 1) - 1  # every node of a full tree
    assert not control.cancelled


def test_done_accumulates_across_builds():
    usernames, balances = packed(16)
    control = _kernel.Control()
    MerkleSumTree.build(usernames, balances, 16, 1, control=control)
    MerkleSumTree.build(usernames, balances, 16, 1, control=control)
    assert control.done == 2 * 31


# ---- a cancel and the result's publication: one of them wins, and the answer says which ----

from daemon_helpers import FINISHED, daemon_in_process, wait_until, write_csv   # noqa: E402
from summa_aggregation.daemon.client import DaemonClient                         # noqa: E402
from summa_aggregation.daemon.job import CANCELLED, Job, JobEnded               # noqa: E402
from summa_aggregation.mst import store_writer                                   # noqa: E402
from summa_aggregation.wire import SubmitRequest                                 # noqa: E402


def test_cancel_and_commit_exclude_each_other():
    first = Job("a", None, record={"state": "running"})
    assert first.request_cancel()
    with pytest.raises(JobEnded) as ended:
        first.commit()
    assert ended.value.state == CANCELLED
    second = Job("b", None, record={"state": "running"})
    second.commit()
    assert not second.request_cancel() and not second.cancel_requested.is_set()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("when", ["during the final write", "after the commit"])
def test_a_cancel_during_the_final_write_wins_or_is_refused(tmp_path, monkeypatch, when):
    """The client that cancels while the result is being written learns the truth: either the
    job ends cancelled with no result directory, or the answer says it is too late and it ends
    done. (The old daemon answered "cancelling" and then published.)"""
    write_csv(tmp_path / "e.csv", 300, seed=5)
    answers, honest_fsync, honest_commit = [], store_writer.fsync_dir, Job.commit
    with daemon_in_process(tmp_path / "data") as (daemon, client):
        def cancel_now():
            with DaemonClient(daemon.control_endpoint, timeout=30) as other:   # as a user would
                answers.append(other.cancel(job))

        def fsync_then_cancel(path):          # the final write: every file is written, fsynced
            honest_fsync(path)
            if when == "during the final write" and not answers:
                cancel_now()

        def commit_then_cancel(self):
            honest_commit(self)
            if when == "after the commit":
                cancel_now()

        monkeypatch.setattr(store_writer, "fsync_dir", fsync_then_cancel)
        monkeypatch.setattr(Job, "commit", commit_then_cancel)
        job = client.submit(SubmitRequest([str(tmp_path / "e.csv")], 2, "mock", "interleaved", 14, 64))
        record = wait_until(lambda: (lambda r: r if r["state"] in FINISHED else None)(client.status(job)),
                            seconds=60, interval=0.02)
    results = os.path.join(tmp_path / "data", "results")
    if when == "during the final write":
        assert answers == [{"job": job, "state": "cancelling"}]
        assert record["state"] == "cancelled" and record["root"] is None
        assert not os.path.exists(os.path.join(results, job))
        assert not [name for name in os.listdir(results) if job in name]   # no partial either
    else:
        assert answers == [{"job": job, "state": "running",
                            "cancel": "too late: its result is being published"}]
        assert record["state"] == "done" and os.path.isdir(os.path.join(results, job))
