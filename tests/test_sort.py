"""The sorter of sorted jobs (mst/sort.py over cython_ext/_sort.pyx) and the loader's sorted path.

The reference is Python's own order of (name bytes, input position); the first duplicate is the
first username that comes back in input order, as the unsorted index reports it.
"""
import os
import random
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from summa_aggregation.daemon import loader as loader_module
from summa_aggregation.daemon.loader import Loader
from summa_aggregation.mst.sort import Duplicate, Sorter, SortError
from summa_aggregation.mst.store_writer import ResultWriter
from summa_aggregation.wire import SubmitRequest


# ---- helpers ----------------------------------------------------------------------------------

def packed(names, width, rng):
    """Words, balances, names, lengths of entries named `names` (bytes): words and balances are
    random, so that each entry can be told by them."""
    words = rng.randbytes(32 * len(names))
    balances = rng.randbytes(width * len(names))
    return words, balances, b"".join(names), struct.pack(f"<{len(names)}I", *map(len, names))


def feed(sorter, names, words, balances, width, chunks):
    """add() in pieces of the sizes `chunks` gives (cycled)."""
    joined = memoryview(b"".join(names))
    pos = name_pos = i = 0
    while pos < len(names):
        count = min(chunks[i % len(chunks)], len(names) - pos)
        size = sum(map(len, names[pos:pos + count]))
        sorter.add(memoryview(words)[32 * pos:32 * (pos + count)],
                   memoryview(balances)[width * pos:width * (pos + count)], count,
                   joined[name_pos:name_pos + size],
                   struct.pack(f"<{count}I", *map(len, names[pos:pos + count])))
        # one entry is always taken, whatever its size; more only within the budget
        assert sorter.batch.size <= sorter.memory or sorter.batch.count == 1, \
            "the batch outgrew its budget"
        pos, name_pos, i = pos + count, name_pos + size, i + 1


def merged(sorter, segment):
    """(entries as (name, origin, word, balances), segment sizes, duplicate) of a merge."""
    out, sizes = [], []
    width = sorter.width

    def emit(usernames, balances, count, names, lengths, origins):
        sizes.append(count)
        lengths = struct.unpack(f"<{count}I", lengths)
        origins = struct.unpack(f"<{count}Q", origins)
        at = 0
        for i in range(count):
            out.append((bytes(names[at:at + lengths[i]]), origins[i],
                        bytes(usernames[32 * i:32 * i + 32]), bytes(balances[width * i:width * (i + 1)])))
            at += lengths[i]
        assert at == len(names)

    duplicate = sorter.merge(emit, segment)
    return out, sizes, duplicate


def first_repeat(names):
    seen = {}
    for i, name in enumerate(names):
        if name in seen:
            return Duplicate(seen[name], i, name)
        seen[name] = i
    return None


def expected(names, words, balances, width):
    order = sorted(range(len(names)), key=lambda i: (names[i], i))
    return [(names[i], i, words[32 * i:32 * i + 32], balances[width * i:width * (i + 1)]) for i in order]


def check_sort(tmp_path, names, width=14, memory=1 << 20, fan_in=256, segment=65536, chunks=(1000,),
               seed=0):
    rng = random.Random(seed)
    words, balances, _, _ = packed(names, width, rng)
    sorter = Sorter(str(tmp_path), 1, width, memory_bytes=memory, fan_in=fan_in)
    feed(sorter, names, words, balances, width, list(chunks))
    runs = len(sorter.runs)
    out, sizes, duplicate = merged(sorter, segment)
    assert out == expected(names, words, balances, width)
    assert duplicate == first_repeat(names)
    assert all(1 <= size <= segment for size in sizes)
    assert os.listdir(tmp_path) == []
    return out, runs


# ---- the property -----------------------------------------------------------------------------

name_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=0, max_size=40)


@st.composite
def job(draw):
    """Usernames that are prefixes and extensions of each other, some long, maybe repeated."""
    base = draw(st.lists(name_text.map(lambda s: s.encode()), min_size=1, max_size=12))
    names = []
    for _ in range(draw(st.integers(1, 120))):
        name = draw(st.sampled_from(base))
        how = draw(st.sampled_from(["same", "prefix", "longer", "long"]))
        if how == "prefix":
            name = name[:draw(st.integers(0, len(name)))]
        elif how == "longer":
            name = name + draw(name_text).encode()
        elif how == "long":
            name = name * 3 + "é".encode() * draw(st.integers(10, 30))
        names.append(name or b"x")
    if draw(st.booleans()):             # unique usernames, as a job that succeeds has
        names = list(dict.fromkeys(names))
    return names


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=job(), n_currencies=st.integers(1, 4), n_bytes=st.sampled_from([1, 5, 14]),
       memory=st.sampled_from([300, 2000, 9000]), fan_in=st.integers(2, 5),
       segment=st.integers(1, 40), chunks=st.lists(st.integers(1, 30), min_size=1, max_size=4),
       seed=st.integers(0, 2 ** 32))
