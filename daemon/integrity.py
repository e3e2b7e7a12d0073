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
    if indices:
        _check_leaves(levels, batch, indices, layout)
        _check_paths(levels, indices, layout)


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
