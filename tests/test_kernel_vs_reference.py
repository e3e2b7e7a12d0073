"""Property tests: the C kernel (both backends) against the pure-Python reference."""
import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from summa_aggregation.cython_ext import _kernel, reference
from summa_aggregation.cython_ext.params import LAYOUTS, P
from summa_aggregation.mst.limits import depth_for
from summa_aggregation.mst.tree import AggregationMerkleSumTree, MerkleSumTree

# The kernel_backend fixture only switches a global flag once per test: reusing it across
# the examples of one hypothesis run is exactly what we want.
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# a safe alphabet: no control characters, no empty names; some multi-byte UTF-8 letters
NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@éßж€",
               min_size=1, max_size=10)


def words(values):
    return b"".join(int(v).to_bytes(32, "little") for v in values)


def unwords(data):
    return [int.from_bytes(data[i:i + 32], "little") for i in range(0, len(data), 32)]


# field elements: uniform, and the edges (0, 1, p-1, powers of two and their neighbours)
EDGES = sorted({0, 1, 2, P - 1, P - 2, P >> 1, (P >> 1) + 1}
               | {1 << k for k in range(254)} | {(1 << k) - 1 for k in range(1, 254)}
               | {P - (1 << k) for k in range(0, 250, 7)})
FIELD = st.one_of(st.integers(0, P - 1), st.sampled_from(EDGES))


@st.composite
def balances_for(draw, count, n_currencies, n_bytes):
    """count x n_currencies balances below 2^(8*n_bytes) whose per-currency totals are too."""
    limit = (1 << (8 * n_bytes)) - 1
    columns = []
    for _ in range(n_currencies):
        budget, column = limit, []
        for _ in range(count):
            value = draw(st.integers(0, budget))
            column.append(value)
            budget -= value
        columns.append(draw(st.permutations(column)))
    return [[columns[c][i] for c in range(n_currencies)] for i in range(count)]


@st.composite
def tree_cases(draw, max_currencies=4, max_entries=40):
    layout = draw(st.sampled_from(LAYOUTS))
    n_currencies = draw(st.integers(1, max_currencies))
    n_bytes = draw(st.integers(1, 14))
    count = draw(st.one_of(st.integers(1, max_entries), st.sampled_from([1, 2, 3, 5, 31, 33])))
    names = draw(st.lists(NAME, min_size=count, max_size=count, unique=True))
    balances = draw(balances_for(count, n_currencies, n_bytes))
    return layout, n_bytes, list(zip(names, balances))


def explicit_case(n_currencies, count, n_bytes=14, layout="interleaved", seed=0):
    rng = random.Random(seed)
    cap = ((1 << (8 * n_bytes)) - 1) // count
    return layout, n_bytes, [(f"user{i}-{rng.random():.6f}", [rng.randint(0, cap) for _ in range(n_currencies)])
                             for i in range(count)]


@settings(max_examples=30, **SETTINGS)
@given(case=tree_cases())
@example(case=explicit_case(16, 16))
@example(case=explicit_case(16, 7, n_bytes=14, layout="sum-first", seed=1))
@example(case=explicit_case(1, 1, n_bytes=1))
@example(case=explicit_case(3, 2, n_bytes=1, layout="sum-first"))
def test_tree_matches_reference(case, kernel_backend, to_levels_json, to_node_json):
    layout, n_bytes, entries = case
    tree = MerkleSumTree.from_entries(entries, layout=layout, n_bytes=n_bytes)
    levels = reference.build_tree(entries, layout)
    got = tree.to_json()
    assert got["depth"] == len(levels) - 1 == depth_for(len(entries))
    assert got["nodes"] == to_levels_json(levels)
    assert got["root"] == to_node_json(levels[-1][0])
    assert got["is_sorted"] is False
    assert tree.count == len(entries)
    # totals are exact sums of the entries
    assert list(tree.root.balances) == [sum(col) for col in zip(*(b for _, b in entries))]


# any username: under keccak256 (SPEC section 7) length is no limit
LONG_NAME = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=200)


@settings(max_examples=30, **SETTINGS)
@given(names=st.lists(LONG_NAME, min_size=1, max_size=20, unique=True),
       layout=st.sampled_from(LAYOUTS), n_currencies=st.integers(1, 4), seed=st.integers(0, 2 ** 32))
