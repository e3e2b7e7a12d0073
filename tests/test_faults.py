"""Faults with real processes: a hung worker, a full result disk, a worker cut off from the
network. In each, the job ends correct or clearly failed, finished results stay intact, and the
daemon keeps serving. (Killed workers and a SIGKILLed daemon are in test_daemon.py.)

The disk and network tests need root (a tmpfs mount; network namespaces); they skip without it,
unless SUMMA_REQUIRE_DOCKER=1 (CI, which runs as root) makes that a failure.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import uuid

import pytest

from daemon_helpers import BIN, DaemonProcess, job_id_of, single_tree_root, write_csv
from worker_helpers import read_line, wait_until

SLOW_KERNEL = {"SUMMA_KERNEL": "portable"}




def require_root(tool=None):
    problem = "needs root" if os.geteuid() != 0 else (
        f"needs {tool}" if tool and not shutil.which(tool) else None)
    if problem:
        if os.environ.get("SUMMA_REQUIRE_DOCKER") == "1":
            pytest.fail(f"CI runs as root, but this test {problem}")
        pytest.skip(problem)


def verified_proof(daemon, job, username):
    proof = daemon.submit("proof", job, "--username", username)
    assert proof.returncode == 0, proof.stderr
    checked = subprocess.run([os.path.join(BIN, "summa-verify"), "-"], input=proof.stdout,
                             capture_output=True, text=True, timeout=60)
    return checked.returncode == 0


@pytest.mark.timeout(300)
def test_a_hung_worker_is_caught_by_heartbeats(tmp_path):
    entries = write_csv(tmp_path / "big.csv", 1 << 15, n_currencies=4, seed=21)
    daemon = DaemonProcess(tmp_path, env=SLOW_KERNEL)
    job = job_id_of(daemon.submit("build", tmp_path / "big.csv", "--batch-size", "4096",
                                  "--executors", "2").stdout)
    wait_until(lambda: daemon.status(job)["progress"]["batches_done"] >= 1, seconds=120, interval=0.05)
    victim = sorted(daemon.worker_pids())[0]
    os.kill(victim, signal.SIGSTOP)               # alive, holding a batch, answering nothing
    try:
        record = daemon.wait_state(job, seconds=240)
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass                                  # the daemon already killed it
    assert record["state"] == "done", record
    assert record["root"] == single_tree_root(entries)
    assert f"worker pid {victim} stopped answering" in daemon.log()


@pytest.mark.timeout(300)
def test_a_full_result_disk_fails_the_job_cleanly_and_keeps_earlier_results(tmp_path):
    require_root()
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True, timeout=30)
    try:
        small = write_csv(tmp_path / "small.csv", 64, seed=22)
        write_csv(tmp_path / "big.csv", 1 << 14, seed=23)      # its tree needs 2 MB
        daemon = DaemonProcess(tmp_path, data_dir=disk)
        first = daemon.submit("build", tmp_path / "small.csv", "--wait")
        assert first.returncode == 0, first.stderr
        first_job = job_id_of(first.stdout)
        failed = daemon.submit("build", tmp_path / "big.csv", "--wait")
        assert failed.returncode == 1
        assert "No space left on device" in failed.stderr, failed.stderr
        assert sorted(os.listdir(disk / "results")) == [first_job]   # no partial directory
        assert verified_proof(daemon, first_job, small[5][0])       # the earlier result is whole
        again = daemon.submit("build", tmp_path / "small.csv", "--wait")
        assert again.returncode == 0, again.stderr                  # and the daemon goes on
        assert daemon.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], timeout=30)


class Namespaces:
    """Two test hosts: network namespaces joined by a veth pair, addressed inside them only."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.daemon_ns, self.worker_ns = f"summa-d-{tag}", f"summa-w-{tag}"
        self.link_d, self.link_w = f"vd{tag}", f"vw{tag}"
        octet = random.randint(1, 250)
        self.daemon_ip, self.worker_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
        for command in (
                ["netns", "add", self.daemon_ns], ["netns", "add", self.worker_ns],
                ["link", "add", self.link_d, "type", "veth", "peer", "name", self.link_w],
                ["link", "set", self.link_d, "netns", self.daemon_ns],
                ["link", "set", self.link_w, "netns", self.worker_ns],
                ["-n", self.daemon_ns, "addr", "add", f"{self.daemon_ip}/30", "dev", self.link_d],
                ["-n", self.worker_ns, "addr", "add", f"{self.worker_ip}/30", "dev", self.link_w],
                ["-n", self.daemon_ns, "link", "set", self.link_d, "up"],
                ["-n", self.worker_ns, "link", "set", self.link_w, "up"],
                ["-n", self.daemon_ns, "link", "set", "lo", "up"],
                ["-n", self.worker_ns, "link", "set", "lo", "up"]):
            subprocess.run(["ip", *command], check=True, capture_output=True, timeout=30)

    def inside(self, namespace):
        return ["ip", "netns", "exec", namespace]

    def cut(self):
        subprocess.run(["ip", "-n", self.worker_ns, "link", "set", self.link_w, "down"], check=True,
                       timeout=30)

    def throttle(self, rate="16mbit"):
        """A slow link: a token bucket on both ends of the veth, each way at `rate` (tc units)."""
        for namespace, link in ((self.daemon_ns, self.link_d), (self.worker_ns, self.link_w)):
            subprocess.run([*self.inside(namespace), "tc", "qdisc", "add", "dev", link, "root", "tbf",
                            "rate", rate, "burst", "16kb", "latency", "2s"], check=True,
                           capture_output=True, timeout=30)

    def held_back(self):
        """(bytes sent, packets the bucket held back) on each end: (daemon's, worker's)."""
        stats = []
        for namespace, link in ((self.daemon_ns, self.link_d), (self.worker_ns, self.link_w)):
            shown = subprocess.run([*self.inside(namespace), "tc", "-s", "-j", "qdisc", "show", "dev",
                                    link], check=True, capture_output=True, text=True, timeout=30)
            qdisc = next(q for q in json.loads(shown.stdout) if q["kind"] == "tbf")
            stats.append((qdisc["bytes"], qdisc["overlimits"]))
        return stats

    def remove(self):
        for namespace in (self.daemon_ns, self.worker_ns):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)


