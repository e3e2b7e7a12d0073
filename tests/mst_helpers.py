"""Test-only shortcuts over the tree library: one CSV read alone, the tree of one batch."""
from summa_aggregation.mst.csv_job import read_csvs
from summa_aggregation.mst.tree import MerkleSumTree


def read_csv(path, n_bytes=14):
    """The batch of one file, read as a job of that file alone."""
    return read_csvs([path], n_bytes)[0]


def tree_of(batch, **kwargs):
    """The mini-tree of one EntryBatch (its currencies named in range errors)."""
    return MerkleSumTree.build(batch.usernames, batch.balances, batch.count, len(batch.currencies),
                               currencies=batch.currencies, **kwargs)
