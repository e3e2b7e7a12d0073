"""The loader thread: reads and checks a job's CSVs, stores the entries, cuts work units.

Entries go straight from the C reader into the result files (ResultWriter: usernames,
narrow balances, the username index), at the reader's full speed; what the dispatcher gets is
a stream of work units, each an aligned 2^k slice of one mini-tree (mst/shape.py), described
by where its entries are stored. The dispatcher reads a unit's entries back only when it
hands the unit out, so the daemon holds the entries of the units in flight, never the job's;
reading never waits for the workers, and the duplicate check (the index sort) overlaps the
building.

The queue gets ("depth", k) once the unit depth is final, ("unit", Unit) for each unit in
input order, then ("end", TreeShape) or ("error", why). With one mini-tree per CSV, the
mini-tree depth d is known only at the end, and k <= d is proven as soon as some file has
more than 2^(k-1) entries; units are handed out only after that, and if no file ever proves
it, every file is one unit of depth d.

A sorted job (SPEC section 7) first reads every CSV into a Sorter (mst/sort.py: bounded
memory, runs on disk beyond it); its merged output is then what is stored and cut, as one
sequence of fixed-size batches (one mini-tree over everything without a batch size), so its
units come only once the reading is done. Duplicates come out of the merge, named by their
input positions.
"""
import hashlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

from ..mst.csv_reader import CsvError, line_of_entry, peek_currencies, scan_file
from ..mst.limits import depth_for
from ..mst.shape import TreeShape, default_unit_depth
from ..mst.sort import DEFAULT_MEMORY_BYTES, SEGMENT, Sorter
from .inputs import InputError, open_regular

log = logging.getLogger("summa.daemon")
SAMPLE = 1 << 16     # bytes of the first CSV read to estimate the entry count


class _Stop(Exception):
    """Stops the reader of a job that has ended."""


@dataclass
class Unit:
    serial: int
    batch: int
    local: int           # index in its batch of the unit's first entry
    position: int        # position in the stored entries of its first entry
    count: int
    payload: object      # EntryBatch (wide words) while the unit is in flight, else None


