"""The import rules of the layout (README, "Layout of the code"), checked on the code itself.

Every import of every module is read with ast (a .pyx file line by line), inside functions too,
and resolved to the module it names: a forbidden import fails here, not in a review.
"""
import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "summa_aggregation"
FOLDERS = ("cython_ext", "mst", "wire", "worker", "daemon")
STDLIB = set(sys.stdlib_module_names)
_PYX_IMPORT = re.compile(r"^\s*(?:from\s+(\.*[\w.]*)\s+c?import|c?import\s+([\w.]+))", re.M)


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _absolute(name, level, module, is_package):
    if not level:
        return name
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(path):
    """The absolute names of every module `path` imports (for `from X import y`, X and X.y)."""
    module, is_package = module_name(path), path.stem == "__init__"
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".pyx":
        found = set()
        for relative, plain in _PYX_IMPORT.findall(text):
            name = relative or plain
            level = len(name) - len(name.lstrip("."))
            found.add(_absolute(name.lstrip("."), level, module, is_package))
        return found
    found = set()
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, module, is_package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def modules(folder):
    return sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".pyx"))


def ours(name):
    """The part of ours that `name` belongs to (cython_ext, mst, ...), or None."""
    pieces = name.split(".")
    return pieces[1] if pieces[0] == PACKAGE and len(pieces) > 1 else None


def violations(folder, allowed):
    """(file, import) pairs where `allowed(name)` is False."""
    return [(str(p.relative_to(ROOT)), name) for p in modules(folder)
            for name in sorted(imports_of(p)) if name != PACKAGE and not allowed(name)]


def test_the_folders_exist_and_hold_code():
    for folder in FOLDERS:
        assert modules(folder), f"{folder}/ holds no module"


def test_the_kernel_imports_nothing_of_ours_and_does_no_io():
    allowed = {"os", "functools", "libc", "cpython"}   # os: SUMMA_KERNEL only; libc, cpython: Cython's C declarations
    # Crypto: pycryptodome's Keccak-256, the reference's (a test dependency), never the kernel's
    found = violations("cython_ext", lambda n: ours(n) == "cython_ext" or
                       (ours(n) is None and n.split(".")[0] in allowed))
    assert [v for v in found if not (str(v[0]).endswith("reference.py") and
                                     str(v[1]).startswith("Crypto."))] == [], found
    for path in modules("cython_ext"):
        assert not re.search(r"\bopen\(", path.read_text(encoding="utf-8")), \
            f"{path}: the kernel does no I/O"


def test_the_tree_library_imports_only_the_kernel():
    def allowed(name):
        return ours(name) in ("cython_ext", "mst") or (ours(name) is None and
                                                        name.split(".")[0] in STDLIB)
    assert violations("mst", allowed) == []


def test_the_wire_imports_only_pyzmq_msgpack_and_the_standard_library():
    def allowed(name):
        top = name.split(".")[0]
        return ours(name) == "wire" or (ours(name) is None and (top in STDLIB or top in ("zmq", "msgpack")))
    assert violations("wire", allowed) == []


def test_the_worker_never_imports_the_daemon():
    assert violations("worker", lambda n: ours(n) != "daemon") == []


def test_spawners_never_import_the_worker():
    assert violations("daemon/spawners", lambda n: ours(n) != "worker") == []
    # they start it by name, as a program
    assert "summa_aggregation.worker.cli" in (ROOT / "daemon/spawners/mock.py").read_text()


def test_the_rest_of_the_daemon_does_not_either():
    """The daemon knows the wire, not how a worker builds a tree."""
    assert violations("daemon", lambda n: ours(n) != "worker") == []


@pytest.mark.parametrize("source,expected", [
    ("from ..wire import keys\n", {"summa_aggregation.wire", "summa_aggregation.wire.keys"}),
    ("from . import wire\n", {"summa_aggregation.daemon", "summa_aggregation.daemon.wire"}),
    ("def f():\n    import docker\n", {"docker"}),
])
def test_the_checker_resolves_imports(tmp_path, source, expected, monkeypatch):
    """The rules above are only as good as this resolution: relative, nested, late imports."""
    folder = tmp_path / "daemon"
    folder.mkdir()
    path = folder / "probe.py"
    path.write_text(source, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imports_of(path) == expected
