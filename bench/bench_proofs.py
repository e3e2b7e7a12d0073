"""Proofs from a result directory: the three targets of issue #11, on one existing store.

    python bench/bench_proofs.py DIR CSV [--single 5] [--random 20000] [--in-order 100000]
                                 [--daemon] [--clients 8] [--requests 4000] [--seconds 60]
                                 [--in-process 2000] [--skip-export]

DIR is a result directory (summa-aggregate --out DIR CSV), CSV the file it was built from (its
first column gives the usernames). Printed:
  summa-proof s, MiB   `summa-proof DIR USERNAME`: wall and peak RSS (/usr/bin/time's, else wait4's)
                       of the whole process, median and max over --single random usernames
  export proofs/s      `summa-proof DIR --usernames FILE > file` (wall, process start and load
                       included): --random random usernames, and the first --in-order usernames in
                       input order (0: all of them)
  in-process µs/proof  StoredTree.proofs() in chunks of 256 on a freshly opened store (cold cache),
                       then the same names again (warm), --in-process random usernames
  daemon               with --daemon: a summa-daemon serving DIR (linked into its data directory
                       as a finished job; with --build it builds CSV itself, MockSpawner, 2
                       workers), then --clients processes each send PROOFs of random usernames
                       (--requests in all, after 5 each to warm up), --settle s after the
                       daemon's first proof (it fills its verified node cache when idle);
                       p50/p99 latency and proofs/s of the parallel phase, and the latency of STATUS
                       requests sent every 20 ms by one more client while they run; CPU µs
                       per request of the clients (all their threads, the timed phase) and of
                       the daemon process (the warm-up requests included)
"""
import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from bench_scale import (BIN, ScaleDaemon, daemon_proofs, last_line, percentile,  # noqa: E402
                         random_usernames, run_child)

from summa_aggregation.daemon.client import DaemonClient  # noqa: E402
from summa_aggregation.mst.store import load  # noqa: E402


def csv_usernames(path, limit):
    names = []
    with open(path, "rb") as handle:
        handle.readline()
        for line in handle:
            names.append(line.split(b",", 1)[0].decode("utf-8"))
            if limit and len(names) >= limit:
                break
    return names


TIME = "/usr/bin/time"     # its %M is the child's own peak RSS (wait4's counts a forked parent's)


def measured(argv, workdir, timeout):
    """run_child(argv), the peak RSS taken from /usr/bin/time where there is one."""
    if not os.access(TIME, os.X_OK):
        return run_child(argv, workdir, timeout)
    seconds, _, code, out, err = run_child([TIME, "-f", "peak-rss-kb %M", *argv], workdir, timeout)
    lines = err.splitlines()
    peak = None
    if lines and lines[-1].startswith("peak-rss-kb "):
        peak = int(lines.pop().split()[1]) / 1024
    if code is not None and code > 128:           # time reports a signal as 128 + its number
        code = None if code == 137 else code
    return seconds, peak, code, out, "\n".join(lines)


def single(result, names, workdir):
    walls, peaks = [], []
    for name in names:
        seconds, peak, code, out, err = measured([os.path.join(BIN, "summa-proof"), result, name],
                                                 workdir, 120)
        with out:
            if code != 0 or json.load(out)["entry"]["username"] != name:
                raise RuntimeError(f"summa-proof {name}: exit {code}: {last_line(err)}")
        walls.append(seconds)
        peaks.append(peak)
    return statistics.median(walls), max(walls), statistics.median(peaks), max(peaks)


def export(result, names, workdir):
    listing = os.path.join(workdir, "usernames.txt")
    with open(listing, "w", encoding="utf-8") as handle:
        handle.write("".join(name + "\n" for name in names))
    seconds, peak, code, out, err = measured(
        [os.path.join(BIN, "summa-proof"), result, "--usernames", listing], workdir, 1800)
    with out:
        if code != 0:
            raise RuntimeError(f"exit {code}: {last_line(err)}")
        count, first, last = 0, None, None
        for line in out:                         # streamed: the output is ~3.5 KB a proof
            count += 1
            first = first or line
            last = line
    if count != len(names) or json.loads(first)["entry"]["username"] != names[0] \
            or json.loads(last)["entry"]["username"] != names[-1]:
        raise RuntimeError(f"{count} lines for {len(names)} usernames")
    return len(names) / seconds, seconds, peak


def in_process(result, names):
    tree, _ = load(result)
    out = []
    for label in ("cold", "warm"):
        began = time.perf_counter()
        for i in range(0, len(names), 256):
            tree.proofs(names[i:i + 256])
        out.append((label, (time.perf_counter() - began) / len(names) * 1e6))
    began = time.perf_counter()
    for name in names[:200]:
        tree.proof(name)
    out.append(("single, warm", (time.perf_counter() - began) / min(200, len(names)) * 1e6))
    return out


