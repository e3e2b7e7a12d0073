"""Merkle sum trees over packed buffers: the mini-tree, the aggregation tree, proofs, JSON.

Nodes live in one bytearray per tree, level by level (leaf level first), each node a record
of 1 + N little-endian 32-byte words: the hash, then the N balances. Python objects are made
only for the few nodes a caller asks for (a root, a proof path).
"""
from dataclasses import dataclass

from ..cython_ext import _kernel
from ..cython_ext.params import WORD
from .csv_reader import username_to_word, word_to_username
from .limits import (DEFAULT_LAYOUT, DEFAULT_N_BYTES, check_n_bytes, check_n_currencies, depth_for,
                     layout_code, record_bytes, tree_bytes)
from .proof import InvalidProof, verify_proof
from .words import field_hex, int_of, word_of


class RangeCheckError(ValueError):
    """A balance total does not fit in N_BYTES; the message names the currency."""


@dataclass(frozen=True)
class Node:
    hash: int
    balances: tuple

    @classmethod
    def from_record(cls, record):
        words = [int_of(record[i:i + WORD]) for i in range(0, len(record), WORD)]
        return cls(words[0], tuple(words[1:]))

    def to_json(self):
        return {"hash": field_hex(self.hash), "balances": [field_hex(b) for b in self.balances]}

    def record(self):
        return word_of(self.hash) + b"".join(word_of(b) for b in self.balances)


@dataclass(frozen=True)
class Entry:
    username: str
    balances: tuple


class Levels:
    """A complete binary tree of node records in one buffer, leaf level first."""

    def __init__(self, nodes, depth, n_currencies):
        self.nodes, self.depth, self.n_currencies = nodes, depth, n_currencies
        self.record_size = record_bytes(n_currencies)
        if len(nodes) != tree_bytes(depth, n_currencies):
            raise ValueError("node buffer does not match the tree's depth and currency count")

    @classmethod
    def allocate(cls, depth, n_currencies):
        return cls(bytearray(tree_bytes(depth, n_currencies)), depth, n_currencies)

    def offset(self, level):
        """Byte offset of the first node of `level` (0 = leaves)."""
        return self.record_size * ((2 << self.depth) - (2 << (self.depth - level)))

    def record(self, level, index):
        if not 0 <= index < 1 << (self.depth - level):
            raise IndexError(f"no node {index} at level {level}")
        start = self.offset(level) + index * self.record_size
        return bytes(self.nodes[start:start + self.record_size])

    def node(self, level, index):
        return Node.from_record(self.record(level, index))

    @property
    def root(self):
        return self.node(self.depth, 0)

    def hash_up(self, layout, control=None):
        """Fill every level above the leaves from the leaves."""
        view = memoryview(self.nodes)
        code = layout_code(layout)
        for level in range(1, self.depth + 1):
            count = 1 << (self.depth - level)
            _kernel.hash_level(view[self.offset(level - 1):self.offset(level)], count,
                               self.n_currencies, code,
                               view[self.offset(level):self.offset(level) + count * self.record_size],
                               control)

    def path(self, index):
        """Siblings from the leaf level up, and whether the running node is a right child."""
        siblings, sides = [], []
        for level in range(self.depth):
            siblings.append(self.node(level, index ^ 1))
            sides.append(index & 1)
            index >>= 1
        return siblings, sides

    def to_json_levels(self):
        return [[self.node(level, i).to_json() for i in range(1 << (self.depth - level))]
                for level in range(self.depth + 1)]


_zero_cache = {}


def zero_root(depth, n_currencies, layout):
    """Root record of a tree of 2^depth zero entries (the padding of SPEC section 3)."""
    key = (depth, n_currencies, layout)
    if key not in _zero_cache:
        record = bytearray(record_bytes(n_currencies))
        _kernel.hash_leaves(bytes(WORD), bytes(WORD * n_currencies), 1, n_currencies, record)
        for _ in range(depth):
            parent = bytearray(len(record))
            _kernel.hash_level(bytes(record) * 2, 1, n_currencies, layout_code(layout), parent)
            record = parent
        _zero_cache[key] = bytes(record)
    return _zero_cache[key]


