"""Jobs that survive the daemon: SIGKILLed at any point of a job, a daemon started again on the
same data directory resumes it, reusing every unit it had journaled, and ends with the root of
an uninterrupted run; changed inputs, a cancellation and late answers of the dead attempt are
handled (README: Crashes and restarts)."""
import json
import os
import random
import socket
import subprocess
import sys

import pytest

from daemon_helpers import FINISHED, DaemonProcess, job_id_of, reference_tree, write_csv
from worker_helpers import read_line, wait_until

pytestmark = pytest.mark.timeout(180)
HERE = os.path.dirname(os.path.abspath(__file__))
SLOW_KERNEL = {"SUMMA_KERNEL": "portable"}      # units long enough to kill the daemon among them
FILES, PER_FILE, UNIT = 8, 8192, 1024           # the 8 CSVs x 8192 entries, 64 units


def csvs(tmp_path, files=FILES, per_file=PER_FILE):
    entries = [write_csv(tmp_path / f"u{i}.csv", per_file, seed=100 + i, prefix=f"f{i}-")
               for i in range(files)]
    return [str(tmp_path / f"u{i}.csv") for i in range(files)], entries


def the_root(entries):
    return reference_tree(entries, "interleaved", None).root.to_json()


def status(daemon, job):
    return daemon.status(job)


def kill_when(daemon, job, predicate, seconds=120):
    """SIGKILL the daemon once predicate(record) holds; the last record seen before."""
    record = wait_until(lambda: (lambda r: r if predicate(r) or r["state"] in FINISHED else None)(
        status(daemon, job)), seconds=seconds, interval=0.005)
    daemon.kill()
    return record


def units_at_least(fraction):
    def reached(record):
        progress = record["progress"]
        return progress.get("units") and progress.get("units_done", 0) >= fraction * progress["units"]
    return reached


@pytest.mark.parametrize("seed", range(10))
def test_a_job_killed_anywhere_resumes_with_the_root_of_an_uninterrupted_run(tmp_path, seed):
    """From the first unit (seed 0) to the end, where the store is finalized and renamed
    (seed 9): every unit the job had counted done before the kill is reused."""
    paths, entries = csvs(tmp_path)
    fraction = min(1.0, (seed + random.Random(seed).random() * 0.5) / 9)
    config = {"unit_size": UNIT}
    first = DaemonProcess(tmp_path, config, env=SLOW_KERNEL)
    job = job_id_of(first.submit("build", *paths, "--executors", "2").stdout)
    before = kill_when(first, job, units_at_least(fraction) if seed else
                       lambda r: r["progress"].get("units_done", 0) >= 1)
    done_before = before["progress"].get("units_done", 0)
    again = DaemonProcess(tmp_path, config, env=SLOW_KERNEL)
    record = again.wait_state(job, seconds=120)
    assert record["state"] == "done", record
    assert record["root"] == the_root(entries)
    # it finished before the kill landed: seen so by the last status, or (seed 9: the kill
    # comes at the very end) finished between that status and the kill, then never resumed
    if before["state"] in FINISHED or record.get("attempt", 1) == 1:
        assert "resumed" not in record and os.listdir(os.path.join(again.data_dir, "results")) == [job]
        return
    assert record["resumed"] == 1 and record["attempt"] == 2
    assert record["progress"].get("units_reused", 0) >= done_before, (before["progress"], record["progress"])
    assert record["progress"]["units_done"] == record["progress"]["units"] == FILES * PER_FILE // UNIT
    results = os.listdir(os.path.join(again.data_dir, "results"))
    assert results == [job] and "units.journal" not in os.listdir(again.result_dir(job))


def interrupted_job(tmp_path, files=2, per_file=4096):
    """A job SIGKILLed once it loaded everything and stored some units: (paths, job, data)."""
    paths, entries = csvs(tmp_path, files, per_file)
    first = DaemonProcess(tmp_path, {"unit_size": UNIT}, env=SLOW_KERNEL)
    job = job_id_of(first.submit("build", *paths, "--executors", "1").stdout)
    before = kill_when(first, job, units_at_least(0.25))
    assert before["state"] not in FINISHED, before
    return paths, entries, job


@pytest.mark.parametrize("change", ["size", "time", "content", "gone"])
def test_a_changed_input_fails_the_resumed_job_with_one_line_naming_it(tmp_path, change):
    paths, _, job = interrupted_job(tmp_path)
    target = paths[1]
    info = os.stat(target)
    if change == "size":
        with open(target, "a") as handle:
            handle.write("zed,1\n")
    elif change == "time":
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    elif change == "content":                       # same size, same time: only the digest tells
        data = bytearray(open(target, "rb").read())
        data[-2] = ord("7") if data[-2] != ord("7") else ord("8")
        open(target, "wb").write(data)
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    else:
        os.unlink(target)
    again = DaemonProcess(tmp_path, {"unit_size": UNIT}, env=SLOW_KERNEL)
    record = again.wait_state(job, seconds=120)
    assert record["state"] == "failed", record
    error = record["error"]
    assert "\n" not in error and target in error, error
    what = {"size": "its size went from", "time": "its modification time changed",
            "content": "its content changed (SHA-256)", "gone": "it was there when the job started"}
    assert what[change] in error, error
    assert not os.path.exists(again.result_dir(job))
    assert not [name for name in os.listdir(os.path.join(again.data_dir, "results")) if job in name]