def test_the_merge_is_the_sorted_input_whatever_the_memory(tmp_path_factory, names, n_currencies,
                                                           n_bytes, memory, fan_in, segment, chunks,
                                                           seed):
    tmp = tmp_path_factory.mktemp("runs")
    width = n_currencies * n_bytes
    rng = random.Random(seed)
    words, balances, _, _ = packed(names, width, rng)
    results = []
    for budget in (1 << 24, memory):            # all in memory; then runs on disk, merged in passes
        sorter = Sorter(str(tmp), n_currencies, n_bytes, memory_bytes=budget, fan_in=fan_in)
        feed(sorter, names, words, balances, width, chunks)
        if budget == memory and sum(map(len, names)) + 100 * len(names) > 3 * memory:
            assert len(sorter.runs) > 1
        results.append(merged(sorter, segment))
        assert os.listdir(tmp) == [], "run files left behind"
        checker = Sorter(str(tmp), n_currencies, n_bytes, memory_bytes=budget, fan_in=fan_in)
        feed(checker, names, words, balances, width, chunks)
        assert checker.duplicate() == first_repeat(names)
        assert os.listdir(tmp) == []
    (in_memory, _, duplicate), (on_disk, sizes, on_disk_duplicate) = results
    assert in_memory == on_disk == expected(names, words, balances, width)
    assert duplicate == on_disk_duplicate == first_repeat(names)
    assert all(1 <= size <= segment for size in sizes) and sum(sizes) == len(names)


# ---- the corners of the C sort ----------------------------------------------------------------

def test_many_entries_with_long_common_prefixes(tmp_path):
    """Groups of equal 8-byte keys at several levels, the radix and its cache-sized split, and
    prefixes longer than the key levels go (the comparison fallback)."""
    rng = random.Random(7)
    names = [f"user_{i:06d}".encode() for i in range(70000)]
    names += [b"p" * 300 + f"{i:04d}".encode() for i in range(300)]
    names += [b"q" * 40 + f"{rng.randrange(10 ** 9)}".encode() for _ in range(3000)]
    rng.shuffle(names)
    names = list(dict.fromkeys(names))
    _, runs = check_sort(tmp_path, names, memory=1 << 28)
    assert runs == 0
    _, runs = check_sort(tmp_path, names, memory=1 << 20, chunks=(4096, 777))
    assert runs > 4


def test_names_that_differ_only_in_trailing_nul_bytes(tmp_path):
    """Zero-padded keys agree; the shorter name comes first (a group past the radix threshold)."""
    names = [b"ab" + b"\0" * k for k in range(6)] * 40 + [b"ab\0c", b"a", b"ab\x01"] * 5
    random.Random(3).shuffle(names)
    check_sort(tmp_path, names, segment=7)
    check_sort(tmp_path, names, memory=2000, fan_in=3, segment=7)


def test_empty_and_single_entry_and_giant_names(tmp_path):
    sorter = Sorter(str(tmp_path), 1, 14)
    assert merged(sorter, 10) == ([], [], None)
    check_sort(tmp_path, [b"only"])
    # a name far beyond the budget still goes through (a run of its own, buffers grown for it)
    big = [b"m" * 50000, b"a", b"m" * 49999 + b"n", b"z"]
    check_sort(tmp_path, big, memory=4096, segment=2)


def test_the_duplicate_reported_is_the_first_repeat_in_input_order(tmp_path):
    # 'b' repeats later than 'z' does: the pair reported is z's, though b sorts first
    names = [b"b", b"z", b"x", b"z", b"b", b"b", b"z"]
    for memory in (1 << 20, 200):
        sorter = Sorter(str(tmp_path), 1, 14, memory_bytes=memory, fan_in=2)
        feed(sorter, names, bytes(32 * 7), bytes(14 * 7), 14, [2])
        assert merged(sorter, 3)[2] == Duplicate(1, 3, b"z")


# ---- the sorter's life ------------------------------------------------------------------------

