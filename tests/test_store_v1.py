"""The result directory: save/load round trip, atomic writes, and refusal of broken directories."""
import json
import os
import types

import pytest

from summa_aggregation.mst import store_v1 as store
from summa_aggregation.mst.csv_job import read_csvs
from summa_aggregation.mst.proof import verify_proof
from summa_aggregation.mst.tree import AggregationMerkleSumTree, MerkleSumTree

from mst_helpers import tree_of

FILES = ("manifest.json", "usernames.bin", "minitrees.bin", "top.bin")


def build(fixtures_dir, layout="interleaved", names=("entry_16_1.csv", "entry_16_2.csv", "entry_16_3.csv"),
          last=None):
    """An aggregation of the fixture files; `last` entries of the last file only, if given."""
    batches = read_csvs([fixtures_dir / n for n in names])
    minis = [tree_of(b, layout=layout) for b in batches]
    if last is not None:
        b = batches[-1]
        minis[-1] = MerkleSumTree.build(b.usernames[:32 * last], b.balances[:64 * last], last, 2,
                                        layout=layout, depth=minis[0].depth, currencies=b.currencies)
    return AggregationMerkleSumTree(minis)


def leftovers(parent, name):
    return [entry for entry in os.listdir(parent) if entry.startswith(f".{name}.partial-")]


def test_round_trip(fixtures_dir, tree_layout, tmp_path):
    tree = build(fixtures_dir, tree_layout, last=5)  # 16 + 16 + 5 entries, top padded to 4
    target = tmp_path / "result"
    assert store.save(tree, target, 14, {"inputs": ["x.csv"]}) == str(target)
    assert sorted(os.listdir(target)) == sorted(FILES)
    assert leftovers(tmp_path, "result") == []

    loaded, manifest = store.load(target)
    assert manifest["format"] == store.FORMAT and manifest["version"] == store.VERSION
    assert manifest["layout"] == tree_layout and manifest["n_bytes"] == 14
    assert manifest["entry_counts"] == [16, 16, 5] and manifest["entries"] == 37
    assert manifest["currencies"] == ["balance_ETH_ETH", "balance_USDT_ETH"]
    assert manifest["mini_depth"] == 4 and manifest["top_depth"] == 2 and manifest["mini_count"] == 3
    assert manifest["inputs"] == ["x.csv"]
    for name in FILES[1:]:
        assert manifest["files"][name]["bytes"] == os.path.getsize(target / name)

    assert manifest["root"] == tree.root.to_json()
    assert loaded.root == tree.root and loaded.count == tree.count == 37
    assert loaded.layout == tree_layout and loaded.depth == tree.depth
    for index in [m * 16 + i for m, n in enumerate([16, 16, 5]) for i in range(n)]:
        entry = loaded.get_entry(index)
        assert entry == tree.get_entry(index)
        assert loaded.index_of(entry.username) == index
        proof = loaded.proof(entry.username)
        assert proof == tree.proof(index)
        verify_proof(proof)
    for bad in (37, 16 * 2 + 5, 63, 64, -1):
        with pytest.raises(IndexError):
            loaded.get_entry(bad)
    with pytest.raises(KeyError):
        loaded.proof("nobody")
    assert loaded.index_of("nobody") is None


def test_round_trip_single_entry(tmp_path):
    tree = AggregationMerkleSumTree([MerkleSumTree.from_entries([("solo", [7])])])
    store.save(tree, tmp_path / "r", 14)
    loaded, manifest = store.load(tmp_path / "r")
    assert loaded.root == tree.root and manifest["mini_depth"] == 0 and manifest["top_depth"] == 0
    assert loaded.proof("solo") == tree.proof(0)


def test_save_refuses_an_existing_directory(fixtures_dir, tmp_path):
    tree = build(fixtures_dir)
    target = tmp_path / "result"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(store.StoreError, match="already exists") as info:
        store.save(tree, target, 14)
    assert str(target) in str(info.value)
    assert os.listdir(target) == ["keep.txt"] and (target / "keep.txt").read_text() == "precious"
    assert leftovers(tmp_path, "result") == []
    # an existing plain file is refused just the same
    (tmp_path / "file").write_text("x")
    with pytest.raises(store.StoreError):
        store.save(tree, tmp_path / "file", 14)
    assert (tmp_path / "file").read_text() == "x"


class _Exploding:
    """A usernames buffer that fails when read: a failure in the middle of usernames.bin."""

    def __getitem__(self, part):
        raise RuntimeError("disk on fire")


