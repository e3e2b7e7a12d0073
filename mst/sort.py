"""A global sort of a job's entries by username bytes in bounded memory (SPEC section 7).

Entries come in input order (add); up to the memory budget they are held in one C batch
(cython_ext/_sort.pyx), sorted and, when more come, written out as a sorted run file; merge
then merges the runs (or emits the one batch) in segments, and finds duplicate usernames on
the way: equal names end up adjacent. Beyond FAN_IN runs, merge passes combine runs into
fewer, longer ones first, so that every run still gets a read buffer of a useful size.

The order: the names' UTF-8 bytes (memcmp over the common length, then the shorter first),
then the input position. The run files (records as _sort.pyx describes them) live in a
subdirectory of the directory given, created at the first spill and removed by close(),
which merge and duplicate call whatever happens.
"""
import os
import shutil
import tempfile
from collections import namedtuple

from ..cython_ext import _sort
from ..cython_ext.params import WORD

DEFAULT_MEMORY_BYTES = 256 << 20
SEGMENT = 65536          # entries per emitted segment
FAN_IN = 256             # runs merged at once
MIN_IO = 4 << 10         # the smallest I/O buffer, whatever the budget
MAX_IO = 4 << 20         # the largest write and read of a run file at a time
RUN_DIR_PREFIX = ".sort-runs-"

Duplicate = namedtuple("Duplicate", "first later name")   # input positions, the name's bytes


SortError = _sort.SortError   # entries that do not match the counts, or a damaged run file


