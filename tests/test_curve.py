"""CURVE on every socket, each admitting one role: keys from summa-keys; a key of another role
or of nobody is refused and logged with its role and the socket."""
import os
import shutil
import signal
import stat
import subprocess
import sys

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from daemon_helpers import BIN, DaemonProcess, write_csv, single_tree_root
from summa_aggregation.worker.client import SEED_ENTRIES, WorkerClient, WorkerError, build_request
from summa_aggregation.wire import new_socket
from summa_aggregation.wire.keys import (ROLES, WORKER_FILES, KeyDir, KeysError, generate,
                                         write_worker_keys)
from worker_helpers import WorkerProcess, read_line

pytestmark = pytest.mark.timeout(120)


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
        os.unlink(os.path.join(path, name))
        shutil.copy(os.path.join(keys, name), os.path.join(path, name))
    return path


def handshake(endpoint, keys, role, server_role, kind=zmq.DEALER, seconds=10):
    """Connect with ROLE's pair to a server speaking as SERVER_ROLE: 'admitted' or 'refused',
    read from the client socket's own handshake events (no request needed)."""
    directory = KeyDir(keys)
    curve = directory.curve(role).for_server(directory.public(server_role))
    context = zmq.Context()
    sock = new_socket(context, kind, curve=curve)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH |
                                      zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    try:
        sock.connect(endpoint)
        if not monitor.poll(seconds * 1000):
            return "no handshake"
        event = recv_monitor_message(monitor)["event"]
        return "admitted" if event == zmq.EVENT_HANDSHAKE_SUCCEEDED else "refused"
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
        context.term()


