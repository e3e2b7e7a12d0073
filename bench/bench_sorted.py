"""What --sorted costs: the same CSV built unsorted and sorted (SPEC section 7), in the same run.

    python bench/bench_sorted.py [--log2 24] [--repeat 1] [--workers 2] [--data DIR]
                                 [--sort-memory-mb 256] [--keccak]

Each build is one job through a real summa-daemon (plaintext, MockSpawner), `summa-submit build
CSV --executors W [--sorted]` and a wait for done, timed from the submit; the runs alternate
(unsorted, sorted, unsorted, ...) so that a drift of the shared machine hits both alike. Prints
each run, the medians, the ratio sorted / unsorted (the target is at most 1.3 at 2^24), the
sort's own seconds from the daemon's log, and the daemon's peak RSS. --keccak adds a third
kind, unsorted with --username-encoding keccak256, and its ratio to the plain one. --sort-memory-mb below the
job's size makes the sort go through runs on disk. The CSV (random usernames in random order,
bench/gen_csv.py) is made once under DIR (default /var/tmp/summa-bench) and reused.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_daemon import Daemon  # noqa: E402  (bench/ is not a package)
from bench_scale import csv_for  # noqa: E402


KINDS = {"unsorted": [], "sorted": ["--sorted"], "keccak256": ["--username-encoding", "keccak256"]}


def build(directory, csv, workers, kind, sort_memory_mb):
    """(seconds, final record, peak RSS MiB, the daemon log's sort lines) of one job."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    log = open(os.path.join(directory, "daemon.log"), "w+")
    daemon = Daemon(directory, input_dirs=[os.path.dirname(csv)], stderr=log,
                    settings={"sort_memory_mb": sort_memory_mb, "log_level": "INFO"})
    try:
        began = time.perf_counter()
        job = daemon.submit("build", csv, "--executors", str(workers), *KINDS[kind]).stdout.split()[0]
        while True:
            record = json.loads(daemon.submit("status", job, timeout=60).stdout)
            if record["state"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - began
        rss = daemon.peak_rss_mib()
    finally:
        daemon.stop()
    log.seek(0)
    lines = [line.strip() for line in log if re.search(r"\bsort", line)]
    log.close()
    shutil.rmtree(directory, ignore_errors=True)
    return seconds, record, rss, lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log2", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each kind")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sort-memory-mb", type=int, default=256)
    parser.add_argument("--data", default="/var/tmp/summa-bench")
    parser.add_argument("--keccak", action="store_true", help="also unsorted under keccak256")
    args = parser.parse_args()
    os.makedirs(args.data, exist_ok=True)
    csv = csv_for(args.data, args.log2, 1)
    runs = os.path.join(args.data, "sorted-runs")
    kinds = ["unsorted", "sorted"] + (["keccak256"] if args.keccak else [])
    times = {kind: [] for kind in kinds}
    roots = {}
    for i in range(args.repeat):
        for kind in kinds:
            seconds, record, rss, lines = build(os.path.join(runs, f"run-{i}-{kind}"), csv,
                                                args.workers, kind, args.sort_memory_mb)
            assert record["state"] == "done", record
            roots.setdefault(kind, record["root"])
            times[kind].append(seconds)
            print(f"  {kind:9} run {i + 1}: {seconds:8.2f} s, daemon peak RSS {rss:.0f} MiB",
                  flush=True)
            for line in lines:
                print(f"      {line}", flush=True)
    medians = {kind: statistics.median(times[kind]) for kind in kinds}
    print(f"2^{args.log2} entries, {args.workers} workers, sort_memory_mb {args.sort_memory_mb}")
    for kind in kinds:
        print(f"  {kind:9} median: {medians[kind]:8.2f} s")
    print(f"  sorted / unsorted: {medians['sorted'] / medians['unsorted']:.2f} (target: at most 1.30)")
    if args.keccak:
        print(f"  keccak256 / unsorted: {medians['keccak256'] / medians['unsorted']:.2f}")
    print(f"  roots all differ, as they must (another order, another username rule): "
          f"{len({json.dumps(r) for r in roots.values()}) == len(kinds)}")


if __name__ == "__main__":
    main()
