"""The username index of a result: duplicates found exactly, usernames found in O(log n).

Each entry's username word gets a keyed 64-bit fingerprint; (fingerprint, position) pairs are
spilled while loading into BUCKETS files by the fingerprint's top bits, so the daemon holds
only one spill buffer. At the end each bucket is radix-sorted (in C) and appended to two
files, which together are the index, sorted by fingerprint:

    index-keys.bin        n little-endian u64 fingerprints, ascending
    index-positions.bin   n little-endian u64 entry positions (input order), same order

Equal neighbouring fingerprints are confirmed against the stored username words: only a real
duplicate is an error, a collision costs one comparison. A lookup is a binary search over the
memory-mapped keys, then the same confirmation.
"""
import hashlib
import os
import secrets
from array import array

from ..cython_ext import _records

BUCKET_BITS = 6
BUCKETS = 1 << BUCKET_BITS
SPILL = 1 << 18           # pairs held before they are spilled to the bucket files
KEYS, POSITIONS = "index-keys.bin", "index-positions.bin"


def new_key():
    return [secrets.randbits(64), secrets.randbits(64)]


def fingerprints(usernames, count, key):
    out = array("Q", bytes(8 * count))
    _records.fingerprints(usernames, count, key[0], key[1], memoryview(out))
    return out


class IndexBuilder:
    """Takes username words in input order; finish() writes the index and names duplicates."""

    def __init__(self, directory, key):
        self.directory, self.key = directory, key
        self.spill_dir = os.path.join(directory, ".index-buckets")
        os.makedirs(self.spill_dir, exist_ok=True)
        self.fds = [os.open(os.path.join(self.spill_dir, f"{b:02d}"),
                            os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) for b in range(2 * BUCKETS)]
        self.keys, self.positions, self.count = array("Q"), array("Q"), 0

    def add(self, usernames, count):
        """The next `count` username words (their positions follow the ones before)."""
        self.keys.extend(fingerprints(usernames, count, self.key))
        positions = array("Q", bytes(8 * count))
        _records.count_up(memoryview(positions), self.count)
        self.positions.extend(positions)
        self.count += count
        if len(self.keys) >= SPILL:
            self._spill()

    def _spill(self):
        n = len(self.keys)
        if not n:
            return
        keys, positions = array("Q", bytes(8 * n)), array("Q", bytes(8 * n))
        starts = array("q", bytes(8 * (BUCKETS + 1)))
        _records.partition(memoryview(self.keys), memoryview(self.positions), memoryview(keys),
                           memoryview(positions), memoryview(starts), BUCKET_BITS)
        kv, pv = memoryview(keys).cast("B"), memoryview(positions).cast("B")
        for b in range(BUCKETS):
            lo, hi = 8 * starts[b], 8 * starts[b + 1]
            if hi > lo:
                _write_all(self.fds[2 * b], kv[lo:hi])
                _write_all(self.fds[2 * b + 1], pv[lo:hi])
        self.keys, self.positions = array("Q"), array("Q")

    def finish(self, same_username):
        """Write the index; return the duplicates as (first position, later position) pairs,
        one per later occurrence, sorted by it (empty when all unique).

        same_username(p, q): whether the entries at positions p and q share a username."""
        self._spill()
        duplicates = []
        files = {}
        with _Sink(self.directory, KEYS, files) as keys_out, \
                _Sink(self.directory, POSITIONS, files) as positions_out:
            for b in range(BUCKETS):
                keys = _read_all(self.fds[2 * b])
                positions = _read_all(self.fds[2 * b + 1])
                _records.sort_pairs(memoryview(keys), memoryview(positions))
                duplicates += _confirm(keys, positions, same_username)
                keys_out.write(memoryview(keys).cast("B"))
                positions_out.write(memoryview(positions).cast("B"))
        self.close()
        duplicates.sort(key=lambda pair: pair[1])
        return duplicates, files

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        for name in os.listdir(self.spill_dir):
            os.unlink(os.path.join(self.spill_dir, name))
        os.rmdir(self.spill_dir)


def _confirm(keys, positions, same_username):
    """Runs of equal fingerprints -> (first, later) positions of the same username."""
    found, seen_later = [], set()
    for i in _records.equal_runs(memoryview(keys)):
        first = i
        while first > 0 and keys[first - 1] == keys[i]:
            first -= 1
        later = positions[i + 1]
        if later in seen_later:
            continue
        # the earliest entry of the run with this username (positions ascend within a run)
        for j in range(first, i + 1):
            if same_username(positions[j], later):
                found.append((positions[j], later))
                seen_later.add(later)
                break
    return found


def lookup(keys, positions, fingerprint, holds):
    """The position whose username `holds(position)` confirms, among the fingerprint's run."""
    i = _records.lower_bound(keys, fingerprint)
    while i < len(keys) and keys[i] == fingerprint:
        if holds(positions[i]):
            return positions[i]
        i += 1
    return None


class _Sink:
    """A file written in order, its SHA-256 computed as it goes, fsynced at the end."""

    def __init__(self, directory, name, files):
        self.name, self.files = name, files
        self.fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.digest, self.size = hashlib.sha256(), 0

    def write(self, data):
        _write_all(self.fd, data)
        self.digest.update(data)
        self.size += len(data)

    def __enter__(self):
        return self

    def __exit__(self, *error):
        try:
            if error[0] is None:
                os.fsync(self.fd)
                self.files[self.name] = {"bytes": self.size, "sha256": self.digest.hexdigest()}
        finally:
            os.close(self.fd)


def _write_all(fd, data):
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd):
    size = os.fstat(fd).st_size
    out = array("Q", bytes(size))
    view = memoryview(out).cast("B")
    done = 0
    while done < size:
        got = os.preadv(fd, [view[done:]], done)
        if got <= 0:
            raise OSError(f"index spill file ended early ({done} of {size} bytes)")
        done += got
    return out