def check_range(root, n_bytes, currencies=None):
    limit = 1 << (8 * check_n_bytes(n_bytes))
    for i, total in enumerate(root.balances):
        if total >= limit:
            name = currencies[i] if currencies else f"currency {i}"
            raise RangeCheckError(f"{name}: the total {total} does not fit in N_BYTES={n_bytes} "
                                  f"(it must be below 2^{8 * n_bytes})")


def _overflow_error(balances, count, n_currencies, n_bytes, currencies):
    """The kernel saw a sum leave the field: find and name the currency (error path only)."""
    totals = [0] * n_currencies
    view = memoryview(balances)
    for i in range(count * n_currencies):
        totals[i % n_currencies] += int_of(view[i * WORD:(i + 1) * WORD])
    check_range(Node(0, tuple(totals)), n_bytes, currencies)
    return RangeCheckError("a balance total does not fit in the field")


class MerkleSumTree:
    """A tree over `count` entries, padded with zero entries to 2^depth leaves."""

    is_sorted = False    # what the mini-tree JSON says: the caller sets it for sorted entries

    def __init__(self, levels, usernames, count, layout=DEFAULT_LAYOUT, currencies=None):
        self.levels, self.usernames, self.count = levels, usernames, count
        self.layout, self.currencies = layout, currencies
        layout_code(layout)

    depth = property(lambda self: self.levels.depth)
    n_currencies = property(lambda self: self.levels.n_currencies)
    root = property(lambda self: self.levels.root)

    @classmethod
    def build(cls, usernames, balances, count, n_currencies, layout=DEFAULT_LAYOUT, depth=None,
              n_bytes=DEFAULT_N_BYTES, currencies=None, control=None):
        """Hash a whole tree in the kernel. usernames/balances: packed words (see csv_reader)."""
        if count < 1:
            raise ValueError("a tree needs at least one entry")
        check_n_currencies(n_currencies)
        depth = depth_for(count) if depth is None else depth
        if count > 1 << depth:
            raise ValueError(f"{count} entries do not fit in a tree of depth {depth}")
        levels = Levels.allocate(depth, n_currencies)
        view = memoryview(levels.nodes)
        record = levels.record_size
        try:
            _kernel.hash_leaves(usernames, balances, count, n_currencies, view[:count * record], control)
            view[count * record:(1 << depth) * record] = zero_root(0, n_currencies, layout) * ((1 << depth) - count)
            levels.hash_up(layout, control)
        except _kernel.BalanceOverflow:
            raise _overflow_error(balances, count, n_currencies, n_bytes, currencies) from None
        tree = cls(levels, bytes(memoryview(usernames)[:count * WORD]), count, layout, currencies)
        check_range(tree.root, n_bytes, currencies)
        return tree

    @classmethod
    def from_entries(cls, entries, **kwargs):
        """entries: (username, balances) pairs; for small trees, tests and examples."""
        entries = list(entries)
        usernames = b"".join(username_to_word(u) for u, _ in entries)
        balances = b"".join(word_of(b) for _, bs in entries for b in bs)
        return cls.build(usernames, balances, len(entries), len(entries[0][1]), **kwargs)

    def node(self, level, index):
        """Node `index` of `level` (0 = leaves, depth = root), padding leaves included."""
        return self.levels.node(level, index)

    def verify(self, proof):
        """True when `proof` is valid and proves against this tree's root."""
        return _verifies_against(proof, self.root)

    def get_entry(self, index):
        if not 0 <= index < self.count:
            raise IndexError(f"no entry at index {index} (the tree has {self.count})")
        leaf = self.levels.node(0, index)
        return Entry(word_to_username(self.usernames[index * WORD:(index + 1) * WORD]), leaf.balances)

    def index_of(self, username):
        """Index of a username, or None. Scans the packed words: no per-entry dictionary."""
        return find_word(self.usernames, username_to_word(username))

    def local_proof(self, index):
        entry = self.get_entry(index)
        siblings, sides = self.levels.path(index)
        return entry, siblings, sides

    def proof(self, index_or_username):
        index = self._resolve(index_or_username)
        entry, siblings, sides = self.local_proof(index)
        return proof_json(self.layout, entry, index, siblings, sides, self.root)

    def _resolve(self, key):
        return _resolve(self, key)

    def to_json(self):
        """The mini-tree JSON of SPEC section 5 (what a worker returns when asked for JSON)."""
        return {"root": self.root.to_json(), "nodes": self.levels.to_json_levels(),
                "depth": self.depth, "is_sorted": bool(self.is_sorted)}