def test_runs_are_removed_on_close_and_on_a_failing_emit(tmp_path):
    names = [f"n{i}".encode() for i in range(3000)]
    words, balances, _, _ = packed(names, 14, random.Random(1))
    sorter = Sorter(str(tmp_path), 1, 14, memory_bytes=8192)
    feed(sorter, names, words, balances, 14, [100])
    assert sorter.runs and len(os.listdir(tmp_path)) == 1
    sorter.close()
    sorter.close()
    assert os.listdir(tmp_path) == []
    with pytest.raises(SortError):
        sorter.add(words[:32], balances[:14], 1, b"n", struct.pack("<I", 1))

    sorter = Sorter(str(tmp_path), 1, 14, memory_bytes=8192)
    feed(sorter, names, words, balances, 14, [100])

    def emit(*segment):
        raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError):
        sorter.merge(emit, 10)
    assert os.listdir(tmp_path) == []
    with Sorter(str(tmp_path), 1, 14, memory_bytes=8192) as sorter:
        feed(sorter, names, words, balances, 14, [100])
    assert os.listdir(tmp_path) == []


def test_a_crashed_sorter_s_runs_go_when_the_next_one_starts(tmp_path):
    leftover = tmp_path / ".sort-runs-crashed"
    leftover.mkdir()
    (leftover / "run-000001").write_bytes(b"\0" * 100)
    (tmp_path / "usernames.bin").write_bytes(b"")
    Sorter(str(tmp_path), 1, 14).close()
    assert os.listdir(tmp_path) == ["usernames.bin"]


def test_inputs_that_do_not_match_their_counts_are_refused(tmp_path):
    sorter = Sorter(str(tmp_path), 2, 3)
    good = dict(usernames=bytes(64), balances=bytes(12), count=2, names=b"abc",
                lengths=struct.pack("<2I", 1, 2))
    sorter.add(**good)
    for bad in (dict(usernames=bytes(63)), dict(balances=bytes(11)), dict(lengths=bytes(4)),
                dict(names=b"ab"), dict(names=b"abcd")):
        with pytest.raises(SortError):
            sorter.add(**{**good, **bad})
    sorter.close()


def test_a_damaged_run_is_an_error(tmp_path):
    names = [f"n{i}".encode() for i in range(500)]
    words, balances, _, _ = packed(names, 14, random.Random(1))
    sorter = Sorter(str(tmp_path), 1, 14, memory_bytes=4096)
    feed(sorter, names, words, balances, 14, [50])
    with open(sorter.runs[0], "r+b") as handle:
        handle.truncate(os.path.getsize(sorter.runs[0]) - 3)
    with pytest.raises(SortError, match="ends inside a record"):
        sorter.merge(lambda *segment: None)
    assert os.listdir(tmp_path) == []


# ---- the loader's sorted path -----------------------------------------------------------------

HEADER = "username,balance_ETH_ETH,balance_USDT_ETH\n"


def write(path, rows):
    path.write_text(HEADER + "".join(f"{row}\n" for row in rows), encoding="utf-8")
    return str(path)


def load(tmp_path, csvs, is_sorted=True, batch_size=None, memory=1 << 20, encoding="bytes",
         writer_class=ResultWriter, stop=None):
    """Run a Loader in this thread: (what it queued, the writer, the loader)."""
    spec = SubmitRequest(csvs, 1, "mock", "interleaved", 14, batch_size, None, encoding, is_sorted)
    target = tmp_path / f"result-{is_sorted}-{len(os.listdir(tmp_path))}"
    writer = writer_class(str(target), 14, username_encoding=encoding)
    loader = Loader(spec, writer, stop or threading.Event(), sort_memory_bytes=memory)
    try:
        loader.run()
    finally:
        loader.close()
    return list(loader.drain()), writer, loader


def rows(names, seed=0):
    rng = random.Random(seed)
    return [f"{name},{rng.randrange(1000)},{rng.randrange(1000)}" for name in names]


