"""The daemon checks every mini-tree a worker returns; a lying worker is quarantined."""
import json
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from summa_aggregation.cython_ext import _kernel, _records
from summa_aggregation.mst.csv_job import EntryBatch
from summa_aggregation.mst.limits import layout_code
from summa_aggregation.mst.tree import Levels, MerkleSumTree, zero_root
from summa_aggregation.daemon import integrity
from summa_aggregation.daemon.client import DaemonError
from summa_aggregation.daemon.integrity import IntegrityError, check_minitree
from summa_aggregation.wire import BuildRequest, Code

import faulty_worker
from daemon_helpers import (BIN, FINISHED, DaemonProcess, daemon_in_process, job_id_of, run_job,
                            single_tree_root, write_csv)
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


def lied_tree(fault, count=37, depth=6, layout="interleaved"):
    """The batch, and the mini-tree a faulty_worker with SUMMA_FAULT=fault returns for it: the
    honest build of the batch as that fault changed it."""
    batch, _ = batch_and_tree(count, depth, layout)
    request = BuildRequest("job", 0, count, 2, layout, 14, depth, bytes(batch.usernames),
                           bytes(batch.balances))
    lie = faulty_worker.changed_request(request, fault)
    tree = MerkleSumTree.build(lie.usernames, lie.balances, count, 2, layout=layout, depth=depth)
    return batch, bytes(tree.levels.nodes)


def consistent(nodes, batch, depth, layout):
    """Whether a tree's every node is the hash of its children and its totals are the batch's."""
    levels = Levels(nodes, depth, 2)
    rebuilt = Levels.allocate(depth, 2)
    rebuilt.nodes[:levels.offset(1)] = nodes[:levels.offset(1)]
    rebuilt.hash_up(layout)
    honest = MerkleSumTree.build(batch.usernames, batch.balances, batch.count, 2, layout=layout,
                                 depth=depth)
    return bytes(rebuilt.nodes) == nodes and levels.root.balances == honest.root.balances


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layout", ["interleaved", "sum-first"])
@pytest.mark.parametrize("fault", ["move-balance", "swap-entries"])
def test_a_consistent_tree_of_moved_balances_is_refused_by_the_leaf_compare_alone(fault, layout):
    """The lie of the review: balances moved between two users (or two entries swapped), every
    hash above recomputed. Totals and hashes agree, so only the leaves' balances tell; the
    byte compare of every leaf finds it with no leaf sampled, and names the leaf and column."""
    batch, nodes = lied_tree(fault, layout=layout)
    assert consistent(nodes, batch, 6, layout)
    levels = Levels(nodes, 6, 2)
    integrity._check_paths(levels, range(64), layout)     # every hash path agrees
    with pytest.raises(IntegrityError, match=r"^leaf 0: its balance in currency column 0 "
                                             r"\(balance_A_B\) is not entry 0's of the batch$"):
        check_minitree(nodes, batch, 6, layout, sample=0)
    with pytest.raises(IntegrityError, match="^leaf 0: "):
        check_minitree(nodes, batch, 6, layout, full=True)


