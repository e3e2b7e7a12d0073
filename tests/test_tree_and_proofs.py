"""Trees, entries, range checks and inclusion proofs (valid ones verify, any change is refused)."""
import copy
import random
from functools import lru_cache

import pytest

from summa_aggregation.cython_ext import _kernel, reference
from summa_aggregation.mst.csv_reader import CsvError
from summa_aggregation.cython_ext.params import LAYOUTS, P
from summa_aggregation.mst.proof import InvalidProof, verify_proof
from summa_aggregation.mst.tree import (AggregationMerkleSumTree, MerkleSumTree, Node,
                                               RangeCheckError)

from mst_helpers import read_csv, tree_of
N37 = 37
MINI = 8  # the 37 entries cut into mini-trees of 8: four full ones and one of 5


def make_entries(count, n_currencies, seed=0, top=10**12):
    rng = random.Random(seed)
    names = ["dxGaEAii", "MBlfbBGI", "zoë", "пользователь", "a", "0"]
    names += [f"user-{i:03d}" for i in range(count)]
    return [(names[i], [rng.randint(0, top) for _ in range(n_currencies)]) for i in range(count)]


ENTRIES37 = make_entries(N37, 3)


@lru_cache(maxsize=None)
def tree37(layout):
    return MerkleSumTree.from_entries(ENTRIES37, layout=layout)


@lru_cache(maxsize=None)
def aggregated37(layout):
    minis = [MerkleSumTree.from_entries(ENTRIES37[i:i + MINI], layout=layout, depth=3)
             for i in range(0, N37, MINI)]
    return AggregationMerkleSumTree(minis)