@pytest.mark.parametrize("batch_size", [None, 64])
@pytest.mark.parametrize("encoding", ["bytes", "keccak256"])
def test_a_sorted_load_stores_and_cuts_the_merged_entries(tmp_path, batch_size, encoding):
    rng = random.Random(5)
    names = [f"{rng.choice(['user', 'ü', 'zed', 'a'])}{rng.randrange(10 ** 6)}" for _ in range(1500)]
    names = list(dict.fromkeys(names))
    csvs = [write(tmp_path / "a.csv", rows(names[:700])), write(tmp_path / "b.csv", rows(names[700:]))]
    items, writer, _ = load(tmp_path, csvs, batch_size=batch_size, memory=20000, encoding=encoding)
    try:
        assert items[0][0] == "depth" and items[-1][0] == "end", items[-1]
        k, shape = items[0][1], items[-1][1]
        units = [item[1] for item in items if item[0] == "unit"]
        fixed = (batch_size or 1 << (len(names) - 1).bit_length()).bit_length() - 1
        assert shape.mini_depth == fixed and shape.unit_depth == k
        assert shape.counts == [min(1 << fixed, len(names) - s) for s in range(0, len(names), 1 << fixed)]
        position = 0
        for serial, unit in enumerate(units):
            assert (unit.serial, unit.position) == (serial, position)
            assert (unit.batch, unit.local) == (position >> fixed, position % (1 << fixed))
            assert unit.count == min(1 << k, len(names) - position)
            position += unit.count
        assert position == len(names) == writer.entries
        stored = [writer.username_at(i) for i in range(len(names))]
        assert stored == sorted(names, key=str.encode)
        assert not [name for name in os.listdir(writer.directory) if "sort" in name]
    finally:
        writer.abort()


def test_the_sorted_root_order_is_independent_of_the_memory(tmp_path):
    names = [f"n{(i * 7919) % 5000}" for i in range(5000)]
    csvs = [write(tmp_path / "a.csv", rows(names))]
    stored = []
    for memory in (1 << 24, 4096):
        items, writer, _ = load(tmp_path, csvs, memory=memory)
        try:
            assert items[-1][0] == "end"
            stored.append(writer.read_entries(0, len(names)))
        finally:
            writer.abort()
    assert stored[0] == stored[1]


def errors_of(tmp_path, csvs, **options):
    """The error of the sorted and of the unsorted load of the same CSVs."""
    found = []
    for is_sorted in (True, False):
        items, writer, _ = load(tmp_path, csvs, is_sorted=is_sorted, **options)
        try:
            assert items[-1][0] == "error", items[-1]
            assert not [name for name in os.listdir(writer.directory) if "sort" in name]
            found.append(items[-1][1])
        finally:
            writer.abort()
    return found


@pytest.mark.parametrize("memory", [1 << 20, 2048])
def test_a_duplicate_names_both_places_as_the_unsorted_job_does(tmp_path, memory):
    a = write(tmp_path / "a.csv", rows(["zoë", "bob", "carol", "dave"]))
    b = write(tmp_path / "b.csv", rows(["erin"]) + [""] + rows(["carol", "bob", "zoë"]))
    # carol comes back first in input order (bob and zoë sort around it); the blank line counts
    sorted_error, unsorted_error = errors_of(tmp_path, [a, b], memory=memory)
    assert sorted_error == unsorted_error == f"{b}:4: duplicate username 'carol' (first seen at {a}:4)"


def test_a_duplicate_before_a_bad_line_is_the_error(tmp_path):
    a = write(tmp_path / "a.csv", rows(["ann", "bob"]))
    b = write(tmp_path / "b.csv", rows(["cy", "ann"]) + ["dee,1,not-a-number"])
    sorted_error, unsorted_error = errors_of(tmp_path, [a, b], memory=1024)
    assert sorted_error == unsorted_error == f"{b}:3: duplicate username 'ann' (first seen at {a}:2)"
    c = write(tmp_path / "c.csv", rows(["cy", "dan"]) + ["dee,1,not-a-number"])
    sorted_error, unsorted_error = errors_of(tmp_path, [a, c], memory=1024)
    assert sorted_error == unsorted_error and sorted_error.startswith(f"{c}:4: ")


def test_a_stopped_sorted_load_leaves_no_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(loader_module, "SEGMENT", 16)
    stop = threading.Event()

    class StoppingWriter(ResultWriter):
        def append_entries(self, *args, **kwargs):
            super().append_entries(*args, **kwargs)
            stop.set()                      # as a cancel would, once the merge has begun

    names = [f"u{i}" for i in range(2000)]
    csvs = [write(tmp_path / "a.csv", rows(names))]
    items, writer, _ = load(tmp_path, csvs, memory=4096, writer_class=StoppingWriter, stop=stop)
    try:
        assert writer.entries == 16 and not [item for item in items if item[0] in ("end", "error")]
        assert not [name for name in os.listdir(writer.directory) if "sort" in name]
    finally:
        writer.abort()
