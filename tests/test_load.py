"""Load on one real summa-daemon: many clients at once, and many jobs in a row.

Everything listens on 127.0.0.1 on ports picked by the system. The running job is slow on
purpose (SUMMA_KERNEL=portable in the daemon's environment, inherited by its workers), so that
the clients' requests meet a daemon that is busy with it. The figures (requests per second,
latencies, descriptors and memory per job) are printed by bench/bench_load.py; these tests
assert only that everything is answered, correctly, and that nothing leaks.
"""
import os
import random
import re
import threading

import pytest

from summa_aggregation.mst.proof import verify_proof
from summa_aggregation.daemon.broker import Daemon
from summa_aggregation.daemon.client import DaemonClient, DaemonError
from summa_aggregation.daemon.config import DaemonConfig
from summa_aggregation.wire.memory import heap_in_use
from summa_aggregation.wire import SubmitRequest

from daemon_helpers import FINISHED, DaemonProcess, job_id_of, write_csv
from worker_helpers import wait_until

SLOW_KERNEL = {"SUMMA_KERNEL": "portable"}
CLIENTS = 50
REQUESTS = 10          # per client, alternating STATUS and PROOF
JOBS = 100
FD_SLACK = 5
RSS_GROWTH_MB = 30




def rss_mb(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        return int(re.search(r"VmRSS:\s+(\d+) kB", handle.read()).group(1)) / 1024


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def root_numbers(root):
    return int(root["hash"], 16), [int(b, 16) for b in root["balances"]]


@pytest.mark.timeout(180)
def test_fifty_clients_ask_for_status_and_proofs_while_a_job_runs(tmp_path):
    daemon = DaemonProcess(tmp_path, env=SLOW_KERNEL)
    entries = write_csv(tmp_path / "small.csv", 256, 2, seed=1)
    finished = daemon.submit("build", tmp_path / "small.csv", "--batch-size", "64", "--wait")
    assert finished.returncode == 0, finished.stderr
    done_job = job_id_of(finished.stdout)
    root = root_numbers(daemon.status(done_job)["root"])

    write_csv(tmp_path / "big.csv", 1 << 16, 8, seed=2)   # ~15 s of the portable kernel on 2 workers
    started = daemon.submit("build", tmp_path / "big.csv", "--batch-size", "4096", "--executors", "2")
    assert started.returncode == 0, started.stderr
    long_job = job_id_of(started.stdout)
    daemon.wait_state(long_job, ("running",) + FINISHED)

    barrier = threading.Barrier(CLIENTS)
    failures, states, proofs = [], [], []

    def client(number):
        rng = random.Random(number)
        try:
            with daemon.client(timeout=60) as connection:
                barrier.wait(60)
                for i in range(REQUESTS):
                    if i % 2 == 0:
                        states.append(connection.status(long_job)["state"])
                    else:
                        name, balances = rng.choice(entries)
                        proofs.append((name, balances, connection.proof(done_job, name)))
        except (DaemonError, threading.BrokenBarrierError) as error:
            failures.append(f"client {number}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a client never finished"
    assert failures == []
    assert len(states) == CLIENTS * REQUESTS // 2 and set(states) <= {"running", "done"}, set(states)
    assert len(proofs) == CLIENTS * REQUESTS // 2
    for name, balances, proof in proofs:
        assert proof["entry"] == {"username": name, "balances": [str(b) for b in balances]}
        proved_hash, proved_balances = verify_proof(proof)
        assert (proved_hash, list(proved_balances)) == root

    cancelled = daemon.submit("cancel", long_job)
    assert cancelled.returncode == 0, cancelled.stderr
    assert daemon.wait_state(long_job)["state"] in ("cancelled", "done")
    assert daemon.process.poll() is None


@pytest.mark.timeout(240)
def test_a_hundred_jobs_in_a_row_leak_no_descriptors_and_little_memory(tmp_path):
    daemon = DaemonProcess(tmp_path)
    write_csv(tmp_path / "tiny.csv", 16, 1)
    spec = SubmitRequest([str(tmp_path / "tiny.csv")], 1, "mock", "interleaved", 14)
    samples, root = {}, None
    with daemon.client(timeout=30) as client:
        for n in range(1, JOBS + 1):
            job = client.submit(spec)
            record = wait_until(lambda: (lambda r: r if r["state"] in FINISHED else None)(client.status(job)),
                                60, interval=0.01)
            assert record["state"] == "done", record
            assert root is None or record["root"] == root
            root = record["root"]
            if n in (10, JOBS):
                # the job's worker is gone once the runner has terminated it: then count
                wait_until(lambda: not daemon.worker_pids(), 30, interval=0.01)
                samples[n] = (open_fds(daemon.pid), rss_mb(daemon.pid))
    (fds_10, rss_10), (fds_100, rss_100) = samples[10], samples[JOBS]
    assert fds_100 <= fds_10 + FD_SLACK, samples
    assert rss_100 <= rss_10 + RSS_GROWTH_MB, samples
    assert daemon.process.poll() is None


@pytest.mark.timeout(180)
def test_jobs_in_a_row_leave_no_heap_behind(tmp_path):
    """The heap in use (malloc's own count, not the noisier RSS) of an in-process daemon over 40
    jobs: once, libzmq kept 32 KB of every exited worker's connection to the cancel PUB."""
    write_csv(tmp_path / "tiny.csv", 16, 1)
    daemon = Daemon(DaemonConfig(control="inproc://heap-test", cancel="tcp://127.0.0.1:*",
                                 data_dir=str(tmp_path / "data"), heartbeat_interval=0.2, insecure=True,
                                 input_dirs=[str(tmp_path)]))
    serving = threading.Thread(target=daemon.serve)
    serving.start()
    spec = SubmitRequest([str(tmp_path / "tiny.csv")], 1, "mock", "interleaved", 14)
    try:
        with DaemonClient(daemon.control_endpoint, timeout=30) as client:
            def run(jobs):
                for _ in range(jobs):
                    job = client.submit(spec)
                    wait_until(lambda: client.status(job)["state"] in FINISHED, 60, interval=0.01)
                wait_until(lambda: not daemon.runners, 30, interval=0.01)
            run(10)
            before = heap_in_use()
            run(40)
            per_job = (heap_in_use() - before) / 40
    finally:
        daemon.stop()
        serving.join()
    assert per_job < 8 * 1024, f"{per_job:.0f} bytes of heap kept per job"