def test_a_restart_during_a_cancellation_finds_the_job_cancelled(tmp_path):
    paths, _ = csvs(tmp_path, 2, 4096)
    first = DaemonProcess(tmp_path, {"unit_size": UNIT}, env=SLOW_KERNEL)
    job = job_id_of(first.submit("build", *paths, "--executors", "1").stdout)
    wait_until(lambda: units_at_least(0.1)(status(first, job)), seconds=60, interval=0.005)
    answer = first.submit("cancel", job)
    first.kill()                                   # at once: the runner may not have ended it
    assert answer.stdout.strip() == f"{job}: cancelling", answer
    with open(os.path.join(first.data_dir, "jobs", f"{job}.json")) as handle:
        assert json.load(handle)["cancelling"] is True    # on disk before the answer
    again = DaemonProcess(tmp_path, {"unit_size": UNIT})
    record = again.status(job)
    assert record["state"] == "cancelled" and record["root"] is None, record
    assert not os.listdir(os.path.join(again.data_dir, "results"))


def free_port_pair():
    """A port P with P + 1 free too (a fixed-endpoint cloud worker listens on cloud_port + 1)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1] - 1
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port")


def test_late_answers_of_the_dead_attempt_are_dropped(tmp_path):
    """A worker that outlives the daemon (a fixed endpoint: the cloud spawner without a compose
    file) answers, on the resumed job's connection, the batches the dead attempt had asked for,
    right before it answers the new ones: those late answers are dropped, not taken as lies,
    and the job ends with the right root."""
    paths, entries = csvs(tmp_path, 2, 4096)
    base = free_port_pair()
    worker = subprocess.Popen([sys.executable, os.path.join(HERE, "faulty_worker.py"), "--bind",
                               f"tcp://127.0.0.1:{base + 1}", "--insecure"], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, **SLOW_KERNEL, "SUMMA_FAULT": "late-replay"})
    try:
        assert "listening on" in read_line(worker.stdout, 30)
        config = {"unit_size": UNIT, "cloud_port": base, "cloud_hosts": ["127.0.0.1"]}
        first = DaemonProcess(tmp_path, config)
        job = job_id_of(first.submit("build", *paths, "--spawner", "cloud", "--executors", "1").stdout)
        before = kill_when(first, job, units_at_least(0.25))
        assert before["state"] not in FINISHED, before
        again = DaemonProcess(tmp_path, config)
        record = again.wait_state(job, seconds=120)
        assert record["state"] == "done" and record["quarantined"] == [], record
        assert record["root"] == the_root(entries)
        assert record["progress"]["retries"] == 0
        assert "dropped a late answer from" in again.log() and f"for {job} (an earlier attempt)" in again.log()
    finally:
        worker.kill()
        worker.wait(10)
        worker.stdout.close()


def test_a_job_whose_result_was_published_just_before_the_crash_ends_done(tmp_path):
    """The daemon died between the result's rename and the record's last write: the record
    says running, the result is whole. The restart finds it and takes its root."""
    paths, entries = csvs(tmp_path, 1, 1024)
    first = DaemonProcess(tmp_path, {"unit_size": UNIT})
    job = job_id_of(first.submit("build", *paths, "--wait").stdout)
    first.kill()
    record_path = os.path.join(first.data_dir, "jobs", f"{job}.json")
    with open(record_path) as handle:
        record = json.load(handle)
    record.update(state="running", root=None, finished=None)
    with open(record_path, "w") as handle:
        json.dump(record, handle)
    again = DaemonProcess(tmp_path, {"unit_size": UNIT})
    record = again.status(job)
    assert record["state"] == "done" and record["root"] == the_root(entries), record
    assert again.submit("proof", job, "--username", entries[0][0][0]).returncode == 0


@pytest.mark.parametrize("encoding", ["bytes", "keccak256"])
def test_a_sorted_job_killed_midway_resumes_with_its_root(tmp_path, encoding):
    """The sort is deterministic: the resumed attempt sorts again, finds its units where the
    journal says, reuses them, and ends with the root of the sorted entries."""
    from summa_aggregation.mst.tree import MerkleSumTree
    from summa_aggregation.mst.csv_reader import username_to_word
    paths, entries = csvs(tmp_path, files=4, per_file=4096)
    flat = sorted((e for f in entries for e in f), key=lambda e: e[0].encode())
    config = {"unit_size": UNIT}
    first = DaemonProcess(tmp_path, config, env=SLOW_KERNEL)
    job = job_id_of(first.submit("build", *paths, "--executors", "2", "--sorted",
                                 "--username-encoding", encoding).stdout)
    before = kill_when(first, job, units_at_least(0.4))
    again = DaemonProcess(tmp_path, config, env=SLOW_KERNEL)
    record = again.wait_state(job, seconds=150)
    assert record["state"] == "done", record
    words = b"".join(username_to_word(name, encoding) for name, _ in flat)
    balances = b"".join(b.to_bytes(32, "little") for _, bs in flat for b in bs)
    assert record["root"] == MerkleSumTree.build(words, balances, len(flat), 1).root.to_json()
    assert before["state"] not in FINISHED, before
    assert record["resumed"] == 1 and before["progress"].get("units_done", 0) >= 1
    assert record["progress"].get("units_reused", 0) >= before["progress"]["units_done"]
    leftovers = [n for _, dirs, files in os.walk(again.data_dir) for n in dirs + files if "sort-runs" in n]
    assert not leftovers
