"""A real summa-daemon process, its summa-worker children, and CSVs to feed it, for tests.

Every DaemonProcess puts a unique marker in its environment. The MockSpawner's workers inherit
the daemon's environment, so every worker a daemon ever started can be found in /proc by that
marker, even after the daemon died and the worker was re-parented: that is how the tests check
that no worker outlives its daemon or its job.
"""
import json
import os
import random
import re
import subprocess
import threading
import uuid
from contextlib import contextmanager

from summa_aggregation.mst.limits import depth_for
from summa_aggregation.mst.tree import AggregationMerkleSumTree, MerkleSumTree
from summa_aggregation.daemon.broker import Daemon
from summa_aggregation.daemon.client import DaemonClient
from summa_aggregation.daemon.config import DaemonConfig
from summa_aggregation.wire import SubmitRequest

from worker_helpers import BIN, read_line, terminate, wait_until

MARK = "SUMMA_TEST_MARK"
WORKER_MODULE = "summa_aggregation.worker.cli"
FINISHED = ("done", "failed", "cancelled")
CURRENCIES = ["ETH_ETH", "USDT_ETH", "BTC_BTC", "DAI_ETH", "USDC_ETH", "SOL_SOL", "XRP_XRP", "ADA_ADA"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TEST_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")   # the fixtures' directory
_FIRST_LINE = re.compile(r"summa-daemon: control on (\S+), cancellations on (\S+), data in (.+)")

# every DaemonProcess made in the current test; conftest's autouse fixture stops them after it
STARTED = []


# ---- /proc ----------------------------------------------------------------------------------

def proc_stat(pid):
    """{state, ppid, cpu (utime + stime, clock ticks), start} of a process, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()   # the command name may hold spaces
    # fields[0] is field 3 (state); field N of proc(5) is fields[N - 3]
    return {"state": fields[0], "ppid": int(fields[1]),
            "cpu": int(fields[11]) + int(fields[12]), "start": int(fields[19])}


def alive(pid, start=None):
    """True while `pid` runs (a zombie counts as gone); `start` guards against pid reuse."""
    stat = proc_stat(pid)
    return stat is not None and stat["state"] not in "ZX" and (start is None or stat["start"] == start)


def cpu_seconds(pid):
    """utime + stime of `pid` in seconds, or None when it is gone."""
    stat = proc_stat(pid)
    return None if stat is None or stat["state"] in "ZX" else stat["cpu"] / CLOCK_TICKS


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def is_worker(pid):
    return WORKER_MODULE.encode() in _read(f"/proc/{pid}/cmdline")


def marked_workers(mark):
    """Live summa-worker processes whose environment carries MARK=mark, whoever their parent."""
    needle = f"{MARK}={mark}".encode()
    return {pid for pid in _pids()
            if is_worker(pid) and needle in _read(f"/proc/{pid}/environ").split(b"\0") and alive(pid)}


def children(pid):
    return {p for p in _pids() if (s := proc_stat(p)) is not None and s["ppid"] == pid
            and s["state"] not in "ZX"}


def new_mark():
    return uuid.uuid4().hex


# ---- the daemon -----------------------------------------------------------------------------

def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return json.dumps([str(item) for item in value])   # a JSON array of strings is TOML
    return json.dumps(str(value))     # a JSON string is a valid TOML basic string


def test_inputs(tmp_path):
    """The input_dirs of a test's daemon: its tmp_path (where tests write their CSVs; the
    daemon's own data directory in it stays out of reach) and tests/data (the fixtures)."""
    return [str(tmp_path), TEST_DATA]


def write_toml(path, settings):
    with open(path, "w", encoding="utf-8") as handle:
        for key, value in settings.items():
            handle.write(f"{key} = {_toml_value(value)}\n")
    return path


def one_line(stderr, prefix):
    """The one line of a command's stderr, which starts with prefix; never a traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(prefix), stderr
    assert "Traceback" not in stderr
    return lines[0]


class DaemonProcess:
    """summa-daemon --config FILE, on 127.0.0.1 ports it picks; data in tmp_path/data by default.

    `config` adds to or overrides the settings written to the TOML file (input_dirs: tmp_path
    and tests/data unless it says); `env` is added to the daemon's environment (and so to its
    workers'), e.g. {"SUMMA_KERNEL": "portable"}.
    """

    def __init__(self, tmp_path, config=None, env=None, data_dir=None, args=(), start_seconds=30,
                 prefix=()):
        # prefix: a command to run the daemon and its clients under, e.g. ip netns exec NS
        self.prefix = list(prefix)
        self.tmp_path = tmp_path
        self.data_dir = str(data_dir or tmp_path / "data")
        self.mark = new_mark()
        self.seen = {}     # worker pid -> its start time, every worker worker_pids() ever saw
        number = len(list(tmp_path.glob("daemon-*.toml")))
        self.settings = {"control": "tcp://127.0.0.1:*", "cancel": "tcp://127.0.0.1:*",
                         "data_dir": self.data_dir, "heartbeat_interval": 0.2,
                         "heartbeat_liveness": 3, "input_dirs": test_inputs(tmp_path), **(config or {})}
        if "keys_dir" not in self.settings:
            self.settings.setdefault("insecure", True)   # plaintext, said explicitly
        self.config_path = write_toml(tmp_path / f"daemon-{number}.toml", self.settings)
        self.log_path = tmp_path / f"daemon-{number}.log"
        self._log = open(self.log_path, "w", encoding="utf-8")
        full_env = {**os.environ, **(env or {}), MARK: self.mark}
        self.process = subprocess.Popen(
            [*self.prefix, os.path.join(BIN, "summa-daemon"), "--config", str(self.config_path), *args],
            stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, text=True, env=full_env)
        STARTED.append(self)
        try:
            self.first_line = read_line(self.process.stdout, start_seconds)
        except TimeoutError:
            self.kill()
            raise
        match = _FIRST_LINE.fullmatch(self.first_line.strip())
        if not match:
            self.kill()
            raise RuntimeError(f"summa-daemon did not start: {self.first_line!r}, log: {self.log()!r}")
        self.control, self.cancel_endpoint, self.announced_data_dir = match.groups()

    @property
    def pid(self):
        return self.process.pid

    def log(self):
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    # ---- talking to it ----

    def submit(self, *args, timeout=60, input=None):
        """summa-submit --daemon CONTROL ARGS... -> CompletedProcess (text)."""
        return subprocess.run([*self.prefix, os.path.join(BIN, "summa-submit"), "--daemon", self.control,
                               *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)

    def client(self, timeout=10.0):
        return DaemonClient(self.control, timeout=timeout)

    def status(self, job):
        if self.prefix:   # the daemon is only reachable from inside its namespace
            return json.loads(self.submit("status", job).stdout)
        with self.client() as client:
            return client.status(job)

    def wait_state(self, job, states=FINISHED, seconds=60):
        """Poll STATUS until the job is in one of `states`; returns its record."""
        return wait_until(lambda: (lambda r: r if r["state"] in states else None)(self.status(job)),
                          seconds, interval=0.02 if not self.prefix else 0.2)

    def result_dir(self, job):
        return os.path.join(self.data_dir, "results", job)

    # ---- its workers ----

    def worker_pids(self):
        """Live summa-worker children of the daemon (remembered for the leak check)."""
        pids = {pid for pid in children(self.pid) if is_worker(pid)}
        for pid in pids:
            stat = proc_stat(pid)
            if stat is not None:
                self.seen.setdefault(pid, stat["start"])
        return {pid for pid in pids if alive(pid)}

    def workers_left(self):
        """Workers of this daemon still alive: any seen by worker_pids(), any with its marker."""
        left = {pid for pid, start in self.seen.items() if alive(pid, start)}
        return left | marked_workers(self.mark)

    # ---- stopping ----

    def stop(self, seconds=20):
        """SIGTERM, a bounded wait, then SIGKILL; returns the exit code."""
        terminate(self.process, seconds)
        return self._close()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        return self._close()

    def _close(self):
        if not self.process.stdout.closed:
            self.rest_of_stdout = self.process.stdout.read()
            self.process.stdout.close()
        if not self._log.closed:
            self._log.close()
        return self.process.returncode


# ---- CSVs and the roots they should give --------------------------------------------------------

def write_csv(path, count, n_currencies=1, seed=0, bits=40, prefix="user"):
    """A CSV of `count` unique users with random balances below 2^bits; returns the entries."""
    rng = random.Random(seed)
    entries = [(f"{prefix}{seed}-{i}", [rng.getrandbits(bits) for _ in range(n_currencies)])
               for i in range(count)]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(["username"] + [f"balance_{c}" for c in CURRENCIES[:n_currencies]]) + "\n")
        handle.write("".join(f"{name},{','.join(map(str, balances))}\n" for name, balances in entries))
    return entries


def single_tree_root(entries, layout="interleaved"):
    """The root node JSON of one tree over all `entries` (depth_for(len(entries)))."""
    tree = MerkleSumTree.from_entries(entries, layout=layout, depth=depth_for(len(entries)))
    return tree.root.to_json()


def job_id_of(stdout):
    """The first line of summa-submit build's stdout."""
    return stdout.splitlines()[0].strip()


def run_job(tmp_path, endpoints, csv, batch_size=64, while_running=None, username_encoding="bytes",
            sorted=False, **config):
    """One job on an in-process daemon whose mock spawner hands out the workers at `endpoints`;
    while_running() is called once the job runs. Returns the job's final record."""
    config.setdefault("input_dirs", test_inputs(tmp_path))
    daemon = Daemon(DaemonConfig(control="inproc://run-job", cancel="tcp://127.0.0.1:*",
                                 data_dir=str(tmp_path / "data"), heartbeat_interval=0.2,
                                 max_retries=2, insecure=True, **config),
                    spawner_options={"endpoints": endpoints})
    serving = threading.Thread(target=daemon.serve)
    serving.start()
    try:
        with DaemonClient(daemon.control_endpoint, timeout=30) as client:
            job = client.submit(SubmitRequest([str(csv)], len(endpoints), "mock", "interleaved", 14,
                                              batch_size, None, username_encoding, sorted))
            if while_running is not None:
                wait_until(lambda: client.status(job)["state"] != "queued", seconds=60, interval=0.01)
                while_running()
            wait_until(lambda: client.status(job)["state"] in FINISHED, seconds=120, interval=0.05)
            return client.status(job)
    finally:
        daemon.stop()
        serving.join()


@contextmanager
def daemon_in_process(data_dir, **config):
    """A daemon in this process (its workers are real local processes), and a client of it;
    it reads CSVs from the directory around data_dir and tests/data unless input_dirs says."""
    config.setdefault("input_dirs", test_inputs(os.path.dirname(os.path.abspath(data_dir))))
    daemon = Daemon(DaemonConfig(control=f"inproc://in-process-{uuid.uuid4().hex}",
                                 cancel="tcp://127.0.0.1:*", data_dir=str(data_dir), insecure=True,
                                 log_level="WARNING", **config))
    serving = threading.Thread(target=daemon.serve, name="in-process-daemon")
    serving.start()
    try:
        with DaemonClient(daemon.control_endpoint, timeout=30) as client:
            yield daemon, client
    finally:
        daemon.stop()
        serving.join()


def reference_tree(files, layout, batch_size):
    """The spec's tree of entry lists, built in memory: one mini-tree per list, or batches."""
    if batch_size:
        flat = [entry for entries in files for entry in entries]
        batches = [flat[i:i + batch_size] for i in range(0, len(flat), batch_size)]
        depth = depth_for(batch_size)
    else:
        batches, depth = files, depth_for(max(len(f) for f in files))
    return AggregationMerkleSumTree([MerkleSumTree.from_entries(b, layout=layout, depth=depth)
                                     for b in batches], layout)
