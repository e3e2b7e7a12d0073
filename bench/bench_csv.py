"""Rows per second of the CSV reader: scan_file (the C fast path) against the csv-module path.

    python bench/bench_csv.py [--entries 4194304] [--currencies 1] [--n-bytes 14] [--runs 3]
                              [--python-entries N] [--keep] [--tmp DIR]
                              [--username-encoding bytes|keccak256] [--format v1.1|v1]

Writes a CSV with gen_csv.generate() into a temporary directory (--format v1: then rewritten as a
Summa v1 file, header ``username;balances`` and rows ``NAME;B0,B1,...``), then times, in this process,
round by round: scan_file() with a sink that only counts, _scan_python() (the csv module's path,
the reference and fallback of scan_file) on the same file, read_csvs() (scan_file plus the
duplicate check and widening to 32-byte words), and line_of_entry() of the last entry. The file
is read once first so that every run reads it from the page cache. Prints the median and min
seconds, rows/s and the ratio to the csv path. --python-entries times the csv path on the first
N rows only (a file of its own) when the whole file would take too long; rows/s stays comparable.
Asserts only that both paths return the same count. --username-encoding keccak256 makes every
reader compute the Keccak-256 digest of each username (in C on the fast path).
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_csv import generate  # noqa: E402  (bench/ is not a package)
from tables import table  # noqa: E402

from summa_aggregation.mst import csv_job, csv_reader  # noqa: E402
from summa_aggregation.mst.limits import USERNAME_ENCODINGS  # noqa: E402

MIB = 1 << 20


def to_v1(src, dst):
    """Rewrite a v1.1 CSV of gen_csv (no quotes, no ',' in usernames) as a Summa v1 one."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        f.readline()
        out.write(b"username;balances\n")
        while True:
            lines = f.readlines(1 << 24)
            if not lines:
                break
            out.write(b"".join(line.replace(b",", b";", 1) for line in lines))


def timed(fn):
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1 << 22, help="rows (2^22)")
    parser.add_argument("--currencies", type=int, default=1)
    parser.add_argument("--n-bytes", type=int, default=14)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--python-entries", type=int, default=None,
                        help="rows of the file the csv path is timed on (default: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--tmp", help="parent of the temporary directory (default: system temp)")
    parser.add_argument("--username-encoding", choices=USERNAME_ENCODINGS, default="bytes")
    parser.add_argument("--format", choices=["v1.1", "v1"], default="v1.1",
                        help="CSV format: Summa v1.1 (username,balance_...) or v1 (username;balances)")
    parser.add_argument("--scan-only", action="store_true",
                        help="time only scan_file and the csv path (not read_csvs, line_of_entry)")
    args = parser.parse_args(argv)
    encoding = args.username_encoding

    work = tempfile.mkdtemp(prefix="summa-bench-csv-", dir=args.tmp)
    try:
        path = os.path.join(work, "entries.csv")
        began = time.perf_counter()
        generate(path, args.entries, args.currencies, args.seed, 40)
        if args.format == "v1":
            os.rename(path, path + ".v11")
            to_v1(path + ".v11", path)
            os.unlink(path + ".v11")
        size = os.path.getsize(path)
        print(f"{args.entries:,} entries x {args.currencies} currencies, {size / MIB:.1f} MiB "
              f"({size / args.entries:.1f} bytes a row), generated in "
              f"{time.perf_counter() - began:.1f} s under {work}; N_BYTES {args.n_bytes}; "
              f"format {args.format}; username encoding {encoding}")
        py_path, py_rows = path, args.entries
        if args.python_entries and args.python_entries < args.entries:
            py_path, py_rows = os.path.join(work, "head.csv"), args.python_entries
            with open(path, "rb") as src, open(py_path, "wb") as dst:
                for _ in range(py_rows + 1):
                    dst.write(src.readline())
        for p in {path, py_path}:
            with open(p, "rb") as f:   # into the page cache
                while f.read(1 << 24):
                    pass

        def count_sink():
            seen = [0]

            def sink(usernames, balances, count):
                seen[0] += count
            return sink, seen

        def fast():
            sink, seen = count_sink()
            _, count = csv_reader.scan_file(path, args.n_bytes, None, sink, encoding=encoding)
            assert count == seen[0] == args.entries
            return count

        def slow():
            sink, seen = count_sink()
            _, count = csv_reader._scan_python(py_path, args.n_bytes, None, sink, encoding=encoding)
            assert count == seen[0] == py_rows
            return count

        cases = [("scan_file (C fast path)", fast, args.entries),
                 ("_scan_python (csv module path)", slow, py_rows),
                 ("read_csvs (scan_file + duplicate set + widening)",
                  lambda: csv_job.read_csvs([path], args.n_bytes, encoding), args.entries),
                 ("line_of_entry(last entry)",
                  lambda: csv_reader.line_of_entry(path, args.entries - 1), args.entries)]
        if args.scan_only:   # the two readers alone: the rows/s that the read target is about
            cases = cases[:2]
        times = {name: [] for name, _, _ in cases}
        for _ in range(args.runs):
            for name, fn, _ in cases:
                times[name].append(timed(fn)[0])
        base = statistics.median(times[cases[1][0]]) / py_rows
        rows = []
        for name, _, n in cases:
            med = statistics.median(times[name])
            rows.append((name, f"{med:.3f}", f"{min(times[name]):.3f}", f"{n / med:,.0f}",
                         f"{size * n / args.entries / med / MIB:,.0f}", f"{base * n / med:.1f}"))
        table(("reader", "median s", "min s", "rows/s", "MiB/s", "x csv path"), rows,
              f"{args.runs} runs each, interleaved, one thread, file in the page cache"
              + (f"; the csv path on the first {py_rows:,} rows" if py_rows != args.entries else ""))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