class AggregationMerkleSumTree:
    """Mini-trees of one depth d as the leaves of a top tree; global index = mini * 2^d + local."""

    def __init__(self, mini_trees, layout=None, n_bytes=DEFAULT_N_BYTES, control=None, top=None):
        if not mini_trees:
            raise ValueError("an aggregation needs at least one mini-tree")
        first = mini_trees[0]
        self.layout = layout or first.layout
        self.mini_trees = list(mini_trees)
        self.mini_depth, self.n_currencies = first.depth, first.n_currencies
        self.currencies = first.currencies
        for i, mini in enumerate(self.mini_trees):
            if (mini.depth, mini.n_currencies, mini.layout) != (self.mini_depth, self.n_currencies, self.layout):
                raise ValueError(f"mini-tree {i} has depth {mini.depth}, {mini.n_currencies} currencies "
                                 f"and layout {mini.layout}; mini-tree 0 has {self.mini_depth}, "
                                 f"{self.n_currencies} and {self.layout}")
        self.top = top if top is not None else self._build_top(control)
        check_range(self.root, n_bytes, self.currencies)

    def _build_top(self, control):
        top_depth = depth_for(len(self.mini_trees))
        top = Levels.allocate(top_depth, self.n_currencies)
        padding = (1 << top_depth) - len(self.mini_trees)
        leaves = b"".join(m.levels.record(m.depth, 0) for m in self.mini_trees)
        leaves += zero_root(self.mini_depth, self.n_currencies, self.layout) * padding
        top.nodes[:len(leaves)] = leaves
        try:
            top.hash_up(self.layout, control)
        except _kernel.BalanceOverflow:
            raise RangeCheckError("a balance total does not fit in the field") from None
        return top

    root = property(lambda self: self.top.root)
    depth = property(lambda self: self.mini_depth + self.top.depth)
    count = property(lambda self: sum(m.count for m in self.mini_trees))

    def verify(self, proof):
        """True when `proof` is valid and proves against this tree's root."""
        return _verifies_against(proof, self.root)

    def _split(self, index):
        mini, local = divmod(index, 1 << self.mini_depth)
        if not 0 <= mini < len(self.mini_trees) or local >= self.mini_trees[mini].count:
            raise IndexError(f"no entry at global index {index}")
        return mini, local

    def get_entry(self, index):
        mini, local = self._split(index)
        return self.mini_trees[mini].get_entry(local)

    def index_of(self, username):
        for mini_index, mini in enumerate(self.mini_trees):
            local = mini.index_of(username)
            if local is not None:
                return (mini_index << self.mini_depth) + local
        return None

    def proof(self, index_or_username):
        index = _resolve(self, index_or_username)
        mini, local = self._split(index)
        entry, siblings, sides = self.mini_trees[mini].local_proof(local)
        top_siblings, top_sides = self.top.path(mini)
        return proof_json(self.layout, entry, index, siblings + top_siblings, sides + top_sides, self.root)


def _resolve(tree, key):
    """A username or an index (a real int, not a bool) to an index."""
    if isinstance(key, str):
        index = tree.index_of(key)
        if index is None:
            raise KeyError(f"username {key!r} is not in the tree")
        return index
    if type(key) is not int:
        raise TypeError(f"expected a username or an integer index, got {key!r}")
    return key


def _verifies_against(proof, root):
    try:
        proved_hash, proved_balances = verify_proof(proof)
    except InvalidProof:
        return False
    return proved_hash == root.hash and tuple(proved_balances) == root.balances


def find_word(buffer, word):
    """Index of a 32-byte word in a packed buffer, or None (matches must be word-aligned)."""
    start = buffer.find(word)
    while start != -1:
        if start % WORD == 0:
            return start // WORD
        start = buffer.find(word, start + 1)
    return None


def proof_json(layout, entry, index, siblings, sides, root, username_encoding="bytes",
               is_sorted=False):
    return {
        "layout": layout,
        "n_currencies": len(entry.balances),
        "username_encoding": username_encoding,
        "is_sorted": is_sorted,
        "entry": {"username": entry.username, "balances": [str(b) for b in entry.balances]},
        "index": index,
        "path": [s.to_json() for s in siblings],
        "path_indices": list(sides),
        "root": root.to_json(),
    }