def test_summa_keys_writes_three_pairs_and_a_list_per_role_and_never_overwrites(tmp_path):
    target = tmp_path / "k"
    first = subprocess.run([os.path.join(BIN, "summa-keys"), str(target)], capture_output=True,
                           text=True, timeout=30, preexec_fn=lambda: os.umask(0))   # a careless umask
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(target / "authorized")) == ["client", "daemon", "worker"]
    for role in ROLES:
        assert os.listdir(target / "authorized" / role) == [f"{role}.key"]
        assert KeyDir(str(target)).admitted(role) == {KeyDir(str(target)).public(role)}
        assert stat.S_IMODE(os.stat(target / f"{role}.key_secret").st_mode) == 0o600
    assert not [name for name in os.listdir(target) if name.startswith(".tmp")]
    again = subprocess.run([os.path.join(BIN, "summa-keys"), str(target)], capture_output=True,
                           text=True, timeout=30)
    assert again.returncode == 1 and "never overwritten" in again.stderr
    with pytest.raises(KeysError):
        KeyDir(str(tmp_path / "missing"))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_secret_key_readable_by_others_is_refused_as_ssh_does(tmp_path, keys, mode):
    secret = os.path.join(keys, "worker.key_secret")
    os.chmod(secret, mode)
    with pytest.raises(KeysError, match=f"{secret}: a secret key readable by group or others "
                                        f"\\(mode {mode:04o}\\); make it private: chmod 600"):
        KeyDir(keys).curve("worker")
    run = subprocess.run([os.path.join(BIN, "summa-worker"), "--bind", "tcp://127.0.0.1:*", "--keys", keys],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "chmod 600" in run.stderr
    os.chmod(os.path.join(keys, "daemon.key_secret"), mode)
    with pytest.raises(RuntimeError, match="chmod 600"):
        DaemonProcess(tmp_path, {"keys_dir": keys})


def test_the_worker_key_directory_holds_only_what_a_worker_needs(tmp_path, keys):
    out = write_worker_keys(keys, str(tmp_path / "wk"))
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert files == sorted(WORKER_FILES)
    assert stat.S_IMODE(os.stat(os.path.join(out, "worker.key_secret")).st_mode) == 0o600
    assert KeyDir(out).curve("worker") == KeyDir(keys).curve("worker")
    assert KeyDir(out).admitted("daemon") == {KeyDir(keys).public("daemon")}
    listed = subprocess.run([os.path.join(BIN, "summa-keys"), "--worker-keys", str(tmp_path / "wk2"), keys],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert sorted(os.path.relpath(os.path.join(d, f), tmp_path / "wk2")
                  for d, _, fs in os.walk(tmp_path / "wk2") for f in fs) == sorted(WORKER_FILES)


def _make_old(keys):
    """The layout before roles: one authorized/ list of every public key."""
    for role in ROLES:
        os.rename(os.path.join(keys, "authorized", role, f"{role}.key"),
                  os.path.join(keys, "authorized", f"{role}.key"))
        os.rmdir(os.path.join(keys, "authorized", role))


def test_an_old_single_list_key_directory_is_refused_until_split(tmp_path, keys):
    _make_old(keys)
    with pytest.raises(RuntimeError, match="an old single allow-list .* `summa-keys --split"):
        DaemonProcess(tmp_path, {"keys_dir": keys})
    run = subprocess.run([os.path.join(BIN, "summa-worker"), "--bind", "tcp://127.0.0.1:*", "--keys", keys],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--split" in run.stderr
    shutil.copy(os.path.join(keys, "client.key"), os.path.join(keys, "authorized", "alice.key"))
    split = subprocess.run([os.path.join(BIN, "summa-keys"), "--split", keys], capture_output=True,
                           text=True, timeout=30)
    assert split.returncode == 1 and "alice.key belong to no role" in split.stderr
    os.unlink(os.path.join(keys, "authorized", "alice.key"))
    split = subprocess.run([os.path.join(BIN, "summa-keys"), "--split", keys], capture_output=True,
                           text=True, timeout=30)
    assert split.returncode == 0, split.stderr
    daemon = DaemonProcess(tmp_path, {"keys_dir": keys})
    assert handshake(daemon.control, keys, "client", "daemon") == "admitted"


def test_each_daemon_socket_admits_its_one_role(tmp_path, keys):
    daemon = DaemonProcess(tmp_path, {"keys_dir": keys})
    admitted = {(sock, role): handshake(endpoint, keys, role, "daemon", kind)
                for sock, endpoint, kind in (("control", daemon.control, zmq.DEALER),
                                             ("cancel", daemon.cancel_endpoint, zmq.SUB))
                for role in ROLES}
    assert admitted == {("control", "client"): "admitted", ("control", "worker"): "refused",
                        ("control", "daemon"): "refused", ("cancel", "worker"): "admitted",
                        ("cancel", "client"): "refused", ("cancel", "daemon"): "refused"}
    log = daemon.log()
    assert "summa-daemon control socket refused a peer with a worker key" in log
    assert "it admits client keys only" in log
    assert "summa-daemon cancel socket refused a peer with a client key" in log


def test_a_stolen_worker_key_can_neither_list_nor_stop_the_daemon(tmp_path, keys):
    daemon = DaemonProcess(tmp_path, {"keys_dir": keys})
    as_worker = tmp_path / "as-worker"               # the worker's pair, filed as a client's
    os.makedirs(as_worker)
    for source, target in (("worker.key", "client.key"), ("worker.key_secret", "client.key_secret"),
                           ("daemon.key", "daemon.key")):
        shutil.copy(os.path.join(keys, source), as_worker / target)
    env = {**os.environ, "SUMMA_KEYS": str(as_worker)}
    for command in ("list", "shutdown"):
        refused = subprocess.run([os.path.join(BIN, "summa-submit"), "--daemon", daemon.control,
                                  "--timeout", "1", command], capture_output=True, text=True,
                                 timeout=60, env=env)
        assert refused.returncode == 2 and "no answer" in refused.stderr
    assert daemon.process.poll() is None
    with_client = subprocess.run([os.path.join(BIN, "summa-submit"), "--daemon", daemon.control, "list"],
                                 capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "SUMMA_KEYS": keys})
    assert with_client.returncode == 0, with_client.stderr


def test_a_worker_admits_daemon_keys_only(keys, stranger):
    worker = WorkerProcess("--keys", keys, "--log-level", "INFO")
    try:
        request = build_request("seed", 0, SEED_ENTRIES, as_json=True)
        with WorkerClient(worker.endpoint, timeout=10, keys=KeyDir(keys)) as client:   # the daemon's pair
            assert client.build(request)["depth"] == 1
        assert {role: handshake(worker.endpoint, keys, role, "worker") for role in ROLES} == \
            {"daemon": "admitted", "worker": "refused", "client": "refused"}
        for other in (KeyDir(stranger), None):            # a foreign key, and no CURVE at all
            with WorkerClient(worker.endpoint, timeout=1, keys=other) as client:
                with pytest.raises(WorkerError, match="no answer"):
                    client.build(request)
    finally:
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(10) == 0
        log = worker.process.stderr.read()
        worker.stop()
    assert "summa-worker worker socket refused a peer with a client key" in log
    assert "summa-worker worker socket refused a peer with a worker key" in log
    assert "summa-worker worker socket refused a peer with an unknown key" in log


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
    assert "summa-daemon control socket refused a peer with an unknown key" in daemon.log()
    assert "plaintext" not in daemon.log()
    worker_keys = os.path.join(daemon.data_dir, "worker-keys")   # what its mock workers were given
    assert sorted(os.path.relpath(os.path.join(d, f), worker_keys)
                  for d, _, fs in os.walk(worker_keys) for f in fs) == sorted(WORKER_FILES)


def test_a_daemon_without_keys_warns_that_it_runs_in_plaintext(tmp_path):
    daemon = DaemonProcess(tmp_path)
    assert "neither encrypted nor authenticated" in daemon.log()


def test_a_missing_key_file_is_a_one_line_start_error(tmp_path, keys):
    os.unlink(os.path.join(keys, "worker.key"))
    with pytest.raises(RuntimeError, match="worker.key"):
        DaemonProcess(tmp_path, {"keys_dir": keys})


DAEMON_UID, WORKER_UID = 61001, 61002     # no accounts needed: numbers, as in a container


def as_user(uid, *command, **kwargs):
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command],
                          capture_output=True, text=True, timeout=60, **kwargs)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_the_install_steps_leave_workers_unable_to_read_the_daemons_keys():
    """systemd/README.md's key steps with two users: each side loads its own keys, and the
    worker's user can read neither the daemon's nor the clients' secret keys."""
    import tempfile
    base = tempfile.mkdtemp(prefix="summa-keys-users-", dir="/tmp")
    try:
        os.chmod(base, 0o755)           # traversable by both users, as /etc/summa-aggregation is
        keys, worker_keys = os.path.join(base, "keys"), os.path.join(base, "worker-keys")
        steps = [[os.path.join(BIN, "summa-keys"), keys], ["chown", "-R", f"{DAEMON_UID}:{DAEMON_UID}", keys],
                 [os.path.join(BIN, "summa-keys"), "--worker-keys", worker_keys, "--owner", str(WORKER_UID), keys]]
        for step in steps:
            assert subprocess.run(step, capture_output=True, timeout=30).returncode == 0, step
        load = "import sys; from summa_aggregation.wire.keys import KeyDir; KeyDir(sys.argv[1]).curve(sys.argv[2])"
        assert as_user(DAEMON_UID, sys.executable, "-c", load, keys, "daemon").returncode == 0
        worker = as_user(WORKER_UID, sys.executable, "-c", load, worker_keys, "worker")
        assert worker.returncode == 0, worker.stderr
        for secret in ("daemon.key_secret", "client.key_secret"):
            denied = as_user(WORKER_UID, "cat", os.path.join(keys, secret))
            assert denied.returncode != 0 and "Permission denied" in denied.stderr
            assert as_user(WORKER_UID, "cat", os.path.join(worker_keys, secret)).returncode != 0
        serving = subprocess.Popen(["setpriv", f"--reuid={WORKER_UID}", f"--regid={WORKER_UID}",
                                    "--clear-groups", os.path.join(BIN, "summa-worker"), "--bind",
                                    "tcp://127.0.0.1:*", "--keys", worker_keys],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "listening on" in read_line(serving.stdout, 30)
        finally:
            serving.kill()
            serving.wait(10)
            serving.stdout.close()
            serving.stderr.close()
    finally:
        shutil.rmtree(base)
