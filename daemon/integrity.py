"""Checking a mini-tree a worker returned, before it may enter the root.

The daemon has the batch it sent, so it can check, cheaply and exactly:
  - the shape (done by the job runner): depth, count, currency count, buffer size;
  - the root's balances against the batch's exact per-currency totals;
  - every leaf, by a byte compare in C (_records.first_bad_leaf, no hashing): each real
    leaf's balance words must be the batch's, and each padding leaf the padding record
    (H(0, ..., 0), zero balances);
  - every node above the leaves, by exact additions in C (_records.first_bad_sum, no
    hashing): its balances must be the sums of its two children's;
  - k random leaves (default 8), and a padding leaf: each recomputed from the batch's own
    entry (username included), then its path recomputed level by level from the returned
    children up to the returned root;
  - optionally everything: the whole mini-tree rebuilt here and compared byte for byte.
Guaranteed without full mode: every balance of every node is the one it must be: each leaf's
as sent (so a balance moved from one user to another, even with every hash above it
recomputed, is refused), each padding leaf padding, each sum exact, the root's totals the
batch's; and every hash on or beside a sampled path is right. Not guaranteed: a hash off every
sampled path. A leaf record holds no username (it enters only through the leaf's hash), so a
worker that swaps two users' usernames and rehashes consistently passes unless a sampled path
touches one of them. Such a tree is stored (and its root published), but it cannot pass
silently: the store recomputes each proof's leaves from the entries as sent and verifies the
path against the stored nodes up to the root before a proof leaves (mst/store.py), so the
daemon's proof server and summa-proof refuse the proofs through a wrong hash with a
StoreError. Full mode catches everything, at the cost of the worker's own work.
"""
import random

from ..cython_ext import _kernel, _records
from ..cython_ext.params import WORD
from ..mst.limits import MAX_N_BYTES, layout_code
from ..mst.tree import Levels, MerkleSumTree, zero_root


class IntegrityError(ValueError):
    """The returned mini-tree does not match the batch; the message says where."""


def check_minitree(nodes, batch, depth, layout, sample=8, full=False, rng=random, control=None):
    """IntegrityError unless `nodes` is the mini-tree of `batch`; control cancels a rebuild."""
    n = len(batch.currencies)
    levels = Levels(nodes, depth, n)
    totals = _kernel.sum_columns(batch.balances, batch.count, n)
    if list(levels.root.balances) != totals:
        raise IntegrityError("the root's balances differ from the batch's totals")
    _check_every_leaf(levels, batch, layout)
    _check_every_sum(levels)
    if full:
        mine = MerkleSumTree.build(batch.usernames, batch.balances, batch.count, n, layout=layout,
                                   depth=depth, n_bytes=MAX_N_BYTES, control=control)
        if bytes(mine.levels.nodes) != bytes(nodes):
            raise IntegrityError("the mini-tree differs from the one rebuilt from the batch")
        return
    indices = rng.sample(range(batch.count), min(sample, batch.count))
    if sample and batch.count < 1 << depth:
        indices.append(rng.randrange(batch.count, 1 << depth))   # a padding leaf, too
    if indices:
        _check_leaves(levels, batch, indices, layout)
        _check_paths(levels, indices, layout)


def _check_every_leaf(levels, batch, layout):
    """Every leaf's balances against the batch's, every padding leaf against the padding
    record: byte compares in C, no hashing (a leaf's username is only in its hash: the
    sampled leaves and the proofs check it)."""
    n = levels.n_currencies
    padding = zero_root(0, n, layout)
    bad = _records.first_bad_leaf(levels.nodes, batch.balances, batch.count, n, levels.depth,
                                  padding)
    if bad < 0:
        return
    got = levels.record(0, bad)
    if bad < batch.count:
        sent = bytes(batch.balances[bad * n * WORD:(bad + 1) * n * WORD])
        column = _first_difference(got[WORD:], sent)
        raise IntegrityError(f"leaf {bad}: its balance in currency column {column} "
                             f"({batch.currencies[column]}) is not entry {bad}'s of the batch")
    column = _first_difference(got[WORD:], padding[WORD:])
    what = "hash" if column is None else \
        f"balance in currency column {column} ({batch.currencies[column]})"
    raise IntegrityError(f"leaf {bad} is a padding leaf, but its {what} is not the padding leaf's")


def _check_every_sum(levels):
    """Every node's balances against its children's sums: additions in C, no hashing. With
    the leaves checked, every balance of the tree is then the one it must be."""
    bad = _records.first_bad_sum(levels.nodes, levels.n_currencies, levels.depth)
    if bad >= 0:
        level, index = _place(bad, levels.depth)
        raise IntegrityError(f"node {index} of level {level}: its balances are not the sums of "
                             f"its two children's")


def _place(flat, depth):
    """(level, index) of the record at `flat` in a leaf-first buffer of a depth-`depth` tree."""
    level, start = 0, 0
    while flat >= start + (1 << (depth - level)):
        start += 1 << (depth - level)
        level += 1
    return level, flat - start


def _first_difference(words, others):
    """The index of the first WORD-wide word where two packed buffers differ, or None."""
    return next((i for i in range(len(words) // WORD)
                 if words[i * WORD:(i + 1) * WORD] != others[i * WORD:(i + 1) * WORD]), None)


def _check_leaves(levels, batch, indices, layout):
    """Each sampled leaf against its entry of the batch (one kernel call for them all)."""
    n, record = levels.n_currencies, levels.record_size
    real = [index for index in indices if index < batch.count]
    expected = bytearray(record * len(real))
    if real:
        users = b"".join(bytes(batch.usernames[i * WORD:(i + 1) * WORD]) for i in real)
        balances = b"".join(bytes(batch.balances[i * n * WORD:(i + 1) * n * WORD]) for i in real)
        _kernel.hash_leaves(users, balances, len(real), n, expected)
    zero, at = zero_root(0, n, layout), 0
    for index in indices:
        if index < batch.count:
            want, at = bytes(expected[at:at + record]), at + record
        else:
            want = zero
        if levels.record(0, index) != want:
            raise IntegrityError(f"leaf {index} does not match entry {index} of the batch")


def _check_paths(levels, indices, layout):
    """Each sampled leaf's path, level by level up to the root: every parent must be the hash
    of its two returned children (one kernel call per level for all the paths: a call of one
    parent would leave most of the kernel's lanes empty)."""
    code, record, n = layout_code(layout), levels.record_size, levels.n_currencies
    nodes = list(indices)
    for level in range(levels.depth):
        children = b"".join(levels.record(level, i & ~1) + levels.record(level, i | 1) for i in nodes)
        parents = bytearray(record * len(nodes))
        try:
            _kernel.hash_level(children, len(nodes), n, code, parents)
        except _kernel.KernelError as error:
            raise IntegrityError(f"nodes on level {level} of the sampled paths "
                                 f"({', '.join(str(i & ~1) for i in nodes)}): {error}") from None
        for j, i in enumerate(nodes):
            if levels.record(level + 1, i >> 1) != bytes(parents[j * record:(j + 1) * record]):
                raise IntegrityError(f"node {i >> 1} of level {level + 1} is not the hash of its children")
        nodes = [i >> 1 for i in nodes]