def test_keccak256_tree_matches_reference(names, layout, n_currencies, seed, kernel_backend,
                                          to_levels_json):
    """The reader's C Keccak and the kernel against the reference's pycryptodome Keccak and
    Python Poseidon, over usernames of any length, sorted or not."""
    from summa_aggregation.mst.csv_reader import username_to_word
    rng = random.Random(seed)
    entries = [(name, [rng.getrandbits(40) for _ in range(n_currencies)]) for name in names]
    for is_sorted in (False, True):
        ordered = reference.sort_entries(entries) if is_sorted else entries
        usernames = b"".join(username_to_word(name, "keccak256") for name, _ in ordered)
        assert unwords(usernames) == [reference.username_to_field(n, "keccak256") for n, _ in ordered]
        tree = MerkleSumTree.build(usernames, words(b for _, bs in ordered for b in bs),
                                   len(ordered), n_currencies, layout=layout)
        levels = reference.build_tree(entries, layout, encoding="keccak256", is_sorted=is_sorted)
        assert tree.to_json()["nodes"] == to_levels_json(levels)


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_hash_words_matches_reference(data, kernel_backend):
    length = data.draw(st.integers(1, 34), label="length")
    count = data.draw(st.integers(1, 9), label="messages")
    messages = [data.draw(st.lists(FIELD, min_size=length, max_size=length)) for _ in range(count)]
    out = _kernel.hash_words(b"".join(words(m) for m in messages), count, length)
    assert unwords(out) == [reference.hash_elements(m) for m in messages]


@pytest.mark.parametrize("length", [1, 2, 3, 34, 66, 129, _kernel.MAX_ELEMENTS])
def test_hash_words_long_messages(length, kernel_backend):
    rng = random.Random(length)
    message = [rng.randrange(P) for _ in range(length)]
    assert unwords(_kernel.hash_words(words(message), 1, length)) == [reference.hash_elements(message)]


def test_hash_words_rejects_bad_input(kernel_backend):
    with pytest.raises(_kernel.KernelError):
        _kernel.hash_words(words([P]), 1, 1)  # not canonical
    with pytest.raises(_kernel.KernelError):
        _kernel.hash_words(words([1, (1 << 256) - 1]), 1, 2)
    with pytest.raises(_kernel.KernelError):
        _kernel.hash_words(words([0] * (_kernel.MAX_ELEMENTS + 1)), 1, _kernel.MAX_ELEMENTS + 1)
    with pytest.raises(_kernel.KernelError):
        _kernel.hash_words(words([1, 2]), 2, 2)  # buffer too small for two messages


@settings(max_examples=40, **SETTINGS)
@given(states=st.lists(st.tuples(FIELD, FIELD), min_size=1, max_size=9),
       lanes=st.integers(0, 6))
def test_permute_words_matches_reference(states, lanes, kernel_backend):
    buffer = bytearray(b"".join(words(s) for s in states))
    _kernel.permute_words(buffer, len(states), lanes)
    got = unwords(bytes(buffer))
    assert [tuple(got[2 * i:2 * i + 2]) for i in range(len(states))] == \
        [tuple(reference.permute(list(s))) for s in states]


def test_permute_words_default_lanes(kernel_backend):
    states = [(i, P - 1 - i) for i in range(7)]
    buffer = bytearray(b"".join(words(s) for s in states))
    _kernel.permute_words(buffer, len(states))
    got = unwords(bytes(buffer))
    assert [tuple(got[2 * i:2 * i + 2]) for i in range(7)] == [tuple(reference.permute(list(s))) for s in states]


@st.composite
def aggregation_cases(draw):
    layout = draw(st.sampled_from(LAYOUTS))
    n_currencies = draw(st.integers(1, 3))
    n_bytes = draw(st.integers(2, 14))
    mini_count = draw(st.integers(1, 5))
    counts = draw(st.lists(st.integers(1, 8), min_size=mini_count, max_size=mini_count))
    names = draw(st.lists(NAME, min_size=sum(counts), max_size=sum(counts), unique=True))
    balances = draw(balances_for(sum(counts), n_currencies, n_bytes))
    entries = list(zip(names, balances))
    batches, start = [], 0
    for count in counts:
        batches.append(entries[start:start + count])
        start += count
    return layout, n_bytes, batches


@settings(max_examples=25, **SETTINGS)
@given(case=aggregation_cases())
def test_aggregation_matches_reference(case, kernel_backend, to_levels_json):
    layout, n_bytes, batches = case
    depth = depth_for(max(len(b) for b in batches))
    minis = [MerkleSumTree.from_entries(b, layout=layout, depth=depth, n_bytes=n_bytes) for b in batches]
    aggregated = AggregationMerkleSumTree(minis, n_bytes=n_bytes)
    mini_levels = [reference.build_tree(b, layout, depth) for b in batches]
    for mini, levels in zip(minis, mini_levels):
        assert mini.to_json()["nodes"] == to_levels_json(levels)
    expected = reference.aggregate(mini_levels, layout)
    assert aggregated.top.to_json_levels() == to_levels_json(expected)
    assert aggregated.depth == depth + len(expected) - 1
    # every entry is where its global index says
    for m, batch in enumerate(batches):
        for local, (name, balances) in enumerate(batch):
            index = (m << depth) + local
            assert aggregated.index_of(name) == index
            entry = aggregated.get_entry(index)
            assert (entry.username, list(entry.balances)) == (name, balances)
