"""A real Docker engine for the tests: skip without one, unless SUMMA_REQUIRE_DOCKER=1."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "summa-aggregation:test"
LOCAL_BASE = "summa-base:bookworm"
_built = []


def _docker(*args, timeout=120):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def require_engine(swarm=False):
    """Skip (or fail under SUMMA_REQUIRE_DOCKER=1) without an engine, or without a Swarm."""
    missing = None
    if not shutil.which("docker") or _docker("info").returncode != 0:
        missing = "no Docker engine answers (bash scripts/start-docker.sh)"
    elif swarm and _docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() != "active":
        missing = "this engine is not in a Swarm (bash scripts/start-docker.sh --swarm)"
    if missing:
        if os.environ.get("SUMMA_REQUIRE_DOCKER") == "1":
            pytest.fail(f"SUMMA_REQUIRE_DOCKER=1 but {missing}")
        pytest.skip(missing)


def build_image():
    """The project image, built once per test session from the working tree.

    Its base is SUMMA_BASE_IMAGE if set, else the local base of scripts/docker-base-image.sh
    (summa-base:bookworm) if it exists, else the Dockerfile's default (needs a registry)."""
    if not _built:
        base = os.environ.get("SUMMA_BASE_IMAGE")
        if not base and _docker("image", "inspect", LOCAL_BASE).returncode == 0:
            base = LOCAL_BASE
        args = ["build", "--network", "host", "-t", IMAGE, ROOT]
        if base:
            args[1:1] = ["--build-arg", f"BASE_IMAGE={base}"]
        built = _docker(*args, timeout=900)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        _built.append(IMAGE)
    return IMAGE


def labelled_containers(owner=None):
    """Names of containers (any state) that carry our worker label."""
    label = ["--filter", "label=summa-aggregation.role=worker"]
    if owner:
        label += ["--filter", f"label=summa-aggregation.owner={owner}"]
    result = _docker("ps", "-a", "--format", "{{.Names}}", *label)
    return [name for name in result.stdout.split() if name]


def services(prefix):
    result = _docker("service", "ls", "--format", "{{.Name}}")
    return [name for name in result.stdout.split() if name.startswith(prefix)]


def inspect(*names, kind="container"):
    """`docker KIND inspect NAME...`, parsed (one dict per name)."""
    import json
    result = _docker(kind, "inspect", *names)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def running_task_containers(service):
    """Names of the running containers of a Swarm service's tasks on this engine."""
    result = _docker("ps", "--filter", f"label=com.docker.swarm.service.name={service}",
                     "--filter", "status=running", "--format", "{{.Names}}")
    return [name for name in result.stdout.split() if name]


def execute(container, *command):
    """`docker exec CONTAINER COMMAND...` -> CompletedProcess (text)."""
    return _docker("exec", container, *command, timeout=60)
