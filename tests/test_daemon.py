"""summa-daemon end to end: a real daemon process, its real worker processes, the real client.

Everything listens on 127.0.0.1 on ports picked by the system. A test that needs a build slow
enough to act on mid-job runs the daemon (and so its workers) with SUMMA_KERNEL=portable.
After every test, no worker process started by the test's daemons may still be alive.
"""
import json
import os
import re
import signal
import subprocess
import threading
import time

import msgpack
import pytest
import zmq

from summa_aggregation.daemon.broker import Daemon
from summa_aggregation.daemon.client import DaemonClient
from summa_aggregation.daemon.config import DaemonConfig
from summa_aggregation import wire
from summa_aggregation.wire import Code, SubmitRequest

import daemon_helpers
from daemon_helpers import (FINISHED, MARK, DaemonProcess, cpu_seconds, job_id_of,
                            marked_workers, new_mark, one_line, single_tree_root, write_csv)
from worker_helpers import BIN, free_port, read_line, receive, wait_until

FOUR = [f"entry_16_{i}.csv" for i in range(1, 5)]
SLOW_KERNEL = {"SUMMA_KERNEL": "portable"}
JOB_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")




@pytest.fixture
def daemon(tmp_path):
    return DaemonProcess(tmp_path)


def fixture_paths(fixtures_dir, names):
    return [str(fixtures_dir / name) for name in names]