def estimate_entries(fds):
    """Entries in the CSVs (open descriptors), estimated from their sizes and the first file's
    line length."""
    try:
        total = sum(os.fstat(fd).st_size for fd in fds)
        sample = os.pread(fds[0], SAMPLE, 0)
    except (OSError, IndexError):
        return None
    lines = sample.count(b"\n")
    return max(total * max(lines - 1, 1) // max(len(sample), 1), 1) if sample else None


class Loader(threading.Thread):
    def __init__(self, spec, writer, stop, unit_size=0, opener=None, pinned=None,
                 sort_memory_bytes=DEFAULT_MEMORY_BYTES):
        """opener(path) -> a descriptor open on the CSV (InputPolicy.open; default: any regular
        file). Every CSV is opened here, once, and read only through its descriptor; the first
        that cannot be is `open_error` (the job fails with it, nothing is read).

        pins: each CSV's size, mtime and (once read) SHA-256, computed as it is read. pinned:
        an interrupted run's pins, which a resumed job's inputs must match.

        sort_memory_bytes: what a sorted job's sort may hold in memory (beyond it, runs on disk
        in the writer's directory)."""
        super().__init__(name="csv-loader", daemon=True)
        self.spec, self.writer, self.stop = spec, writer, stop
        self.sort_memory_bytes, self.sorter = sort_memory_bytes, None
        # the usernames' bytes: the writer keeps them under keccak256 (a digest cannot be
        # turned back), the sort orders by them
        self.want_names = spec.sorted or spec.username_encoding != "bytes"
        self.names = None                  # the names of the entries of the next sink call
        self.out = queue.Queue()          # unit descriptors: a few ints each
        self.fds, self.open_error, self.pins, self.pinned = [], None, [], pinned
        try:
            for index, path in enumerate(spec.csvs):
                try:
                    self.fds.append((opener or open_regular)(path))
                except InputError as error:
                    if pinned:
                        raise InputError(f"{error} (it was there when the job started)") from None
                    raise
                info = os.fstat(self.fds[-1])
                self.pins.append({"path": path, "size": info.st_size, "mtime_ns": info.st_mtime_ns})
                self._check_pin(index, ("size", "mtime_ns"))
        except InputError as error:
            self.open_error = str(error)
        self.estimate = None if self.open_error else estimate_entries(self.fds)
        self.currencies = [] if self.open_error else peek_currencies(self.fds[0])
        writer.set_currencies(len(self.currencies))
        self.unit_depth = (unit_size.bit_length() - 1 if unit_size else
                           default_unit_depth(self.estimate or 0, spec.executors, len(self.currencies)))
        self.fixed = spec.batch_size.bit_length() - 1 if spec.batch_size else None
        if self.fixed is not None:
            self.unit_depth = min(self.unit_depth, self.fixed)
        # sorted without a batch size: one tree, its depth known once everything is read
        self.proven = self.fixed is not None or self.unit_depth == 0
        self.serial, self.position = 0, 0
        self.unit_start, self.unit_count = 0, 0
        self.file_starts = []

    def _check_pin(self, index, keys):
        """InputError when CSV `index` is not what the interrupted run read."""
        if not self.pinned:
            return
        then, now = self.pinned[index], self.pins[index]
        for key in keys:
            if key in then and then[key] != now[key]:
                what = {"size": f"its size went from {then['size']} to {now['size']} bytes",
                        "mtime_ns": "its modification time changed",
                        "sha256": "its content changed (SHA-256), though not its size or time"}[key]
                raise InputError(f"{now['path']}: changed since the job started: {what}; the "
                                 f"job cannot resume (submit it again)")

    def close(self):
        """Close the CSVs' descriptors (once the thread has stopped, or never started)."""
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)

    def run(self):
        try:
            if self.open_error:
                raise CsvError(self.open_error)
            if self.proven:
                self._fix_depth()
            shape = self._read_all()
            self._put(("end", shape))
        except _Stop:
            pass
        except CsvError as error:
            self._report(str(error))
        except OSError as error:       # writing the entries: a full or failing disk
            self._report(f"cannot write the result to {self.writer.target}: "
                         f"{error.strerror or error}")
        except Exception as error:
            log.exception("reading the CSVs failed")
            self._report(f"internal error while reading: {type(error).__name__}: {error}")

    def _report(self, reason):
        try:
            self._put(("error", reason))
        except _Stop:
            pass

    # ---- reading ------------------------------------------------------------------------------

    def _scan(self, batch, path, header, sink):
        """scan_file of CSV `batch` through its descriptor, pinning its SHA-256."""
        digest = hashlib.sha256()
        result = scan_file(path, self.spec.n_bytes, header, sink, fd=self.fds[batch], digest=digest,
                           encoding=self.spec.username_encoding,
                           names=self._names if self.want_names else None)
        self.pins[batch]["sha256"] = digest.hexdigest()
        try:
            self._check_pin(batch, ("sha256",))
        except InputError as error:
            raise CsvError(str(error)) from None
        return result

    def _names(self, data, lengths, count):
        # the reader reuses these buffers once this returns: the sink gets copies
        self.names = (bytes(data), bytes(lengths))

    def _read_all(self):
        if self.spec.sorted:
            return self._read_sorted()
        spec, counts, header = self.spec, [], None
        for batch, path in enumerate(spec.csvs):
            self.file_starts.append(self.position)
            self.file_batch, self.file_count = batch, 0
            if self.fixed is None:             # units never cross files, batches may
                self.unit_start, self.unit_count = self.position, 0
            try:
                currencies, count = self._scan(batch, path, header, self._sink)
            except CsvError:
                try:
                    self._duplicates_first()      # one before the bad line comes first
                except OSError:
                    pass
                raise
            header = ["username"] + currencies
            self.currencies = currencies
            counts.append(count)
            if self.fixed is None and self.unit_count:
                self._cut()                      # a file's last, partial unit
        if self.fixed is not None:
            if self.unit_count:
                self._cut()
            size = 1 << self.fixed
            total = self.position
            counts = [min(size, total - start) for start in range(0, total, size)]
        self._duplicates_first()
        self.writer.sync_entries()
        mini_depth = self.fixed if self.fixed is not None else depth_for(max(counts))
        if not self.proven:
            self.unit_depth = min(self.unit_depth, mini_depth)
            self._fix_depth()
        return TreeShape(counts, mini_depth, self.unit_depth)

    def _sink(self, usernames, balances, count):
        if self.stop.is_set():
            raise _Stop()
        self.writer.append_entries(usernames, balances, count, *(self.names or ()))
        self.file_count += count
        if not self.proven and self.file_count > 1 << (self.unit_depth - 1):   # so d >= k
            self.proven = True
            self._fix_depth()
        self._advance(count)

    def _advance(self, count):
        """Cut the units that the next `count` stored entries complete."""
        size = 1 << self.unit_depth
        while count:
            take = min(size - self.unit_count, count)
            self.unit_count += take
            self.position += take
            count -= take
            if self.unit_count == size:
                self._cut()

    # ---- sorted jobs --------------------------------------------------------------------------

    def _read_sorted(self):
        spec, header = self.spec, None
        try:
            for batch, path in enumerate(spec.csvs):
                self.file_starts.append(self.position)
                try:
                    currencies, _ = self._scan(batch, path, header, self._sort_sink)
                except CsvError:
                    try:
                        found = self.sorter.duplicate() if self.sorter is not None else None
                    except OSError:
                        found = None
                    if found:                 # one before the bad line comes first
                        raise CsvError(self._sorted_duplicate(found)) from None
                    raise
                header = ["username"] + currencies
                self.currencies = currencies
            total = self.position
            if self.fixed is None:
                self.fixed = depth_for(total)
            if not self.proven:
                self.unit_depth = min(self.unit_depth, self.fixed)
                self.proven = True
                self._fix_depth()
            log.info("sorting %d entries by username", total)
            began = time.monotonic()
            self.position = self.unit_start = self.unit_count = 0
            found = self.sorter.merge(self._sorted_sink, SEGMENT)
            log.info("sorted %d entries in %.2f s (%d runs on disk)", total,
                     time.monotonic() - began, self.sorter.spilled)
        finally:
            if self.sorter is not None:
                self.sorter.close()
        if self.unit_count:
            self._cut()
        # the index (written now) sees the same duplicates, at their sorted positions
        self.writer.finish_index()
        if found:
            raise CsvError(self._sorted_duplicate(found))
        self.writer.sync_entries()
        size = 1 << self.fixed
        counts = [min(size, total - start) for start in range(0, total, size)]
        return TreeShape(counts, self.fixed, self.unit_depth)

    def _sort_sink(self, usernames, balances, count):
        if self.stop.is_set():
            raise _Stop()
        if self.sorter is None:
            # the balance width as read, not as peeked
            n_currencies = len(balances) // (count * self.spec.n_bytes)
            self.sorter = Sorter(self.writer.directory, n_currencies, self.spec.n_bytes,
                                 self.sort_memory_bytes)
        self.sorter.add(usernames, balances, count, *self.names)
        self.position += count

    def _sorted_sink(self, usernames, balances, count, names, lengths, origins):
        if self.stop.is_set():
            raise _Stop()
        self.writer.append_entries(usernames, balances, count, names, lengths)
        self._advance(count)

    def _cut(self):
        start, count = self.unit_start, self.unit_count
        if self.fixed is not None:
            batch, local = start >> self.fixed, start & ((1 << self.fixed) - 1)
        else:
            batch, local = self.file_batch, start - self.file_starts[-1]
        self._put(("unit", Unit(self.serial, batch, local, start, count, None)))
        self.serial += 1
        self.unit_start, self.unit_count = self.position, 0

    def _file_of(self, position):
        file = len(self.file_starts) - 1
        while self.file_starts[file] > position:
            file -= 1
        return file

    def _fix_depth(self):
        self.writer.set_unit_depth(self.unit_depth)
        self._put(("depth", self.unit_depth))

    def _put(self, item):
        if self.stop.is_set():
            raise _Stop()
        self.out.put(item)

    # ---- duplicates ---------------------------------------------------------------------------

    def _duplicates_first(self):
        """Sort the index of what was read; a duplicate username is the job's first error."""
        duplicates = self.writer.finish_index()
        if duplicates:
            first, later = duplicates[0]
            raise CsvError(self._duplicate_error(first, later, self.writer.username_at(later)))

    def _sorted_duplicate(self, found):
        return self._duplicate_error(found.first, found.later, found.name.decode("utf-8", "replace"))

    def _duplicate_error(self, first, later, username):
        """first, later: input positions."""
        return (f"{self._place(later)}: duplicate username {username!r} "
                f"(first seen at {self._place(first)})")

    def _place(self, position):
        file = self._file_of(position)
        path = self.spec.csvs[file]
        return f"{path}:{line_of_entry(path, position - self.file_starts[file], fd=self.fds[file])}"

    def path_of(self, position):
        """What names the entry stored at `position` in errors: its CSV (a sorted job's stored
        order mixes them)."""
        if self.spec.sorted:
            return "the sorted entries"
        return self.spec.csvs[self._file_of(position)]

    def drain(self):
        """What the loader has produced since the last call, without waiting."""
        while True:
            try:
                yield self.out.get_nowait()
            except queue.Empty:
                return
