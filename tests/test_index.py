"""The username index (mst/index.py): duplicates found exactly, fingerprint collisions harmless.

A collision cannot be made on purpose without the job's key, so the collision paths are fed
runs of equal fingerprints directly: only a confirmed username match may count."""
import bisect
import os
import random
from array import array

import pytest

from summa_aggregation.cython_ext import _records
from summa_aggregation.mst.csv_reader import username_to_word
from summa_aggregation.mst.index import KEYS, POSITIONS, IndexBuilder, _confirm, fingerprints, lookup


def words(names):
    return b"".join(username_to_word(n) for n in names)


def build(tmp_path, names, key=(1, 2)):
    data = words(names)
    builder = IndexBuilder(str(tmp_path), list(key))
    for start in range(0, len(names), 3):                   # in pieces, as the loader feeds it
        piece = data[32 * start:32 * (start + 3)]
        builder.add(piece, len(piece) // 32)
    same = lambda p, q: data[32 * p:32 * p + 32] == data[32 * q:32 * q + 32]  # noqa: E731
    return builder.finish(same)


def test_duplicates_are_found_with_their_first_place(tmp_path):
    names = [f"user{i}" for i in range(50)] + ["user7", "x", "user7", "user49"]
    duplicates, files = build(tmp_path, names)
    assert duplicates == [(7, 50), (7, 52), (49, 53)]     # each later copy, with the first place
    assert sorted(files) == [KEYS, POSITIONS]
    assert not os.path.exists(tmp_path / ".index-buckets")


def test_the_index_finds_every_username_and_nothing_else(tmp_path):
    names = [f"name-{i}" for i in range(200)]
    duplicates, _ = build(tmp_path, names, key=(99, 7))
    assert duplicates == []
    keys = memoryview((tmp_path / KEYS).read_bytes()).cast("Q")
    positions = memoryview((tmp_path / POSITIONS).read_bytes()).cast("Q")
    assert list(keys) == sorted(keys)
    data = words(names)
    for i in (0, 17, 199):
        word = data[32 * i:32 * i + 32]
        found = lookup(keys, positions, fingerprints(word, 1, [99, 7])[0],
                       lambda p: data[32 * p:32 * p + 32] == word)
        assert found == i
    stranger = username_to_word("stranger")
    assert lookup(keys, positions, fingerprints(stranger, 1, [99, 7])[0],
                  lambda p: data[32 * p:32 * p + 32] == stranger) is None


def test_colliding_fingerprints_are_never_taken_for_duplicates():
    data = words(["a", "b", "c", "b"])
    same = lambda p, q: data[32 * p:32 * p + 32] == data[32 * q:32 * q + 32]  # noqa: E731
    keys, positions = array("Q", [5, 5, 5, 5]), array("Q", [0, 1, 2, 3])   # all collide
    assert _confirm(keys, positions, same) == [(1, 3)]
    assert _confirm(array("Q", [5, 5, 5]), array("Q", [0, 1, 2]), same) == []


def test_a_lookup_walks_the_whole_run_of_a_colliding_fingerprint():
    data = words(["a", "b", "c"])
    keys, positions = array("Q", [1, 9, 9, 9, 12]), array("Q", [7, 0, 1, 2, 8])
    target = username_to_word("c")
    assert lookup(memoryview(keys), memoryview(positions), 9,
                  lambda p: data[32 * p:32 * p + 32] == target) == 2
    assert lookup(memoryview(keys), memoryview(positions), 10, lambda p: True) is None


@pytest.mark.parametrize("shape", ["uniform", "small", "skewed", "runs"])
@pytest.mark.parametrize("size", [0, 1, 2, 64, 65, 1000, 70000])
def test_the_search_is_a_lower_bound_whatever_the_keys(shape, size):
    """The interpolation steps assume uniform fingerprints; any sorted keys (a damaged index,
    equal runs) must still give exactly bisect_left's answer."""
    rng = random.Random(size)
    draw = {"uniform": lambda: rng.getrandbits(64), "small": lambda: rng.getrandbits(12),
            "skewed": lambda: int(rng.random() ** 8 * (2 ** 64 - 1)),
            "runs": lambda: rng.choice([0, 5, 1 << 63, 2 ** 64 - 1])}[shape]
    keys = sorted(draw() for _ in range(size))
    view = memoryview(array("Q", keys))
    probes = keys[:40] + [k + 1 for k in keys[:20] if k < 2 ** 64 - 1] + [k - 1 for k in keys[-20:] if k] \
        + [rng.getrandbits(64) for _ in range(100)] + [0, 2 ** 64 - 1]
    for probe in probes:
        assert _records.lower_bound(view, probe) == bisect.bisect_left(keys, probe)