def root_line(result):
    """The last stdout line of a successful `build --wait`, parsed."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def build_in_background(daemon, *args, timeout=10):
    """`summa-submit build ARGS --wait` as a Popen; returns (process, job id from line one)."""
    process = subprocess.Popen([os.path.join(BIN, "summa-submit"), "--daemon", daemon.control,
                                "--timeout", str(timeout), "build", *map(str, args), "--wait"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               # as in a terminal: a suite started in the background (a
                               # non-interactive shell's `&`) would pass SIGINT on ignored
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    job = read_line(process.stdout, 30).strip()
    assert JOB_ID.fullmatch(job), job
    return process, job


def wait_running_on_cpu(daemon, job, seconds=30):
    """Until the job runs and its workers burn CPU (they are building); returns their pids."""
    with daemon.client() as client:
        def busy():
            if client.status(job)["state"] != "running":
                return None
            pids = daemon.worker_pids()
            before = {pid: cpu_seconds(pid) for pid in pids}
            time.sleep(0.1)
            after = {pid: cpu_seconds(pid) for pid in pids}
            if any(before[p] is not None and after[p] is not None and after[p] > before[p] for p in pids):
                return pids
            return None
        return wait_until(busy, seconds, interval=0.02)


# ---- 1. good jobs ------------------------------------------------------------------------------

def test_four_files_give_the_single_tree_root(daemon, fixtures_dir, vectors):
    result = daemon.submit("build", *fixture_paths(fixtures_dir, FOUR), "--wait")
    lines = result.stdout.splitlines()
    assert JOB_ID.fullmatch(lines[0]), result.stdout
    assert root_line(result) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]
    record = daemon.status(lines[0])
    assert record["state"] == "done" and record["error"] is None
    assert record["progress"]["batches_done"] == record["progress"]["batches"] == 4
    assert os.path.isfile(os.path.join(daemon.result_dir(lines[0]), "manifest.json"))


def test_batch_size_on_one_file(daemon, fixtures_dir, vectors):
    result = daemon.submit("build", fixtures_dir / "entry_64.csv", "--batch-size", "16", "--wait")
    assert root_line(result) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]
    assert daemon.status(job_id_of(result.stdout))["progress"]["batches"] == 4


def test_a_thousand_entries_in_batches_of_128_on_three_executors(daemon, tmp_path):
    entries = write_csv(tmp_path / "thousand.csv", 1000, n_currencies=2, seed=1)
    result = daemon.submit("build", tmp_path / "thousand.csv", "--batch-size", "128",
                           "--executors", "3", "--wait")
    assert root_line(result) == single_tree_root(entries)
    record = daemon.status(job_id_of(result.stdout))
    assert record["progress"]["batches"] == 8 and record["progress"]["entries"] == 1000


# ---- 2. the result does not depend on the executors --------------------------------------------

def test_same_result_whatever_the_number_of_executors(daemon, tmp_path):
    entries = write_csv(tmp_path / "users.csv", 300, n_currencies=3, seed=2)
    roots, files = {}, {}
    for executors in (1, 2, 4, 12):   # 12 > the 10 batches
        result = daemon.submit("build", tmp_path / "users.csv", "--batch-size", "32",
                               "--executors", executors, "--wait")
        roots[executors] = root_line(result)
        job = job_id_of(result.stdout)
        files[executors] = {name: open(os.path.join(daemon.result_dir(job), name), "rb").read()
                            for name in ("nodes.bin", "upper.bin", "usernames.bin", "balances.bin")}
    assert all(root == single_tree_root(entries) for root in roots.values()), roots
    assert all(f == files[1] for f in files.values())


def test_executors_more_than_batches(daemon, fixtures_dir, vectors):
    result = daemon.submit("build", *fixture_paths(fixtures_dir, FOUR), "--executors", "6", "--wait")
    assert root_line(result) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]


# ---- 3. a bad CSV fails the job, not the daemon ------------------------------------------------

def test_bad_csv_fails_the_job_and_the_next_job_succeeds(daemon, tmp_path, fixtures_dir, vectors):
    bad = tmp_path / "bad.csv"
    bad.write_text("username,balance_ETH_ETH\nalice,5\nbob,-7\ncarol,1\n")
    result = daemon.submit("build", bad, "--wait")
    assert result.returncode == 1, result
    job = job_id_of(result.stdout)
    line = one_line(result.stderr, f"summa-submit: job {job} failed: ")
    assert f"{bad}:3:" in line and "negative" in line, line
    record = daemon.status(job)
    assert record["state"] == "failed"
    assert f"{bad}:3:" in record["error"] and record["error"] in line
    assert not os.path.exists(daemon.result_dir(job))

    result = daemon.submit("build", *fixture_paths(fixtures_dir, FOUR), "--wait")
    assert root_line(result) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]


def test_relative_csv_paths_are_made_absolute_by_the_client(daemon, tmp_path, vectors, fixtures_dir):
    (tmp_path / "in").mkdir()
    for name in FOUR:
        (tmp_path / "in" / name).write_bytes((fixtures_dir / name).read_bytes())
    result = subprocess.run([os.path.join(BIN, "summa-submit"), "--daemon", daemon.control, "build",
                             *[os.path.join("in", name) for name in FOUR], "--wait"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert root_line(result) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]
    assert daemon.status(job_id_of(result.stdout))["spec"]["csvs"][0] == str(tmp_path / "in" / FOUR[0])


def test_two_jobs_side_by_side(tmp_path):
    daemon = DaemonProcess(tmp_path, config={"max_parallel_jobs": 2})
    one = write_csv(tmp_path / "one.csv", 200, n_currencies=2, seed=21)
    two = write_csv(tmp_path / "two.csv", 77, n_currencies=1, seed=22)
    first, job1 = build_in_background(daemon, tmp_path / "one.csv", "--batch-size", "16")
    second, job2 = build_in_background(daemon, tmp_path / "two.csv", "--batch-size", "8",
                                       "--layout", "sum-first")
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert json.loads(out1.splitlines()[-1]) == single_tree_root(one)
    assert json.loads(out2.splitlines()[-1]) == single_tree_root(two, layout="sum-first")
    assert job1 != job2


def test_missing_csv_fails_the_job(daemon, tmp_path):
    result = daemon.submit("build", tmp_path / "missing.csv", "--wait")
    assert result.returncode == 1
    line = one_line(result.stderr, f"summa-submit: job {job_id_of(result.stdout)} failed: ")
    assert str(tmp_path / "missing.csv") in line and "cannot read" in line
    assert "internal error" not in line


@pytest.mark.parametrize("where", ["in one mini-tree", "across mini-trees"])
def test_a_total_beyond_n_bytes_fails_the_job_naming_the_currency(daemon, tmp_path, where):
    files = [tmp_path / "a.csv", tmp_path / "b.csv"]
    if where == "in one mini-tree":
        files[0].write_text("username,balance_ETH_ETH,balance_USDT_ETH\nalice,1,200\nbob,1,100\n")
        files[1].write_text("username,balance_ETH_ETH,balance_USDT_ETH\ncarol,1,1\n")
    else:   # every mini-tree fits, their sum does not
        files[0].write_text("username,balance_ETH_ETH,balance_USDT_ETH\nalice,1,200\n")
        files[1].write_text("username,balance_ETH_ETH,balance_USDT_ETH\nbob,1,100\n")
    result = daemon.submit("build", *files, "--n-bytes", "1", "--wait")
    assert result.returncode == 1
    job = job_id_of(result.stdout)
    line = one_line(result.stderr, f"summa-submit: job {job} failed: ")
    assert "balance_USDT_ETH" in line and "internal error" not in line, line
    assert daemon.status(job)["state"] == "failed"
    assert not os.path.exists(daemon.result_dir(job))


def test_workers_that_cannot_start_fail_the_job(tmp_path, fixtures_dir, vectors):
    # the worker reads SUMMA_WORKER_THREADS from its (the daemon's) environment and refuses it
    daemon = DaemonProcess(tmp_path, env={"SUMMA_WORKER_THREADS": "many"})
    result = daemon.submit("build", *fixture_paths(fixtures_dir, FOUR), "--wait")
    assert result.returncode == 1
    line = one_line(result.stderr, f"summa-submit: job {job_id_of(result.stdout)} failed: ")
    assert "could not start workers" in line, line
    wait_until(lambda: not daemon.workers_left(), seconds=10)
    assert daemon.submit("list").returncode == 0


# ---- 4. a worker killed mid-job ----------------------------------------------------------------

@pytest.mark.timeout(90)
def test_worker_killed_mid_job_is_replaced_and_the_root_is_right(tmp_path):
    entries = write_csv(tmp_path / "big.csv", 1 << 15, n_currencies=4, seed=4)
    expected = single_tree_root(entries)
    daemon = DaemonProcess(tmp_path, env=SLOW_KERNEL)
    process, job = build_in_background(daemon, tmp_path / "big.csv", "--batch-size", "2048",
                                       "--executors", "2")
    with daemon.client() as client:
        wait_until(lambda: (lambda r: r["state"] == "running" and r["progress"]["batches_done"] >= 1)(
            client.status(job)), seconds=60)
        first = daemon.worker_pids()
        assert len(first) == 2, first
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        seen = set(first)

        def finished():
            seen.update(daemon.worker_pids())
            return client.status(job)["state"] in FINISHED
        wait_until(finished, seconds=60, interval=0.02)
        record = client.status(job)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert record["state"] == "done", record
    assert json.loads(stdout.splitlines()[-1]) == expected == record["root"]
    assert seen - first, "no replacement worker was started"
    assert f"worker pid {victim} stopped answering" in daemon.log()


@pytest.mark.timeout(60)
def test_a_build_longer_than_the_heartbeat_timeout_is_not_retried(tmp_path):
    # one 2^14 x 4 batch on the portable kernel takes seconds; the heartbeat gives up after 1 s
    entries = write_csv(tmp_path / "long.csv", 1 << 14, n_currencies=4, seed=8)
    daemon = DaemonProcess(tmp_path, env=SLOW_KERNEL,
                           config={"heartbeat_interval": 0.25, "heartbeat_liveness": 4})
    result = daemon.submit("build", tmp_path / "long.csv", "--executors", "1", "--wait")
    assert root_line(result) == single_tree_root(entries)
    assert "attempt" not in daemon.log() and "stopped answering" not in daemon.log()


# ---- 5. cancellation -------------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_cancel_stops_the_job_and_its_workers(tmp_path):
    write_csv(tmp_path / "big.csv", 1 << 16, n_currencies=4, seed=5)
    daemon = DaemonProcess(tmp_path, env=SLOW_KERNEL)
    process, job = build_in_background(daemon, tmp_path / "big.csv", "--batch-size", str(1 << 14),
                                       "--executors", "2")
    pids = wait_running_on_cpu(daemon, job)
    began = time.monotonic()
    result = daemon.submit("cancel", job)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(f"{job}: "), result.stdout

    def idle():   # every worker gone, or not one more tick of CPU over 0.3 s
        before = {pid: cpu_seconds(pid) for pid in pids}
        if all(v is None for v in before.values()):
            return True
        time.sleep(0.3)
        after = {pid: cpu_seconds(pid) for pid in pids}
        return all(after[p] is None or after[p] == before[p] for p in pids)
    wait_until(idle, seconds=10, interval=0.01)
    print(f"\ncancel: workers idle or gone {time.monotonic() - began:.3f} s after "
          f"`summa-submit cancel` was started (includes its start-up)")

    record = daemon.wait_state(job, seconds=20)
    assert record["state"] == "cancelled", record
    assert record["error"] is None and record["root"] is None
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert one_line(stderr, f"summa-submit: job {job} cancelled")
    status = daemon.submit("status", job)
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "cancelled"
    wait_until(lambda: not daemon.worker_pids(), seconds=10)
    assert not os.path.exists(daemon.result_dir(job))
    # cancelling a finished job changes nothing
    assert daemon.submit("cancel", job).stdout.strip() == f"{job}: cancelled"


def test_cancel_of_a_queued_job(tmp_path, fixtures_dir, vectors):
    write_csv(tmp_path / "big.csv", 1 << 15, n_currencies=4, seed=6)
    daemon = DaemonProcess(tmp_path, env=SLOW_KERNEL)   # max_parallel_jobs = 1
    first, job1 = build_in_background(daemon, tmp_path / "big.csv", "--batch-size", str(1 << 14))
    second = daemon.submit("build", *fixture_paths(fixtures_dir, FOUR))
    assert second.returncode == 0 and len(second.stdout.splitlines()) == 1, second   # no --wait
    job2 = job_id_of(second.stdout)
    assert daemon.status(job2)["state"] == "queued"
    assert daemon.submit("cancel", job2).stdout.strip() == f"{job2}: cancelled"
    assert daemon.submit("cancel", job1).returncode == 0
    first.communicate(timeout=30)
    assert first.returncode == 1
    assert daemon.wait_state(job2)["state"] == "cancelled"
    result = daemon.submit("build", *fixture_paths(fixtures_dir, FOUR), "--wait")
    assert root_line(result) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]


@pytest.mark.timeout(60)
def test_ctrl_c_stops_following_and_the_job_goes_on(tmp_path):
    entries = write_csv(tmp_path / "big.csv", 1 << 14, n_currencies=4, seed=11)
    daemon = DaemonProcess(tmp_path, env=SLOW_KERNEL)
    process, job = build_in_background(daemon, tmp_path / "big.csv", "--executors", "1")
    daemon.wait_state(job, ("running",))
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert job in one_line(stderr, "summa-submit: stopped following job")
    record = daemon.wait_state(job)
    assert record["state"] == "done" and record["root"] == single_tree_root(entries)


# ---- 6, 7. restarts ----------------------------------------------------------------------------

def test_restart_keeps_finished_results_and_serves_their_proofs(tmp_path, fixtures_dir, vectors):
    first = DaemonProcess(tmp_path)
    result = first.submit("build", *fixture_paths(fixtures_dir, FOUR), "--wait")
    root = root_line(result)
    job = job_id_of(result.stdout)
    assert first.stop() == 0
    assert "stopped" in first.rest_of_stdout

    second = DaemonProcess(tmp_path)        # the same data_dir
    listing = second.submit("list")
    assert listing.returncode == 0, listing.stderr
    line = next(l for l in listing.stdout.splitlines() if l.startswith(job))
    assert line.split()[1] == "done", line
    assert second.status(job)["root"] == root
    proof = second.submit("proof", job, "--username", "MBlfbBGI")
    assert proof.returncode == 0, proof.stderr
    assert json.loads(proof.stdout)["entry"]["username"] == "MBlfbBGI"
    verify = subprocess.run([os.path.join(BIN, "summa-verify"), "--root", root["hash"], "-"],
                            input=proof.stdout, capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stderr
    assert "valid" in verify.stdout
    wrong_root = "0x" + "0" * 63 + "1"
    verify = subprocess.run([os.path.join(BIN, "summa-verify"), "--root", wrong_root, "-"],
                            input=proof.stdout, capture_output=True, text=True, timeout=30)
    assert verify.returncode == 1


@pytest.mark.timeout(90)
def test_without_resume_a_job_running_when_the_daemon_is_killed_is_failed_interrupted(tmp_path):
    write_csv(tmp_path / "big.csv", 1 << 16, n_currencies=4, seed=7)
    first = DaemonProcess(tmp_path, {"resume": False}, env=SLOW_KERNEL)
    process, job = build_in_background(first, tmp_path / "big.csv", "--batch-size", str(1 << 14))
    pids = wait_running_on_cpu(first, job)
    assert pids
    first.kill()
    # PR_SET_PDEATHSIG: the workers die with the daemon, no one has to stop them
    wait_until(lambda: not first.workers_left(), seconds=10, interval=0.02)
    process.kill()
    process.communicate(timeout=30)
    partial = os.path.join(first.data_dir, "results", f".{job}.partial-12345")
    os.makedirs(partial)       # as a result write cut short would leave it
    open(os.path.join(partial, "top.bin"), "wb").close()

    second = DaemonProcess(tmp_path, {"resume": False})
    record = second.status(job)
    assert record["state"] == "failed", record
    assert "interrupted" in record["error"]
    assert record["root"] is None
    assert not os.path.exists(second.result_dir(job))
    listing = second.submit("list")
    assert "interrupted" in next(l for l in listing.stdout.splitlines() if l.startswith(job))
    assert not any(name.startswith(".") for name in os.listdir(os.path.join(second.data_dir, "results")))


@pytest.mark.timeout(90)
def test_sigterm_mid_job_stops_the_daemon_and_its_workers_and_the_job_resumes(tmp_path):
    entries = write_csv(tmp_path / "big.csv", 1 << 16, n_currencies=4, seed=9)
    first = DaemonProcess(tmp_path, env=SLOW_KERNEL)
    process, job = build_in_background(first, tmp_path / "big.csv", "--batch-size", str(1 << 14),
                                       timeout=1)
    wait_running_on_cpu(first, job)
    began = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(20) == 0
    print(f"\nSIGTERM mid-job: the daemon exited after {time.monotonic() - began:.3f} s")
    assert first.stop() == 0 and "stopped" in first.rest_of_stdout
    assert not first.workers_left()    # stopped by the daemon itself, not by PDEATHSIG
    process.communicate(timeout=30)
    assert process.returncode in (1, 2)    # saw it cancelled, or found no daemon any more

    second = DaemonProcess(tmp_path)      # resume = true: the job goes on where it stopped
    record = second.wait_state(job, seconds=120)
    assert record["state"] == "done" and record["resumed"] == 1, record
    assert record["root"] == single_tree_root(entries)


def test_shutdown_command_stops_the_daemon(daemon):
    result = daemon.submit("shutdown")
    assert result.returncode == 0 and "stopping" in result.stdout
    assert daemon.process.wait(20) == 0


# ---- 8. bad client messages --------------------------------------------------------------------

def submit_body(tmp_csv, **changes):
    body = SubmitRequest([str(tmp_csv)], 1, "mock", "interleaved", 14).body()
    body.update(changes)
    return body


def bad_messages(csv_path):
    pack = msgpack.packb
    return {
        "one garbage frame": ([b"garbage"], Code.MALFORMED),
        "four frames": ([wire.HEADER, wire.LIST, pack({}), b"x"], Code.MALFORMED),
        "wrong header": ([b"SUMMA00", wire.LIST, pack({})], Code.BAD_VERSION),
        "unknown command": ([wire.HEADER, b"\x7f", pack({})], Code.UNKNOWN_COMMAND),
        "a worker's command": ([wire.HEADER, wire.BUILD, pack({})], Code.UNKNOWN_COMMAND),
        "garbage body": ([wire.HEADER, wire.STATUS, b"\xc1\xff\x00garbage"], Code.MALFORMED),
        "body not a map": ([wire.HEADER, wire.LIST, pack([1, 2])], Code.MALFORMED),
        "relative csv path": ([wire.HEADER, wire.SUBMIT, pack(submit_body("data/x.csv"))], Code.BAD_FIELD),
        "spawner nope": ([wire.HEADER, wire.SUBMIT, pack(submit_body(csv_path, spawner="nope"))],
                         Code.BAD_FIELD),
        "executors 0": ([wire.HEADER, wire.SUBMIT, pack(submit_body(csv_path, executors=0))], Code.BAD_FIELD),
        "batch_size 3": ([wire.HEADER, wire.SUBMIT, pack(submit_body(csv_path, batch_size=3))],
                         Code.BAD_FIELD),
        "csvs missing": ([wire.HEADER, wire.SUBMIT, pack({"executors": 1})], Code.BAD_FIELD),
        "layout sorted": ([wire.HEADER, wire.SUBMIT, pack(submit_body(csv_path, layout="sorted"))],
                          Code.BAD_FIELD),
        "status of an unknown job": ([wire.HEADER, wire.STATUS, pack({"job": "20200101-000000-abcdef"})],
                                     Code.NO_SUCH_JOB),
        "status with a bad job id": ([wire.HEADER, wire.STATUS, pack({"job": "a b"})], Code.BAD_FIELD),
        "cancel of an unknown job": ([wire.HEADER, wire.CANCEL, pack({"job": "nope"})], Code.NO_SUCH_JOB),
        "proof without a username": ([wire.HEADER, wire.PROOF, pack({"job": "nope"})], Code.NO_SUCH_JOB),
        "delete of an unknown job": ([wire.HEADER, wire.DELETE, pack({"job": "nope"})], Code.NO_SUCH_JOB),
        "delete without a job": ([wire.HEADER, wire.DELETE, pack({})], Code.BAD_FIELD),
        "list of 0 jobs": ([wire.HEADER, wire.LIST, pack({"limit": 0})], Code.BAD_FIELD),
        "list since a word": ([wire.HEADER, wire.LIST, pack({"since": "today"})], Code.BAD_FIELD),
    }


def test_bad_client_messages_get_errors_and_the_daemon_goes_on(daemon, sockets, fixtures_dir):
    csv_path = fixtures_dir / "entry_16.csv"
    for name, (message, code) in bad_messages(str(csv_path)).items():
        dealer = sockets(zmq.DEALER, daemon.control)
        dealer.send_multipart(message)
        command, body = receive(dealer, 10)
        assert command == wire.ERROR, (name, body)
        assert body["code"] == code, (name, body)
        assert body["message"] and "\n" not in body["message"], (name, body)
    listing = daemon.submit("list")
    assert listing.returncode == 0 and listing.stdout == "", listing
    assert daemon.process.poll() is None


def test_daemon_errors_name_the_job(daemon, sockets):
    dealer = sockets(zmq.DEALER, daemon.control)
    dealer.send_multipart(wire.frames(wire.STATUS, {"job": "nope"}))
    _, body = receive(dealer, 10)
    assert body["job"] == "nope" and body["code"] == Code.NO_SUCH_JOB


# ---- 9. summa-submit exit codes -----------------------------------------------------------------

def test_submit_without_a_daemon_exits_2():
    result = subprocess.run([os.path.join(BIN, "summa-submit"), "--daemon",
                             f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5", "list"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "no answer" in one_line(result.stderr, "summa-submit: error: ")


def test_submit_exit_codes(daemon, tmp_path, fixtures_dir):
    for command in (("status", "20200101-000000-abcdef"),
                    ("proof", "20200101-000000-abcdef", "--username", "x"),
                    ("cancel", "20200101-000000-abcdef")):
        result = daemon.submit(*command)
        assert result.returncode == 1, (command, result)
        assert "no job" in one_line(result.stderr, "summa-submit: error: ")

    bad = tmp_path / "bad.csv"
    bad.write_text("username,balance_ETH_ETH\nalice,x\n")
    failed = job_id_of(daemon.submit("build", bad, "--wait").stdout)
    result = daemon.submit("proof", failed, "--username", "alice")
    assert result.returncode == 1
    assert "no tree" in one_line(result.stderr, "summa-submit: error: ")

    done = daemon.submit("build", fixtures_dir / "entry_16.csv", "--wait")
    job = job_id_of(done.stdout)
    result = daemon.submit("proof", job, "--username", "nobody-here")
    assert result.returncode == 1
    assert "nobody-here" in one_line(result.stderr, "summa-submit: error: ")
    assert daemon.submit("proof", job, "--username", "MBlfbBGI").returncode == 0

    usage = daemon.submit("build", fixtures_dir / "entry_16.csv", "--batch-size", "3")
    assert usage.returncode == 2
    one_line(usage.stderr, "summa-submit")


# ---- 10. executors that never answer -----------------------------------------------------------

def test_workers_that_never_answer_fail_the_job(tmp_path, fixtures_dir):
    config = DaemonConfig(control="tcp://127.0.0.1:*", cancel="tcp://127.0.0.1:*", insecure=True,
                          data_dir=str(tmp_path / "data"), heartbeat_interval=0.1,
                          heartbeat_liveness=2, max_retries=1, log_level="WARNING",
                          input_dirs=[str(fixtures_dir)])
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    daemon = Daemon(config, spawner_options={"endpoints": [nowhere]})
    serving = threading.Thread(target=daemon.serve, name="test-daemon", daemon=True)
    serving.start()
    try:
        with DaemonClient(daemon.control_endpoint, timeout=10) as client:
            job = client.submit(SubmitRequest([str(fixtures_dir / "entry_16.csv")], 1, "mock",
                                              "interleaved", 14))
            record = wait_until(lambda: (lambda r: r if r["state"] in FINISHED else None)(
                client.status(job)), seconds=30, interval=0.02)
            assert record["state"] == "failed", record
            assert "work unit 0" in record["error"] and "stopped answering" in record["error"], record
            assert nowhere in record["error"]
            assert client.list()[0]["job"] == job
    finally:
        daemon.stop()
        serving.join(30)
    assert not serving.is_alive()


# ---- 11. configuration -------------------------------------------------------------------------

def test_unknown_config_key_exits_2_naming_it(tmp_path):
    config = daemon_helpers.write_toml(tmp_path / "bad.toml", {"data_dir": str(tmp_path / "d"),
                                                                "heartbeat_intervall": 1.0})
    result = subprocess.run([os.path.join(BIN, "summa-daemon"), "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "heartbeat_intervall" in one_line(result.stderr, "summa-daemon: error: ")


def test_known_config_keys_of_every_type_are_accepted(tmp_path):
    daemon = DaemonProcess(tmp_path, config={"max_parallel_jobs": 2, "heartbeat_interval": 1,
                                             "max_retries": 0, "log_level": "WARNING"})
    assert daemon.submit("list").returncode == 0


def test_a_config_value_of_the_wrong_type_exits_2(tmp_path):
    config = daemon_helpers.write_toml(tmp_path / "bad.toml", {"data_dir": str(tmp_path / "d"),
                                                                "max_retries": "three"})
    result = subprocess.run([os.path.join(BIN, "summa-daemon"), "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "max_retries" in one_line(result.stderr, "summa-daemon: error: ")


def test_control_flag_overrides_the_config_file(tmp_path):
    in_file, on_flag = free_port(), free_port()
    daemon = DaemonProcess(tmp_path, config={"control": f"tcp://127.0.0.1:{in_file}"},
                           args=("--control", f"tcp://127.0.0.1:{on_flag}"))
    assert daemon.control == f"tcp://127.0.0.1:{on_flag}"
    assert daemon.submit("list").returncode == 0
    assert daemon.announced_data_dir == daemon.data_dir


def test_data_dir_flag_overrides_the_config_file(tmp_path, fixtures_dir):
    daemon = DaemonProcess(tmp_path, args=("--data-dir", str(tmp_path / "elsewhere")))
    assert daemon.announced_data_dir == str(tmp_path / "elsewhere")
    job = job_id_of(daemon.submit("build", fixtures_dir / "entry_16.csv", "--wait").stdout)
    assert os.path.isdir(tmp_path / "elsewhere" / "results" / job)
    assert not os.path.exists(daemon.data_dir)      # the config file's data_dir is not used


def test_control_endpoint_in_use_exits_2(daemon, tmp_path):
    result = subprocess.run([os.path.join(BIN, "summa-daemon"), "--insecure", "--control", daemon.control,
                             "--data-dir", str(tmp_path / "other")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "bind" in one_line(result.stderr, "summa-daemon: error: ")


def test_data_dir_that_is_a_file_exits_2(tmp_path):
    (tmp_path / "file").write_text("")
    result = subprocess.run([os.path.join(BIN, "summa-daemon"), "--insecure", "--control", "tcp://127.0.0.1:*",
                             "--data-dir", str(tmp_path / "file")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert str(tmp_path / "file") in one_line(result.stderr, "summa-daemon: error: ")


@pytest.mark.parametrize("key,value", [
    ("heartbeat_liveness", 0),
    ("log_level", "LOUD"),
    ("default_spawner", "nope"),
    ("default_executors", 5000),
])
def test_a_config_value_out_of_range_exits_2_naming_it(tmp_path, key, value):
    config = daemon_helpers.write_toml(tmp_path / "bad.toml", {
        "control": "tcp://127.0.0.1:*", "data_dir": str(tmp_path / "d"), key: value})
    process = subprocess.Popen([os.path.join(BIN, "summa-daemon"), "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = read_line(process.stdout, 30)
        if first:       # it started and serves: the value was accepted
            pytest.fail(f"summa-daemon accepted {key} = {value!r}: {first!r}")
        assert process.wait(30) == 2
        assert key in one_line(process.stderr.read(), "summa-daemon: error: ")
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


@pytest.mark.timeout(60)
def test_a_second_daemon_on_the_same_data_dir_is_refused(tmp_path):
    write_csv(tmp_path / "big.csv", 1 << 15, n_currencies=4, seed=10)
    first = DaemonProcess(tmp_path, env=SLOW_KERNEL)
    job = job_id_of(first.submit("build", tmp_path / "big.csv", "--batch-size", str(1 << 14)).stdout)
    first.wait_state(job, ("running",), seconds=30)
    try:
        DaemonProcess(tmp_path)     # the same data_dir
        started = True
    except RuntimeError:            # it exited with an error instead of its first line
        started = False
    assert first.status(job)["state"] in ("running", "done")
    with open(os.path.join(first.data_dir, "jobs", f"{job}.json"), encoding="utf-8") as handle:
        assert json.load(handle)["state"] != "failed"
    assert not started


# ---- 12. summa-aggregate on its embedded daemon ------------------------------------------------

def test_aggregate_prints_the_root_and_leaves_no_worker(fixtures_dir, vectors):
    mark = new_mark()
    process = subprocess.Popen([os.path.join(BIN, "summa-aggregate"), "--workers", "2",
                                *fixture_paths(fixtures_dir, FOUR)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, MARK: mark})
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1]) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]
    wait_until(lambda: not marked_workers(mark), seconds=10, interval=0.05)