@pytest.mark.timeout(60)
def test_the_leaf_compare_names_the_currency_column():
    batch, nodes = batch_and_tree()
    nodes[30 * RECORD + 64 + 3] ^= 0x10                  # leaf 30's second balance
    with pytest.raises(IntegrityError, match=r"^leaf 30: its balance in currency column 1 "
                                             r"\(balance_C_D\)"):
        check_minitree(bytes(nodes), batch, 6, "interleaved", sample=0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("offset,what", [(0, "hash"),
                                         (32 + 5, r"balance in currency column 0 \(balance_A_B\)")],
                         ids=["hash", "balance"])
def test_a_padding_leaf_must_be_the_padding_record(offset, what):
    batch, nodes = batch_and_tree()                      # 37 entries: leaves 37..63 are padding
    nodes[50 * RECORD + offset] ^= 1
    with pytest.raises(IntegrityError, match=f"^leaf 50 is a padding leaf, but its {what} is not"):
        check_minitree(bytes(nodes), batch, 6, "interleaved", sample=0)


@pytest.mark.timeout(60)
def test_first_bad_leaf_refuses_buffers_that_do_not_match_the_counts():
    batch, nodes = batch_and_tree()
    padding = zero_root(0, 2, "interleaved")
    assert _records.first_bad_leaf(bytes(nodes), batch.balances, 37, 2, 6, padding) == -1
    assert _records.first_bad_leaf(bytes(nodes), batch.balances, 36, 2, 6, padding) == 36
    for args in [(bytes(nodes)[:-1], batch.balances, 37, 2, 7, padding),
                 (bytes(nodes), batch.balances[:-1], 37, 2, 6, padding),
                 (bytes(nodes), batch.balances, 65, 2, 6, padding),
                 (bytes(nodes), batch.balances, 37, 2, 6, padding[:-1])]:
        with pytest.raises(_records.RecordError):
            _records.first_bad_leaf(*args)


def rehash_above(nodes, depth, level, layout):
    """Recompute every hash above `level` from the nodes as they are (a consistent liar)."""
    levels = Levels(nodes, depth, 2)
    view = memoryview(levels.nodes)
    for up in range(level + 1, depth + 1):
        count = 1 << (depth - up)
        _kernel.hash_level(view[levels.offset(up - 1):levels.offset(up)], count, 2,
                           layout_code(layout), view[levels.offset(up):levels.offset(up) + count * RECORD])
    return nodes


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layout", ["interleaved", "sum-first"])
def test_balances_moved_between_middle_nodes_are_refused_by_the_sum_check_alone(layout):
    """Every leaf as sent, the totals right, every hash recomputed above the two changed nodes
    of level 2: only their sums tell, and the check finds them with no leaf sampled."""
    batch, nodes = batch_and_tree(count=64, layout=layout)
    levels = Levels(nodes, 6, 2)
    for index, step in ((1, 5), (9, -5)):                 # under different parents
        start = levels.offset(2) + index * RECORD + 32
        nodes[start:start + 32] = (int.from_bytes(nodes[start:start + 32], "little") + step).to_bytes(32, "little")
    rehash_above(nodes, 6, 2, layout)
    assert Levels(nodes, 6, 2).root.balances == Levels(batch_and_tree(count=64, layout=layout)[1], 6, 2).root.balances
    with pytest.raises(IntegrityError, match=r"^node 1 of level 2: its balances are not the sums "
                                             r"of its two children's$"):
        check_minitree(bytes(nodes), batch, 6, layout, sample=0)


@pytest.mark.timeout(60)
def test_the_sum_check_carries_across_every_limb_and_refuses_a_carry_out():
    count, top = 64, (1 << 240) - 1                       # sums carry through all four limbs
    balances = b"".join(((top >> (i % 7)) if i % 2 else (1 << 64) - 1 - i).to_bytes(32, "little")
                        for i in range(count * 2))
    usernames = b"".join((i + 1).to_bytes(32, "little") for i in range(count))
    tree = MerkleSumTree.build(usernames, balances, count, 2, depth=6, n_bytes=31)
    nodes = bytearray(tree.levels.nodes)
    assert _records.first_bad_sum(bytes(nodes), 2, 6) == -1
    root = len(nodes) - RECORD
    nodes[root + 32:root + 64] = b"\xff" * 32            # 2^256 - 1: only a wrapped sum could be it
    assert _records.first_bad_sum(bytes(nodes), 2, 6) == 126
    with pytest.raises(_records.RecordError):
        _records.first_bad_sum(bytes(nodes)[:-1], 2, 6)


@pytest.mark.timeout(60)
def test_swapped_usernames_pass_the_leaf_compare_and_are_caught_by_sampling_them():
    """A leaf record holds no username: only its hash does. Swapped usernames (balances in
    place, every hash recomputed) pass the byte compare and the totals, and are caught when a
    sampled leaf is one of the two."""
    batch, nodes = lied_tree("swap-usernames")
    assert consistent(nodes, batch, 6, "interleaved")
    check_minitree(nodes, batch, 6, "interleaved", sample=0)            # not guaranteed
    with pytest.raises(IntegrityError, match=r"^leaf (0|36) does not match entry \1 of the batch"):
        check_minitree(nodes, batch, 6, "interleaved", sample=batch.count)
    with pytest.raises(IntegrityError, match="differs from the one rebuilt"):
        check_minitree(nodes, batch, 6, "interleaved", full=True)


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


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["move-balance", "swap-entries"])
def test_a_worker_that_moves_balances_consistently_cannot_change_the_root(tmp_path, honest, fault,
                                                                          caplog):
    """The review's liar, with no leaf sampled: the byte compare of every leaf refuses its
    units, it is quarantined, they are built again by the honest worker, and the root is the
    reference's."""
    entries = write_csv(tmp_path / "e.csv", 512, n_currencies=2, seed=14)
    liar = FaultyWorker(fault)
    try:
        record = run_job(tmp_path, [liar.endpoint, honest], tmp_path / "e.csv", verify_leaves=0)
    finally:
        liar.stop()
    assert record["state"] == "done", record
    assert record["root"] == single_tree_root(entries)
    assert record["quarantined"] == [liar.endpoint]
    assert record["progress"]["retries"] >= 1, record
    assert "integrity error: leaf 0: its balance in currency column 0 (balance_ETH_ETH)" \
        in caplog.text


