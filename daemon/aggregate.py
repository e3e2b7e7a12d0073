"""summa-aggregate: one run, no daemon to set up.

Reads and checks every CSV first, then builds the mini-trees on a pool of local worker
processes, joins their roots into the aggregation tree, writes the result directory
atomically, and prints the root node JSON as the last line of stdout.
(The orchestrator daemon of issue #4 will take over the pool; the command line stays.)
"""
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from ..cython_ext import store
from ..cython_ext.cli import Parser, run
from ..cython_ext.csv_reader import read_csvs, rebatch
from ..cython_ext.tree import (DEFAULT_LAYOUT, DEFAULT_N_BYTES, LAYOUTS, AggregationMerkleSumTree,
                               Levels, MerkleSumTree, check_n_bytes, depth_for)


def build_minitree(usernames, balances, count, currencies, depth, layout, n_bytes):
    """Runs in a worker process; returns the node buffer only (the caller has the rest)."""
    tree = MerkleSumTree.build(usernames, balances, count, len(currencies), layout=layout,
                               depth=depth, n_bytes=n_bytes, currencies=currencies)
    return tree.levels.nodes


def _power_of_two(text):
    value = int(text)
    if value < 1 or value & (value - 1):
        raise ValueError
    return value


_power_of_two.__name__ = "power of two"


def _parser():
    parser = Parser(prog="summa-aggregate", description="Build the Merkle sum tree of the "
                    "entries in CSV... on this machine and print its root node JSON.")
    parser.add_argument("csvs", nargs="+", metavar="CSV")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="local worker processes (default: the CPU count)")
    parser.add_argument("--layout", choices=list(LAYOUTS), default=DEFAULT_LAYOUT)
    parser.add_argument("--n-bytes", type=int, default=DEFAULT_N_BYTES,
                        help="balances and their totals must be below 2^(8*N) (default 14)")
    parser.add_argument("--batch-size", type=_power_of_two, metavar="2^K",
                        help="cut the entries into mini-trees of this many entries instead of "
                             "one mini-tree per CSV (the root is then that of one big tree)")
    parser.add_argument("--out", metavar="DIR", help="write the result directory here (must not exist)")
    return parser


class _Progress:
    """Mini-trees done, on stderr, only when a person is watching."""

    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.monotonic()
        self.enabled = sys.stderr.isatty()

    def step(self):
        self.done += 1
        if self.enabled:
            print(f"\rmini-trees {self.done}/{self.total}  {time.monotonic() - self.start:.1f}s",
                  end="" if self.done < self.total else "\n", file=sys.stderr, flush=True)


def _build_all(batches, depth, layout, n_bytes, workers):
    progress = _Progress(len(batches))
    jobs = [(b.usernames, b.balances, b.count, b.currencies, depth, layout, n_bytes) for b in batches]
    nodes = [None] * len(jobs)
    if workers <= 1 or len(jobs) == 1:
        for i, job in enumerate(jobs):
            nodes[i] = build_minitree(*job)
            progress.step()
        return nodes
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(build_minitree, *job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                nodes[futures[future]] = future.result()
                progress.step()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return nodes


def _aggregate(argv):
    args = _parser().parse_args(argv)
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    check_n_bytes(args.n_bytes)
    if args.out and os.path.exists(args.out):
        raise store.StoreError(f"{args.out}: already exists (results are never overwritten)")
    batches = read_csvs(args.csvs, args.n_bytes)
    if args.batch_size:
        batches = rebatch(batches, args.batch_size)
    depth = depth_for(max(b.count for b in batches))
    nodes = _build_all(batches, depth, args.layout, args.n_bytes, args.workers)
    n_currencies = len(batches[0].currencies)
    minis = [MerkleSumTree(Levels(buffer, depth, n_currencies), bytes(b.usernames), b.count,
                           args.layout, b.currencies) for b, buffer in zip(batches, nodes)]
    tree = AggregationMerkleSumTree(minis, args.layout, args.n_bytes)
    if args.out:
        store.save(tree, args.out, args.n_bytes, {"inputs": [os.path.abspath(p) for p in args.csvs]})
    print(json.dumps(tree.root.to_json()))


def main(argv=None):
    return run("summa-aggregate", _aggregate, argv)


if __name__ == "__main__":
    sys.exit(main())