def test_failure_while_writing_usernames_leaves_nothing(fixtures_dir, tmp_path):
    tree = build(fixtures_dir)
    second = tree.mini_trees[1]
    tree.mini_trees[1] = types.SimpleNamespace(usernames=_Exploding(), count=second.count,
                                               levels=second.levels)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.save(tree, tmp_path / "result", 14)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("failing", ["usernames.bin", "minitrees.bin", "top.bin", "manifest.json"])
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_part_way_leaves_nothing(fixtures_dir, tmp_path, monkeypatch, failing, error):
    tree = build(fixtures_dir)
    real_write = store._write
    written = []

    def write(directory, name, chunks, files):
        if name == failing:
            raise error
        real_write(directory, name, chunks, files)
        written.append(name)

    monkeypatch.setattr(store, "_write", write)
    with pytest.raises(type(error)):
        store.save(tree, tmp_path / "result", 14)
    assert written == list(FILES[1:FILES.index(failing) if failing != "manifest.json" else 4])
    assert os.listdir(tmp_path) == []  # neither the target nor a '.result.partial-*' directory
    monkeypatch.undo()
    store.save(tree, tmp_path / "result", 14)  # and a retry works
    assert store.load(tmp_path / "result")[0].root == tree.root


def test_save_does_not_replace_a_directory_created_meanwhile(fixtures_dir, tmp_path, monkeypatch):
    tree = build(fixtures_dir)
    target = tmp_path / "result"
    real_write = store._write

    def write(directory, name, chunks, files):
        if name == "top.bin":
            target.mkdir()  # another process claims the name while we write
        real_write(directory, name, chunks, files)

    monkeypatch.setattr(store, "_write", write)
    with pytest.raises((store.StoreError, OSError)):
        store.save(tree, target, 14)


# --- load refuses broken directories --------------------------------------------------------

@pytest.fixture
def saved(fixtures_dir, tmp_path):
    target = tmp_path / "result"
    store.save(build(fixtures_dir), target, 14)
    return target


def load_error(path):
    with pytest.raises(store.StoreError) as info:
        store.load(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def edit_manifest(target, **changes):
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.update(changes)
    (target / "manifest.json").write_text(json.dumps(manifest))


def test_load_missing_directory(tmp_path):
    assert str(tmp_path / "nothing") in load_error(tmp_path / "nothing")


def test_load_missing_manifest(saved):
    os.remove(saved / "manifest.json")
    assert str(saved / "manifest.json") in load_error(saved)


def test_load_manifest_not_json(saved):
    (saved / "manifest.json").write_text("{not json")
    assert str(saved / "manifest.json") in load_error(saved)


@pytest.mark.parametrize("changes", [{"format": "something-else"}, {"version": 2}, {"format": None}])
def test_load_wrong_format(saved, changes):
    edit_manifest(saved, **changes)
    assert str(saved / "manifest.json") in load_error(saved)


def test_load_manifest_missing_key(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    del manifest["mini_depth"]
    (saved / "manifest.json").write_text(json.dumps(manifest))
    assert str(saved) in load_error(saved)


@pytest.mark.parametrize("name", ["minitrees.bin", "usernames.bin", "top.bin"])
def test_load_truncated_file(saved, name):
    path = saved / name
    data = path.read_bytes()
    path.write_bytes(data[:-32])
    message = load_error(saved)
    assert str(path) in message and str(len(data) - 32) in message and str(len(data)) in message


def test_load_missing_data_file(saved):
    os.remove(saved / "minitrees.bin")
    assert str(saved / "minitrees.bin") in load_error(saved)


def test_load_shape_mismatch(saved):
    """Sizes agree with the manifest's 'files' but not with its depth and count."""
    edit_manifest(saved, mini_count=2)
    assert str(saved) in load_error(saved)


def test_load_wrong_root(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    edit_manifest(saved, root={**manifest["root"], "hash": "0x" + "0" * 64})
    assert str(saved) in load_error(saved)


def test_load_corrupted_root_record(saved):
    path = saved / "top.bin"
    data = bytearray(path.read_bytes())
    data[-3 * 32] ^= 1  # the root record (the last, 3 words for 2 currencies): its hash word
    path.write_bytes(bytes(data))
    message = load_error(saved)
    assert str(saved) in message and "root" in message


def test_load_refuses_a_damaged_node_file(saved):
    path = saved / "minitrees.bin"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    message = load_error(saved)
    assert "minitrees.bin" in message and "sha256" in message
    tree, _ = store.load(saved, check_sha256=False)   # the check can be skipped, knowingly
    assert tree.count == json.loads((saved / "manifest.json").read_text())["entries"]
