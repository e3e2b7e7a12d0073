"""LocalSpawner and CloudSpawner against a real Docker engine and a real single-node Swarm.

Skipped without an engine (or a Swarm, for the cloud tests) unless SUMMA_REQUIRE_DOCKER=1.
Every container and service uses host networking and loopback ports picked at random.
The hardening (user, capabilities, read-only root, memory limit, the worker's keys only) is
read from `docker inspect` of the real containers and services, and from inside running ones.
"""
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

import daemon_helpers
from daemon_helpers import FINISHED, DaemonProcess, job_id_of, single_tree_root, write_csv
from docker_helpers import (ROOT, build_image, execute, inspect, labelled_containers, require_engine,
                            running_task_containers, services)
from worker_helpers import wait_until

from summa_aggregation.daemon.client import DaemonClient
from summa_aggregation.wire.keys import WORKER_FILES, KeyDir, generate

SLOW_KERNEL = {"SUMMA_KERNEL": "portable"}   # workers inherit it: builds long enough to act on
WORKER_USER = "10001:10001"                  # the image's summa, as a root daemon runs workers
MEMORY = 768 << 20                           # worker_memory_mb's default rule at 1 thread
KEYS = "/run/secrets/summa-keys"
BLOCK = 1024                                 # ports per cloud job running at once (MAX_EXECUTORS)
NO_CAPABILITIES = "0000000000000000"
@pytest.fixture(scope="module")
def image():
    require_engine()
    return build_image()


@pytest.fixture(scope="module")
def swarm_image():
    require_engine(swarm=True)
    return build_image()


def free_port_blocks(blocks, length):
    """A cloud_port such that the first `length` replica ports of each of `blocks` job port
    blocks (base + B x BLOCK + 1 .. + length) are free on 127.0.0.1 right now."""
    for _ in range(200):
        base = random.randrange(20000, 65535 - blocks * BLOCK)
        try:
            for port in (base + b * BLOCK + n for b in range(blocks) for n in range(1, length + 1)):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port blocks")


def owner(daemon):
    import hashlib
    return hashlib.sha256(os.path.abspath(daemon.data_dir).encode()).hexdigest()[:16]


def build(daemon, *args):
    result = daemon.submit("build", *args, "--wait", timeout=300)
    return result, json.loads(result.stdout.splitlines()[-1]) if result.returncode == 0 else None


