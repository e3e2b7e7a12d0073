"""The small-scale job API on top of the reader: read_csvs and stream_csvs read the files of one
job in order with the job's checks (one format and header, usernames unique across all files)
and widen the balances to 32-byte words, in EntryBatch objects.
"""
import os
import sys
from array import array
from dataclasses import dataclass
from itertools import accumulate

from ..cython_ext import _records
from ..cython_ext.params import WORD
from .csv_reader import _scan_file, line_of_entry
from .csv_rows import CsvError, _q, word_to_username
from .limits import DEFAULT_N_BYTES, check_n_bytes, check_power_of_two, check_username_encoding


@dataclass
class EntryBatch:
    path: str
    currencies: list[str]  # the header's balance column names (currency_0, ... for Summa v1)
    count: int
    usernames: bytearray  # count words: the username's field value, 32 bytes little-endian
    balances: bytearray  # count * len(currencies) words, entry-major, 32 bytes little-endian
    names: bytes = None  # when known: the usernames' UTF-8 bytes, concatenated
    name_lengths: bytes = None  # when known: count byte lengths of those, uint32 little-endian


def _widened(balances, n_bytes):
    """Narrow balances of n_bytes each -> 32-byte words, the kernel's."""
    count = len(balances) // n_bytes
    out = bytearray(WORD * count)
    _records.widen(balances, count, n_bytes, out)
    return out


def _word_list(usernames):
    words = bytes(usernames)
    return [words[i:i + WORD] for i in range(0, len(words), WORD)]


_U32 = next(code for code in "IL" if array(code).itemsize == 4)


def _lengths(lengths):
    """uint32 little-endian lengths -> an array of ints."""
    out = array(_U32)
    out.frombytes(bytes(lengths))
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _split_names(data, lengths):
    """The usernames (bytes) of names(data, lengths, count)."""
    data, out, at = bytes(data), [], 0
    for n in _lengths(lengths):
        out.append(data[at:at + n])
        at += n
    return out


class _Found(Exception):
    pass


class _Job:
    """The files of one job, read in order: one header, usernames unique across all files.
    Duplicates are found with a set of the username words (bytes encoding) or of the usernames
    themselves (keccak256: the words are digests) (the small-scale API)."""

    def __init__(self, n_bytes, encoding="bytes"):
        self.n_bytes, self.encoding = n_bytes, encoding
        self.keccak = check_username_encoding(encoding, "encoding") == "keccak256"
        self.header, self.seen, self.done = None, set(), []

    def _keys(self, usernames, names):
        """What makes two entries of a segment the same user: the words, or the usernames."""
        return _split_names(*names) if self.keccak else _word_list(usernames)

    def read(self, path, sink):
        """scan_file of the job's next file; sink(currencies, usernames, balances, count, names,
        lengths) gets 32-byte words and the usernames (bytes). Returns (currencies, count)."""
        shown, n_bytes, seen = os.fspath(path), self.n_bytes, self.seen
        currencies, pending = [], [b"", b""]

        def collect(data, lengths, count):
            pending[:] = bytes(data), bytes(lengths)

        def check(usernames, balances, count):
            before = len(seen)
            seen.update(self._keys(usernames, pending))
            if len(seen) != before + count:
                seen.clear()   # its memory, for the search
                raise self._duplicate(self.done + [shown])
            sink(currencies, usernames, _widened(balances, n_bytes), count, *pending)

        file_currencies, count = _scan_file(path, n_bytes, self.header, check,
                                            on_header=lambda h: currencies.extend(h[1:]),
                                            encoding=self.encoding, names=collect)
        self.header = ["username"] + file_currencies
        self.done.append(shown)
        return file_currencies, count

    def _each_segment(self, path, each):
        """each(keys) for every segment of the file (read again, as it was: cleanly up to its
        duplicate)."""
        pending = [b"", b""]

        def collect(data, lengths, count):
            pending[:] = bytes(data), bytes(lengths)

        def sink(usernames, balances, count):
            each(self._keys(usernames, pending))
        _scan_file(path, self.n_bytes, None, sink, encoding=self.encoding,
                   names=collect if self.keccak else None)

    def _duplicate(self, paths):
        """The error of the job's first duplicate username, searched for again in ``paths``."""
        seen = set()
        for path in paths:
            k = 0

            def first_repeat(keys):
                nonlocal k
                for key in keys:
                    if key in seen:
                        raise _Found(path, k, key)
                    seen.add(key)
                    k += 1
            try:
                self._each_segment(path, first_repeat)
            except _Found as found:
                _, where, key = found.args
                break
        else:   # cannot happen: the set said there is one
            return CsvError(f"{paths[-1]}: duplicate username")
        seen = None
        for first_path in paths:
            k = 0

            def first_of(keys):
                nonlocal k
                try:
                    raise _Found(k + keys.index(key))
                except ValueError:
                    k += len(keys)
            try:
                self._each_segment(first_path, first_of)
            except _Found as found:
                first = found.args[0]
                break
        name = key.decode("utf-8") if self.keccak else word_to_username(key)
        return CsvError(f"{path}:{line_of_entry(path, where)}: duplicate username {_q(name)} "
                        f"(first seen at {first_path}:{line_of_entry(first_path, first)})")


