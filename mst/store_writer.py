"""Writing a version-2 result directory while the job runs (the format: store.py).

The loader appends entries (usernames.bin, balances.bin) and feeds the username index; the
checker writes each checked unit's nodes at its slot of nodes.bin; at the end the upper tree,
the index and the manifest are written. Everything goes into a temporary directory beside
the target, fsynced, and renamed into place last: a directory with the target's name is
always complete. SHA-256s are computed as the bytes are written: sequential files as one
stream, nodes.bin (written out of order) slot by slot, its digest being the SHA-256 of the
slots' digests in order.
"""
import collections
import hashlib
import json
import os
import shutil
import tempfile
import threading
from array import array

from ..cython_ext import _records
from ..cython_ext.params import WORD
from .csv_reader import word_to_username
from .index import IndexBuilder, new_key
from .limits import DEFAULT_USERNAME_ENCODING, check_username_encoding, record_bytes
from .store_v1 import StoreError, fsync_dir, publish

FORMAT = "summa-aggregation-result"
VERSION = 2
STORED_FROM_LEVEL = 2    # levels 0 and 1 are recomputed from the entries at proof time


def narrow_record_bytes(n_currencies, n_bytes):
    return WORD + n_currencies * n_bytes


def stored_records(unit_depth):
    """Node records of one unit kept in nodes.bin: its levels 2 .. k-1."""
    return max((1 << (unit_depth - 1)) - 2, 0) if unit_depth >= 1 else 0


class Stream:
    """An append-only file and its running SHA-256."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.digest, self.size = hashlib.sha256(), 0

    def append(self, data):
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.size += len(view)
        while view:
            view = view[os.write(self.fd, view):]

    def entry(self):
        return {"bytes": self.size, "sha256": self.digest.hexdigest()}


JOURNAL = "units.journal"


class Journal:
    """The units a job has stored: after its slot of nodes.bin is fdatasynced, each checked unit
    appends (serial, wide root record, slot SHA-256, a check of those) and fdatasyncs; only
    then does the job count it done. A header names the unit shape (unit depth, currencies,
    N_BYTES). Reading stops at the first record that is torn or does not check."""

    MAGIC = b"summa-units-1\n"

    def __init__(self, fd, root_bytes):
        self.fd, self.root_bytes = fd, root_bytes

    @classmethod
    def create(cls, path, shape, root_bytes, kept):
        """A fresh journal holding `kept` (serial -> (root, digest)), written whole, then the
        file to append to."""
        temporary = path + ".new"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        journal = cls(fd, root_bytes)
        os.write(fd, cls.MAGIC + json.dumps(list(shape)).encode() + b"\n")
        for serial in sorted(kept):
            journal._write(serial, *kept[serial])
        os.fdatasync(fd)
        os.rename(temporary, path)
        fsync_dir(os.path.dirname(path))
        return journal

    def _write(self, serial, root, digest):
        body = serial.to_bytes(8, "little") + bytes(root) + digest
        record = body + hashlib.sha256(body).digest()[:8]
        view = memoryview(record)
        while view:
            view = view[os.write(self.fd, view):]

    def append(self, serial, root, digest):
        self._write(serial, root, digest)
        os.fdatasync(self.fd)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def read(path):
        """The journal's shape and units (serial -> (root, digest)), or None without one."""
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        if not data.startswith(Journal.MAGIC) or b"\n" not in data[len(Journal.MAGIC):]:
            return None
        head, _, body = data[len(Journal.MAGIC):].partition(b"\n")
        try:
            unit_depth, n, n_bytes = json.loads(head)
        except (ValueError, TypeError):
            return None
        root_bytes = record_bytes(n)
        size = 8 + root_bytes + 32 + 8
        units = {}
        for start in range(0, len(body) - size + 1, size):
            record = body[start:start + size]
            if hashlib.sha256(record[:-8]).digest()[:8] != record[-8:]:
                break
            serial = int.from_bytes(record[:8], "little")
            units[serial] = (record[8:8 + root_bytes], record[8 + root_bytes:-8])
        return Earlier((unit_depth, n, n_bytes), units)


Earlier = collections.namedtuple("Earlier", "shape units")   # a journal read back


NAMES, NAME_ENDS = "names.bin", "name-ends.bin"