def submit_keyed(daemon, keys, *args):
    """summa-submit --keys KEYS ARGS... against `daemon`; returns the job id."""
    result = subprocess.run([os.path.join(daemon_helpers.BIN, "summa-submit"), "--daemon", daemon.control,
                             "--keys", keys, *map(str, args)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (result.stderr, daemon.log()[-2000:])
    return job_id_of(result.stdout)


def keyed_record(daemon, keys, job, states=daemon_helpers.FINISHED, seconds=240):
    """Poll the job's record over CURVE until it is in one of `states`."""
    def record():
        with DaemonClient(daemon.control, timeout=10, keys=KeyDir(keys)) as client:
            found = client.status(job)
        return found if found["state"] in states else None
    return wait_until(record, seconds, interval=0.2)


def assert_container_hardened(attrs, user=WORKER_USER):
    """What `docker inspect` of a worker container shows, local or a Swarm task's."""
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == user, attrs["Config"]
    assert host["CapDrop"] == ["ALL"], host["CapDrop"]
    assert host["ReadonlyRootfs"] is True
    assert host["Memory"] == MEMORY, host["Memory"]


def assert_process_confined(container, uid="10001"):
    """Inside: the worker (PID 1) is not root, holds no capability, has no_new_privs, and only
    /tmp is writable."""
    status = execute(container, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == [uid] * 4 and fields["Gid"].split() == [uid] * 4, status
    assert fields["NoNewPrivs"].strip() == "1", status
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert fields[name].strip() == NO_CAPABILITIES, (name, status)
    wrote = execute(container, "touch", "/probe")
    assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr, wrote
    assert execute(container, "touch", "/tmp/probe").returncode == 0


def assert_holds_only_the_worker_keys(container, secret_mode, owner_ids=WORKER_USER):
    """Inside: exactly WORKER_FILES under the key directory, no other secret key anywhere."""
    listed = execute(container, "find", KEYS, "-type", "f")
    assert sorted(os.path.relpath(path, KEYS) for path in listed.stdout.split()) == sorted(WORKER_FILES)
    found = execute(container, "find", "/", "(", "-path", "/proc", "-o", "-path", "/sys", ")", "-prune",
                    "-o", "-name", "*key_secret*", "-print")
    assert found.stdout.split() == [f"{KEYS}/worker.key_secret"], found
    mode = execute(container, "stat", "-L", "-c", "%a %u:%g", f"{KEYS}/worker.key_secret")
    assert mode.stdout.strip() == f"{secret_mode} {owner_ids}", mode


def running_containers(owner_digest, count):
    """Once `count` containers of this owner run, their names."""
    def names():
        found = labelled_containers(owner_digest)
        states = [attrs["State"]["Running"] for attrs in inspect(*found)] if found else []
        return found if len(found) == count and all(states) else None
    return wait_until(names, seconds=120, interval=0.2)


# ---- LocalSpawner ------------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_local_spawner_gives_the_mock_spawners_root_and_leaves_no_container(tmp_path, image):
    entries = write_csv(tmp_path / "e.csv", 3000, n_currencies=2, seed=3)
    daemon = DaemonProcess(tmp_path, {"worker_image": image})
    mock, mock_root = build(daemon, tmp_path / "e.csv", "--batch-size", "512", "--spawner", "mock")
    local, local_root = build(daemon, tmp_path / "e.csv", "--batch-size", "512", "--spawner", "local",
                              "--executors", "2")
    assert mock.returncode == 0 and local.returncode == 0, local.stderr
    assert local_root == mock_root == single_tree_root(entries)
    assert labelled_containers(owner(daemon)) == []     # removed before the job counts as done


@pytest.mark.timeout(300)
def test_local_spawner_survives_a_container_killed_mid_job(tmp_path, image):
    entries = write_csv(tmp_path / "big.csv", 1 << 15, n_currencies=4, seed=4)
    daemon = DaemonProcess(tmp_path, {"worker_image": image}, env=SLOW_KERNEL)
    job = job_id_of(daemon.submit("build", tmp_path / "big.csv", "--batch-size", "4096",
                                  "--spawner", "local", "--executors", "2").stdout)
    wait_until(lambda: daemon.status(job)["progress"]["batches_done"] >= 1, seconds=120, interval=0.1)
    victim = labelled_containers(owner(daemon))[0]
    assert subprocess.run(["docker", "kill", victim], capture_output=True, timeout=60).returncode == 0
    record = daemon.wait_state(job, seconds=240)
    assert record["state"] == "done", record       # or a clean failure; here the retry succeeds
    assert record["root"] == single_tree_root(entries)
    assert "stopped answering" in daemon.log()
    assert labelled_containers(owner(daemon)) == []


@pytest.mark.timeout(300)
def test_containers_left_by_a_crashed_daemon_are_removed_at_the_next_start(tmp_path, image):
    write_csv(tmp_path / "big.csv", 1 << 15, n_currencies=4, seed=5)
    data_dir = tmp_path / "data"
    daemon = DaemonProcess(tmp_path, {"worker_image": image}, env=SLOW_KERNEL, data_dir=data_dir)
    job = job_id_of(daemon.submit("build", tmp_path / "big.csv", "--batch-size", "4096",
                                  "--spawner", "local", "--executors", "2").stdout)
    daemon.wait_state(job, ("running",), seconds=120)
    wait_until(lambda: len(labelled_containers(owner(daemon))) == 2, seconds=60)
    daemon.kill()                                  # containers are no children: they stay
    assert len(labelled_containers(owner(daemon))) == 2
    again = DaemonProcess(tmp_path, {"worker_image": image, "resume": False}, data_dir=data_dir)
    assert labelled_containers(owner(again)) == []
    assert again.status(job)["state"] == "failed"


@pytest.mark.timeout(300)
def test_a_job_of_a_crashed_daemon_resumes_on_fresh_containers(tmp_path, image):
    entries = write_csv(tmp_path / "big.csv", 1 << 15, n_currencies=4, seed=6)
    data_dir = tmp_path / "data"
    daemon = DaemonProcess(tmp_path, {"worker_image": image}, env=SLOW_KERNEL, data_dir=data_dir)
    job = job_id_of(daemon.submit("build", tmp_path / "big.csv", "--batch-size", "4096",
                                  "--spawner", "local", "--executors", "2").stdout)
    wait_until(lambda: daemon.status(job)["progress"].get("units_done", 0) >= 2, seconds=120)
    old = set(labelled_containers(owner(daemon)))
    daemon.kill()
    again = DaemonProcess(tmp_path, {"worker_image": image}, data_dir=data_dir)
    record = again.wait_state(job, seconds=240)
    assert record["state"] == "done" and record["root"] == single_tree_root(entries), record
    assert record["resumed"] == 1 and record["progress"]["units_reused"] >= 2
    assert not old & set(labelled_containers()), "a container of the dead daemon was used or left"
    wait_until(lambda: labelled_containers(owner(again)) == [], seconds=60, interval=0.2)


# ---- CloudSpawner: a Swarm service -------------------------------------------------------------

@pytest.mark.timeout(300)
def test_cloud_spawner_service_from_the_compose_file_survives_a_manual_scale(tmp_path, swarm_image):
    entries = write_csv(tmp_path / "big.csv", 1 << 15, n_currencies=4, seed=6)
    stack = f"summa_test_{uuid.uuid4().hex[:6]}"
    daemon = DaemonProcess(tmp_path, {
        "worker_image": swarm_image, "cloud_compose_file": os.path.join(ROOT, "docker-compose.yml"),
        "cloud_stack": stack, "cloud_port": free_port_blocks(1, 3)}, env=SLOW_KERNEL)
    try:
        job = job_id_of(daemon.submit("build", tmp_path / "big.csv", "--batch-size", "4096",
                                      "--spawner", "cloud", "--executors", "2").stdout)
        daemon.wait_state(job, ("running",), seconds=120)
        assert services(stack) == [f"{stack}_mini-tree-{job}"]      # the job's own service
        wait_until(lambda: daemon.status(job)["progress"]["batches_done"] >= 1, seconds=120, interval=0.1)
        scaled = subprocess.run(["docker", "service", "scale", "--detach", f"{stack}_mini-tree-{job}=3"],
                                capture_output=True, text=True, timeout=60)
        assert scaled.returncode == 0, scaled.stderr
        record = daemon.wait_state(job, seconds=240)
        assert record["state"] == "done", record
        assert record["root"] == single_tree_root(entries)
        assert services(stack) == []                     # the spawner removed what it created
    finally:
        for name in services(stack):
            subprocess.run(["docker", "service", "rm", name], capture_output=True, timeout=60)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("secure", [False, True], ids=["insecure", "secrets-file"])
def test_stack_deployed_by_hand_serves_summa_submit(tmp_path, swarm_image, secure):
    entries = write_csv(tmp_path / "e.csv", 2000, n_currencies=1, seed=7)
    stack, base = f"summa_hand_{uuid.uuid4().hex[:6]}", free_port_blocks(1, 2)
    env = {**os.environ, "SUMMA_IMAGE": swarm_image, "SUMMA_WORKER_HOST": "127.0.0.1",
           "SUMMA_WORKER_PORT": str(base)}
    files = ["-c", os.path.join(ROOT, "docker-compose.yml")]
    if secure:      # the secrets file: only the worker's files, owned by its user, mode 0400
        keys = generate(str(tmp_path / "keys"))
        env["SUMMA_KEYS"] = keys
        files += ["-c", os.path.join(ROOT, "docker-compose.secrets.yml")]
    else:
        env["SUMMA_WORKER_INSECURE"] = "1"
    deployed = subprocess.run(["docker", "stack", "deploy", *files, stack],
                              capture_output=True, text=True, timeout=120, env=env)
    assert deployed.returncode == 0, deployed.stderr
    try:
        wait_until(lambda: subprocess.run(
            ["docker", "service", "ls", "--filter", f"name={stack}_mini-tree", "--format", "{{.Replicas}}"],
            capture_output=True, text=True, timeout=30).stdout.startswith("2/2"), seconds=120, interval=0.2)
        container = inspect(f"{stack}_mini-tree", kind="service")[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert (container["User"], container["CapabilityDrop"], container["ReadOnly"]) == \
            (WORKER_USER, ["ALL"], True)                          # the compose file's hardening too
        if secure:
            replica = running_task_containers(f"{stack}_mini-tree")[0]
            assert_process_confined(replica)
            assert_holds_only_the_worker_keys(replica, "400")
            daemon = DaemonProcess(tmp_path, {"cloud_port": base, "keys_dir": keys})
            job = submit_keyed(daemon, keys, "build", tmp_path / "e.csv", "--batch-size", "256",
                               "--spawner", "cloud", "--executors", "2")
            root = keyed_record(daemon, keys, job)["root"]
        else:
            daemon = DaemonProcess(tmp_path, {"cloud_port": base})    # no compose file: connect only
            result, root = build(daemon, tmp_path / "e.csv", "--batch-size", "256", "--spawner", "cloud",
                                 "--executors", "2")
            assert result.returncode == 0, result.stderr
        assert root == single_tree_root(entries)
        assert services(stack) == [f"{stack}_mini-tree"]     # not ours to remove
    finally:
        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, timeout=120)
    wait_until(lambda: services(stack) == [], seconds=60)


# ---- with CURVE keys: mounted into containers, Docker secrets for Swarm replicas ------------------

@pytest.mark.timeout(300)
def test_local_and_cloud_spawners_with_curve_keys(tmp_path, swarm_image):
    from summa_aggregation.wire.keys import generate
    keys = generate(str(tmp_path / "keys"))
    entries = write_csv(tmp_path / "e.csv", 1000, n_currencies=2, seed=12)
    stack = f"summa_keys_{uuid.uuid4().hex[:6]}"
    daemon = DaemonProcess(tmp_path, {
        "keys_dir": keys, "worker_image": swarm_image, "cloud_stack": stack,
        "cloud_compose_file": os.path.join(ROOT, "docker-compose.yml"), "cloud_port": free_port_blocks(1, 2)})
    env = {**os.environ, "SUMMA_KEYS": keys}
    try:
        for spawner in ("local", "cloud"):
            done = subprocess.run([os.path.join(daemon_helpers.BIN, "summa-submit"), "--daemon",
                                   daemon.control, "build", str(tmp_path / "e.csv"), "--batch-size", "256",
                                   "--spawner", spawner, "--executors", "2", "--wait"],
                                  capture_output=True, text=True, timeout=240, env=env)
            assert done.returncode == 0, (spawner, done.stderr, daemon.log()[-2000:])
            assert json.loads(done.stdout.splitlines()[-1]) == single_tree_root(entries)
        assert "plaintext" not in daemon.log()
    finally:
        for name in services(stack):
            subprocess.run(["docker", "service", "rm", name], capture_output=True, timeout=60)


# ---- hardening: what a worker container holds and may do; per-job services --------------------

@pytest.mark.timeout(300)
def test_local_containers_are_hardened_and_get_only_the_workers_keys(tmp_path, image):
    keys = generate(str(tmp_path / "keys"))
    write_csv(tmp_path / "big.csv", 1 << 17, n_currencies=4, seed=8)   # runs while inspected
    daemon = DaemonProcess(tmp_path, {"keys_dir": keys, "worker_image": image}, env=SLOW_KERNEL)
    job = submit_keyed(daemon, keys, "build", tmp_path / "big.csv", "--batch-size", "4096",
                       "--spawner", "local", "--executors", "2")
    names = running_containers(owner(daemon), 2)
    copy = os.path.join(daemon.data_dir, "worker-keys-10001")       # a root daemon's rule
    for attrs in inspect(*names):
        assert_container_hardened(attrs)
        assert "no-new-privileges" in attrs["HostConfig"]["SecurityOpt"]
        assert list(attrs["HostConfig"]["Tmpfs"]) == ["/tmp"]
        assert [(m["Type"], m["Source"], m["Destination"], m["RW"]) for m in attrs["Mounts"]] == \
            [("bind", copy, KEYS, False)]                             # nothing else from the host
        assert attrs["Config"]["Labels"]["summa-aggregation.job"] == job
    for name in names:
        assert_process_confined(name)
        assert_holds_only_the_worker_keys(name, "600")
    with DaemonClient(daemon.control, timeout=10, keys=KeyDir(keys)) as client:
        client.cancel(job)           # the root with keys: test_local_and_cloud_spawners_with_curve_keys
    assert keyed_record(daemon, keys, job)["state"] in ("cancelled", "done")
    assert labelled_containers(owner(daemon)) == []


@pytest.mark.timeout(300)
def test_a_daemon_that_is_not_root_runs_its_containers_as_itself(image):
    """Its key copy is its own (it could not chown one to 10001), so its containers run as it."""
    if os.geteuid() != 0 or not os.path.exists("/var/run/docker.sock"):
        pytest.skip("needs root (to start a daemon as another user) and the engine's unix socket")
    uid, docker_gid = 4242, os.stat("/var/run/docker.sock").st_gid
    directory = Path(tempfile.mkdtemp(prefix="summa-not-root-"))   # pytest's tmp_path is root's only
    daemon = None
    try:
        keys = generate(str(directory / "keys"))
        entries = write_csv(directory / "big.csv", 1 << 16, n_currencies=2, seed=13)   # runs a while
        for where, dirs, files in os.walk(directory):
            for name in [where, *(os.path.join(where, f) for f in dirs + files)]:
                os.chown(name, uid, uid)
        daemon = DaemonProcess(directory, {"keys_dir": keys, "worker_image": image},
                               env={"HOME": str(directory), **SLOW_KERNEL},
                               prefix=["setpriv", f"--reuid={uid}", f"--regid={uid}",
                                       f"--groups={docker_gid}", "--"])
        job = submit_keyed(daemon, keys, "build", directory / "big.csv", "--batch-size", "4096",
                           "--spawner", "local", "--executors", "2")
        names = running_containers(owner(daemon), 2)
        copy = os.path.join(daemon.data_dir, f"worker-keys-{uid}")
        for attrs in inspect(*names):
            assert_container_hardened(attrs, user=f"{uid}:{uid}")
            assert [(m["Source"], m["RW"]) for m in attrs["Mounts"]] == [(copy, False)]
        assert_process_confined(names[0], uid=str(uid))
        assert_holds_only_the_worker_keys(names[0], "600", owner_ids=f"{uid}:{uid}")
        assert not os.path.exists(os.path.join(daemon.data_dir, "worker-keys-10001"))
        record = keyed_record(daemon, keys, job)
        assert record["state"] == "done", (record, daemon.log()[-2000:])
        assert record["root"] == single_tree_root(entries)
        assert labelled_containers(owner(daemon)) == []
    finally:
        if daemon is not None:
            daemon.stop()                # before its directory goes: it writes there until it exits
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.timeout(420)
def test_parallel_cloud_jobs_get_their_own_hardened_services_and_ports(tmp_path, swarm_image):
    keys = generate(str(tmp_path / "keys"))
    csvs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    entries = [write_csv(csvs[0], 1 << 17, n_currencies=4, seed=9),     # both run at once
               write_csv(csvs[1], 1 << 17, n_currencies=3, seed=10)]
    stack, base = f"summa_par_{uuid.uuid4().hex[:6]}", free_port_blocks(2, 2)
    daemon = DaemonProcess(tmp_path, {
        "keys_dir": keys, "worker_image": swarm_image, "cloud_stack": stack, "cloud_port": base,
        "cloud_compose_file": os.path.join(ROOT, "docker-compose.yml"), "max_parallel_jobs": 2},
        env=SLOW_KERNEL)
    try:
        jobs = [submit_keyed(daemon, keys, "build", csv, "--batch-size", "4096", "--spawner", "cloud",
                             "--executors", "2") for csv in csvs]
        names = [f"{stack}_mini-tree-{job}" for job in jobs]
        wait_until(lambda: sorted(services(stack)) == sorted(names), seconds=120, interval=0.2)
        binds = set()
        for job, spec in zip(jobs, (service["Spec"] for service in inspect(*names, kind="service"))):
            container = spec["TaskTemplate"]["ContainerSpec"]
            assert spec["Labels"]["summa-aggregation.owner"] == owner(daemon)
            assert spec["Labels"]["summa-aggregation.job"] == job
            assert container["Labels"]["summa-aggregation.job"] == job      # on its containers too
            assert container["User"] == WORKER_USER
            assert container["CapabilityDrop"] == ["ALL"] and container["ReadOnly"] is True
            assert [(m["Type"], m["Target"]) for m in container["Mounts"]] == [("tmpfs", "/tmp")]
            assert spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] == MEMORY
            files = [secret["File"] for secret in container["Secrets"]]
            assert sorted(f["Name"] for f in files) == sorted(f"summa-keys/{name}" for name in WORKER_FILES)
            assert {(f["UID"], f["GID"], f["Mode"]) for f in files} == {("10001", "10001", 0o400)}
            binds.add(dict(item.split("=", 1) for item in container["Env"])["SUMMA_WORKER_BIND"])
        assert binds == {f"tcp://127.0.0.1:{base}", f"tcp://127.0.0.1:{base + BLOCK}"}   # a block each
        replicas = wait_until(lambda: running_task_containers(names[0]), seconds=120, interval=0.2)
        assert_container_hardened(inspect(replicas[0])[0])
        assert_process_confined(replicas[0])
        assert_holds_only_the_worker_keys(replicas[0], "400")
        for job, expected in zip(jobs, entries):
            record = keyed_record(daemon, keys, job, seconds=300)
            assert record["state"] == "done", record
            assert record["root"] == single_tree_root(expected)
        assert services(stack) == []
        wait_until(lambda: labelled_containers(owner(daemon)) == [], seconds=60, interval=0.2)
    finally:
        for name in services(stack):
            subprocess.run(["docker", "service", "rm", name], capture_output=True, timeout=60)


@pytest.mark.timeout(300)
def test_a_crashed_daemons_service_is_removed_at_the_next_start(tmp_path, swarm_image):
    write_csv(tmp_path / "big.csv", 1 << 17, n_currencies=4, seed=11)   # still runs when killed
    data_dir, stack = tmp_path / "data", f"summa_crash_{uuid.uuid4().hex[:6]}"
    config = {"worker_image": swarm_image, "cloud_stack": stack, "cloud_port": free_port_blocks(1, 2),
              "cloud_compose_file": os.path.join(ROOT, "docker-compose.yml")}
    daemon = DaemonProcess(tmp_path, config, env=SLOW_KERNEL, data_dir=data_dir)
    try:
        job = job_id_of(daemon.submit("build", tmp_path / "big.csv", "--batch-size", "4096",
                                      "--spawner", "cloud", "--executors", "2").stdout)
        record = daemon.wait_state(job, ("running", *FINISHED), seconds=120)
        assert record["state"] == "running", (record, daemon.log()[-2000:])
        assert services(stack) == [f"{stack}_mini-tree-{job}"]
        wait_until(lambda: len(labelled_containers(owner(daemon))) == 2, seconds=60, interval=0.2)
        daemon.kill()                              # its service and replicas stay
        assert services(stack) == [f"{stack}_mini-tree-{job}"]
        again = DaemonProcess(tmp_path, {**config, "resume": False}, data_dir=data_dir)
        assert services(stack) == []               # removed before it serves
        assert labelled_containers(owner(again)) == []
        assert again.status(job)["state"] == "failed"
    finally:
        for name in services(stack):
            subprocess.run(["docker", "service", "rm", name], capture_output=True, timeout=60)
