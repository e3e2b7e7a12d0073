"""Seconds of the sorter of sorted jobs (mst/sort.py): all in memory, and through runs on disk.

    python bench/bench_sort.py [--log2 20] [--currencies 2] [--n-bytes 14] [--runs 3]
                               [--disk-runs 16] [--tmp DIR]

Makes 2^N random entries once (usernames of 8 to 23 characters of [A-Za-z0-9], random words
and balances), then times, round by round, a whole sort: Sorter(), add() in segments of 65536
entries as the CSV reader hands them, and merge() into an emit that only counts. "memory" has a
budget that holds everything; "runs" one that makes about --disk-runs sorted runs on disk (in
--tmp), merged in one pass. Prints the median and min seconds, entries/s and the runs made.
Asserts only that every entry came out.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tables import table  # noqa: E402  (bench/ is not a package)

from summa_aggregation.mst.sort import SEGMENT, Sorter  # noqa: E402

ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SORT_BYTES = 40      # what the in-memory sort adds to a record, per entry (mst/sort.py)
RECORD = 44          # a record's length, position and word


def entries(count, width):
    """(words, balances, names, lengths) of `count` random entries, made without a Python
    object per entry (bytes.translate maps random bytes onto the alphabet and the lengths)."""
    letters = bytes(ALPHABET[i % len(ALPHABET)] for i in range(256))
    sizes = bytes(8 + i % 16 for i in range(256))
    lengths = array("I", array("B", os.urandom(count).translate(sizes)))
    names = os.urandom(sum(lengths)).translate(letters)
    return os.urandom(32 * count), os.urandom(width * count), names, lengths


def sort_once(directory, data, count, n_currencies, n_bytes, memory):
    words, balances, names, lengths = data
    width = n_currencies * n_bytes
    words, balances, names = memoryview(words), memoryview(balances), memoryview(names)
    length_bytes = memoryview(lengths).cast("B")
    seen = [0]

    def emit(usernames, balances, count, names, lengths, origins):
        seen[0] += count

    began = time.perf_counter()
    sorter = Sorter(directory, n_currencies, n_bytes, memory_bytes=memory)
    at = 0
    for start in range(0, count, SEGMENT):
        n = min(SEGMENT, count - start)
        size = sum(lengths[start:start + n])
        sorter.add(words[32 * start:32 * (start + n)], balances[width * start:width * (start + n)], n,
                   names[at:at + size], length_bytes[4 * start:4 * (start + n)])
        at += size
    runs = len(sorter.runs) + (1 if sorter.runs else 0)     # merge writes the last batch too
    sorter.merge(emit)
    seconds = time.perf_counter() - began
    assert seen[0] == count, (seen[0], count)
    return seconds, runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log2", type=int, default=20, help="2^N entries (20)")
    parser.add_argument("--currencies", type=int, default=2)
    parser.add_argument("--n-bytes", type=int, default=14)
    parser.add_argument("--runs", type=int, default=3, help="rounds (3)")
    parser.add_argument("--disk-runs", type=int, default=16, help="sorted runs the small budget makes (16)")
    parser.add_argument("--tmp", default=None, help="where the run files go")
    args = parser.parse_args(argv)
    count, width = 1 << args.log2, args.currencies * args.n_bytes
    data = entries(count, width)
    held = RECORD * count + width * count + len(data[2]) + SORT_BYTES * count
    per_run = held // args.disk_runs      # the sorter keeps 1/16 of its budget (at most 4 MiB) for I/O
    budgets = {"memory": 2 * held + (64 << 20),
               "runs": per_run * 16 // 15 if per_run // 15 <= 4 << 20 else per_run + (4 << 20)}
    directory = tempfile.mkdtemp(prefix="bench-sort-", dir=args.tmp)
    times, runs = {name: [] for name in budgets}, {}
    try:
        for _ in range(args.runs):
            for name, memory in budgets.items():
                seconds, made = sort_once(directory, data, count, args.currencies, args.n_bytes, memory)
                times[name].append(seconds)
                runs[name] = made
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"2^{args.log2} entries x {args.currencies} currencies (N_BYTES {args.n_bytes}), "
          f"{args.runs} rounds; entries as held in memory: {held / (1 << 20):.0f} MiB")
    rows = [[name, f"{budgets[name] / (1 << 20):.1f}", str(runs[name]),
             f"{statistics.median(times[name]):.3f}", f"{min(times[name]):.3f}",
             f"{count / statistics.median(times[name]) / 1e6:.2f}"] for name in budgets]
    table(["sort", "budget MiB", "runs", "median s", "min s", "M entries/s"], rows)


if __name__ == "__main__":
    main()