@pytest.mark.timeout(120)
def test_swapped_usernames_are_caught_when_sampling_covers_the_unit(tmp_path, honest, caplog):
    entries = write_csv(tmp_path / "e.csv", 512, n_currencies=2, seed=15)
    liar = FaultyWorker("swap-usernames")
    try:
        record = run_job(tmp_path, [liar.endpoint, honest], tmp_path / "e.csv", batch_size=64,
                         verify_leaves=64)
    finally:
        liar.stop()
    assert record["state"] == "done", record
    assert record["root"] == single_tree_root(entries)
    assert record["quarantined"] == [liar.endpoint]
    assert "integrity error: leaf 0 does not match" in caplog.text or \
        "integrity error: leaf 63 does not match" in caplog.text, caplog.text


@pytest.mark.timeout(120)
def test_unsampled_swapped_usernames_cannot_pass_silently(tmp_path):
    """The gap the leaf compare leaves (a leaf's username is only in its hash): with nothing
    sampled and no full check, a worker that swaps two usernames in each unit and rehashes gets
    a wrong tree published. But the two users' proofs (and those of their group of 4 leaves)
    are refused with an error, by the daemon and by summa-proof, never served: the store
    recomputes each leaf from the entries as sent. A user elsewhere gets a proof that verifies,
    with the balances of the CSV."""
    entries = write_csv(tmp_path / "e.csv", 512, n_currencies=2, seed=16)
    liar = FaultyWorker("swap-usernames")
    try:
        record = run_job(tmp_path, [liar.endpoint], tmp_path / "e.csv", batch_size=64,
                         verify_leaves=0)
    finally:
        liar.stop()
    assert record["state"] == "done" and record["quarantined"] == [], record
    assert record["root"] != single_tree_root(entries)     # not guaranteed: the wrong tree is out
    job = record["job"]
    result = tmp_path / "data" / "results" / job
    swapped = [entries[unit * 64 + leaf][0] for unit in range(8) for leaf in (0, 63)]
    with daemon_in_process(tmp_path / "data") as (_, client):
        for username in swapped:
            with pytest.raises(DaemonError, match="does not lead to the manifest's root") as \
                    refused:
                client.proof(job, username)
            assert refused.value.code == Code.INTERNAL
        name, balances = entries[64 * 3 + 10]
        proof = client.proof(job, name)
    assert proof["entry"] == {"username": name, "balances": [str(b) for b in balances]}
    checked = subprocess.run([os.path.join(BIN, "summa-verify"), "-"], input=json.dumps(proof),
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    for username in (swapped[0], swapped[-1]):
        offline = subprocess.run([os.path.join(BIN, "summa-proof"), str(result), username],
                                 capture_output=True, text=True, timeout=60)
        assert offline.returncode == 1 and offline.stdout == ""
        assert offline.stderr.startswith("summa-proof: error: ") and offline.stderr.count("\n") == 1
        assert "does not lead to the manifest's root" in offline.stderr, offline.stderr
        assert "a worker returned a wrong subtree" in offline.stderr, offline.stderr
    intact = subprocess.run([os.path.join(BIN, "summa-proof"), str(result), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert intact.returncode == 0, intact.stderr   # no damaged file: the lie was written as sent


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