def read_csvs(paths, n_bytes=DEFAULT_N_BYTES, encoding="bytes"):
    """Read the files of one job in order: one format and header, usernames unique across all
    files. encoding: how usernames become words ("bytes" or "keccak256").

    Raises the first error in file order, line order. Returns one batch per file (with its
    usernames' bytes in names / name_lengths).
    """
    check_n_bytes(n_bytes, "n_bytes")
    job, batches = _Job(n_bytes, encoding), []
    for path in paths:
        usernames, balances, names, lengths = bytearray(), bytearray(), bytearray(), bytearray()

        def keep(currencies, users, bals, count, data, lens):
            usernames.extend(users)
            balances.extend(bals)
            names.extend(data)
            lengths.extend(lens)
        currencies, count = job.read(path, keep)
        batches.append(EntryBatch(os.fspath(path), currencies, count, usernames, balances,
                                  bytes(names), bytes(lengths)))
    return batches


class _Cutter:
    """Takes entries in pieces and emits batches of exactly ``size`` (finish() emits the rest)."""

    def __init__(self, size, currencies, emit):
        self.size, self.currencies, self.emit = size, list(currencies), emit
        self.n = len(currencies)
        self.users, self.bals, self.emitted = bytearray(), bytearray(), 0
        self.names, self.lengths = bytearray(), bytearray()

    def add(self, usernames, balances, count, names=b"", lengths=b""):
        u, v, n, i = memoryview(usernames), memoryview(balances), self.n, 0
        starts = [0, *accumulate(_lengths(lengths))]
        while i < count:
            take = min(self.size - len(self.users) // WORD, count - i)
            self.users += u[WORD * i:WORD * (i + take)]
            self.bals += v[WORD * n * i:WORD * n * (i + take)]
            self.names += names[starts[i]:starts[i + take]]
            self.lengths += lengths[4 * i:4 * (i + take)]
            i += take
            if len(self.users) == WORD * self.size:
                self._emit()

    def _emit(self):
        self.emit(EntryBatch(f"batch {self.emitted}", list(self.currencies), len(self.users) // WORD,
                             self.users, self.bals, bytes(self.names), bytes(self.lengths)))
        self.users, self.bals, self.emitted = bytearray(), bytearray(), self.emitted + 1
        self.names, self.lengths = bytearray(), bytearray()

    def finish(self):
        if self.users:
            self._emit()


def stream_csvs(paths, size, emit, n_bytes=DEFAULT_N_BYTES, encoding="bytes"):
    """read_csvs and cutting into batches in one pass: emit(batch) gets each batch of ``size`` entries as
    soon as it is full, while reading goes on. The same checks and errors as read_csvs, but
    an error is raised when it is reached, after the batches before it were emitted."""
    check_n_bytes(n_bytes, "n_bytes")
    check_power_of_two(size)
    job, cutters = _Job(n_bytes, encoding), []

    def sink(currencies, usernames, balances, count, names, lengths):
        if not cutters:
            cutters.append(_Cutter(size, currencies, emit))
        cutters[0].add(usernames, balances, count, names, lengths)

    for path in paths:
        job.read(path, sink)
    if cutters:
        cutters[0].finish()
