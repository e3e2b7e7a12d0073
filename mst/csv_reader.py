"""Streaming, strict reader for the entry CSV files of a job.

A file is ``username,balance_<CURRENCY>_<CHAIN>,...``; every problem is reported as one
line ``FILE:LINE: problem`` (a ``CsvError``) so that an operator can fix the input.
Entries are packed straight into little-endian 32-byte words, the layout the kernel reads.
"""
import csv
import os
import re
from dataclasses import dataclass

from ..cython_ext import _kernel
from ..cython_ext.params import P, WORD
from .limits import DEFAULT_N_BYTES, check_n_bytes, check_power_of_two

_NAME_MAX_SAFE = 31  # any 31-byte value is below P (P has 254 bits)
_COLUMN = re.compile(r"balance_[A-Za-z0-9.-]+_[A-Za-z0-9.-]+").fullmatch
_CONTROL = re.compile("[\x00-\x1f\x7f]").search
# undecodable bytes come through errors='surrogateescape' as these, so we can name the line
_UNDECODABLE = re.compile("[\udc80-\udcff]").search


class CsvError(ValueError):
    """One line, 'FILE:LINE: problem' (or 'FILE: problem' when no line applies)."""


@dataclass
class EntryBatch:
    path: str
    currencies: list[str]  # the header's balance column names
    count: int
    usernames: bytearray  # count words: the username's field value, 32 bytes little-endian
    balances: bytearray  # count * len(currencies) words, entry-major, 32 bytes little-endian


def _username_problem(name):
    """Why ``name`` cannot be an entry's username, or None."""
    if not name:
        return "empty username (it would collide with the zero padding entries)"
    if _UNDECODABLE(name):
        return "bytes that are not valid UTF-8"
    if _CONTROL(name):
        # e.g. a leading NUL would give 'a' and '\0a' the same field value
        return f"username {name!r} contains control characters"
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, only possible when called directly
        return f"username {name!r} is not valid Unicode text"
    if len(raw) > _NAME_MAX_SAFE and int.from_bytes(raw, "big") >= P:
        return (f"username too long: {len(raw)} bytes, its value is not below the field "
                f"modulus (at most {_NAME_MAX_SAFE} bytes always fit)")
    return None


def username_to_word(username):
    """The username's field value (UTF-8 bytes read big-endian) as a 32-byte LE word."""
    if not isinstance(username, str):
        raise ValueError(f"username must be a str, got {type(username).__name__}")
    problem = _username_problem(username)
    if problem:
        raise ValueError(problem)
    return int.from_bytes(username.encode("utf-8"), "big").to_bytes(WORD, "little")


