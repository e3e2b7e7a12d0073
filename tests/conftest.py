"""Shared fixtures: test data paths, vectors.json, kernel backends, layouts, console scripts.

Tests read only the copies under tests/data (never ../shared).
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from summa_aggregation.cython_ext import _kernel
from summa_aggregation.cython_ext.params import LAYOUTS

from worker_helpers import Sockets

DATA_DIR = Path(__file__).parent / "data"
FIXTURES_DIR = DATA_DIR / "fixtures"
VECTORS_PATH = DATA_DIR / "vectors.json"
BIN_DIR = Path(os.path.dirname(sys.executable))
LAYOUT_NAMES = LAYOUTS
BACKENDS = _kernel.BACKENDS   # every backend; those this CPU lacks are skipped


def load_vectors():
    with open(VECTORS_PATH, encoding="utf-8") as handle:
        return json.load(handle)


_VECTORS = load_vectors()


def read_entries(path):
    """(username, [balances]) pairs of a fixture CSV, read with the stdlib only.

    Independent of csv_reader so that the reference side of a comparison shares no code
    with the library under test.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    return [(row[0], [int(x) for x in row[1:]]) for row in rows[1:]]


def node_json(node):
    """A reference (hash, balances) node as the JSON of SPEC section 5."""
    value, balances = node
    return {"hash": "0x%064x" % value, "balances": ["0x%064x" % b for b in balances]}


def levels_json(levels):
    return [[node_json(node) for node in level] for level in levels]


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def data_dir():
    return DATA_DIR


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def vectors():
    """vectors.json, parsed once per session: tests read it and never modify it."""
    return load_vectors()


@pytest.fixture(scope="session")
def entries_of():
    """entries_of('entry_16.csv') -> [(username, [balances]), ...] via the stdlib csv module."""
    return lambda name: read_entries(FIXTURES_DIR / name)


@pytest.fixture(scope="session")
def to_node_json():
    return node_json


@pytest.fixture(scope="session")
def to_levels_json():
    return levels_json


@pytest.fixture(params=LAYOUT_NAMES)
def tree_layout(request):
    """Each of the two middle-node layouts of SPEC section 2."""
    return request.param


@pytest.fixture(params=BACKENDS)
def kernel_backend(request):
    """Run the test with the kernel forced to each backend; restore the original after.

    A backend is skipped only where the CPU lacks it (set_backend raises KernelError).
    """
    original = _kernel.backend()
    try:
        _kernel.set_backend(request.param)
    except _kernel.KernelError as error:
        pytest.skip(f"kernel backend {request.param!r} unavailable here: {error}")
    assert _kernel.backend() == request.param
    try:
        yield request.param
    finally:
        _kernel.set_backend(original)


@pytest.fixture(params=sorted(k for k in _VECTORS["layouts"]["interleaved"]
                              if k.startswith("root_of_") and k.endswith(".csv")))
def root_vector_name(request):
    """Each 'root_of_<file>' key of vectors.json (the file is under tests/data/fixtures)."""
    return request.param


@pytest.fixture(params=sorted(_VECTORS["hash"]))
def hash_vector_key(request):
    """Each key of the 'hash' section of vectors.json (comma-separated inputs)."""
    return request.param


@pytest.fixture(scope="session")
def bin_dir():
    return BIN_DIR


def _run_script(name, *args, input=None, cwd=None, env=None, timeout=60):
    path = BIN_DIR / name
    assert path.exists(), f"console script {name} is not installed in {BIN_DIR}"
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([str(path), *map(str, args)], input=input, capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=timeout)


@pytest.fixture(scope="session")
def run_script():
    """run_script('summa-verify', arg, ..., input=None, cwd=None, env=None) -> CompletedProcess.

    Runs the console script from the venv's bin directory (beside sys.executable).
    """
    return _run_script


@pytest.fixture
def worker_process():
    """A real summa-worker on a free port of 127.0.0.1 for one test, stopped after it."""
    from worker_helpers import WorkerProcess
    process = WorkerProcess()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def no_worker_left_behind():
    """Every daemon a test started (daemon_helpers.DaemonProcess) is stopped after it, and none
    of its workers may outlive it."""
    import daemon_helpers
    from worker_helpers import wait_until
    daemon_helpers.STARTED.clear()
    yield
    started = list(daemon_helpers.STARTED)
    daemon_helpers.STARTED.clear()
    for daemon in started:
        daemon.stop()
    for daemon in started:
        try:
            wait_until(lambda: not daemon.workers_left(), seconds=10, interval=0.05)
        except AssertionError:
            raise AssertionError(f"workers of daemon pid {daemon.pid} still alive: "
                                 f"{sorted(daemon.workers_left())}") from None


@pytest.fixture
def sockets():
    """Sockets made for one test (linger 0), closed after it."""
    factory = Sockets()
    yield factory
    factory.close()
