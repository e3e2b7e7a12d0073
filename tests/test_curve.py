"""CURVE on every socket: keys from summa-keys; unknown keys are refused and logged."""
import os
import shutil
import signal
import subprocess

import pytest

from daemon_helpers import BIN, DaemonProcess, write_csv, single_tree_root
from summa_aggregation.worker.client import SEED_ENTRIES, WorkerClient, WorkerError, build_request
from summa_aggregation.wire.keys import KeyDir, KeysError, generate
from worker_helpers import WorkerProcess




@pytest.fixture
def keys(tmp_path):
    return generate(str(tmp_path / "keys"))


@pytest.fixture
def stranger(tmp_path, keys):
    """A peer that knows our servers' public keys but whose own key is not authorized.
    (A peer that does not even know a server's key cannot complete the handshake, and ZeroMQ
    drops it before any authentication could log it.)"""
    path = generate(str(tmp_path / "stranger"))
    for name in ("daemon.key", "worker.key"):
        shutil.copy(os.path.join(keys, name), os.path.join(path, name))
    return path


def test_summa_keys_writes_three_pairs_and_never_overwrites(tmp_path):
    target = tmp_path / "k"
    first = subprocess.run([os.path.join(BIN, "summa-keys"), str(target)], capture_output=True,
                           text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(target / "authorized")) == ["client.key", "daemon.key", "worker.key"]
    assert oct(os.stat(target / "daemon.key_secret").st_mode & 0o777) == "0o600"
    again = subprocess.run([os.path.join(BIN, "summa-keys"), str(target)], capture_output=True,
                           text=True, timeout=30)
    assert again.returncode == 1 and "never overwritten" in again.stderr
    with pytest.raises(KeysError):
        KeyDir(str(tmp_path / "missing"))


def test_worker_serves_known_keys_and_refuses_others(keys, stranger):
    worker = WorkerProcess("--keys", keys, "--log-level", "INFO")
    try:
        request = build_request("seed", 0, SEED_ENTRIES, as_json=True)
        with WorkerClient(worker.endpoint, timeout=10, keys=KeyDir(keys)) as client:
            assert client.build(request)["depth"] == 1
        for other in (KeyDir(stranger), None):            # a foreign key, and no CURVE at all
            with WorkerClient(worker.endpoint, timeout=1, keys=other) as client:
                with pytest.raises(WorkerError, match="no answer"):
                    client.build(request)
    finally:
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(10) == 0
        log = worker.process.stderr.read()
        worker.stop()
    assert "summa-worker refused a peer with an unknown CURVE key" in log


def test_daemon_and_its_workers_speak_curve_and_refuse_strangers(tmp_path, keys, stranger):
    entries = write_csv(tmp_path / "e.csv", 300, seed=31)
    daemon = DaemonProcess(tmp_path, {"keys_dir": keys})
    env = {**os.environ, "SUMMA_KEYS": keys}
    done = subprocess.run([os.path.join(BIN, "summa-submit"), "--daemon", daemon.control, "build",
                           str(tmp_path / "e.csv"), "--batch-size", "64", "--wait"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith('{"hash": "' + single_tree_root(entries)["hash"])
    for other in ({"SUMMA_KEYS": stranger}, {}):
        refused = subprocess.run([os.path.join(BIN, "summa-submit"), "--daemon", daemon.control,
                                  "--timeout", "1", "list"], capture_output=True, text=True, timeout=60,
                                 env={**{k: v for k, v in os.environ.items() if k != "SUMMA_KEYS"}, **other})
        assert refused.returncode == 2 and "no answer" in refused.stderr
    assert "summa-daemon refused a peer with an unknown CURVE key" in daemon.log()
    assert "plaintext" not in daemon.log()


def test_a_daemon_without_keys_warns_that_it_runs_in_plaintext(tmp_path):
    daemon = DaemonProcess(tmp_path)
    assert "neither encrypted nor authenticated" in daemon.log()


def test_a_missing_key_file_is_a_one_line_start_error(tmp_path, keys):
    os.unlink(os.path.join(keys, "worker.key"))
    with pytest.raises(RuntimeError, match="worker.key"):
        DaemonProcess(tmp_path, {"keys_dir": keys})