def global_index(i):
    return (i // MINI) * MINI + i % MINI  # batches of 8 in a depth-3 mini-tree: same number


# --- valid proofs -------------------------------------------------------------------------

def test_every_leaf_proof_verifies(tree_layout):
    tree = tree37(tree_layout)
    assert tree.depth == 6 and tree.count == N37
    root = tree.root
    for i, (name, balances) in enumerate(ENTRIES37):
        proof = tree.proof(i)
        assert proof == tree.proof(name)
        assert proof["index"] == i and proof["layout"] == tree_layout
        assert proof["entry"] == {"username": name, "balances": [str(b) for b in balances]}
        assert len(proof["path"]) == len(proof["path_indices"]) == 6
        assert proof["path_indices"] == [(i >> k) & 1 for k in range(6)]
        assert proof["root"] == root.to_json()
        hash_, totals = verify_proof(proof)
        assert (hash_, tuple(totals)) == (root.hash, root.balances)


def test_every_leaf_proof_verifies_through_aggregation(tree_layout):
    aggregated = aggregated37(tree_layout)
    assert len(aggregated.mini_trees) == 5 and aggregated.mini_depth == 3 and aggregated.top.depth == 3
    # every batch but the last is full: the same root as one tree over all the entries
    assert aggregated.root == tree37(tree_layout).root
    for i, (name, _) in enumerate(ENTRIES37):
        proof = aggregated.proof(global_index(i))
        assert proof == aggregated.proof(name)
        assert len(proof["path"]) == 6  # 3 levels in the mini-tree, 3 in the top tree
        verify_proof(proof)
        # same leaf position as in the single tree: the proofs are identical
        assert proof == tree37(tree_layout).proof(i)


def test_aggregation_proof_with_sparse_last_mini(tree_layout):
    """Mini-trees whose last batch is short: global index = mini * 2^d + local; paths still verify."""
    batches = [ENTRIES37[0:5], ENTRIES37[5:13], ENTRIES37[13:14]]  # depth 3; 3 minis padded to 4
    minis = [MerkleSumTree.from_entries(b, layout=tree_layout, depth=3) for b in batches]
    aggregated = AggregationMerkleSumTree(minis)
    assert aggregated.count == 14 and aggregated.depth == 5
    expected = reference.aggregate([reference.build_tree(b, tree_layout, 3) for b in batches], tree_layout)
    assert aggregated.root.hash == expected[-1][0][0]
    for m, batch in enumerate(batches):
        for local, (name, balances) in enumerate(batch):
            index = m * 8 + local
            assert aggregated.index_of(name) == index
            assert aggregated.get_entry(index).username == name
            assert list(aggregated.get_entry(index).balances) == balances
            proof = aggregated.proof(name)
            assert proof["index"] == index
            assert verify_proof(proof)[0] == aggregated.root.hash


def test_single_entry_tree():
    tree = MerkleSumTree.from_entries([("alice", [5, 7])])
    assert tree.depth == 0
    leaf = reference.leaf(reference.username_to_field("alice"), [5, 7])
    assert (tree.root.hash, tree.root.balances) == leaf
    assert tree.levels.node(0, 0) == tree.root
    assert tree.to_json()["nodes"] == [[tree.root.to_json()]]
    proof = tree.proof("alice")
    assert proof["path"] == [] and proof["path_indices"] == [] and proof["index"] == 0
    assert verify_proof(proof)[0] == tree.root.hash


def test_single_mini_tree_aggregation_is_the_mini_tree(tree_layout):
    mini = MerkleSumTree.from_entries(ENTRIES37[:6], layout=tree_layout)
    aggregated = AggregationMerkleSumTree([mini])
    assert aggregated.top.depth == 0 and aggregated.root == mini.root
    assert aggregated.proof(3) == mini.proof(3)


# --- entries and indices ------------------------------------------------------------------

def test_get_entry_and_index_of(tree_layout):
    tree = tree37(tree_layout)
    for i, (name, balances) in enumerate(ENTRIES37):
        entry = tree.get_entry(i)
        assert entry.username == name and list(entry.balances) == balances
        assert tree.index_of(name) == i
    assert tree.index_of("nobody") is None
    for bad in (N37, 63, 64, 1000, -1):  # padding, past the end, negative
        with pytest.raises(IndexError):
            tree.get_entry(bad)
        with pytest.raises(IndexError):
            tree.proof(bad)
    with pytest.raises(KeyError, match="nobody"):
        tree.proof("nobody")


def test_aggregation_get_entry_and_errors(tree_layout):
    batches = [ENTRIES37[0:8], ENTRIES37[8:11]]
    aggregated = AggregationMerkleSumTree(
        [MerkleSumTree.from_entries(b, layout=tree_layout, depth=3) for b in batches])
    assert aggregated.get_entry(8 + 2).username == ENTRIES37[10][0]
    assert aggregated.index_of(ENTRIES37[10][0]) == 10
    assert aggregated.index_of(ENTRIES37[0][0]) == 0
    assert aggregated.index_of("nobody") is None
    for bad in (11, 15, 16, 17, 100, -1):  # padding of mini 1, the zero mini, beyond, negative
        with pytest.raises(IndexError):
            aggregated.get_entry(bad)
        with pytest.raises(IndexError):
            aggregated.proof(bad)
    with pytest.raises(KeyError, match="nobody"):
        aggregated.proof("nobody")


def test_index_of_only_matches_whole_words():
    """A username whose bytes appear inside another's word at an unaligned offset is not found."""
    tree = MerkleSumTree.from_entries([("abcd", [1]), ("xyz", [2])])
    assert tree.index_of("bcd") is None and tree.index_of("abc") is None
    assert tree.index_of("xyz") == 1


def test_aggregation_refuses_mixed_mini_trees():
    a = MerkleSumTree.from_entries([("a", [1]), ("b", [2])])
    with pytest.raises(ValueError, match="mini-tree 1"):
        AggregationMerkleSumTree([a, MerkleSumTree.from_entries([("c", [1])])])  # depth 0
    with pytest.raises(ValueError, match="mini-tree 1"):
        AggregationMerkleSumTree([a, MerkleSumTree.from_entries([("c", [1]), ("d", [1])], layout="sum-first")])
    with pytest.raises(ValueError, match="mini-tree 1"):
        AggregationMerkleSumTree([a, MerkleSumTree.from_entries([("c", [1, 1]), ("d", [1, 1])])])
    with pytest.raises(ValueError):
        AggregationMerkleSumTree([])


def test_build_argument_errors():
    with pytest.raises(ValueError):
        MerkleSumTree.build(b"", b"", 0, 1)
    with pytest.raises(ValueError, match="depth"):
        MerkleSumTree.from_entries(make_entries(5, 1), depth=2)
    with pytest.raises(ValueError, match="layout"):
        MerkleSumTree.from_entries(make_entries(2, 1), layout="sorted")
    with pytest.raises(ValueError):
        MerkleSumTree.from_entries([("", [1])])  # the empty name is the padding's username
    with pytest.raises(ValueError):
        MerkleSumTree.from_entries(make_entries(2, 1), n_bytes=0)


# --- currencies, depth and memory layout --------------------------------------------------

@pytest.mark.parametrize("n_currencies", list(range(1, 17)))
def test_currency_counts_1_to_16(n_currencies, tree_layout):
    entries = make_entries(3, n_currencies, seed=n_currencies)
    tree = MerkleSumTree.from_entries(entries, layout=tree_layout)
    assert tree.n_currencies == n_currencies and tree.depth == 2
    root = reference.build_tree(entries, tree_layout)[-1][0]
    assert (tree.root.hash, tree.root.balances) == root
    verify_proof(tree.proof(2))


@pytest.mark.parametrize("n_currencies", [17, 33, 63, 64])
def test_currency_counts_up_to_64(n_currencies):
    layout = "interleaved" if n_currencies % 2 else "sum-first"
    entries = make_entries(2, n_currencies, seed=n_currencies)
    tree = MerkleSumTree.from_entries(entries, layout=layout)
    assert (tree.root.hash, tree.root.balances) == reference.build_tree(entries, layout)[-1][0]
    verify_proof(tree.proof(1))


def test_currency_count_limits():
    assert _kernel.MAX_CURRENCIES == 64
    with pytest.raises(ValueError, match="currencies"):
        MerkleSumTree.from_entries(make_entries(2, 65))
    with pytest.raises(ValueError, match="currencies"):
        MerkleSumTree.from_entries([("a", []), ("b", [])])


@pytest.mark.parametrize("n_currencies, count", [(1, 1), (1, 2), (2, 3), (3, 16), (5, 17), (64, 2)])
def test_memory_layout(n_currencies, count):
    tree = MerkleSumTree.from_entries(make_entries(count, n_currencies))
    d = tree.depth
    assert d == (count - 1).bit_length()
    assert len(tree.levels.nodes) == 32 * (n_currencies + 1) * (2 ** (d + 1) - 1)
    # leaves first, then each level; the last record is the root
    record = 32 * (n_currencies + 1)
    assert Node.from_record(bytes(tree.levels.nodes[-record:])) == tree.root
    assert Node.from_record(bytes(tree.levels.nodes[:record])) == tree.levels.node(0, 0)
    if count < 2 ** d:  # padding leaves are the zero leaf
        zero = reference.leaf(0, [0] * n_currencies)
        padding = tree.levels.node(0, 2 ** d - 1)
        assert (padding.hash, padding.balances) == zero


# --- range checks -------------------------------------------------------------------------

def write_csv(tmp_path, rows, name="job.csv"):
    path = tmp_path / name
    path.write_text("username,balance_ETH_ETH,balance_USDT_ETH\n"
                    + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def test_range_check_names_the_currency(tmp_path):
    path = write_csv(tmp_path, [("a", 1, 200), ("b", 1, 100)])
    batch = read_csv(path, n_bytes=1)  # every balance fits in one byte...
    with pytest.raises(RangeCheckError, match="balance_USDT_ETH") as info:
        tree_of(batch, n_bytes=1)  # ...the USDT total (300) does not
    assert "balance_ETH_ETH" not in str(info.value)
    assert tree_of(batch, n_bytes=2).root.balances == (2, 300)


def test_range_check_without_names_and_with_currencies():
    entries = [("a", [200]), ("b", [100])]
    with pytest.raises(RangeCheckError, match="currency 0"):
        MerkleSumTree.from_entries(entries, n_bytes=1)
    with pytest.raises(RangeCheckError, match="balance_BTC_BTC"):
        MerkleSumTree.from_entries(entries, n_bytes=1, currencies=["balance_BTC_BTC"])
    # exactly 2^8 - 1 fits
    assert MerkleSumTree.from_entries([("a", [200]), ("b", [55])], n_bytes=1).root.balances == (255,)
    with pytest.raises(RangeCheckError):
        MerkleSumTree.from_entries([("a", [200]), ("b", [56])], n_bytes=1)


def test_range_check_when_sums_leave_the_field():
    """A sum that leaves the field is a range error naming the currency, not a kernel error."""
    entries = [("a", [1, P - 1]), ("b", [1, 5])]
    with pytest.raises(RangeCheckError, match="balance_Y_Z"):
        MerkleSumTree.from_entries(entries, n_bytes=31, currencies=["balance_X_Z", "balance_Y_Z"])


def test_range_check_on_the_aggregation(tmp_path):
    """Each mini-tree fits, their sum does not: the aggregation refuses, naming the currency."""
    minis = [tree_of(read_csv(write_csv(tmp_path, rows, name), n_bytes=1), n_bytes=1)
             for rows, name in (([("a", 1, 200)], "1.csv"), ([("b", 1, 100)], "2.csv"))]
    with pytest.raises(RangeCheckError, match="balance_USDT_ETH"):
        AggregationMerkleSumTree(minis, n_bytes=1)
    assert AggregationMerkleSumTree(minis, n_bytes=2).root.balances == (2, 300)


def test_no_overflow_fixture(fixtures_dir, entries_of):
    batch = read_csv(fixtures_dir / "entry_16_no_overflow.csv")
    for n_bytes in (14, 8):
        tree = tree_of(batch, n_bytes=n_bytes)
        assert tree.root.balances == (2**64 - 1, 2**64 - 1)
    assert (tree.root.hash, tree.root.balances) == \
        reference.build_tree(entries_of("entry_16_no_overflow.csv"))[-1][0]
    with pytest.raises(RangeCheckError, match="balance_ETH_ETH"):
        tree_of(batch, n_bytes=7)
    with pytest.raises(CsvError, match="out of range"):
        read_csv(fixtures_dir / "entry_16_no_overflow.csv", n_bytes=7)


# --- tampered proofs ----------------------------------------------------------------------

INDEX = 22  # 0b010110: both sides occur along the path


@lru_cache(maxsize=None)
def base_proof(layout, source):
    tree = tree37(layout) if source == "tree" else aggregated37(layout)
    return tree.proof(INDEX)


def hexf(value):
    return "0x%064x" % value


def bump_field(text, delta=1):
    return hexf((int(text, 16) + delta) % P)


def mutants_layout(p):
    other = [name for name in LAYOUTS if name != p["layout"]][0]
    for value in (other, p["layout"].upper(), "", None, 0, "sorted"):
        yield f"layout={value!r}", {**p, "layout": value}


def mutants_n_currencies(p):
    n = p["n_currencies"]
    for value in (n + 1, n - 1, 0, -1, 65, str(n), float(n), None, True):
        yield f"n_currencies={value!r}", {**p, "n_currencies": value}


def mutants_username(p):
    name = p["entry"]["username"]
    for value in (name + "x", name[:-1], name.upper(), ENTRIES37[INDEX + 1][0], "", "\x00" + name,
                  42, None, [name]):
        yield f"username={value!r}", {**p, "entry": {**p["entry"], "username": value}}


def mutants_entry_balances(p):
    balances = p["entry"]["balances"]
    for i, b in enumerate(balances):
        for value in (str(int(b) + 1), str(int(b) - 1), "0", str(int(b) + P), int(b), hex(int(b)),
                      "-" + b, " " + b, b + ".0", "", None, str(P)):
            yield f"balances[{i}]={value!r}", {**p, "entry": {**p["entry"], "balances": [
                value if j == i else x for j, x in enumerate(balances)]}}
    yield "balances dropped", {**p, "entry": {**p["entry"], "balances": balances[:-1]}}
    yield "balance added", {**p, "entry": {**p["entry"], "balances": balances + ["0"]}}
    yield "balances swapped", {**p, "entry": {**p["entry"], "balances": balances[::-1]}}


def mutants_index(p):
    index, depth = p["index"], len(p["path"])
    for k in range(depth):
        yield f"index bit {k} flipped", {**p, "index": index ^ (1 << k)}
    for value in (index + (1 << depth), -1, 1 << 64, float(index), str(index), None, [index], True):
        yield f"index={value!r}", {**p, "index": value}


def mutants_path_hashes(p):
    for k, node in enumerate(p["path"]):
        h = node["hash"]
        for label, value in (("+1", bump_field(h)), ("-1", bump_field(h, -1)), ("upper", "0x" + h[2:].upper()),
                             ("no 0x", h[2:]), ("short", h[:-1]), ("long", h + "0"), ("p", hexf(P)),
                             ("int", int(h, 16)), ("zero", hexf(0)), ("none", None)):
            if value == h:
                continue
            yield f"path[{k}].hash {label}", {**p, "path": [
                {**n, "hash": value} if j == k else n for j, n in enumerate(p["path"])]}


def mutants_path_balances(p):
    for k, node in enumerate(p["path"]):
        for i, b in enumerate(node["balances"]):
            for label, value in (("+1", bump_field(b)), ("-1", bump_field(b, -1)), ("p", hexf(P)),
                                 ("+p", hexf(int(b, 16) + P) if int(b, 16) + P < 2**256 else None),
                                 ("int", int(b, 16)), ("decimal", str(int(b, 16)))):
                balances = [value if j == i else x for j, x in enumerate(node["balances"])]
                yield f"path[{k}].balances[{i}] {label}", {**p, "path": [
                    {**n, "balances": balances} if j == k else n for j, n in enumerate(p["path"])]}
        for label, balances in (("dropped", node["balances"][:-1]), ("added", node["balances"] + [hexf(0)]),
                                ("reversed", node["balances"][::-1])):
            if balances == node["balances"]:
                continue
            yield f"path[{k}].balances {label}", {**p, "path": [
                {**n, "balances": balances} if j == k else n for j, n in enumerate(p["path"])]}


def mutants_path_nodes(p):
    path, sides = p["path"], p["path_indices"]
    for k, node in enumerate(path):
        for label, value in (("no hash", {"balances": node["balances"]}),
                             ("no balances", {"hash": node["hash"]}),
                             ("extra key", {**node, "extra": 1}),
                             ("list", [node["hash"], node["balances"]]), ("none", None),
                             ("zero node", {"hash": hexf(0), "balances": [hexf(0)] * len(node["balances"])})):
            yield f"path[{k}] {label}", {**p, "path": [value if j == k else n for j, n in enumerate(path)]}
    for k in range(len(path) - 1):
        swapped = list(path)
        swapped[k], swapped[k + 1] = swapped[k + 1], swapped[k]
        yield f"path[{k}] <-> path[{k + 1}]", {**p, "path": swapped}
    yield "path reversed", {**p, "path": path[::-1]}
    # shorter and longer paths, with index and path_indices kept consistent
    yield "path truncated", {**p, "path": path[:-1], "path_indices": sides[:-1],
                             "index": p["index"] & ((1 << (len(sides) - 1)) - 1)}
    yield "path extended", {**p, "path": path + [path[-1]], "path_indices": sides + [0]}
    yield "path extended left", {**p, "path": [path[0]] + path, "path_indices": [0] + sides,
                                 "index": p["index"] << 1}
    yield "path only", {**p, "path_indices": sides[:-1]}
    yield "path_indices only", {**p, "path": path[:-1]}
    yield "path empty", {**p, "path": [], "path_indices": [], "index": 0}
    yield "path not a list", {**p, "path": {str(i): n for i, n in enumerate(path)}}


def mutants_path_indices(p):
    sides = p["path_indices"]
    for k, side in enumerate(sides):
        for value in (1 - side, 2, -1, "0", "1", None, bool(1 - side)):
            yield f"path_indices[{k}]={value!r}", {**p, "path_indices": [
                value if j == k else s for j, s in enumerate(sides)]}
        # the sibling moved to the other side, index kept consistent: order matters in the hash
        yield f"side {k} swapped with index", {**p, "index": p["index"] ^ (1 << k), "path_indices": [
            1 - s if j == k else s for j, s in enumerate(sides)]}
    yield "path_indices not a list", {**p, "path_indices": "".join(map(str, sides))}


def mutants_root(p):
    root = p["root"]
    for label, value in (("+1", bump_field(root["hash"])), ("-1", bump_field(root["hash"], -1)),
                         ("zero", hexf(0)), ("p", hexf(P)), ("upper", "0x" + root["hash"][2:].upper())):
        yield f"root.hash {label}", {**p, "root": {**root, "hash": value}}
    for i, b in enumerate(root["balances"]):
        for label, value in (("+1", bump_field(b)), ("-1", bump_field(b, -1)), ("zero", hexf(0)),
                             ("+p", hexf(int(b, 16) + P))):
            yield f"root.balances[{i}] {label}", {**p, "root": {**root, "balances": [
                value if j == i else x for j, x in enumerate(root["balances"])]}}
    yield "root.balances dropped", {**p, "root": {**root, "balances": root["balances"][:-1]}}
    yield "root.balances added", {**p, "root": {**root, "balances": root["balances"] + [hexf(0)]}}
    yield "root = first path node", {**p, "root": p["path"][0]}
    yield "root extra key", {**p, "root": {**root, "depth": 6}}
    yield "root missing", {**p, "root": None}


# SPEC section 7's fields: absent means bytes and unsorted, so a bytes, unsorted proof without
# them is the same proof (as every proof written before them)
OPTIONAL_DEFAULTS = {"username_encoding": "bytes", "is_sorted": False}


def mutants_structure(p):
    for key in p:
        if p[key] != OPTIONAL_DEFAULTS.get(key, object()):
            yield f"without {key}", {k: v for k, v in p.items() if k != key}
    yield "extra key", {**p, "extra": None}
    for key in p["entry"]:
        yield f"entry without {key}", {**p, "entry": {k: v for k, v in p["entry"].items() if k != key}}
    yield "entry extra key", {**p, "entry": {**p["entry"], "index": p["index"]}}
    yield "entry is a list", {**p, "entry": [p["entry"]["username"], p["entry"]["balances"]]}
    yield "entry balances as a dict", {**p, "entry": {**p["entry"], "balances": dict(
        enumerate(p["entry"]["balances"]))}}
    yield "proof is a list", list(p.items())
    yield "proof is None", None
    yield "proof is a string", "proof"


def mutants_variants(p):
    """The username encoding is hashed into the leaf: another one is refused. (is_sorted is a
    statement about the whole tree that one path cannot check: summa-verify only reports it.)"""
    yield "username_encoding keccak256", {**p, "username_encoding": "keccak256"}
    for value in ("sha3-256", "BYTES", None, 0, ["bytes"]):
        yield f"username_encoding {value!r}", {**p, "username_encoding": value}
    for value in ("true", 0, 1, None):
        yield f"is_sorted {value!r}", {**p, "is_sorted": value}


MUTATION_FAMILIES = {f.__name__[len("mutants_"):]: f for f in (
    mutants_variants, mutants_layout, mutants_n_currencies, mutants_username, mutants_entry_balances, mutants_index,
    mutants_path_hashes, mutants_path_balances, mutants_path_nodes, mutants_path_indices,
    mutants_root, mutants_structure)}


@pytest.mark.parametrize("source", ["tree", "aggregation"])
@pytest.mark.parametrize("family", sorted(MUTATION_FAMILIES))
def test_any_single_change_is_refused(family, source, tree_layout):
    original = base_proof(tree_layout, source)
    pristine = copy.deepcopy(original)
    verify_proof(original)
    mutants = list(MUTATION_FAMILIES[family](copy.deepcopy(original)))
    assert len(mutants) >= 3
    accepted = []
    for name, mutant in mutants:
        # repr, not ==: 3.0 == 3 and True == 1, but those are changes of type worth refusing
        assert repr(mutant) != repr(original), f"mutation {name!r} changed nothing"
        try:
            verify_proof(mutant)
        except InvalidProof as error:
            assert str(error) and "\n" not in str(error)
            continue
        except Exception as error:  # anything but InvalidProof is a crash, not a refusal
            accepted.append(f"{name}: raised {type(error).__name__}: {error}")
            continue
        accepted.append(f"{name}: accepted")
    assert accepted == []
    assert original == pristine  # verification does not modify its input


def test_type_only_changes_are_refused():
    """Values equal as numbers but of the wrong JSON type (bool for int, str for int, float)."""
    tree = MerkleSumTree.from_entries([("a", [1]), ("b", [2]), ("c", [3])])
    one = tree.proof(1)  # index 1, path_indices [1, 0]
    zero = tree.proof(0)
    verify_proof(one)
    cases = {
        "index True": {**one, "index": True},
        "index False": {**zero, "index": False},
        "index 1.0": {**one, "index": 1.0},
        "index '1'": {**one, "index": "1"},
        "n_currencies True": {**one, "n_currencies": True},
        "n_currencies 1.0": {**one, "n_currencies": 1.0},
        "path_indices True": {**one, "path_indices": [True, 0]},
        "path_indices False": {**one, "path_indices": [1, False]},
        "path_indices '1'": {**one, "path_indices": ["1", 0]},
        "balance int": {**one, "entry": {**one["entry"], "balances": [2]}},
    }
    for name, proof in cases.items():
        with pytest.raises(InvalidProof):
            verify_proof(proof)
            pytest.fail(f"{name} accepted")


def test_float_path_indices_are_refused():
    tree = MerkleSumTree.from_entries([("a", [1]), ("b", [2]), ("c", [3])])
    proof = tree.proof(1)
    with pytest.raises(InvalidProof):
        verify_proof({**proof, "path_indices": [1.0, 0.0]})


def test_proof_of_another_tree_is_refused(tree_layout):
    """A valid proof presented with a different published root fails; with its own, it passes."""
    proof = tree37(tree_layout).proof(5)
    other = MerkleSumTree.from_entries(ENTRIES37[:36], layout=tree_layout)
    verify_proof(proof)
    with pytest.raises(InvalidProof, match="root"):
        verify_proof({**proof, "root": other.root.to_json()})


def test_balances_with_leading_zeros_are_refused():
    """One proof, one text: '011888' and '11888' must not both verify."""
    tree = MerkleSumTree.from_entries([("a", [11888]), ("b", [2])])
    proof = tree.proof("a")
    verify_proof(proof)
    proof["entry"]["balances"][0] = "011888"
    with pytest.raises(InvalidProof, match="leading zeros"):
        verify_proof(proof)


@pytest.mark.parametrize("key", [True, 1.0, None])
def test_proof_wants_a_username_or_a_real_index(key):
    tree = MerkleSumTree.from_entries([("a", [1]), ("b", [2])])
    with pytest.raises(TypeError):
        tree.proof(key)
    with pytest.raises(TypeError):
        AggregationMerkleSumTree([tree]).proof(key)