def start_worker(prefix, bind, env):
    process = subprocess.Popen([*prefix, sys.executable, "-m", "summa_aggregation.worker.cli",
                                "--bind", bind, "--insecure"], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, **env})
    assert "listening on" in read_line(process.stdout, 30)
    return process


@pytest.mark.timeout(300)
def test_a_worker_cut_off_from_the_network_mid_job(tmp_path):
    require_root("ip")
    entries = write_csv(tmp_path / "big.csv", 1 << 15, n_currencies=4, seed=24)
    hosts = Namespaces()
    workers = []
    try:
        base = random.randint(20000, 60000)
        workers.append(start_worker(hosts.inside(hosts.daemon_ns), f"tcp://127.0.0.1:{base + 1}", SLOW_KERNEL))
        workers.append(start_worker(hosts.inside(hosts.worker_ns), f"tcp://{hosts.worker_ip}:{base + 1}",
                                    SLOW_KERNEL))
        daemon = DaemonProcess(tmp_path, {"cloud_hosts": ["127.0.0.1", hosts.worker_ip], "cloud_port": base},
                               prefix=hosts.inside(hosts.daemon_ns))
        job = job_id_of(daemon.submit("build", tmp_path / "big.csv", "--batch-size", "4096",
                                      "--spawner", "cloud", "--executors", "2").stdout)
        wait_until(lambda: daemon.status(job)["progress"]["batches_done"] >= 1, seconds=120, interval=0.2)
        hosts.cut()                               # the remote host drops off the network
        record = daemon.wait_state(job, seconds=240)
        assert record["state"] == "done", record
        assert record["root"] == single_tree_root(entries)
        assert f"{hosts.worker_ip}:{base + 1} stopped answering" in daemon.log()
    finally:
        for process in workers:
            process.kill()
            process.wait(30)
            process.stdout.close()
        hosts.remove()


@pytest.mark.timeout(90)
def test_a_batch_slower_to_send_than_the_liveness_window_is_not_a_death(tmp_path):
    """Over a slow link a BUILD (and its RESULT, twice the size) takes seconds to cross, several
    liveness windows (0.2 s x 3); heartbeats must not wait behind it, so a healthy worker that is
    only slow to reach is no death, and no batch is retried."""
    require_root("tc")
    batch, batches = 1 << 15, 3                   # a BUILD of ~2 MB, a RESULT of ~4 MB
    entries = write_csv(tmp_path / "big.csv", batch * batches, seed=25)
    hosts = Namespaces()
    worker = None
    try:
        base = random.randint(20000, 60000)
        worker = start_worker(hosts.inside(hosts.worker_ns), f"tcp://{hosts.worker_ip}:{base + 1}", {})
        hosts.throttle("8mbit")                   # ~1 MB/s each way: seconds per message
        daemon = DaemonProcess(tmp_path, {"cloud_hosts": [hosts.worker_ip], "cloud_port": base},
                               prefix=hosts.inside(hosts.daemon_ns))
        job = job_id_of(daemon.submit("build", tmp_path / "big.csv", "--batch-size", batch,
                                      "--spawner", "cloud", "--executors", "1").stdout)
        record = daemon.wait_state(job, seconds=60)
        retries = [line for line in daemon.log().splitlines()
                   if "stopped answering" in line or " attempt " in line]
        assert retries == [], "\n".join(retries)   # the slow worker was never declared dead
        assert record["state"] == "done", record
        assert record["root"] == single_tree_root(entries)
        # the link was slow indeed: both ways, the bucket held traffic back, and what crossed
        # it (every BUILD, 2 MB each; every RESULT, 4 MB) took seconds per message at 1 MB/s,
        # against a liveness window of 0.6 s
        (to_worker, held_to), (to_daemon, held_from) = hosts.held_back()
        assert held_to > 0 and held_from > 0
        assert to_worker >= batches * batch * 64 and to_daemon >= batches * batch * 120
    finally:
        if worker is not None:
            worker.kill()
            worker.wait(30)
            worker.stdout.close()
        hosts.remove()