class ResultWriter:
    def __init__(self, target, n_bytes, n_currencies=None, resume=None,
                 username_encoding=DEFAULT_USERNAME_ENCODING):
        """resume: the partial directory of an earlier, interrupted run of the same job; its
        journaled units are kept (set_unit_depth decides whether they still fit).

        username_encoding: under keccak256 a username word is a digest, which cannot be read
        back, so the usernames themselves are stored too (names.bin, name-ends.bin)."""
        self.username_encoding = check_username_encoding(username_encoding)
        self.target = os.path.abspath(target)
        if os.path.lexists(self.target):
            raise StoreError(f"{self.target}: already exists (results are never overwritten)")
        self.parent = os.path.dirname(self.target)
        os.makedirs(self.parent, exist_ok=True)
        if resume and os.path.isdir(resume):
            self.directory, self.earlier = resume, Journal.read(os.path.join(resume, JOURNAL))
        else:
            self.directory = tempfile.mkdtemp(dir=self.parent,
                                              prefix=f".{os.path.basename(self.target)}.partial-")
            self.earlier = None
        self.journal, self.journaled = None, {}
        self.n_bytes = n_bytes
        self.set_currencies(n_currencies)
        self.usernames = Stream(os.path.join(self.directory, "usernames.bin"))
        self.balances = Stream(os.path.join(self.directory, "balances.bin"))
        self.names = self.name_ends = None
        if self.username_encoding != "bytes":
            self.names = Stream(os.path.join(self.directory, NAMES))
            self.name_ends = Stream(os.path.join(self.directory, NAME_ENDS))
        self.index_key = new_key()
        self.index = IndexBuilder(self.directory, self.index_key)
        self.files = {}
        self.entries = 0
        self.unit_depth, self.slot_bytes, self.nodes_fd, self.slot_digests = None, 0, None, {}
        self.lock = threading.Lock()

    def set_currencies(self, n_currencies):
        self.n = n_currencies
        self.narrow = narrow_record_bytes(n_currencies or 0, self.n_bytes)

    # ---- entries (the loader's thread) ----------------------------------------------------

    def append_entries(self, usernames, balances, count, names=None, lengths=None):
        """count username words (32 bytes) and count * N narrow balances (n_bytes each);
        names (their UTF-8 bytes, concatenated) and lengths (count uint32 LE) are needed
        under keccak256 only, and ignored otherwise."""
        if self.names is not None:
            if names is None or lengths is None:
                raise ValueError("append_entries: the usernames themselves are needed under "
                                 "keccak256")
            ends = array("Q", bytes(8 * count))
            end = _records.ends_of(memoryview(lengths).cast("B").cast("I"), self.names.size,
                                   memoryview(ends))
            self.names.append(names)
            if end != self.names.size:
                raise ValueError("append_entries: the lengths do not add up to the names")
            self.name_ends.append(ends)
        self.usernames.append(usernames)
        self.balances.append(balances)
        self.index.add(usernames, count)
        self.entries += count

    def username_at(self, position):
        """The username of the entry at `position` (written already)."""
        if self.names is None:
            return word_to_username(os.pread(self.usernames.fd, WORD, WORD * position))
        return self._name(position).decode("utf-8", "replace")

    def _name(self, position):
        ends = os.pread(self.name_ends.fd, 16, 8 * (position - 1)) if position else \
            bytes(8) + os.pread(self.name_ends.fd, 8, 0)
        start, end = int.from_bytes(ends[:8], "little"), int.from_bytes(ends[8:16], "little")
        return os.pread(self.names.fd, end - start, start)

    def read_entries(self, position, count):
        """(username words, WIDE balance words) of entries [position, position + count)."""
        usernames = os.pread(self.usernames.fd, WORD * count, WORD * position)
        width = self.n * self.n_bytes
        narrow = os.pread(self.balances.fd, width * count, width * position)
        if len(usernames) != WORD * count or len(narrow) != width * count:
            raise StoreError(f"{self.directory}: entries {position}..{position + count} not written yet")
        wide = bytearray(WORD * self.n * count)
        _records.widen(narrow, self.n * count, self.n_bytes, wide)
        return usernames, wide

    def same_username(self, p, q):
        """Whether entries p and q have one username: the words say it under bytes (a word is
        the username); under keccak256 equal digests are only a hint, the names decide."""
        same = os.pread(self.usernames.fd, WORD, WORD * p) == os.pread(self.usernames.fd, WORD, WORD * q)
        return same and (self.names is None or self._name(p) == self._name(q))

    def finish_index(self):
        """Write the index: the duplicates as (first, later) positions (see index.py)."""
        duplicates, files = self.index.finish(self.same_username)
        self.files.update(files)
        return duplicates

    def sync_entries(self):
        """fsync what the loader wrote, while the workers still build (not at the end)."""
        for stream in self._entry_streams():
            os.fsync(stream.fd)

    def _entry_streams(self):
        return [s for s in (self.usernames, self.balances, self.names, self.name_ends) if s is not None]

    # ---- unit nodes (the checker's thread) ------------------------------------------------

    def set_unit_depth(self, unit_depth):
        """Open nodes.bin and the journal for units of depth k; an earlier run's journaled
        units are kept when they are units of the same shape and their slots still hold what
        the journal says (each re-hashed), else everything starts afresh."""
        self.unit_depth = unit_depth
        self.slot_bytes = stored_records(unit_depth) * self.narrow
        shape = (unit_depth, self.n, self.n_bytes)
        keep = self.earlier is not None and self.earlier.shape == shape
        self.nodes_fd = os.open(os.path.join(self.directory, "nodes.bin"),
                                os.O_RDWR | os.O_CREAT | (0 if keep else os.O_TRUNC), 0o644)
        if keep:
            self.journaled = {serial: (root, digest) for serial, (root, digest)
                              in self.earlier.units.items() if self._slot_digest(serial) == digest}
        self.journal = Journal.create(os.path.join(self.directory, JOURNAL), shape,
                                      record_bytes(self.n), self.journaled)

    def _slot_digest(self, serial):
        data = os.pread(self.nodes_fd, self.slot_bytes, self.slot_bytes * serial)
        return hashlib.sha256(data).digest() if len(data) == self.slot_bytes else None

    def reuse(self, serial):
        """The root record of unit `serial` if an earlier run stored and journaled it, else None
        (its slot digest then counts as written)."""
        earlier = self.journaled.get(serial)
        if earlier is None:
            return None
        with self.lock:
            self.slot_digests[serial] = earlier[1]
        return earlier[0]

    def write_unit(self, serial, nodes):
        """Narrow a checked unit's levels 2..k-1 (a wide Levels buffer) into its slot.

        Returns None, or why the nodes cannot be stored (a balance wider than N_BYTES: a
        worker's lie, since every sum under a checked root fits)."""
        k, wide = self.unit_depth, record_bytes(self.n)
        count = stored_records(k)
        out = bytearray(count * self.narrow)
        if count:
            start = wide * ((2 << k) - (2 << (k - 2)))       # Levels.offset(2)
            bad = _records.narrow_records(memoryview(nodes)[start:start + count * wide], count,
                                          self.n, self.n_bytes, out)
            if bad >= 0:
                return f"node record {bad} above level 1 holds a balance wider than N_BYTES"
            view = memoryview(out)
            offset = self.slot_bytes * serial
            while view:
                written = os.pwrite(self.nodes_fd, view, offset)
                view, offset = view[written:], offset + written
            os.fdatasync(self.nodes_fd)      # the slot is durable before its journal record
        digest = hashlib.sha256(out).digest()
        with self.lock:
            self.slot_digests[serial] = digest
        wide_root = memoryview(nodes)[len(nodes) - wide:]
        self.journal.append(serial, wide_root, digest)   # durable: the unit counts as done
        return None

    # ---- the end ----------------------------------------------------------------------------

    def finish(self, shape, upper, manifest, before_publish=lambda: None):
        """Write upper.bin and the manifest, fsync, and publish under the target's name;
        before_publish may still refuse (raise) once everything but the rename is done."""
        files = self.files
        files["usernames.bin"], files["balances.bin"] = self.usernames.entry(), self.balances.entry()
        if self.names is not None:
            files[NAMES], files[NAME_ENDS] = self.names.entry(), self.name_ends.entry()
        digests = [self.slot_digests[s] for s in range(shape.units)]
        files["nodes.bin"] = {"bytes": self.slot_bytes * shape.units,
                              "sha256": hashlib.sha256(b"".join(digests)).hexdigest(),
                              "sha256_of_slots": self.slot_bytes} if self.slot_bytes else \
            {"bytes": 0, "sha256": hashlib.sha256().hexdigest()}
        upper_stream = Stream(os.path.join(self.directory, "upper.bin"))
        upper_stream.append(upper.nodes)
        files["upper.bin"] = upper_stream.entry()
        manifest = {"format": FORMAT, "version": VERSION, **manifest, "files": files,
                    "index_key": ["%016x" % part for part in self.index_key]}
        for fd in [s.fd for s in self._entry_streams()] + [self.nodes_fd, upper_stream.fd]:
            os.fsync(fd)
        os.close(upper_stream.fd)
        with open(os.path.join(self.directory, "manifest.json"), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(manifest, indent=1) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._close()
        fsync_dir(self.directory)
        before_publish()          # the last moment a cancellation can still win
        publish(self.directory, self.target)
        try:                      # not part of the result (the manifest does not list it)
            os.unlink(os.path.join(self.target, JOURNAL))
            fsync_dir(self.target)
        except OSError:
            pass
        return self.target

    def _close(self):
        if self.journal is not None:
            self.journal.close()
        for stream in self._entry_streams():
            stream.fd = _closed(stream.fd)
        self.nodes_fd = _closed(self.nodes_fd)

    def close(self):
        """Stop writing and keep what is written: the partial directory a resumed job reuses."""
        if self.index.fds:
            self.index.close()
        self._close()

    def abort(self):
        """Remove everything written: a failed job leaves nothing that looks like a result."""
        if self.index.fds:
            self.index.close()
        self._close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _closed(fd):
    """Close a descriptor that may be None or gone already: what it is afterwards (None)."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
