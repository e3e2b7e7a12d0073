"""Checking a mini-tree a worker returned, before it may enter the root.

The daemon has the batch it sent, so it can check, cheaply and exactly:
  - the shape (done by the job runner): depth, count, currency count, buffer size;
  - the root's balances against the batch's exact per-currency totals;
  - k random leaves (default 8): each recomputed from the batch's own entry, then its path
    recomputed level by level from the returned children up to the returned root;
  - optionally everything: the whole mini-tree rebuilt here and compared byte for byte.
Sampling catches any tampering with the totals, and any change to a node on or beside a
sampled path; a single altered node elsewhere is caught with a probability that grows with k.
Full mode catches everything, at the cost of the worker's own work.
"""
import random

from ..cython_ext import _kernel
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
    if full:
        mine = MerkleSumTree.build(batch.usernames, batch.balances, batch.count, n, layout=layout,
                                   depth=depth, n_bytes=MAX_N_BYTES, control=control)
        if bytes(mine.levels.nodes) != bytes(nodes):
            raise IntegrityError("the mini-tree differs from the one rebuilt from the batch")
        return
    indices = rng.sample(range(batch.count), min(sample, batch.count))
    if sample and batch.count < 1 << depth:
        indices.append(rng.randrange(batch.count, 1 << depth))   # a padding leaf, too
    for index in indices:
        _check_leaf(levels, batch, index, layout)
        _check_path(levels, index, layout)


def _check_leaf(levels, batch, index, layout):
    n, record = levels.n_currencies, levels.record_size
    if index < batch.count:
        expected = bytearray(record)
        _kernel.hash_leaves(bytes(batch.usernames[index * WORD:(index + 1) * WORD]),
                            bytes(batch.balances[index * n * WORD:(index + 1) * n * WORD]), 1, n, expected)
    else:
        expected = zero_root(0, n, layout)
    if levels.record(0, index) != bytes(expected):
        raise IntegrityError(f"leaf {index} does not match entry {index} of the batch")


def _check_path(levels, index, layout):
    code, record = layout_code(layout), levels.record_size
    for level in range(levels.depth):
        left = index & ~1
        children = levels.record(level, left) + levels.record(level, left + 1)
        parent = bytearray(record)
        try:
            _kernel.hash_level(children, 1, levels.n_currencies, code, parent)
        except _kernel.KernelError as error:
            raise IntegrityError(f"nodes {left} and {left + 1} of level {level}: {error}") from None
        index >>= 1
        if levels.record(level + 1, index) != bytes(parent):
            raise IntegrityError(f"node {index} of level {level + 1} is not the hash of its children")
