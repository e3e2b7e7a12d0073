"""The result directory: the whole aggregated tree in packed binary, plus a JSON manifest.

    manifest.json    what the files hold (layout, depths, counts, currencies, root, sizes, sha256)
    usernames.bin    mini_count * 2^mini_depth words; a zero word marks a padding leaf
    minitrees.bin    mini_count node buffers, each (2^(mini_depth+1) - 1) records, leaves first
    top.bin          the aggregation tree's node buffer, its leaves being the mini-tree roots

A record is 1 + N little-endian 32-byte words (hash, balances). The directory is written under
a temporary name beside DIR, fsynced, and renamed into place last (never over an existing
DIR), so a directory named DIR is always complete; load() checks every file's size and
SHA-256 against the manifest.
"""
import ctypes
import errno
import hashlib
import json
import mmap
import os
import shutil
import tempfile

from ..cython_ext.params import WORD
from .limits import tree_bytes
from .tree import AggregationMerkleSumTree, Levels, MerkleSumTree

FORMAT = "summa-aggregation-result"
VERSION = 1


class StoreError(ValueError):
    """A result directory that cannot be written or read; the message names it."""


def _write(directory, name, chunks, files):
    digest, size = hashlib.sha256(), 0
    with open(os.path.join(directory, name), "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    files[name] = {"bytes": size, "sha256": digest.hexdigest()}


def fsync_dir(path):
    """Make the names in directory `path` durable (a rename is only in its directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temporary, directory):
    """Rename temporary to directory, never replacing anything already there, and fsync the
    parent directories, so that the new name survives a crash.

    Plain rename() silently replaces an empty directory, so use renameat2(RENAME_NOREPLACE)
    where the C library and file system offer it, and a checked rename elsewhere."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if renameat2(at_fdcwd, os.fsencode(temporary), at_fdcwd, os.fsencode(directory),
                     rename_noreplace) == 0:
            return _fsync_parents(temporary, directory)
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise StoreError(f"{directory}: already exists (results are never overwritten)")
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), directory)
    if os.path.lexists(directory):
        raise StoreError(f"{directory}: already exists (results are never overwritten)")
    os.rename(temporary, directory)
    _fsync_parents(temporary, directory)


def _fsync_parents(temporary, directory):
    """Both parents: the new name in one, the old one gone from the other (if elsewhere)."""
    parents = {os.path.dirname(os.path.abspath(p)) for p in (directory, temporary)}
    for parent in sorted(parents):
        fsync_dir(parent)


def save(tree, directory, n_bytes, extra=None):
    """Write an AggregationMerkleSumTree to `directory`, which must not exist yet."""
    directory = os.path.abspath(directory)
    if os.path.exists(directory):
        raise StoreError(f"{directory}: already exists (results are never overwritten)")
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(directory)}.partial-")
    try:
        files = {}
        width = 1 << tree.mini_depth
        _write(temporary, "usernames.bin",
               (bytes(m.usernames[0:m.count * WORD]) + bytes(WORD * (width - m.count))
                for m in tree.mini_trees), files)
        _write(temporary, "minitrees.bin", (bytes(m.levels.nodes) for m in tree.mini_trees), files)
        _write(temporary, "top.bin", [bytes(tree.top.nodes)], files)
        manifest = {
            "format": FORMAT, "version": VERSION, "layout": tree.layout,
            "n_currencies": tree.n_currencies, "currencies": tree.currencies, "n_bytes": n_bytes,
            "mini_depth": tree.mini_depth, "top_depth": tree.top.depth,
            "mini_count": len(tree.mini_trees), "entry_counts": [m.count for m in tree.mini_trees],
            "entries": tree.count, "root": tree.root.to_json(), "files": files, **(extra or {}),
        }
        _write(temporary, "manifest.json", [json.dumps(manifest, indent=1).encode() + b"\n"], {})
        fsync_dir(temporary)
        publish(temporary, directory)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return directory


class _Window:
    """A read-only slice of a mapped file that still offers find(), as bytes do."""

    def __init__(self, buffer, start, end):
        self.buffer, self.start, self.end = buffer, start, end

    def find(self, sub, pos=0):
        found = self.buffer.find(sub, self.start + pos, self.end)
        return -1 if found < 0 else found - self.start

    def __getitem__(self, part):
        return self.buffer[self.start + part.start:self.start + part.stop]

    def __len__(self):
        return self.end - self.start


def _map(directory, name, expected):
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size != expected:
                raise StoreError(f"{path}: {size} bytes, the manifest says {expected}")
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as error:
        raise StoreError(f"{path}: cannot read: {error.strerror}") from None


def _check_sha256(directory, name, buffer, expected):
    if hashlib.sha256(buffer).hexdigest() != expected:
        raise StoreError(f"{os.path.join(directory, name)}: contents do not match the manifest's "
                         f"sha256 (the file is damaged)")


def load(directory, check_sha256=True):
    """Open a result directory (memory-mapped, read-only) as an AggregationMerkleSumTree.

    Every file's SHA-256 is checked against the manifest unless check_sha256 is false
    (about 0.3 s for a 2^20-entry tree)."""
    path = os.path.join(directory, "manifest.json")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except OSError as error:
        raise StoreError(f"{path}: cannot read: {error.strerror} (is this a result directory?)") from None
    except ValueError:
        raise StoreError(f"{path}: not valid JSON") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise StoreError(f"{path}: not a version {VERSION} {FORMAT} manifest")
    try:
        n, d, m = manifest["n_currencies"], manifest["mini_depth"], manifest["mini_count"]
        files, layout, counts = manifest["files"], manifest["layout"], manifest["entry_counts"]
        per_tree = tree_bytes(d, n)
        usernames = _map(directory, "usernames.bin", files["usernames.bin"]["bytes"])
        nodes = _map(directory, "minitrees.bin", files["minitrees.bin"]["bytes"])
        top_nodes = _map(directory, "top.bin", files["top.bin"]["bytes"])
        if len(usernames) != m * WORD << d or len(nodes) != m * per_tree:
            raise StoreError(f"{directory}: file sizes do not match the manifest's shape")
        if check_sha256:
            for name, buffer in (("usernames.bin", usernames), ("minitrees.bin", nodes),
                                 ("top.bin", top_nodes)):
                _check_sha256(directory, name, buffer, files[name]["sha256"])
        width = WORD << d
        minis = [MerkleSumTree(Levels(memoryview(nodes)[i * per_tree:(i + 1) * per_tree], d, n),
                               _Window(usernames, i * width, i * width + counts[i] * WORD),
                               counts[i], layout, manifest["currencies"]) for i in range(m)]
        top = Levels(memoryview(top_nodes), manifest["top_depth"], n)
        tree = AggregationMerkleSumTree(minis, layout, manifest["n_bytes"], top=top)
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, StoreError):
            raise
        raise StoreError(f"{directory}: inconsistent result directory ({error})") from None
    if tree.root.to_json() != manifest["root"]:
        raise StoreError(f"{directory}: top.bin does not hold the manifest's root")
    return tree, manifest
