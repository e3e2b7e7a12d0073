"""The pure-Python reference of the hash and the tree: small, slow, and the ground truth.

The C kernel is tested against this module (see tests/test_kernel_vs_reference.py).
Field elements are Python ints in [0, P); a node is a (hash, balances) tuple.
"""
from .params import FULL_ROUNDS, LAYOUTS, P, PARTIAL_ROUNDS, WIDTH, poseidon_params

INTERLEAVED, SUM_FIRST = LAYOUTS


def permute(state):
    constants, mds = poseidon_params()
    s = list(state)
    half = FULL_ROUNDS // 2
    for rnd in range(FULL_ROUNDS + PARTIAL_ROUNDS):
        s = [(x + constants[rnd * WIDTH + i]) % P for i, x in enumerate(s)]
        if rnd < half or rnd >= half + PARTIAL_ROUNDS:
            s = [pow(x, 5, P) for x in s]
        else:
            s[0] = pow(s[0], 5, P)
        s = [sum(mds[i][j] * s[j] for j in range(WIDTH)) % P for i in range(WIDTH)]
    return s


def hash_elements(elements):
    """Constant-length sponge: state (0, L * 2^64), absorb one element per permutation."""
    state = [0, (len(elements) << 64) % P]
    for element in elements:
        state[0] = (state[0] + element) % P
        state = permute(state)
    return state[0]


def username_to_field(username, encoding="bytes"):
    """SPEC sections 2 and 7: bytes (the UTF-8 bytes, below P) or keccak256 (the digest mod P)."""
    raw = username.encode("utf-8")
    if encoding == "keccak256":
        return int.from_bytes(keccak256(raw), "big") % P
    if encoding != "bytes":
        raise ValueError(f"unknown username encoding {encoding!r}")
    value = int.from_bytes(raw, "big")
    if value >= P:
        raise ValueError(f"username {username!r} does not fit in the field")
    return value


def keccak256(data):
    """Ethereum's Keccak-256 (the original padding, not SHA3-256), from a maintained library:
    the reference our C Keccak is tested against (pycryptodome, a test dependency)."""
    from Crypto.Hash import keccak
    return keccak.new(digest_bits=256, data=bytes(data)).digest()


def sort_entries(entries):
    """SPEC section 7's order of a sorted tree: by the usernames' UTF-8 bytes, ascending."""
    return sorted(entries, key=lambda entry: entry[0].encode("utf-8"))


def leaf(username_field, balances):
    return hash_elements([username_field, *balances]), tuple(balances)


def middle(left, right, layout=INTERLEAVED):
    (lh, lb), (rh, rb) = left, right
    sums = tuple(a + b for a, b in zip(lb, rb))
    if layout == INTERLEAVED:
        return hash_elements([lh, *lb, rh, *rb]), sums
    if layout == SUM_FIRST:
        return hash_elements([*sums, lh, rh]), sums
    raise ValueError(f"unknown layout {layout!r}")


def build_levels(leaves, layout=INTERLEAVED, depth=None):
    """All levels, leaf level first, after padding the leaves to 2^depth with zero leaves."""
    if depth is None:
        depth = max(len(leaves) - 1, 0).bit_length()
    n_currencies = len(leaves[0][1])
    zero = leaf(0, [0] * n_currencies)
    level = list(leaves) + [zero] * ((1 << depth) - len(leaves))
    levels = [level]
    while len(level) > 1:
        level = [middle(level[i], level[i + 1], layout) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def build_tree(entries, layout=INTERLEAVED, depth=None, encoding="bytes", is_sorted=False):
    """entries: (username str, balances) pairs. Returns the levels (see build_levels)."""
    if is_sorted:
        entries = sort_entries(entries)
    return build_levels([leaf(username_to_field(u, encoding), b) for u, b in entries], layout, depth)


def aggregate(mini_levels, layout=INTERLEAVED):
    """Levels of the aggregation tree over mini-trees (each given as its levels) of one depth."""
    depth = len(mini_levels[0]) - 1
    roots = [levels[-1][0] for levels in mini_levels]
    zero_root = build_levels([leaf(0, [0] * len(roots[0][1]))], layout, depth)[-1][0]
    top_depth = max(len(roots) - 1, 0).bit_length()
    roots += [zero_root] * ((1 << top_depth) - len(roots))
    return build_levels(roots, layout, top_depth)
