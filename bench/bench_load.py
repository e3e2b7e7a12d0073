"""The daemon under load: many clients at once, and many jobs in a row.

    python bench/bench_load.py [--clients 50] [--requests 10] [--jobs 100] [--runs 3]

(a) Concurrent clients. A real summa-daemon finishes a small job (256 entries x 2 currencies in
batches of 64), then starts a long one (2^16 x 8 in batches of 4096 on 2 workers, with
SUMMA_KERNEL=portable so that it runs for many seconds). C threads, each with its own
DaemonClient, wait at a barrier, then each sends R requests alternating STATUS (of the long job)
and PROOF (of the finished job, random users). Printed: requests/s (all C x R requests over the
time from the barrier to the last answer) and the median and max latency, per request kind; the
same burst against the idle daemon (before the long job) for comparison. Medians over --runs
bursts (each run its own burst on the same daemon).

(b) Jobs in a row. On a fresh daemon, J tiny jobs (16 entries, --executors 1, MockSpawner: one
worker process per job), each submitted with DaemonClient and polled until done. Printed: the
daemon's open file descriptors (/proc/PID/fd) and RSS after jobs 1, 10, J/2 and J, counted once
the job's worker process has exited, and jobs/s over all J.
"""
import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import bench_daemon  # noqa: E402
from tables import table  # noqa: E402
from daemon_helpers import write_csv  # noqa: E402

from summa_aggregation.mst.proof import verify_proof  # noqa: E402
from summa_aggregation.daemon.client import DaemonClient  # noqa: E402
from summa_aggregation.wire import SubmitRequest  # noqa: E402

BIN = os.path.dirname(sys.executable)
FINISHED = ("done", "failed", "cancelled")


class Daemon(bench_daemon.Daemon):
    """bench_daemon's daemon, quiet, with the probes a load test needs."""

    def __init__(self, directory, env=None):
        super().__init__(directory, env, stderr=subprocess.DEVNULL)

    def client(self, timeout=60):
        return DaemonClient(self.endpoint, timeout=timeout)

    def wait(self, client, job, states=FINISHED, seconds=600):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            record = client.status(job)
            if record["state"] in states:
                return record
            time.sleep(0.005)
        raise RuntimeError(f"job {job} not in {states} within {seconds} s")

    def rss_mib(self):
        with open(f"/proc/{self.process.pid}/status") as handle:
            return int(re.search(r"VmRSS:\s+(\d+) kB", handle.read()).group(1)) / 1024

    def fds(self):
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


def burst(daemon, clients, requests, status_job, proof_job, entries, root):
    """clients threads x requests each; returns (seconds, {kind: [latency s]}, failures)."""
    barrier = threading.Barrier(clients + 1)
    latencies = {"status": [], "proof": []}
    failures, finished_at = [], []

    def run(number):
        rng = random.Random(number)
        try:
            with daemon.client() as client:
                barrier.wait(60)
                for i in range(requests):
                    began = time.perf_counter()
                    if i % 2 == 0:
                        client.status(status_job)
                        latencies["status"].append(time.perf_counter() - began)
                    else:
                        name, _ = rng.choice(entries)
                        proof = client.proof(proof_job, name)
                        latencies["proof"].append(time.perf_counter() - began)
                        if verify_proof(proof)[0] != root:
                            failures.append(f"client {number}: proof of {name} is not against the root")
        except Exception as error:   # counted and printed, not raised: this is a benchmark
            failures.append(f"client {number}: {type(error).__name__}: {error}")
        finally:
            finished_at.append(time.perf_counter())

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait(60)
    began = time.perf_counter()
    for thread in threads:
        thread.join(300)
    return max(finished_at) - began, latencies, failures


def concurrent_clients(tmp, clients, requests, runs):
    directory = tempfile.mkdtemp(dir=tmp)
    daemon = Daemon(directory, env={"SUMMA_KERNEL": "portable"})
    rows, failures, state = [], [], None
    try:
        small = os.path.join(directory, "small.csv")
        entries = write_csv(small, 256, 2, seed=1)
        big = os.path.join(directory, "big.csv")
        write_csv(big, 1 << 16, 8, seed=2)
        with daemon.client() as client:
            done_job = client.submit(SubmitRequest([small], 2, "mock", "interleaved", 14, 64))
            root = int(daemon.wait(client, done_job)["root"]["hash"], 16)
            for label, busy in (("idle daemon", False), ("a job running", True)):
                if busy:
                    long_job = client.submit(SubmitRequest([big], 2, "mock", "interleaved", 14, 4096))
                    daemon.wait(client, long_job, ("running",) + FINISHED)
                status_job = long_job if busy else done_job
                results = [burst(daemon, clients, requests, status_job, done_job, entries, root)
                           for _ in range(runs)]
                if busy:
                    state = client.status(long_job)["state"]
                    client.cancel(long_job)
                    daemon.wait(client, long_job)
                seconds = statistics.median(r[0] for r in results)
                row = [label, f"{clients * requests / seconds:.0f}"]
                for kind in ("status", "proof"):
                    per_run = [r[1][kind] for r in results]
                    row += [f"{statistics.median(statistics.median(l) for l in per_run) * 1e3:.1f}",
                            f"{max(max(l) for l in per_run) * 1e3:.1f}"]
                every = [latency for r in results for kind in r[1].values() for latency in kind]
                row += [f"{statistics.median(every) * 1e3:.1f}", f"{max(every) * 1e3:.1f}",
                        f"{len(every)}/{runs * clients * requests}"]
                rows.append(row)
                failures += [f for r in results for f in r[2]]
    finally:
        daemon.stop()
    table(("daemon", "requests/s", "STATUS median ms", "STATUS max ms", "PROOF median ms",
           "PROOF max ms", "all median ms", "all max ms", "answered"), rows,
          f"(a) {clients} clients x {requests} requests at once (STATUS / PROOF alternating), "
          f"median of {runs} bursts; the long job was still '{state}' after the last burst")
    print(f"  failed requests: {len(failures)}" + "".join(f"\n    {f}" for f in failures[:5]))


def jobs_in_a_row(tmp, jobs):
    directory = tempfile.mkdtemp(dir=tmp)
    daemon = Daemon(directory)
    rows, marks = [], sorted({1, 10, jobs // 2, jobs})
    try:
        csv = os.path.join(directory, "tiny.csv")
        write_csv(csv, 16, 1)
        spec = SubmitRequest([csv], 1, "mock", "interleaved", 14)
        with daemon.client() as client:
            began = time.perf_counter()
            paused = 0.0
            for n in range(1, jobs + 1):
                job = client.submit(spec)
                record = daemon.wait(client, job)
                assert record["state"] == "done", record
                if n in marks:
                    counting = time.perf_counter()
                    while daemon.children():   # the job's worker has exited: count then
                        time.sleep(0.005)
                    rows.append((str(n), str(daemon.fds()), f"{daemon.rss_mib():.1f}"))
                    paused += time.perf_counter() - counting
            seconds = time.perf_counter() - began - paused
    finally:
        daemon.stop()
    table(("after job", "open fds", "RSS MiB"), rows,
          f"(b) {jobs} tiny jobs in a row (16 entries, 1 executor, local worker processes): "
          f"{jobs / seconds:.2f} jobs/s, {seconds / jobs * 1e3:.0f} ms per job")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="summa-bench-load-") as tmp:
        concurrent_clients(tmp, args.clients, args.requests, args.runs)
        jobs_in_a_row(tmp, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
