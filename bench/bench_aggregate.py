"""End-to-end seconds of `summa-aggregate` on a generated CSV, CSV parsing and store write included.

    python bench/bench_aggregate.py [--entries 262144] [--currencies 1] [--workers 2]
                                    [--batch-size 65536] [--runs 3] [--files 1] [--keep]

Writes the CSV(s) into a temporary directory, then runs the console script next to
sys.executable as a subprocess, each run with --out to a fresh result directory, in three
configurations, interleaved round by round:
    --workers W --batch-size B      (mini-trees of B entries on W worker processes)
    --workers 1 --batch-size B      (the same mini-trees, built one after another)
    --workers W                     (the default: one mini-tree per CSV file)
and prints the median and min wall seconds and the child's peak RSS (ru_maxrss from wait4: the
largest of the process and the workers it reaped). For context it also times the interpreter
start (`summa-aggregate --help`) and read_csvs() of the same files in this process.
Prints whether every run printed the same root. Asserts nothing.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_csv import generate  # noqa: E402  (bench/ is not a package)
from tables import table  # noqa: E402

MIB = 1 << 20


def console_script(name):
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.access(path, os.X_OK):
        found = shutil.which(name)
        if not found:
            sys.exit(f"{name} not found next to {sys.executable} or on PATH: pip install .[bench]")
        path = found
    return path


def run_child(argv, workdir):
    """Run argv; returns (seconds, peak RSS bytes of it and its reaped children, exit code,
    stdout, stderr). wait4 gives this child's own rusage, unlike RUSAGE_CHILDREN deltas."""
    with tempfile.TemporaryFile(dir=workdir) as out, tempfile.TemporaryFile(dir=workdir) as err:
        began = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (seconds, usage.ru_maxrss * 1024, child.returncode,
                out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1 << 18, help="entries in all (2^18)")
    parser.add_argument("--currencies", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="workers of the parallel runs (2)")
    parser.add_argument("--batch-size", type=int, default=1 << 16, help="--batch-size (65536)")
    parser.add_argument("--files", type=int, default=1,
                        help="split the entries over this many CSV files (1)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each configuration (3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--tmp", help="parent of the temporary directory (default: system temp)")
    args = parser.parse_args(argv)

    script = console_script("summa-aggregate")
    work = tempfile.mkdtemp(prefix="summa-bench-", dir=args.tmp)
    try:
        began = time.perf_counter()
        paths, start = [], 0
        for i in range(args.files):
            count = args.entries // args.files + (i < args.entries % args.files)
            paths.append(os.path.join(work, f"entries_{i}.csv"))
            generate(paths[-1], count, args.currencies, args.seed + i, 40, start=start)
            start += count
        size = sum(os.path.getsize(p) for p in paths)
        print(f"{args.entries:,} entries x {args.currencies} currencies in {args.files} CSV file(s), "
              f"{size / MIB:.1f} MiB, generated in {time.perf_counter() - began:.1f} s under {work}")
        print(f"{os.cpu_count()} CPUs; {script}")

        configs = {
            f"--workers {args.workers} --batch-size {args.batch_size}":
                ["--workers", str(args.workers), "--batch-size", str(args.batch_size)],
            f"--workers 1 --batch-size {args.batch_size}":
                ["--workers", "1", "--batch-size", str(args.batch_size)],
            f"--workers {args.workers} (one mini-tree per CSV)": ["--workers", str(args.workers)],
        }
        parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        times = {name: [] for name in configs}
        peaks = {name: [] for name in configs}
        roots, failures, out_bytes = {}, [], {}
        startup = []
        for run in range(args.runs):
            startup.append(run_child([script, "--help"], work)[0])
            for n, (name, options) in enumerate(configs.items()):
                out = os.path.join(work, f"result-{run}-{n}")
                seconds, peak, code, stdout, stderr = run_child([script, *options, "--out", out, *paths],
                                                                work)
                if code != 0:
                    failures.append(f"{name}: exit {code}: {stderr.strip()[-500:]}")
                    continue
                times[name].append(seconds)
                peaks[name].append(peak)
                roots.setdefault(stdout.strip().splitlines()[-1], []).append(name)
                out_bytes[name] = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
                if not args.keep:
                    shutil.rmtree(out)

        rows = []
        base = statistics.median(times[next(iter(configs))]) if times[next(iter(configs))] else None
        for name in configs:
            if not times[name]:
                rows.append((name, "failed", "", "", "", "", ""))
                continue
            med = statistics.median(times[name])
            rows.append((name, f"{med:.2f}", f"{min(times[name]):.2f}",
                         f"{args.entries / med:,.0f}", f"{med / base:.2f}" if base else "",
                         f"{max(peaks[name]) / MIB:.0f}", f"{out_bytes[name] / MIB:.1f}"))
        table(("summa-aggregate ... --out DIR CSV", "median s", "min s", "entries/s",
               "x first", "peak child RSS MiB", "result MiB"), rows,
              f"end to end, {args.runs} runs each, interleaved (peak RSS: the max over the runs)")

        from summa_aggregation.mst.csv_job import read_csvs
        parse = []
        for _ in range(args.runs):
            began = time.perf_counter()
            read_csvs(paths)
            parse.append(time.perf_counter() - began)
        table(("part", "median s", "min s"),
              [("interpreter start: summa-aggregate --help", f"{statistics.median(startup):.2f}",
                f"{min(startup):.2f}"),
               ("read_csvs() of the same files, in this process", f"{statistics.median(parse):.2f}",
                f"{min(parse):.2f}")],
              "context (parts of the times above)")

        if failures:
            print("\nFAILED runs:")
            for line in failures:
                print("  " + line)
        if len(roots) == 1:
            print(f"\nroots: all {sum(len(v) for v in roots.values())} runs printed the same root hash "
                  f"{json.loads(next(iter(roots)))['hash']}")
        elif roots:
            print("\nroots differ between runs" + (" (expected: with several files, one mini-tree "
                  "per CSV pads each file to a power of two, a different tree)" if args.files > 1 else
                  " (UNEXPECTED with one file: both ways should give the one big tree's root)") + ":")
            for root, names in roots.items():
                print(f"  hash {json.loads(root)['hash']}  <- {len(names)} runs of "
                      f"{', '.join(sorted(set(names)))}")
        print(f"(this process's peak RSS while the runs were started: {parent_peak:.0f} MiB; the "
              f"child figures cannot be below it, as ru_maxrss carries over fork/vfork + exec)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
