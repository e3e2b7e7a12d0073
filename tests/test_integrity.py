"""The daemon checks every mini-tree a worker returns; a lying worker is quarantined."""
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from summa_aggregation.mst.csv_reader import EntryBatch
from summa_aggregation.mst.tree import MerkleSumTree
from summa_aggregation.daemon.integrity import IntegrityError, check_minitree

from daemon_helpers import FINISHED, DaemonProcess, job_id_of, run_job, single_tree_root, write_csv
from worker_helpers import random_batch, read_line, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD = 32 * 3          # two currencies


def batch_and_tree(count=37, depth=6, layout="interleaved", seed=1):
    usernames, balances = random_batch(count, 2, seed=seed)
    batch = EntryBatch("b", ["balance_A_B", "balance_C_D"], count, bytearray(usernames), bytearray(balances))
    tree = MerkleSumTree.build(usernames, balances, count, 2, layout=layout, depth=depth)
    return batch, bytearray(tree.levels.nodes)


@pytest.mark.parametrize("layout", ["interleaved", "sum-first"])
def test_an_honest_minitree_passes_sampled_and_full_checks(layout):
    batch, nodes = batch_and_tree(layout=layout)
    check_minitree(bytes(nodes), batch, 6, layout, sample=8)
    check_minitree(bytes(nodes), batch, 6, layout, sample=64)   # every leaf, padding too
    check_minitree(bytes(nodes), batch, 6, layout, full=True)


@pytest.mark.parametrize("where,what", [
    (-RECORD, "root hash"), (-RECORD + 32, "root balance"),
    (-3 * RECORD, "left child of the root"), (-2 * RECORD + 40, "right child's balance")])
