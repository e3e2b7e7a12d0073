"""Finished jobs go: keep_results, keep_days, `summa-submit delete` (crash-safe), LIST in pages,
and a daemon whose memory holds only its unfinished jobs (README: The daemon, Retention).

The finished jobs come from a real daemon (real workers) once per module; each test works on
its own copy of that data directory. A "crash" mid-delete stops retention.delete_files()
between its steps, which leaves on disk exactly what a SIGKILL there would, and a fresh daemon
process then starts on it.
"""
import datetime
import gc
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import tracemalloc
from contextlib import contextmanager

import pytest
import zmq

from summa_aggregation import wire
from summa_aggregation.daemon import retention
from summa_aggregation.daemon.broker import Daemon
from summa_aggregation.daemon.client import DaemonClient, DaemonError
from summa_aggregation.daemon.config import DaemonConfig
from summa_aggregation.daemon.job import DONE, FAILED, Job
from summa_aggregation.daemon.jobs_table import Finished
from summa_aggregation.wire import Code, SubmitRequest

import daemon_helpers
from daemon_helpers import FINISHED, TEST_DATA, DaemonProcess, daemon_in_process, one_line
from worker_helpers import BIN, free_port, receive, wait_until

pytestmark = pytest.mark.timeout(120)
ENTRY_16 = os.path.join(TEST_DATA, "fixtures", "entry_16.csv")
USER = "MBlfbBGI"                      # in entry_16.csv
DAY = 86400


