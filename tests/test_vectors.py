"""Every value of tests/data/vectors.json, reproduced by the C kernel (on every backend this
CPU has) and by the pure-Python reference."""
import hashlib


from summa_aggregation.cython_ext import _kernel, params, reference
from summa_aggregation.mst.csv_job import read_csvs
from summa_aggregation.mst.csv_reader import username_to_word
from summa_aggregation.mst.tree import AggregationMerkleSumTree, MerkleSumTree, Node, zero_root

from mst_helpers import read_csv, tree_of


def field(text):
    return int(text, 16)


def words(values):
    return b"".join(int(v).to_bytes(32, "little") for v in values)


def kernel_hash(elements):
    out = _kernel.hash_words(words(elements), 1, len(elements))
    assert len(out) == 32
    return int.from_bytes(out, "little")


def parse_inputs(key):
    """A 'hash' vector key: comma-separated inputs, each hex (0x...) or decimal."""
    return [int(part, 16) if part.startswith("0x") else int(part, 10) for part in key.split(",")]


def mini_tree(path, layout, **kwargs):
    return tree_of(read_csv(path), layout=layout, **kwargs)


# --- field and Poseidon parameters ----------------------------------------------------------

def test_field_modulus(vectors):
    assert field(vectors["field_modulus"]) == params.P
    assert params.P.bit_length() == params.FIELD_BITS == 254


def test_poseidon_shape(vectors):
    poseidon = vectors["poseidon"]
    assert poseidon["width"] == params.WIDTH == 2
    assert poseidon["rate"] == 1
    assert poseidon["full_rounds"] == params.FULL_ROUNDS
    assert poseidon["partial_rounds"] == params.PARTIAL_ROUNDS
    assert poseidon["sbox"] == "x^5"


def test_round_constants(vectors):
    poseidon = vectors["poseidon"]
    constants, _ = params.poseidon_params()
    assert len(constants) == poseidon["round_constants_count"] == 128
    assert all(0 <= c < params.P for c in constants)
    first, last = poseidon["round_constants_first"], poseidon["round_constants_last"]
    assert list(constants[:len(first)]) == [field(c) for c in first]
    assert list(constants[-len(last):]) == [field(c) for c in last]
    digest = hashlib.sha256(b"".join(c.to_bytes(32, "big") for c in constants)).hexdigest()
    assert digest == poseidon["round_constants_sha256_of_concatenated_32byte_big_endian"]


def test_mds(vectors):
    _, mds = params.poseidon_params()
    assert [list(row) for row in mds] == [[field(x) for x in row] for row in vectors["poseidon"]["mds"]]


def test_kernel_schedule_consistent_with_parameters():
    """The folded schedule the kernel is given keeps the plain parameters where it should."""
    constants, mds = params.poseidon_params()
    full, partial, flat_mds, matrix = params.kernel_schedule()
    assert len(full) == 16 and len(partial) == 56
    assert full[:8] == list(constants[:8])  # the four opening full rounds are unchanged
    assert full[-6:] == list(constants[-6:])  # so are the last three closing rounds
    assert flat_mds == [mds[0][0], mds[0][1], mds[1][0], mds[1][1]]
    assert matrix[3] * matrix[4] % params.P == 1


# --- hashes ---------------------------------------------------------------------------------

def test_hash_vector_kernel(vectors, hash_vector_key, kernel_backend):
    elements = parse_inputs(hash_vector_key)
    assert kernel_hash(elements) == field(vectors["hash"][hash_vector_key])


def test_hash_vector_reference(vectors, hash_vector_key):
    assert reference.hash_elements(parse_inputs(hash_vector_key)) == field(vectors["hash"][hash_vector_key])


def test_hash_vectors_batched_kernel(vectors, kernel_backend):
    """Several messages of one length in one call (the kernel's multi-lane path)."""
    by_length = {}
    for key, expected in vectors["hash"].items():
        by_length.setdefault(len(parse_inputs(key)), []).append((parse_inputs(key), field(expected)))
    for length, cases in by_length.items():
        cases = cases * 3  # more messages than lanes
        out = _kernel.hash_words(b"".join(words(e) for e, _ in cases), len(cases), length)
        got = [int.from_bytes(out[32 * i:32 * i + 32], "little") for i in range(len(cases))]
        assert got == [expected for _, expected in cases]


def test_username_to_field(vectors):
    for name, expected in vectors["username_to_field"].items():
        assert reference.username_to_field(name) == field(expected)
        assert int.from_bytes(username_to_word(name), "little") == field(expected)


# --- per-layout tree vectors ----------------------------------------------------------------

