"""The version-2 result directory (mst/store.py): written as the job runs, proofs by username
from disk, every proof verified before it leaves, damage caught, version 1 still read."""
import json
import os
import shutil

import pytest

from summa_aggregation.mst import store
from summa_aggregation.mst.csv_job import read_csvs
from summa_aggregation.mst.proof import verify_proof
from summa_aggregation.mst.tree import AggregationMerkleSumTree, MerkleSumTree

from daemon_helpers import write_csv
from test_commands import one_line_error

V1_DIR = os.path.join(os.path.dirname(__file__), "data", "result_v1")
V1_PROOF = os.path.join(os.path.dirname(__file__), "data", "result_v1.proof.json")


@pytest.fixture(scope="module")
def made(tmp_path_factory, run_script):
    """A 2-currency result of 3 ragged files (units of 2^10: the default least), and its entries."""
    work = tmp_path_factory.mktemp("v2")
    files = [write_csv(work / f"f{i}.csv", count, n_currencies=2, seed=i, prefix=f"p{i}-")
             for i, count in enumerate((1500, 7, 300))]
    result = run_script("summa-aggregate", "--workers", "2", "--out", work / "result",
                        *[work / f"f{i}.csv" for i in range(3)], timeout=120)
    assert result.returncode == 0, result.stderr
    return work / "result", files


@pytest.fixture
def copy(made, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(made[0], target)
    return target


def reference(files):
    depth = max(len(f) for f in files).bit_length()
    return AggregationMerkleSumTree([MerkleSumTree.from_entries(f, depth=depth) for f in files])


def test_the_layout_of_a_version_2_directory(made):
    directory, files = made
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["version"] == 2 and manifest["unit_depth"] == 10
    assert manifest["entry_counts"] == [1500, 7, 300] and manifest["entries"] == 1807
    assert sorted(os.listdir(directory)) == sorted(["manifest.json", *manifest["files"]])
    for name, entry in manifest["files"].items():
        assert os.path.getsize(directory / name) == entry["bytes"]
    # balances at N_BYTES: 32 + 2 x 14 per entry, not 32 x 3
    assert manifest["files"]["balances.bin"]["bytes"] == 1807 * 2 * 14
    assert store.check(directory) == sum(e["bytes"] for e in manifest["files"].values())


def test_proofs_by_username_and_index_equal_the_reference(made):
    directory, files = made
    tree, _ = store.load(directory)
    expected = reference(files)
    assert tree.root == expected.root
    names = [f[i][0] for f in files for i in (0, 1, len(f) // 2, len(f) - 1)]
    for name in names:
        proof = tree.proof(name)
        assert proof == expected.proof(name)
        assert tree.proof(proof["index"]) == proof
    assert tree.proofs(names) == [expected.proof(n) for n in names]
    with pytest.raises(KeyError):
        tree.proof("nobody")
    with pytest.raises(IndexError):
        tree.proof(1507)              # in mini-tree 0's padding: no entry there


@pytest.mark.parametrize("name,offset", [("balances.bin", 3), ("usernames.bin", 1),
                                         ("nodes.bin", 70)])
def test_a_damaged_file_is_caught_at_proof_time(copy, made, name, offset, run_script):
    """The damage sits under entry 0's path: its proof is refused, never printed wrong."""
    tree, _ = store.load(copy)
    victim = made[1][0][0][0]
    proof = tree.proof(victim)
    with open(copy / name, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x10]))
    fresh, _ = store.load(copy)               # opening stays cheap: no full hash of the files
    with pytest.raises((store.StoreError, KeyError)) as info:
        fresh.proof(victim if name != "usernames.bin" else proof["index"])
    assert "damaged" in str(info.value) or name == "usernames.bin"
    with pytest.raises(store.StoreError, match=f"{name}: contents do not match"):
        store.check(copy)
    line = one_line_error(run_script("summa-proof", "--check", copy), "summa-proof", 1)
    assert name in line and "damaged" in line


def test_a_damaged_upper_tree_or_manifest_root_is_refused_at_open(copy, run_script):
    with open(copy / "upper.bin", "r+b") as handle:
        handle.seek(5)
        handle.write(b"\x01")
    with pytest.raises(store.StoreError, match="upper.bin does not lead to the manifest's root"):
        store.load(copy)
    line = one_line_error(run_script("summa-proof", copy, "p0-0"), "summa-proof", 1)
    assert "damaged" in line


def test_a_truncated_file_is_refused(copy):
    with open(copy / "nodes.bin", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(store.StoreError, match="nodes.bin"):
        store.load(copy)


def test_export_streams_one_verified_proof_per_line(made, run_script, tmp_path):
    directory, files = made
    expected = reference(files)
    names = [files[0][5][0], "nobody", files[2][299][0], files[1][0][0]]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    result = run_script("summa-proof", directory, "--usernames", tmp_path / "names.txt")
    assert result.returncode == 1 and "1 username(s) not in" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[1] == {"username": "nobody", "error": "not in the tree"}
    for name, line in zip(names, lines):
        if name != "nobody":
            assert line == expected.proof(name)
            verify_proof(line)


def test_proof_options_exclude_each_other(made, run_script):
    line = one_line_error(run_script("summa-proof", made[0]), "summa-proof", 2)
    assert "exactly one of" in line


# ---- version 1 ------------------------------------------------------------------------------

def test_version_1_directories_still_prove(run_script, fixtures_dir):
    """tests/data/result_v1 was written by the version-1 writer (store_v1.save) and is kept."""
    tree, manifest = store.load(V1_DIR)
    assert manifest["version"] == 1
    with open(V1_PROOF, encoding="utf-8") as handle:
        expected = json.load(handle)
    # the proof saved then, now stating SPEC section 7's variants (which it was, implicitly)
    stated = {**expected, "username_encoding": "bytes", "is_sorted": False}
    assert tree.proof(expected["entry"]["username"]) == stated
    result = run_script("summa-proof", V1_DIR, expected["entry"]["username"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == stated
    assert run_script("summa-proof", "--check", V1_DIR).returncode == 0
    batches = read_csvs([fixtures_dir / f"entry_16_{i}.csv" for i in (1, 2, 3)])
    rebuilt = AggregationMerkleSumTree([MerkleSumTree.build(b.usernames, b.balances, b.count, 2)
                                        for b in batches])
    assert tree.root == rebuilt.root


def test_a_damaged_version_1_directory_is_caught(tmp_path, run_script):
    copy = tmp_path / "v1"
    shutil.copytree(V1_DIR, copy)
    with open(V1_PROOF, encoding="utf-8") as handle:
        expected = json.load(handle)
    with open(copy / "minitrees.bin", "r+b") as handle:      # the sibling leaf of the entry
        record = 3 * 32
        handle.seek(2 * 31 * record + (7 ^ 1) * record + 40)
        handle.write(b"\x07")
    tree, _ = store.load(copy)
    with pytest.raises(store.StoreError, match="damaged"):
        tree.proof(expected["entry"]["username"])
    line = one_line_error(run_script("summa-proof", "--check", copy), "summa-proof", 1)
    assert "minitrees.bin" in line