# ---- the finished jobs every test starts from ------------------------------------------------

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A data directory with 5 finished jobs, in this order: done, done, failed, done, done."""
    base = tmp_path_factory.mktemp("retention")
    (base / "bad.csv").write_text("username,balance_ETH_ETH\nalice,-1\n")
    jobs = []
    with daemon_in_process(base / "data") as (daemon, client):
        for csv in (ENTRY_16, ENTRY_16, str(base / "bad.csv"), ENTRY_16, ENTRY_16):
            job = client.submit(SubmitRequest([csv], 1, "mock", "interleaved", 14))
            record = wait_until(lambda: (lambda r: r if r["state"] in FINISHED else None)(
                client.status(job)), seconds=60, interval=0.02)
            assert record["state"] == (FAILED if "bad" in csv else DONE), record
            jobs.append(job)
    return base / "data", jobs


@pytest.fixture
def data(made, tmp_path):
    """(this test's copy of the data directory, the 5 job ids oldest first)."""
    source, jobs = made
    shutil.copytree(source, tmp_path / "data")
    return tmp_path / "data", jobs


def record_path(data_dir, job):
    return os.path.join(data_dir, "jobs", f"{job}.json")


def edit_record(data_dir, job, **changes):
    with open(record_path(data_dir, job), encoding="utf-8") as handle:
        record = json.load(handle)
    record.update(changes)
    with open(record_path(data_dir, job), "w", encoding="utf-8") as handle:
        json.dump(record, handle)


def trash_of(data_dir):
    return [name for name in os.listdir(os.path.join(data_dir, "results")) if retention.DELETING in name]


def gone(data_dir, job):
    """Neither its record, nor its result, nor a trash directory of it is left."""
    results = os.path.join(data_dir, "results")
    return (not os.path.lexists(record_path(data_dir, job)) and not os.path.lexists(os.path.join(results, job))
            and not any(name.startswith(f".{job}{retention.DELETING}") for name in os.listdir(results)))


def listed(daemon):
    """The job ids of `summa-submit list`, as printed (newest first)."""
    result = daemon.submit("list")
    assert result.returncode == 0, result.stderr
    return [line.split()[0] for line in result.stdout.splitlines()]


def assert_unknown(daemon, job):
    for command in (("status", job), ("proof", job, "--username", USER), ("delete", job)):
        result = daemon.submit(*command)
        assert result.returncode == 1, (command, result)
        assert f"no job {job}" in one_line(result.stderr, "summa-submit: error: "), command


def assert_whole(daemon, job):
    """Listed as done, and its result serves a proof."""
    assert daemon.status(job)["state"] == DONE
    proof = daemon.submit("proof", job, "--username", USER)
    assert proof.returncode == 0, proof.stderr
    assert json.loads(proof.stdout)["entry"]["username"] == USER


@contextmanager
def serving(daemon):
    """Serve an in-process Daemon (built by the test) and hand out a client of it."""
    thread = threading.Thread(target=daemon.serve, name="test-daemon")
    thread.start()
    try:
        with DaemonClient(daemon.control_endpoint, timeout=30) as client:
            yield client
    finally:
        daemon.stop()
        thread.join(60)
    assert not thread.is_alive()


def in_process(data_dir, spawner_options=None, **config):
    config.setdefault("input_dirs", [TEST_DATA])
    return Daemon(DaemonConfig(control="tcp://127.0.0.1:*", cancel="tcp://127.0.0.1:*",
                               data_dir=str(data_dir), insecure=True, log_level="WARNING", **config),
                  spawner_options=spawner_options)


def submit_cli(endpoint, *args):
    return subprocess.run([os.path.join(BIN, "summa-submit"), "--daemon", endpoint, *map(str, args)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


# ---- keep_results ---------------------------------------------------------------------------

def test_keep_results_keeps_the_newest_finished_jobs_at_start_and_when_a_job_finishes(data, tmp_path):
    data_dir, jobs = data
    daemon = DaemonProcess(tmp_path, {"keep_results": 3})
    wait_until(lambda: gone(data_dir, jobs[0]) and gone(data_dir, jobs[1]), seconds=20)
    assert listed(daemon) == jobs[:1:-1]          # the 3 newest, the failed one among them
    assert_unknown(daemon, jobs[0])
    assert_whole(daemon, jobs[4])

    result = daemon.submit("build", ENTRY_16, "--executors", "1", "--wait")
    assert result.returncode == 0, result.stderr
    new = result.stdout.splitlines()[0]
    wait_until(lambda: gone(data_dir, jobs[2]), seconds=20)      # the oldest finished of the 4
    assert listed(daemon) == [new, jobs[4], jobs[3]]
    assert_whole(daemon, new)
    assert "retention (keep_results 3, keep_days 0): deleted 1 finished job(s)" in daemon.log()


def test_retention_never_deletes_a_queued_or_running_job(data):
    """Workers that never answer keep a job running; keep_results = 1 deletes every finished
    job but the newest, at start, when a queued job is cancelled and when a running one ends."""
    data_dir, jobs = data
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    daemon = in_process(data_dir, {"endpoints": [nowhere]}, keep_results=1, heartbeat_interval=0.2,
                        heartbeat_liveness=1000, max_parallel_jobs=1)
    spec = SubmitRequest([ENTRY_16], 1, "mock", "interleaved", 14)
    with serving(daemon) as client:
        wait_until(lambda: all(gone(data_dir, job) for job in jobs[:4]), seconds=20)
        running = client.submit(spec)
        wait_until(lambda: client.status(running)["state"] == "running", seconds=30)
        queued = client.submit(spec)
        assert client.status(queued)["state"] == "queued"
        assert [r["job"] for r in client.list()] == [queued, running, jobs[4]]

        # the delete of a queued or running job is refused, in one line naming it
        for job, state in ((queued, "queued"), (running, "running")):
            with pytest.raises(DaemonError) as refused:
                client.delete(job)
            assert refused.value.code == Code.NOT_FINISHED
            assert refused.value.message == (f"job {job} is {state}: cancel it first "
                                             f"(summa-submit cancel {job}), then delete it")
            cli = submit_cli(daemon.control_endpoint, "delete", job)
            assert cli.returncode == 1 and "cancel it first" in one_line(cli.stderr, "summa-submit: error: ")

        assert client.cancel(queued)["state"] == "cancelled"     # finished: jobs[4] goes
        wait_until(lambda: gone(data_dir, jobs[4]), seconds=20)
        assert [r["job"] for r in client.list()] == [queued, running]
        assert client.status(running)["state"] == "running"

        later = client.submit(spec)                               # queued behind `running`
        assert client.cancel(running)["state"] == "cancelling"
        wait_until(lambda: gone(data_dir, queued), seconds=30)    # `running` ended: the newest finished
        assert client.status(running)["state"] == "cancelled"
        assert client.status(later)["state"] in ("queued", "loading", "running")
        assert [r["job"] for r in client.list()] == [later, running]
        assert os.path.exists(record_path(data_dir, later))


# ---- keep_days ------------------------------------------------------------------------------

def test_keep_days_deletes_jobs_finished_longer_ago(data, tmp_path):
    data_dir, jobs = data
    now = time.time()
    edit_record(data_dir, jobs[0], finished=now - 10 * DAY)
    edit_record(data_dir, jobs[2], finished=now - 2.5 * DAY)     # the failed one
    edit_record(data_dir, jobs[3], finished=now - 1.5 * DAY)
    daemon = DaemonProcess(tmp_path, {"keep_days": 2})
    wait_until(lambda: gone(data_dir, jobs[0]) and gone(data_dir, jobs[2]), seconds=20)
    assert listed(daemon) == [jobs[4], jobs[3], jobs[1]]
    for job in (jobs[1], jobs[3], jobs[4]):
        assert_whole(daemon, job)
    assert_unknown(daemon, jobs[0])


def test_keep_days_is_checked_again_while_the_daemon_runs(data):
    data_dir, jobs = data
    edit_record(data_dir, jobs[1], finished=time.time() - 0.5 * DAY + 6)   # 6 s short of 12 hours
    daemon = in_process(data_dir, keep_days=0.5)
    daemon.retention_seconds = 0.2            # instead of hourly
    with serving(daemon) as client:
        assert jobs[1] in [r["job"] for r in client.list()]
        wait_until(lambda: gone(data_dir, jobs[1]), seconds=30)
        assert [r["job"] for r in client.list()] == jobs[:1:-1] + jobs[:1]
        with pytest.raises(DaemonError) as unknown:
            client.status(jobs[1])
        assert unknown.value.code == Code.NO_SUCH_JOB


@pytest.mark.parametrize("key,value", [("keep_results", -1), ("keep_days", -1), ("keep_days", "a week"),
                                       ("keep_results", 1.5), ("keep_days", float("inf"))])
def test_a_bad_retention_setting_exits_2_naming_it(tmp_path, key, value):
    config = daemon_helpers.write_toml(tmp_path / "bad.toml", {
        "control": "tcp://127.0.0.1:*", "data_dir": str(tmp_path / "d"), "insecure": True})
    with open(config, "a", encoding="utf-8") as handle:
        handle.write(f"{key} = {'inf' if value == float('inf') else json.dumps(value)}\n")
    result = subprocess.run([os.path.join(BIN, "summa-daemon"), "--config", str(config)],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result
    assert key in one_line(result.stderr, "summa-daemon: error: ")


# ---- delete ---------------------------------------------------------------------------------

def test_delete_removes_the_record_and_the_result(data, tmp_path):
    data_dir, jobs = data
    daemon = DaemonProcess(tmp_path)
    assert_whole(daemon, jobs[0])
    result = daemon.submit("delete", jobs[0])
    assert result.returncode == 0 and result.stdout == f"{jobs[0]}: deleted\n", result
    assert not os.path.lexists(record_path(data_dir, jobs[0]))        # at once, before the answer
    assert not os.path.lexists(os.path.join(data_dir, "results", jobs[0]))
    wait_until(lambda: gone(data_dir, jobs[0]), seconds=10)           # the trash, soon after
    assert_unknown(daemon, jobs[0])
    assert daemon.submit("delete", jobs[2]).returncode == 0          # a failed job: no result
    assert listed(daemon) == [jobs[4], jobs[3], jobs[1]]
    for job in (jobs[1], jobs[3], jobs[4]):
        assert_whole(daemon, job)

    assert daemon.stop() == 0
    again = DaemonProcess(tmp_path)                                    # and after a restart
    assert listed(again) == [jobs[4], jobs[3], jobs[1]]
    assert_unknown(again, jobs[0])
    assert not trash_of(data_dir)


def test_a_deleted_job_is_no_longer_served_and_its_files_are_closed(data):
    data_dir, jobs = data
    daemon = in_process(data_dir)
    result = os.path.join(str(data_dir), "results", jobs[3])

    def mapped():      # this process's mappings of the job's files, renamed or unlinked or not
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as handle:
            return [line for line in handle if f"/results/{jobs[3]}/" in line
                    or f"/.{jobs[3]}{retention.DELETING}" in line]
    with serving(daemon) as client:
        assert client.proof(jobs[3], USER)["entry"]["username"] == USER
        assert jobs[3] in daemon.proof_server.results and mapped()
        assert client.delete(jobs[3]) == {"job": jobs[3], "deleted": True}
        with pytest.raises(DaemonError) as refused:
            client.proof(jobs[3], USER)
        assert refused.value.code == Code.NO_SUCH_JOB and refused.value.message == f"no job {jobs[3]}"
        wait_until(lambda: jobs[3] not in daemon.proof_server.results and not mapped(), seconds=10)
        wait_until(lambda: gone(data_dir, jobs[3]), seconds=10)
        assert not os.path.exists(result)
        assert client.proof(jobs[4], USER)["entry"]["username"] == USER


def test_bad_delete_requests_get_one_line_errors_and_the_daemon_goes_on(data, tmp_path, sockets):
    data_dir, jobs = data
    daemon = DaemonProcess(tmp_path)
    dealer = sockets(zmq.DEALER, daemon.control)
    for body, code, words in (({}, Code.BAD_FIELD, "field 'job'"), ({"job": 7}, Code.BAD_FIELD, "field 'job'"),
                              ({"job": "a/../b"}, Code.BAD_FIELD, "field 'job'"),
                              ({"job": "20200101-000000-abcdef"}, Code.NO_SUCH_JOB, "no job")):
        dealer.send_multipart(wire.frames(wire.DELETE, body))
        command, answer = receive(dealer, 10)
        assert command == wire.ERROR and answer["code"] == code, (body, answer)
        assert words in answer["message"] and "\n" not in answer["message"], answer
    assert daemon.process.poll() is None
    assert listed(daemon) == jobs[::-1]


# ---- a crash mid-delete ---------------------------------------------------------------------

class Crash(Exception):
    pass


def crash_at(point):
    def hook(step):
        if step == point:
            raise Crash(step)
    return hook


@pytest.mark.parametrize("point", ["renamed", "unlinked", "half removed"])
def test_a_crash_mid_delete_leaves_the_whole_job_or_none_of_it(data, tmp_path, point):
    data_dir, jobs = data
    victim = jobs[1]
    jobs_dir, results_dir = os.path.join(data_dir, "jobs"), os.path.join(data_dir, "results")
    with pytest.raises(Crash):
        retention.delete_files(jobs_dir, results_dir, [victim],
                               hook=crash_at("unlinked" if point == "half removed" else point))
    [trash] = trash_of(data_dir)
    assert not os.path.exists(os.path.join(results_dir, victim))
    assert os.path.exists(record_path(data_dir, victim)) == (point == "renamed")
    if point == "half removed":            # the trash's removal cut short
        for name in ("manifest.json", "nodes.bin"):
            os.unlink(os.path.join(results_dir, trash, name))

    daemon = DaemonProcess(tmp_path)
    assert victim not in listed(daemon)
    assert_unknown(daemon, victim)
    wait_until(lambda: gone(data_dir, victim), seconds=10)
    assert listed(daemon) == [job for job in jobs[::-1] if job != victim]
    for job in (jobs[0], jobs[3], jobs[4]):
        assert_whole(daemon, job)
    if point == "renamed":
        assert f"job {victim}: finished deleting it (interrupted by a crash)" in daemon.log()


def test_a_daemon_killed_right_after_a_delete_is_consistent_when_it_comes_back(data, tmp_path, sockets):
    data_dir, jobs = data
    first = DaemonProcess(tmp_path)
    dealer = sockets(zmq.DEALER, first.control)
    for job in jobs[:2]:
        dealer.send_multipart(wire.frames(wire.DELETE, {"job": job}))
    for _ in jobs[:2]:
        assert receive(dealer, 10)[0] == wire.REPLY
    os.kill(first.pid, signal.SIGKILL)      # the trash may or may not be removed yet
    first.kill()
    second = DaemonProcess(tmp_path)
    assert listed(second) == jobs[:1:-1]
    wait_until(lambda: gone(data_dir, jobs[0]) and gone(data_dir, jobs[1]), seconds=10)
    assert_whole(second, jobs[4])


# ---- LIST in pages --------------------------------------------------------------------------

def write_records(jobs_dir, count, start=1_700_000_000.0, step=10.0):
    """`count` finished job records, as the daemon writes them (Job.update), submitted `step`
    seconds apart, oldest first; two of them at the same second (the cursor's tie-break).
    Returns their ids, oldest first."""
    os.makedirs(jobs_dir, exist_ok=True)
    spec = SubmitRequest([ENTRY_16], 1, "mock", "interleaved", 14)
    ids = []
    for i in range(count):
        job = Job(f"job-{i:04d}", spec)
        job.record["submitted"] = start + step * (i if i != 4 else 5)     # job-0004 and job-0005 tie
        job.update(jobs_dir, state=DONE if i % 3 else FAILED, error=None if i % 3 else f"failure {i}")
        ids.append(job.id)
    return ids


def page_through(daemon, *args):
    """Every page of `summa-submit list ARGS`, following the cursor: (ids, pages)."""
    ids, pages, more = [], 0, []
    while True:
        result = daemon.submit("list", *args, *more)
        assert result.returncode == 0, result.stderr
        ids += [line.split()[0] for line in result.stdout.splitlines()]
        pages += 1
        if not result.stderr:
            return ids, pages
        hint = one_line(result.stderr, "summa-submit: more jobs: summa-submit list ")
        more = ["--after", hint.rsplit("--after ", 1)[1]]


def test_list_pages_newest_first_with_limit_since_and_a_cursor(tmp_path):
    ids = write_records(str(tmp_path / "data" / "jobs"), 250)
    newest_first = ids[::-1]                  # job-0005 before job-0004: the tie goes by id
    daemon = DaemonProcess(tmp_path)

    default = daemon.submit("list")
    assert default.stdout.splitlines()[:2] == ["job-0249  failed     0/?  failure 249",
                                               "job-0248  done       0/?"]
    assert [line.split()[0] for line in default.stdout.splitlines()] == newest_first[:100]
    assert one_line(default.stderr, "summa-submit: more jobs: ") == (
        f"summa-submit: more jobs: summa-submit list --after {1_700_000_000.0 + 1500.0!r}/job-0150")
    assert page_through(daemon, "--limit", "60") == (newest_first, 5)
    # pages of 49: the fifth ends at job-0005, the sixth begins at job-0004, submitted with it
    assert page_through(daemon, "--limit", "49") == (newest_first, 6)

    since = 1_700_000_000 + 10 * 200
    expected = [job for job in newest_first if int(job[4:]) >= 200]
    assert page_through(daemon, "--since", since) == (expected, 1)
    iso = datetime.datetime.fromtimestamp(since, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    assert page_through(daemon, "--since", iso, "--limit", "20") == (expected, 3)
    assert page_through(daemon, "--since", since + 0.5)[0] == expected[:-1]

    with daemon.client() as client:
        assert [r["job"] for r in client.list()] == newest_first
        assert [r["job"] for r in client.list(since=since)] == expected
        first, cursor = client.list_page(limit=10)
        assert [r["job"] for r in first] == newest_first[:10]
        assert first[0] == json.load(open(tmp_path / "data" / "jobs" / "job-0249.json"))
        # the cursor is a place, not a job: deleting the page's last job and the next one's
        # first changes nothing for the rest
        client.delete(newest_first[9])
        client.delete(newest_first[10])
        second, _ = client.list_page(limit=10, after=cursor)
        assert [r["job"] for r in second] == newest_first[11:21]
        last, cursor = client.list_page(limit=1000, after=cursor)
        assert [r["job"] for r in last] == newest_first[11:] and cursor is None


def test_bad_list_requests_get_one_line_errors_and_the_daemon_goes_on(tmp_path, sockets):
    write_records(str(tmp_path / "data" / "jobs"), 3)
    daemon = DaemonProcess(tmp_path)
    dealer = sockets(zmq.DEALER, daemon.control)
    for body, name in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "10"}, "limit"),
                       ({"limit": True}, "limit"), ({"since": "yesterday"}, "since"),
                       ({"since": float("nan")}, "since"), ({"after": "job-0001"}, "after"),
                       ({"after": "1.0/a b"}, "after"), ({"after": 12}, "after"),
                       ({"after": "inf/job-0001"}, "after")):
        dealer.send_multipart(wire.frames(wire.LIST, body))
        command, answer = receive(dealer, 10)
        assert command == wire.ERROR and answer["code"] == Code.BAD_FIELD, (body, answer)
        assert answer["message"].startswith(f"field '{name}'") and "\n" not in answer["message"], answer
    dealer.send_multipart(wire.frames(wire.LIST, {"limit": None, "since": None, "after": None}))
    command, answer = receive(dealer, 10)
    assert command == wire.REPLY and len(answer["jobs"]) == 3 and answer["next"] is None
    for args, words in ((("--since", "yesterday"), "--since"), (("--limit", "0"), "--limit"),
                        (("--limit", "5000"), "--limit")):
        result = daemon.submit("list", *args)
        assert result.returncode == 2 and words in one_line(result.stderr, "summa-submit list: error: ")
    assert daemon.process.poll() is None and len(listed(daemon)) == 3


# ---- memory ---------------------------------------------------------------------------------

def test_finished_jobs_are_an_index_entry_each_and_their_records_are_read_from_disk(tmp_path):
    """200 finished jobs whose records take 12 MB: the daemon holds an index entry of each
    (no Job, no record), and STATUS reads the record from disk when it is asked."""
    jobs_dir = str(tmp_path / "data" / "jobs")
    os.makedirs(jobs_dir)
    csvs = [os.path.join(TEST_DATA, "fixtures", "x" * 150 + f"-{i}.csv") for i in range(400)]
    spec = SubmitRequest(csvs, 1, "mock", "interleaved", 14)
    for i in range(200):
        Job(f"job-{i:04d}", spec).update(jobs_dir, state=DONE)
    on_disk = sum(os.path.getsize(os.path.join(jobs_dir, name)) for name in os.listdir(jobs_dir))
    assert on_disk > 12e6

    def held_by_a_new_daemon(data_dir):
        """Python heap a daemon holds once started (its records read), without serving."""
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            daemon = in_process(data_dir)
            gc.collect()
            return daemon, tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    empty, _ = held_by_a_new_daemon(tmp_path / "empty")   # imports and first-time caches
    with serving(empty):
        pass
    empty, baseline = held_by_a_new_daemon(tmp_path / "empty")
    with serving(empty):
        pass
    daemon, held = held_by_a_new_daemon(tmp_path / "data")
    per_job = (held - baseline) / 200
    print(f"\n200 finished jobs, {on_disk / 1e6:.1f} MB of records: a daemon holds {held / 1e3:.0f} kB "
          f"after its start, {baseline / 1e3:.0f} kB without them: {per_job:.0f} bytes a job")
    assert per_job < 600           # against some 80 kB of record each
    table = daemon.jobs
    assert table.unfinished() == [] and len(table.finished_index) == 200
    assert all(type(entry) is Finished for entry in table.finished_index.values())
    assert not [o for o in gc.get_objects() if isinstance(o, Job) and o.id in table]

    with serving(daemon) as client:
        assert client.status("job-0007") == json.load(open(os.path.join(jobs_dir, "job-0007.json")))
        edit_record(tmp_path / "data", "job-0007", error="edited on disk")
        assert client.status("job-0007")["error"] == "edited on disk"       # read when asked
        page, cursor = client.list_page(limit=5)
        assert [r["job"] for r in page] == [f"job-{i:04d}" for i in range(199, 194, -1)]
        assert page[0]["spec"]["csvs"] == csvs and cursor is not None
        assert not [o for o in gc.get_objects() if isinstance(o, Job) and o.id in table]