def _bytes(view):
    view = memoryview(view)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class Sorter:
    def __init__(self, directory, n_currencies, n_bytes, memory_bytes=DEFAULT_MEMORY_BYTES,
                 fan_in=FAN_IN):
        """directory: where the run files go, in a subdirectory of their own (one sorter at a
        time per directory: the run directories a crashed process left there are removed);
        memory_bytes: what the entries held in memory, the I/O buffers and the merge's read
        buffers may take together (a merge's output segment, of the caller's size, comes on
        top); fan_in: the most runs merged at once."""
        if memory_bytes < 1 or fan_in < 2 or n_currencies < 0 or n_bytes < 1:
            raise ValueError("Sorter: memory_bytes >= 1, fan_in >= 2, n_currencies >= 0, n_bytes >= 1")
        for name in os.listdir(directory):
            if name.startswith(RUN_DIR_PREFIX):   # a resumed job's partial directory
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
        self.directory, self.width = directory, n_currencies * n_bytes
        self.memory, self.fan_in = memory_bytes, fan_in
        self.io = min(max(memory_bytes // 16, MIN_IO), MAX_IO)
        self.batch = _sort.Batch(self.width, max(memory_bytes - self.io, 1))
        self.runs, self.run_dir, self.serial = [], None, 0
        self.spilled = 0          # run files written, merge passes' included
        self.count = 0            # entries added
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- input --------------------------------------------------------------------------------

    def add(self, usernames, balances, count, names, lengths):
        """The next `count` entries (buffers copied: valid only during the call): usernames
        32-byte words, balances count * N narrow values, names the UTF-8 bytes concatenated,
        lengths count little-endian u32 name lengths."""
        if self.closed:
            raise SortError("Sorter: already finished")
        usernames, balances, names, lengths = map(_bytes, (usernames, balances, names, lengths))
        if (len(usernames) != WORD * count or len(balances) != self.width * count
                or len(lengths) != 4 * count):
            raise SortError(f"add: {count} entries need {WORD * count} username bytes, "
                            f"{self.width * count} balance bytes and {4 * count} length bytes; got "
                            f"{len(usernames)}, {len(balances)} and {len(lengths)}")
        while count:
            taken = self.batch.add(usernames, balances, names, lengths, count)
            if taken == count and self.batch.consumed != len(names):
                raise SortError(f"add: the lengths add up to {self.batch.consumed} name bytes, "
                                f"the names hold {len(names)}")
            used = self.batch.consumed
            self.count += taken
            count -= taken
            if count:
                self._spill()
                usernames, balances = usernames[WORD * taken:], balances[self.width * taken:]
                names, lengths = names[used:], lengths[4 * taken:]

    def _spill(self):
        """The batch, sorted, into a new run file."""
        self.batch.sort()
        path = self._new_run()
        chunk = bytearray(self.io)
        with _Output(path) as out:
            while True:
                n = self.batch.serialize(chunk)
                if not n:
                    break
                out.write(memoryview(chunk)[:n])
        self.batch.reset()

    def _new_run(self):
        if self.run_dir is None:
            self.run_dir = tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=self.directory)
        self.serial += 1
        self.spilled += 1
        path = os.path.join(self.run_dir, f"run-{self.serial:06d}")
        self.runs.append(path)
        return path

    # ---- output -------------------------------------------------------------------------------

    def merge(self, emit, segment=SEGMENT):
        """Every entry, in order, as emit(usernames, balances, count, names, lengths, origins)
        with at most `segment` entries (origins: count little-endian u64 input positions);
        the views hold only during the call. Returns the Duplicate with the smallest later
        position, or None. The sorter is finished afterwards (and on any error)."""
        try:
            return self._merge(_sort.COLUMNS, segment, emit)
        finally:
            self.close()

    def duplicate(self):
        """The same Duplicate as merge would return, without emitting anything (for input that
        ended with an error: a duplicate before the bad line is the error to report)."""
        try:
            return self._merge(_sort.NOTHING, 1, None)
        finally:
            self.close()

    def _merge(self, output, segment, emit):
        if self.closed:
            raise SortError("Sorter: already finished")
        if not self.runs:
            self.batch.sort()
            merger = _sort.Merger(1, self.width, output, segment, read_bytes=self.io)
            self._drive(merger, [self.batch.serialize], emit)
            return _duplicate(merger)
        if self.batch.count:
            self._spill()
        self.batch.release()
        while len(self.runs) > self.fan_in:
            self._pass(self.runs[:self.fan_in])
        merger = _sort.Merger(len(self.runs), self.width, output, segment,
                              read_bytes=self._read_bytes(len(self.runs)))
        with _Inputs(self.runs) as inputs:
            self._drive(merger, inputs.readers, emit)
        return _duplicate(merger)

    def _read_bytes(self, k):
        return max(min((self.memory - self.io) // k, MAX_IO), MIN_IO)

    def _pass(self, group):
        """Merge `group` (the oldest runs) into one new run, at the end of the list."""
        path = self._new_run()
        merger = _sort.Merger(len(group), self.width, _sort.RECORDS, read_bytes=self._read_bytes(len(group)),
                              chunk_bytes=self.io, check_duplicates=False)
        with _Inputs(group) as inputs, _Output(path) as out:
            self._drive(merger, inputs.readers, None, out)
        del self.runs[:len(group)]
        for done in group:
            os.unlink(done)

    @staticmethod
    def _drive(merger, readers, emit, out=None):
        while True:
            status = merger.run()
            if status == _sort.NEED:
                run = merger.need
                view = merger.fill_view(run)
                merger.filled(run, readers[run](view))
                continue
            if out is not None:
                out.write(merger.chunk())
            elif emit is not None:
                segment = merger.segment()
                if segment[2]:
                    emit(*segment)
            if status == _sort.DONE:
                return

    def close(self):
        """Drop the entries and remove the run files; any time, any number of times."""
        self.closed = True
        self.batch.release()
        self.runs = []
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None


def _duplicate(merger):
    found = merger.duplicate
    return None if found is None else Duplicate(*found)


class _Output:
    """A run file being written."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, view):
        view = memoryview(view)
        while view:
            view = view[os.write(self.fd, view):]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


class _Inputs:
    """Run files open for the merge; readers[i](view) reads the next bytes of run i into view."""

    def __init__(self, paths):
        self.fds = []
        try:
            for path in paths:
                self.fds.append(os.open(path, os.O_RDONLY))
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(self.fds[-1], 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            self.__exit__()
            raise
        self.readers = [_reader(fd) for fd in self.fds]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _reader(fd):
    def read(view):
        return os.readv(fd, [view[:MAX_IO]])
    return read
