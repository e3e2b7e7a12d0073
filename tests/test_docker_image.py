"""The worker image, built from the Dockerfile and run on a real Docker engine.

Skipped where no engine answers, unless SUMMA_REQUIRE_DOCKER=1 (CI), which makes a missing
engine a failure. The base image is SUMMA_BASE_IMAGE if set, else the local base that
scripts/docker-base-image.sh builds (summa-base:bookworm) if it exists, else the Dockerfile's
default (which needs a registry).
"""
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from worker_helpers import free_port, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "summa-aggregation:test"
LOCAL_BASE = "summa-base:bookworm"


def _engine_answers():
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def image():
    if not _engine_answers():
        if os.environ.get("SUMMA_REQUIRE_DOCKER") == "1":
            pytest.fail("SUMMA_REQUIRE_DOCKER=1 but no Docker engine answers (bash scripts/start-docker.sh)")
        pytest.skip("no Docker engine answers here")
    args = ["docker", "build", "--network", "host", "-t", IMAGE, ROOT]
    base = os.environ.get("SUMMA_BASE_IMAGE")
    if not base and subprocess.run(["docker", "image", "inspect", LOCAL_BASE],
                                   capture_output=True, timeout=60).returncode == 0:
        base = LOCAL_BASE
    if base:
        args[2:2] = ["--build-arg", f"BASE_IMAGE={base}"]
    built = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE


@pytest.fixture
def container(image):
    name, port = f"summa-test-{uuid.uuid4().hex[:8]}", free_port()
    started = subprocess.run(["docker", "run", "-d", "--network", "host", "--name", name,
                              "-e", f"SUMMA_WORKER_BIND=tcp://127.0.0.1:{port}", image],
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
    stopped = subprocess.run(["docker", "stop", "-t", "5", name], capture_output=True, timeout=60)
    assert stopped.returncode == 0
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", name],
                           capture_output=True, text=True, timeout=30)
    assert state.stdout.strip() == "0"       # summa-worker's own SIGTERM path, not a SIGKILL
    assert "summa-worker: stopped" in _logs(name)
