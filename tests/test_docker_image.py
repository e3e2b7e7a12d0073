"""The worker image, built from the Dockerfile and run on a real Docker engine.

Skipped where no engine answers, unless SUMMA_REQUIRE_DOCKER=1 (CI), which makes a missing
engine a failure. The base image is SUMMA_BASE_IMAGE if set, else the local base that
scripts/docker-base-image.sh builds (summa-base:bookworm) if it exists, else the Dockerfile's
default (which needs a registry).
"""
import json
import os
import subprocess
import sys
import uuid

import pytest

from docker_helpers import ROOT, build_image, require_engine
from worker_helpers import free_port, wait_until


@pytest.fixture(scope="module")
def image():
    require_engine()
    return build_image()


@pytest.fixture
def container(image):
    name, port = f"summa-test-{uuid.uuid4().hex[:8]}", free_port()
    started = subprocess.run(["docker", "run", "-d", "--network", "host", "--name", name,
                              "-e", f"SUMMA_WORKER_BIND=tcp://127.0.0.1:{port}",
                              "-e", "SUMMA_WORKER_INSECURE=1", image],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        wait_until(lambda: "listening on" in _logs(name), seconds=60, interval=0.1)
        yield name, port
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def _logs(name):
    result = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr


@pytest.mark.timeout(1200)
def test_container_worker_answers_the_seed_script_and_stops_on_sigterm(container, vectors):
    name, port = container
    assert f"tcp://127.0.0.1:{port}" in _logs(name)
    sent = subprocess.run(["bash", os.path.join(ROOT, "scripts", "test_sending_entry.sh"), str(port)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SUMMA_VENV": sys.prefix})
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == vectors["layouts"]["interleaved"]["seed_two_entries"]
    status = subprocess.run(["docker", "exec", name, "cat", "/proc/1/status"], capture_output=True,
                            text=True, timeout=60).stdout           # PID 1: summa-worker itself
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == ["10001"] * 4, status           # the image's user summa
    assert fields["NoNewPrivs"].strip() == "1", status              # set by the entrypoint
    stopped = subprocess.run(["docker", "stop", "-t", "5", name], capture_output=True, timeout=60)
    assert stopped.returncode == 0
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", name],
                           capture_output=True, text=True, timeout=30)
    assert state.stdout.strip() == "0"       # summa-worker's own SIGTERM path, not a SIGKILL
    assert "summa-worker: stopped" in _logs(name)


@pytest.mark.timeout(300)
def test_a_container_memory_limit_caps_the_workers_budget(image):
    """Three quarters of the container's limit, so the worker sheds a flood before the OOM killer."""
    ran = subprocess.run(["docker", "run", "--rm", "--network", "host", "--memory", "300m",
                          "-e", "SUMMA_WORKER_BIND=tcp://127.0.0.1:*", "-e", "SUMMA_WORKER_INSECURE=1",
                          "--entrypoint", "/bin/sh", image, "-c",
                          "timeout -s TERM 5 summa-worker --max-message-mb 1024 | head -n 1"],
                         capture_output=True, text=True, timeout=240)
    assert "memory limit 225 MiB" in ran.stdout, (ran.stdout, ran.stderr)


@pytest.mark.timeout(300)
def test_the_image_runs_as_summa_through_setpriv(image):
    """Not root unless asked for, and no_new_privs even where the engine cannot set it (Swarm)."""
    config = json.loads(subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                                       text=True, timeout=60).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["setpriv", "--no-new-privs", "--", "summa-worker"]
    ran = subprocess.run(["docker", "run", "--rm", "--network", "host", "--entrypoint", "/bin/sh", image,
                          "-c", "id -un; getent group summa"], capture_output=True, text=True, timeout=120)
    assert ran.stdout.split() == ["summa", "summa:x:10001:"], (ran.stdout, ran.stderr)