def test_sampling_always_catches_the_root_and_its_children(where, what):
    batch, nodes = batch_and_tree()
    nodes[len(nodes) + where] ^= 1
    for seed in range(20):
        with pytest.raises(IntegrityError):
            check_minitree(bytes(nodes), batch, 6, "interleaved", sample=1, rng=random.Random(seed))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_full_mode_catches_any_single_flipped_bit(data):
    batch, nodes = batch_and_tree(count=13, depth=4)
    position = data.draw(st.integers(0, len(nodes) - 1))
    nodes[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(IntegrityError):
        check_minitree(bytes(nodes), batch, 4, "interleaved", full=True)


def test_sampling_every_leaf_catches_a_flipped_leaf():
    batch, nodes = batch_and_tree()
    nodes[20 * RECORD + 33] ^= 4                      # leaf 20's first balance
    with pytest.raises(IntegrityError, match="leaf 20|node 10 of level 1"):
        check_minitree(bytes(nodes), batch, 6, "interleaved", sample=batch.count)


# ---- end to end: a real daemon, a real honest worker and a real lying one ----------------------

class FaultyWorker:
    def __init__(self, fault):
        self.process = subprocess.Popen([sys.executable, os.path.join(HERE, "faulty_worker.py"),
                                         "--bind", "tcp://127.0.0.1:*", "--insecure"],
                                        stdout=subprocess.PIPE,
                                        text=True, env={**os.environ, "SUMMA_FAULT": fault})
        self.endpoint = read_line(self.process.stdout, 30).split("listening on ")[1].split()[0]

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        self.process.stdout.close()


@pytest.fixture
def honest(worker_process):
    return worker_process.endpoint


@pytest.mark.parametrize("fault", ["root-hash", "root-balance", "top-child"])
def test_a_lying_worker_is_quarantined_and_the_root_is_right(tmp_path, honest, fault):
    entries = write_csv(tmp_path / "e.csv", 512, n_currencies=2, seed=8)
    liar = FaultyWorker(fault)
    try:
        record = run_job(tmp_path, [liar.endpoint, honest], tmp_path / "e.csv")
    finally:
        liar.stop()
    assert record["state"] == "done", record
    assert record["root"] == single_tree_root(entries)
    assert record["quarantined"] == [f"{liar.endpoint}"]


def test_only_liars_fail_the_job_with_an_integrity_error(tmp_path):
    write_csv(tmp_path / "e.csv", 256, seed=9)
    liar = FaultyWorker("root-balance")
    try:
        record = run_job(tmp_path, [liar.endpoint], tmp_path / "e.csv")
    finally:
        liar.stop()
    assert record["state"] == "failed"
    assert "integrity error" in record["error"] or "quarantined" in record["error"], record["error"]


def test_full_mode_catches_a_lie_about_one_leaf(tmp_path, honest):
    entries = write_csv(tmp_path / "e.csv", 512, n_currencies=2, seed=10)
    liar = FaultyWorker("leaf-balance")
    try:
        record = run_job(tmp_path, [liar.endpoint, honest], tmp_path / "e.csv", verify_full=True)
    finally:
        liar.stop()
    assert record["state"] == "done" and record["root"] == single_tree_root(entries)
    assert record["quarantined"] == [liar.endpoint]


def test_a_balance_wider_than_n_bytes_is_refused_even_unsampled(tmp_path, honest):
    """The store keeps balances at N_BYTES: a returned node with a wider one is a lie (every sum
    under a checked root fits), refused when it is narrowed, never cut down silently."""
    entries = write_csv(tmp_path / "e.csv", 512, seed=13)
    liar = FaultyWorker("wide-balance")
    try:
        record = run_job(tmp_path, [liar.endpoint, honest], tmp_path / "e.csv", verify_leaves=0)
    finally:
        liar.stop()
    assert record["state"] == "done" and record["root"] == single_tree_root(entries), record
    assert record["quarantined"] == [liar.endpoint]


def test_a_batch_the_worker_no_longer_holds_is_sent_again(tmp_path, caplog):
    """PONGs alone do not keep a batch waiting: a worker that lost it says so, and gets it again."""
    entries = write_csv(tmp_path / "e.csv", 256, seed=11)
    forgetful = FaultyWorker("forget-first")
    try:
        record = run_job(tmp_path, [forgetful.endpoint], tmp_path / "e.csv")
    finally:
        forgetful.stop()
    assert record["state"] == "done" and record["root"] == single_tree_root(entries), record
    assert "no longer holds it" in caplog.text


@pytest.mark.timeout(240)
def test_full_checks_longer_than_the_liveness_window_kill_no_healthy_worker(tmp_path):
    """verify_full rebuilds each 2^17-entry mini-tree in the daemon, for longer than the 0.6 s
    liveness window (0.2 s x 3). The checks run off the heartbeat path, so the busy, answering
    workers are never taken for dead: 2 workers for 2 executors, and no batch retried. (Before
    the checker thread, this job started 5 workers.)"""
    paths, entries = [], []
    for i in range(4):
        paths.append(tmp_path / f"part{i}.csv")
        entries += write_csv(paths[-1], 1 << 17, seed=40 + i, prefix=f"p{i}-")
    daemon = DaemonProcess(tmp_path, {"verify_full": True})
    job = job_id_of(daemon.submit("build", *paths, "--executors", "2").stdout)
    seen = set()

    def finished():
        seen.update(daemon.worker_pids())
        record = daemon.status(job)
        return record if record["state"] in FINISHED else None

    record = wait_until(finished, seconds=200, interval=0.02)
    assert record["state"] == "done", record
    assert record["root"] == single_tree_root(entries)     # 4 full mini-trees: one big tree
    assert "stopped answering" not in daemon.log()
    assert len(seen) == 2, seen
    assert record["progress"]["retries"] == 0, daemon.log()
    assert record["progress"]["replacements"] == 0, daemon.log()


def test_a_worker_whose_heartbeats_are_too_big_does_no_harm(tmp_path, honest):
    """The heartbeat connection takes messages of 64 KiB at most: libzmq drops a worker's
    connection when it answers PINGs with 1 MiB; the job goes on, and its root is right."""
    entries = write_csv(tmp_path / "e.csv", 512, seed=12)
    fat = FaultyWorker("fat-pong")
    try:
        record = run_job(tmp_path, [fat.endpoint, honest], tmp_path / "e.csv")
    finally:
        fat.stop()
    assert record["state"] == "done" and record["root"] == single_tree_root(entries), record