def word_to_username(word):
    """Inverse of username_to_word."""
    value = int.from_bytes(word, "little")
    return value.to_bytes((value.bit_length() + 7) // 8, "big").decode("utf-8")


def _header_problem(header):
    if any(_UNDECODABLE(c) for c in header):
        return "bytes that are not valid UTF-8"
    if header[0] != "username":
        return f"bad header: first column must be 'username', got {header[0]!r}"
    if len(header) < 2:
        return "bad header: no balance columns"
    for column in header[1:]:
        if not _COLUMN(column):
            return (f"bad header: column {column!r} does not match "
                    "balance_<CURRENCY>_<CHAIN> (letters, digits, '.', '-')")
    if len(set(header)) != len(header):
        dups = sorted({c for c in header if header.count(c) > 1})
        return f"bad header: duplicate column names {dups}"
    if len(header) - 1 > _kernel.MAX_CURRENCIES:
        return (f"bad header: {len(header) - 1} balance columns, "
                f"at most {_kernel.MAX_CURRENCIES} are supported")
    return None


def _row_problem(row, header, n_bytes):
    """Why a (non-blank) row is invalid, or None. The slow path: only called on failure."""
    if any(_UNDECODABLE(f) for f in row):
        return "bytes that are not valid UTF-8"
    if len(row) != len(header):
        which = "missing" if len(row) < len(header) else "extra"
        return f"{which} columns: expected {len(header)} columns, got {len(row)}"
    problem = _username_problem(row[0])
    if problem:
        return problem
    for column, field in zip(header[1:], row[1:]):
        if field.startswith("-") and field[1:].isascii() and field[1:].isdigit():
            return f"negative balance {field!r} in {column}"
        if not (field.isascii() and field.isdigit()):
            return f"balance {field!r} in {column} is not a decimal integer"
        digits = field.lstrip("0")
        if len(digits) > 80 or int(digits or "0") >> (8 * n_bytes):
            return f"balance {field!r} in {column} is out of range (must be < 2^{8 * n_bytes})"
    return None


def _record_start(line_num, row):
    """csv's line_num is the record's last line; quoted line breaks tell how far back it began."""
    breaks = sum(f.count("\n") + f.count("\r") - f.count("\r\n") for f in row)
    return line_num - breaks


def _open(path):
    # newline='' so csv sees quoted line breaks; utf-8-sig skips a BOM
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def _first_place(paths, name):
    """Where ``name`` first occurs as a username in ``paths`` (the slow duplicate path)."""
    for path in paths:
        with _open(path) as f:
            reader = csv.reader(f)
            for row in reader:
                if row:
                    break  # the header
            for row in reader:
                if row and row[0] == name:
                    return f"{path}:{_record_start(reader.line_num, row)}"
    return "an earlier entry"


class _Bad(Exception):
    """Fast-path signal that a row needs diagnosing."""


def _read(path, n_bytes, header, seen, done, sink=None):
    """Read one file; ``seen`` holds the usernames of the job so far, ``done`` its earlier files.

    With a ``sink``, entries are handed over every SEGMENT rows as (currencies, usernames,
    balances, count) instead of being kept, and the returned batch has empty buffers."""
    shown = os.fspath(path)
    try:
        with _open(path) as f:
            return _read_open(f, shown, n_bytes, header, seen, done, sink)
    except OSError as e:
        raise CsvError(f"{shown}: cannot read: {e.strerror or e}") from None


SEGMENT = 4096   # rows handed to a sink at a time


def _read_open(f, path, n_bytes, header, seen, done, sink):
    reader = csv.reader(f)
    try:
        file_header = next((row for row in reader if row), None)
        if file_header is None:
            raise CsvError(f"{path}: empty file (no header)")
        line = reader.line_num
        problem = _header_problem(file_header)
        if problem:
            raise CsvError(f"{path}:{line}: {problem}")
        if header is not None and file_header != list(header):
            raise CsvError(f"{path}:{line}: header differs from the job's first file "
                           f"(expected {list(header)}, got {file_header})")

        ncols = len(file_header)
        pad = bytes(WORD - n_bytes)
        usernames = bytearray()
        balances = bytearray()
        seen_add = seen.add
        from_bytes = int.from_bytes
        count = len(seen)
        start = flushed = count
        row = None
        try:
            for row in reader:
                if len(row) != ncols:
                    if row:
                        raise _Bad
                    continue  # blank line
                name = row[0]
                raw = name.encode()  # surrogates (undecodable bytes) raise here
                value = from_bytes(raw, "big")
                # isprintable() is a quick C check that rules control characters out for most names
                if (not raw or (len(raw) > _NAME_MAX_SAFE and value >= P)
                        or (not name.isprintable() and _CONTROL(name))):
                    raise _Bad
                for field in row[1:]:
                    if not (field.isascii() and field.isdigit()):
                        raise _Bad
                    balances += int(field).to_bytes(n_bytes, "little")  # OverflowError: range
                    balances += pad
                # the set stores field values (smaller than strs); distinct names have distinct values
                seen_add(value)
                count += 1
                if len(seen) != count:
                    first = _first_place(done + [path], name)
                    raise CsvError(f"{path}:{reader.line_num}: duplicate username {name!r} "
                                   f"(first seen at {first})")
                usernames += value.to_bytes(WORD, "little")
                if sink is not None and count - flushed == SEGMENT:
                    sink(file_header[1:], usernames, balances, SEGMENT)
                    usernames, balances, flushed = bytearray(), bytearray(), count
        except (_Bad, UnicodeError, OverflowError, ValueError) as e:
            if isinstance(e, CsvError):
                raise
            problem = _row_problem(row, file_header, n_bytes) or "invalid entry"
            raise CsvError(f"{path}:{_record_start(reader.line_num, row)}: {problem}") from None
        if count == start:
            raise CsvError(f"{path}: no entries (the file has a header only)")
    except csv.Error as e:
        raise CsvError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None
    if sink is not None and count > flushed:
        sink(file_header[1:], usernames, balances, count - flushed)
        usernames, balances = bytearray(), bytearray()
    return EntryBatch(path, file_header[1:], count - start, usernames, balances)


def read_csvs(paths, n_bytes=DEFAULT_N_BYTES):
    """Read the files of one job in order: same header, usernames unique across all files.

    Raises the first error in file order, line order. Returns one batch per file.
    """
    check_n_bytes(n_bytes, "n_bytes")
    seen, done, batches, header = set(), [], [], None
    for path in paths:
        batch = _read(path, n_bytes, header, seen, done)
        header = ["username"] + batch.currencies
        done.append(os.fspath(path))
        batches.append(batch)
    return batches


class _Cutter:
    """Takes entries in pieces and emits batches of exactly ``size`` (finish() emits the rest)."""

    def __init__(self, size, currencies, emit):
        self.size, self.currencies, self.emit = size, list(currencies), emit
        self.n = len(currencies)
        self.users, self.bals, self.emitted = bytearray(), bytearray(), 0

    def add(self, usernames, balances, count):
        u, v, n, i = memoryview(usernames), memoryview(balances), self.n, 0
        while i < count:
            take = min(self.size - len(self.users) // WORD, count - i)
            self.users += u[WORD * i:WORD * (i + take)]
            self.bals += v[WORD * n * i:WORD * n * (i + take)]
            i += take
            if len(self.users) == WORD * self.size:
                self._emit()

    def _emit(self):
        self.emit(EntryBatch(f"batch {self.emitted}", list(self.currencies), len(self.users) // WORD,
                             self.users, self.bals))
        self.users, self.bals, self.emitted = bytearray(), bytearray(), self.emitted + 1

    def finish(self):
        if self.users:
            self._emit()


def stream_csvs(paths, size, emit, n_bytes=DEFAULT_N_BYTES):
    """read_csvs and cutting into batches in one pass: emit(batch) gets each batch of ``size`` entries as
    soon as it is full, while reading goes on. The same checks and errors as read_csvs, but
    an error is raised when it is reached, after the batches before it were emitted."""
    check_n_bytes(n_bytes, "n_bytes")
    check_power_of_two(size)
    seen, done, header, cutters = set(), [], None, []

    def sink(currencies, usernames, balances, count):
        if not cutters:
            cutters.append(_Cutter(size, currencies, emit))
        cutters[0].add(usernames, balances, count)

    for path in paths:
        batch = _read(path, n_bytes, header, seen, done, sink)
        header = ["username"] + batch.currencies
        done.append(os.fspath(path))
    if cutters:
        cutters[0].finish()
