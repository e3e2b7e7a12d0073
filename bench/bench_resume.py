"""What resuming saves: a job killed (SIGKILL) at a fraction of its units, then the daemon
restarted on the same data directory, against a fresh run of the whole job, in the same run.

    python bench/bench_resume.py [--log2 24] [--at 0.5] [--workers 2] [--data DIR]

Prints the fresh run's wall time, the time the killed run had spent, the time from the restart
to done, the units reused, and the ratio (restart to done) / fresh; the roots must agree. The
CSV is made once under DIR (default /var/tmp/summa-bench) and reused.
"""
import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_daemon import Daemon  # noqa: E402  (bench/ is not a package)
from bench_scale import csv_for  # noqa: E402


def status(daemon, job):
    return json.loads(daemon.submit("status", job, timeout=60).stdout)


def wait_done(daemon, job, seconds=7200):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        record = status(daemon, job)
        if record["state"] in ("done", "failed", "cancelled"):
            return record
        time.sleep(0.2)
    raise TimeoutError(job)


def fresh(directory, csv, workers):
    daemon = Daemon(directory, input_dirs=[os.path.dirname(csv)])
    try:
        began = time.perf_counter()
        job = daemon.submit("build", csv, "--executors", str(workers)).stdout.split()[0]
        record = wait_done(daemon, job)
        return time.perf_counter() - began, record
    finally:
        daemon.stop()


def killed_then_resumed(directory, csv, workers, at):
    daemon = Daemon(directory, input_dirs=[os.path.dirname(csv)])
    began = time.perf_counter()
    job = daemon.submit("build", csv, "--executors", str(workers)).stdout.split()[0]
    while True:
        progress = status(daemon, job)["progress"]
        if progress.get("units") and progress.get("units_done", 0) >= at * progress["units"]:
            break
        time.sleep(0.05)
    daemon.process.kill()
    daemon.process.wait(60)
    before = time.perf_counter() - began
    restarted = time.perf_counter()
    again = Daemon(directory, input_dirs=[os.path.dirname(csv)])
    try:
        record = wait_done(again, job)
        return before, time.perf_counter() - restarted, record
    finally:
        again.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log2", type=int, default=24)
    parser.add_argument("--at", type=float, default=0.5, help="fraction of units done at the kill")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", default="/var/tmp/summa-bench")
    args = parser.parse_args()
    os.makedirs(args.data, exist_ok=True)
    csv = csv_for(args.data, args.log2, 1)
    runs = os.path.join(args.data, "resume-runs")
    results = {}
    for name in ("fresh", "resumed"):
        directory = os.path.join(runs, name)
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        if name == "fresh":
            results[name] = fresh(directory, csv, args.workers)
        else:
            results[name] = killed_then_resumed(directory, csv, args.workers, args.at)
        shutil.rmtree(directory, ignore_errors=True)
    wall, record = results["fresh"]
    before, after, resumed = results["resumed"]
    assert record["state"] == resumed["state"] == "done", (record, resumed)
    assert record["root"] == resumed["root"], "the resumed root differs"
    progress = resumed["progress"]
    print(f"2^{args.log2} entries, {args.workers} workers, killed at {args.at:.0%} of the units")
    print(f"  fresh run:             {wall:8.2f} s")
    print(f"  killed run, until the kill: {before:8.2f} s")
    print(f"  restart to done:       {after:8.2f} s  ({progress.get('units_reused', 0)} of "
          f"{progress['units']} units reused, resumed {resumed.get('resumed')} time(s))")
    print(f"  restart to done / fresh: {after / wall:.2f}; roots equal")


if __name__ == "__main__":
    main()
