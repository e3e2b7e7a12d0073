"""LocalSpawner and CloudSpawner against a real Docker engine and a real single-node Swarm.

Skipped without an engine (or a Swarm, for the cloud tests) unless SUMMA_REQUIRE_DOCKER=1.
Every container and service uses host networking and loopback ports picked at random.
"""
import json
import os
import socket
import subprocess
import uuid

import pytest

import daemon_helpers
from daemon_helpers import DaemonProcess, job_id_of, single_tree_root, write_csv
from docker_helpers import ROOT, build_image, labelled_containers, require_engine, services
from worker_helpers import wait_until

SLOW_KERNEL = {"SUMMA_KERNEL": "portable"}   # workers inherit it: builds long enough to act on




@pytest.fixture(scope="module")
def image():
    require_engine()
    return build_image()


@pytest.fixture(scope="module")
def swarm_image():
    require_engine(swarm=True)
    return build_image()


def free_port_run(length):
    """A base port such that base+1 .. base+length are free on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + length >= 65536:
            continue
        try:
            for port in range(base + 1, base + length + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


def owner(daemon):
    import hashlib
    return hashlib.sha256(os.path.abspath(daemon.data_dir).encode()).hexdigest()[:16]


def build(daemon, *args):
    result = daemon.submit("build", *args, "--wait", timeout=300)
    return result, json.loads(result.stdout.splitlines()[-1]) if result.returncode == 0 else None


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
    again = DaemonProcess(tmp_path, {"worker_image": image}, data_dir=data_dir)
    assert labelled_containers(owner(again)) == []
    assert again.status(job)["state"] == "failed"


# ---- CloudSpawner: a Swarm service -------------------------------------------------------------

@pytest.mark.timeout(300)
def test_cloud_spawner_service_from_the_compose_file_survives_a_manual_scale(tmp_path, swarm_image):
    entries = write_csv(tmp_path / "big.csv", 1 << 15, n_currencies=4, seed=6)
    stack = f"summa_test_{uuid.uuid4().hex[:6]}"
    daemon = DaemonProcess(tmp_path, {
        "worker_image": swarm_image, "cloud_compose_file": os.path.join(ROOT, "docker-compose.yml"),
        "cloud_stack": stack, "cloud_port": free_port_run(3)}, env=SLOW_KERNEL)
    try:
        job = job_id_of(daemon.submit("build", tmp_path / "big.csv", "--batch-size", "4096",
                                      "--spawner", "cloud", "--executors", "2").stdout)
        daemon.wait_state(job, ("running",), seconds=120)
        wait_until(lambda: daemon.status(job)["progress"]["batches_done"] >= 1, seconds=120, interval=0.1)
        scaled = subprocess.run(["docker", "service", "scale", "--detach", f"{stack}_mini-tree=3"],
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
def test_stack_deployed_by_hand_serves_summa_submit(tmp_path, swarm_image):
    entries = write_csv(tmp_path / "e.csv", 2000, n_currencies=1, seed=7)
    stack, base = f"summa_hand_{uuid.uuid4().hex[:6]}", free_port_run(2)
    env = {**os.environ, "SUMMA_IMAGE": swarm_image, "SUMMA_WORKER_HOST": "127.0.0.1",
           "SUMMA_WORKER_PORT": str(base), "SUMMA_WORKER_INSECURE": "1"}
    deployed = subprocess.run(["docker", "stack", "deploy", "-c", os.path.join(ROOT, "docker-compose.yml"), stack],
                              capture_output=True, text=True, timeout=120, env=env)
    assert deployed.returncode == 0, deployed.stderr
    try:
        wait_until(lambda: subprocess.run(
            ["docker", "service", "ls", "--filter", f"name={stack}_mini-tree", "--format", "{{.Replicas}}"],
            capture_output=True, text=True, timeout=30).stdout.startswith("2/2"), seconds=120, interval=0.2)
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
        "cloud_compose_file": os.path.join(ROOT, "docker-compose.yml"), "cloud_port": free_port_run(2)})
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