def test_seed_two_entries(vectors, entries_of, to_levels_json, tree_layout, kernel_backend):
    expected = vectors["layouts"][tree_layout]["seed_two_entries"]
    seed = entries_of("entry_16.csv")[:2]
    tree = MerkleSumTree.from_entries(seed, layout=tree_layout)
    assert tree.to_json() == expected
    levels = reference.build_tree(seed, tree_layout)
    assert to_levels_json(levels) == expected["nodes"]
    assert to_levels_json([levels[-1]])[0][0] == expected["root"]


def test_zero_leaf(vectors, to_node_json, tree_layout, kernel_backend):
    expected = vectors["layouts"][tree_layout]["zero_leaf_2_currencies"]
    assert to_node_json(reference.leaf(0, [0, 0])) == expected
    assert Node.from_record(zero_root(0, 2, tree_layout)).to_json() == expected
    out = bytearray(32 * 3)
    _kernel.hash_leaves(bytes(32), bytes(64), 1, 2, out)
    assert Node.from_record(bytes(out)).to_json() == expected


def test_root_of_fixture_kernel(vectors, fixtures_dir, root_vector_name, tree_layout, kernel_backend):
    name = root_vector_name[len("root_of_"):]
    tree = mini_tree(fixtures_dir / name, tree_layout)
    assert tree.root.to_json() == vectors["layouts"][tree_layout][root_vector_name]


def test_root_of_fixture_reference(vectors, entries_of, to_node_json, root_vector_name, tree_layout):
    name = root_vector_name[len("root_of_"):]
    root = reference.build_tree(entries_of(name), tree_layout)[-1][0]
    assert to_node_json(root) == vectors["layouts"][tree_layout][root_vector_name]


def test_aggregation_of_three(vectors, fixtures_dir, tree_layout, kernel_backend):
    expected = vectors["layouts"][tree_layout]["aggregation_of_entry_16_1_2_3"]["root"]
    minis = [mini_tree(fixtures_dir / f"entry_16_{i}.csv", tree_layout) for i in (1, 2, 3)]
    aggregated = AggregationMerkleSumTree(minis)
    assert aggregated.root.to_json() == expected
    assert aggregated.top.depth == 2 and aggregated.depth == 6
    # the note of the vector: the same as one tree over the 48 entries, padded to 64
    batches = read_csvs([fixtures_dir / f"entry_16_{i}.csv" for i in (1, 2, 3)])
    concatenated = MerkleSumTree.build(b"".join(b.usernames for b in batches),
                                       b"".join(b.balances for b in batches), 48, 2,
                                       layout=tree_layout)
    assert concatenated.depth == 6
    assert concatenated.root.to_json() == expected


def test_aggregation_of_three_reference(vectors, entries_of, to_node_json, tree_layout):
    expected = vectors["layouts"][tree_layout]["aggregation_of_entry_16_1_2_3"]["root"]
    minis = [reference.build_tree(entries_of(f"entry_16_{i}.csv"), tree_layout) for i in (1, 2, 3)]
    assert to_node_json(reference.aggregate(minis, tree_layout)[-1][0]) == expected


def test_first_13_entries(vectors, entries_of, to_node_json, tree_layout, kernel_backend):
    expected = vectors["layouts"][tree_layout]["root_of_first_13_entries_of_entry_16_1"]
    entries = entries_of("entry_16_1.csv")[:13]
    tree = MerkleSumTree.from_entries(entries, layout=tree_layout)
    assert tree.depth == 4 and tree.count == 13
    assert tree.root.to_json() == expected
    assert to_node_json(reference.build_tree(entries, tree_layout)[-1][0]) == expected


# --- acceptance: four mini-trees of 16 give the root of the 64-entry file --------------------

def test_fixture_64_is_the_four_16s_concatenated(entries_of):
    assert entries_of("entry_64.csv") == sum((entries_of(f"entry_16_{i}.csv") for i in range(1, 5)), [])


def test_aggregation_of_four_equals_entry_64(vectors, fixtures_dir, tree_layout, kernel_backend):
    minis = [mini_tree(fixtures_dir / f"entry_16_{i}.csv", tree_layout) for i in range(1, 5)]
    aggregated = AggregationMerkleSumTree(minis)
    assert aggregated.count == 64
    assert aggregated.root.to_json() == vectors["layouts"][tree_layout]["root_of_entry_64.csv"]


def test_aggregation_of_four_equals_entry_64_reference(vectors, entries_of, to_node_json, tree_layout):
    minis = [reference.build_tree(entries_of(f"entry_16_{i}.csv"), tree_layout) for i in range(1, 5)]
    root = reference.aggregate(minis, tree_layout)[-1][0]
    assert to_node_json(root) == vectors["layouts"][tree_layout]["root_of_entry_64.csv"]


def test_layouts_differ(vectors):
    """Sanity of the vectors themselves: the two layouts give different middle nodes."""
    a, b = (vectors["layouts"][k]["root_of_entry_64.csv"] for k in ("interleaved", "sum-first"))
    assert a["hash"] != b["hash"] and a["balances"] == b["balances"]