class StatusProbe(threading.Thread):
    """STATUS of a job every `interval` s from its own client: the control loop's latency."""

    def __init__(self, endpoint, job, interval=0.02):
        super().__init__(daemon=True)
        self.endpoint, self.job, self.interval = endpoint, job, interval
        self.latencies, self.stopped = [], threading.Event()

    def run(self):
        with DaemonClient(self.endpoint, timeout=60) as client:
            while not self.stopped.wait(self.interval):
                began = time.perf_counter()
                client.status(self.job)
                self.latencies.append(time.perf_counter() - began)


def linked_job(directory, result, csv):
    """A finished job record in a fresh daemon data directory whose result is DIR (a link)."""
    job = "20200101-000000-bench0"
    os.makedirs(os.path.join(directory, "data", "jobs"))
    os.makedirs(os.path.join(directory, "data", "results"))
    os.symlink(os.path.abspath(result), os.path.join(directory, "data", "results", job))
    record = {"job": job, "state": "done", "error": None, "root": None, "submitted": 0, "started": 0,
              "loaded": 0, "finished": 0, "quarantined": [], "progress": {},
              "spec": {"csvs": [os.path.abspath(csv)], "executors": 2, "spawner": "mock",
                       "layout": "interleaved", "n_bytes": 14, "batch_size": None}}
    with open(os.path.join(directory, "data", "jobs", f"{job}.json"), "w") as handle:
        json.dump(record, handle)
    return job


def daemon(result, csv, clients, requests, seconds, build, settle):
    directory = tempfile.mkdtemp(prefix="bench-proofs-daemon-")
    job = None if build else linked_job(directory, result, csv)
    server = ScaleDaemon(directory, input_dirs=[os.path.dirname(os.path.abspath(csv))])
    try:
        if build:
            done = server.submit("build", csv, "--executors", "2", "--wait", timeout=1800)
            if done.returncode != 0:
                raise RuntimeError(f"build: {last_line(done.stderr)}{server.log_tail()}")
            job = done.stdout.splitlines()[0]
        with DaemonClient(server.endpoint, timeout=600) as client:   # the daemon opens the result
            client.proof(job, csv_usernames(csv, 1)[0])
        time.sleep(settle)               # ... and fills its verified node cache meanwhile
        probe = StatusProbe(server.endpoint, job)
        probe.start()
        cpu = {}
        p50, p99, rate = daemon_proofs(server, job, csv, requests, clients, 1, 600, seconds, cpu)
        probe.stopped.set()
        probe.join()
        status = sorted(probe.latencies)
        return (p50, p99, rate, percentile(status, 0.5) * 1e3, status[-1] * 1e3 if status else None,
                cpu)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("csv")
    parser.add_argument("--single", type=int, default=5)
    parser.add_argument("--random", type=int, default=20000)
    parser.add_argument("--in-order", type=int, default=100000)
    parser.add_argument("--in-process", type=int, default=2000)
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--daemon", action="store_true")
    parser.add_argument("--build", action="store_true",
                        help="the daemon builds CSV (else it serves DIR, linked as a finished job)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--settle", type=float, default=5,
                        help="seconds between the daemon's first proof and the measure (5)")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    manifest = json.load(open(os.path.join(args.directory, "manifest.json")))
    print(f"{args.directory}: {manifest['entries']} entries, unit depth {manifest['unit_depth']}, "
          f"depth {manifest['mini_depth'] + manifest['top_depth']}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        if args.single:
            median, worst, rss, rss_max = single(args.directory,
                                                 random_usernames(args.csv, args.single, rng), workdir)
            print(f"summa-proof DIR USER: {median:.3f} s median, {worst:.3f} s max; "
                  f"{rss:.0f} MiB median, {rss_max:.0f} MiB max peak RSS", flush=True)
        if args.in_process:
            for label, us in in_process(args.directory, random_usernames(args.csv, args.in_process, rng)):
                print(f"in process, {label}: {us:.1f} µs/proof", flush=True)
        if not args.skip_export:
            if args.random:
                rate, seconds, peak = export(args.directory, random_usernames(args.csv, args.random, rng),
                                             workdir)
                print(f"export, {args.random} random usernames: {rate:,.0f} proofs/s "
                      f"({seconds:.2f} s, {peak:.0f} MiB)", flush=True)
            names = csv_usernames(args.csv, args.in_order)
            rate, seconds, peak = export(args.directory, names, workdir)
            print(f"export, {len(names)} usernames in input order: {rate:,.0f} proofs/s "
                  f"({seconds:.2f} s, {peak:.0f} MiB)", flush=True)
    if args.daemon:
        p50, p99, rate, status50, status_max, cpu = daemon(
            args.directory, args.csv, args.clients, args.requests, args.seconds, args.build, args.settle)
        print(f"daemon PROOF, {args.clients} clients: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
              f"{rate:,.0f} proofs/s; STATUS meanwhile: p50 {status50:.2f} ms, max "
              f"{status_max:.2f} ms; CPU per request: clients {cpu.get('client', 0):.0f} µs, "
              f"daemon {cpu.get('daemon', 0):.0f} µs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
