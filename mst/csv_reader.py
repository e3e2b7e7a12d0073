"""Streaming, strict reader for the entry CSV files of a job.

A file is ``username,balance_<CURRENCY>_<CHAIN>,...``; every problem is reported as one
line ``FILE:LINE: problem`` (a ``CsvError``) so that an operator can fix the input.

scan_file reads one file: lines are parsed in C (cython_ext/_csvscan.pyx) into packed entries,
usernames as little-endian 32-byte words (the layout the kernel reads) and balances narrow
(N_BYTES each); a line the C loop does not take goes through the csv module's rules here, and a
file's part from a line with a quote or a lone CR on is read by the csv module alone
(_scan_python is that path for a whole file: the reference the C path is tested against).
read_csvs and stream_csvs add the job's checks (one header, unique usernames) and widen the
balances to 32-byte words.
"""
import csv
import io
import os
import re
from dataclasses import dataclass

from ..cython_ext import _csvscan, _kernel, _records
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


def _q(text):
    """repr() of a field for an error, cut to QUOTE_CHARS (a field may be megabytes long)."""
    return repr(text) if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]!r}... ({len(text)} characters)"


def _username_problem(name):
    """Why ``name`` cannot be an entry's username, or None."""
    if not name:
        return "empty username (it would collide with the zero padding entries)"
    if _UNDECODABLE(name):
        return "bytes that are not valid UTF-8"
    if _CONTROL(name):
        # e.g. a leading NUL would give 'a' and '\0a' the same field value
        return f"username {_q(name)} contains control characters"
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, only possible when called directly
        return f"username {_q(name)} is not valid Unicode text"
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
        return f"bad header: first column must be 'username', got {_q(header[0])}"
    if len(header) < 2:
        return "bad header: no balance columns"
    for column in header[1:]:
        if not _COLUMN(column):
            return (f"bad header: column {_q(column)} does not match "
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
            return f"negative balance {_q(field)} in {column}"
        if not (field.isascii() and field.isdigit()):
            return f"balance {_q(field)} in {column} is not a decimal integer"
        digits = field.lstrip("0")
        if len(digits) > 80 or int(digits or "0") >> (8 * n_bytes):
            return f"balance {_q(field)} in {column} is out of range (must be < 2^{8 * n_bytes})"
    return None


def _record_start(line_num, row):
    """csv's line_num is the record's last line; quoted line breaks tell how far back it began."""
    breaks = sum(f.count("\n") + f.count("\r") - f.count("\r\n") for f in row)
    return line_num - breaks


def _open(path):
    # newline='' so csv sees quoted line breaks; utf-8-sig skips a BOM
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


SEGMENT = 65536   # entries handed to a sink at a time
CHUNK = 1 << 22   # bytes read at a time by scan_file
# No line that could be valid is longer: at most 1 + MAX_CURRENCIES fields, each within the
# csv module's field limit (131,072 characters). A longer one is refused before it is held.
MAX_LINE_BYTES = 16 << 20
QUOTE_CHARS = 80  # errors quote at most this much of a field
_BOM = b"\xef\xbb\xbf"


def _row_entry(row, ncols, n_bytes):
    """(username word, narrow balances) of a non-blank csv row, or None when the row is bad
    (then _row_problem says why). The one place of the row rules: the csv path uses it for every
    row, the C path for the lines it hands back."""
    if len(row) != ncols:
        return None
    name = row[0]
    try:
        raw = name.encode()  # surrogates (undecodable bytes) raise here
    except UnicodeError:
        return None
    value = int.from_bytes(raw, "big")
    # isprintable() is a quick C check that rules control characters out for most names
    if (not raw or (len(raw) > _NAME_MAX_SAFE and value >= P)
            or (not name.isprintable() and _CONTROL(name))):
        return None
    balances = []
    for field in row[1:]:
        if not (field.isascii() and field.isdigit()):
            return None
        try:
            balances.append(int(field).to_bytes(n_bytes, "little"))
        except (OverflowError, ValueError):   # out of range; more digits than int() takes
            return None
    return value.to_bytes(WORD, "little"), b"".join(balances)


def _bad_row(path, line, row, file_header, n_bytes):
    problem = _row_problem(row, file_header, n_bytes) or "invalid entry"
    return CsvError(f"{path}:{line}: {problem}")


def _check_header(file_header, path, line, header):
    problem = _header_problem(file_header)
    if problem:
        raise CsvError(f"{path}:{line}: {problem}")
    if header is not None and file_header != list(header):
        raise CsvError(f"{path}:{line}: header differs from the job's first file "
                       f"(expected {list(header)}, got {file_header})")


class _SinkError(Exception):
    """A sink's own CsvError on its way out of scan_file, past the handlers of the file's errors."""


def _sink(sink, *entries):
    try:
        sink(*entries)
    except CsvError as e:
        raise _SinkError(e) from None


class _Entries:
    """Entries collected in Python, handed to sink(usernames, balances, count) every `segment`."""

    def __init__(self, segment, sink, users=b"", bals=b"", count=0, total=0):
        """users, bals, count: entries waiting already; total: entries sunk already."""
        self.segment, self.sink = segment, sink
        self.users, self.bals, self.count, self.total = bytearray(users), bytearray(bals), count, total

    def add(self, word, balances):
        self.users += word
        self.bals += balances
        self.count += 1
        if self.count == self.segment:
            self.flush()

    def flush(self):
        if self.count:
            users, bals, count = self.users, self.bals, self.count
            self.users, self.bals, self.count = bytearray(), bytearray(), 0
            self.total += count
            _sink(self.sink, users, bals, count)


class _ScannedEntries:
    """The same for entries that live in a C Scanner's buffers (parsed there, or added)."""

    def __init__(self, scanner, sink):
        self.scanner, self.sink, self.total = scanner, sink, 0

    def add(self, word, balances):
        if self.scanner.add(word, balances):
            self.flush()

    def flush(self):
        if self.scanner.count:
            self.total += self.scanner.count
            _sink(self.sink, *self.scanner.take())


class _LongLine(Exception):
    pass


class _BoundedLines:
    """The lines of text file f, refusing one longer than MAX_LINE_BYTES before holding it;
    count: the lines given so far."""

    def __init__(self, f):
        self.f, self.count = f, 0

    def __iter__(self):
        return self

    def __next__(self):
        line = self.f.readline(MAX_LINE_BYTES + 1)
        if not line:
            raise StopIteration
        if len(line) > MAX_LINE_BYTES:
            raise _LongLine
        self.count += 1
        return line


_LONG_LINE = f"a line longer than {MAX_LINE_BYTES >> 20} MiB (no valid line is that long)"


def _scan_text(f, path, n_bytes, header, entries, line0=0, file_header=None, on_header=None):
    """The csv module's path over the text file ``f``: each entry goes to entries.add(word,
    balances). ``line0`` lines of the file come before f's first one; with ``file_header``,
    the header was read already, else on_header(file_header) follows its checks.
    Returns the file's header."""
    lines = _BoundedLines(f)
    reader = csv.reader(lines)
    try:
        if file_header is None:
            file_header = next((row for row in reader if row), None)
            if file_header is None:
                raise CsvError(f"{path}: empty file (no header)")
            _check_header(file_header, path, line0 + reader.line_num, header)
            if on_header is not None:
                on_header(file_header)
        ncols, add, row_entry = len(file_header), entries.add, _row_entry
        for row in reader:
            if not row:
                continue  # blank line
            entry = row_entry(row, ncols, n_bytes)
            if entry is None:
                raise _bad_row(path, line0 + _record_start(reader.line_num, row), row, file_header,
                               n_bytes)
            add(*entry)
    except csv.Error as e:
        raise CsvError(f"{path}:{line0 + reader.line_num}: malformed CSV: {e}") from None
    except _LongLine:
        raise CsvError(f"{path}:{line0 + lines.count + 1}: {_LONG_LINE}") from None
    return file_header


def _finish(path, file_header, entries, error=None):
    """Sink the entries not sunk yet, those before the bad line if there is one (a sink's own
    error, e.g. a duplicate, comes first: it is earlier in the file), then raise the error, or
    return (currencies, count)."""
    entries.flush()
    if error is not None:
        raise error
    if not entries.total:
        raise CsvError(f"{path}: no entries (the file has a header only)")
    return file_header[1:], entries.total


def _check_scan_args(n_bytes, segment):
    check_n_bytes(n_bytes, "n_bytes")
    if isinstance(segment, bool) or not isinstance(segment, int) or segment < 1:
        raise ValueError(f"segment must be a positive integer, got {segment!r}")


def _scan_python(path, n_bytes, header, sink, segment=SEGMENT):
    """scan_file with the csv module alone: the reference of the C path, and its fallback."""
    _check_scan_args(n_bytes, segment)
    shown = os.fspath(path)
    entries = _Entries(segment, sink)
    try:
        with _open(path) as f:
            try:
                file_header = _scan_text(f, shown, n_bytes, header, entries)
            except CsvError as e:
                return _finish(shown, None, entries, e)
            return _finish(shown, file_header, entries)
    except OSError as e:
        raise CsvError(f"{shown}: cannot read: {e.strerror or e}") from None
    except _SinkError as e:
        raise e.args[0] from None


class FdReader(io.RawIOBase):
    """An open file descriptor read from offset 0 with pread: its own position, so several
    readers (one after the other, or in different threads) share one descriptor; closing it
    leaves the descriptor open (its owner closes it)."""

    def __init__(self, fd, digest=None):
        self.fd, self.offset, self.digest = fd, 0, digest

    def readable(self):
        return True

    def readinto(self, b):
        n = os.preadv(self.fd, [b], self.offset)
        self.offset += n
        if self.digest is not None and n:
            self.digest.update(memoryview(b)[:n])
        return n


def _binary(path, fd, digest=None):
    """The file to read: `path` opened, or the descriptor `fd` already open on it."""
    return open(path, "rb", buffering=0) if fd is None else FdReader(fd, digest)


class _Chain(io.RawIOBase):
    """What is left of a file: the bytes already read, then the rest of the file object."""

    def __init__(self, head, f):
        self.head, self.f = memoryview(head), f

    def readable(self):
        return True

    def readinto(self, b):
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.f.readinto(b) if self.f is not None else 0


class _Chunks:
    """A binary file read CHUNK bytes at a time into one reusable bytearray: buf[pos:have] is
    read and not consumed yet; eof: nothing follows it."""

    def __init__(self, f, chunk):
        self.f, self.buf, self.pos, self.have, self.eof = f, bytearray(max(chunk, 4)), 0, 0, False

    def fill(self):
        """Read more, keeping the unconsumed tail (a partial line) at the front of the buffer;
        a line longer than the buffer doubles it."""
        buf, pos, have = self.buf, self.pos, self.have
        if pos:
            buf[:have - pos] = buf[pos:have]
            self.pos, self.have = 0, have - pos
        if self.have == len(buf):
            buf.extend(bytes(len(buf)))
        with memoryview(buf) as view:
            n = self.f.readinto(view[self.have:])
        if n:
            self.have += n
        else:
            self.eof = True

    def start(self):
        """Fill, and skip a UTF-8 BOM at the start of the file (what utf-8-sig does)."""
        while self.have < 3 and not self.eof:
            self.fill()
        if self.buf[:3] == _BOM and self.have >= 3:
            self.pos = 3

    def rest(self):
        """The unconsumed bytes and the rest of the file as a text file, decoded as the csv path
        decodes (pos is at a line start, so no BOM to skip and no character cut)."""
        raw = _Chain(bytes(self.buf[self.pos:self.have]), None if self.eof else self.f)
        return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8", errors="surrogateescape",
                                newline="")


def _line_text(chunks, scanner):
    return chunks.buf[scanner.pos:scanner.ce].decode("utf-8", "surrogateescape")


def _one_row(path, line, text):
    """The csv row of one line that has no '"' and no CR (what csv makes of it in the file)."""
    try:
        return next(csv.reader((text,)))
    except csv.Error as e:
        raise CsvError(f"{path}:{line}: malformed CSV: {e}") from None


def scan_file(path, n_bytes, header, sink, segment=SEGMENT, chunk=CHUNK, fd=None, digest=None):
    """Read one CSV file with every check of SPEC section 4 except duplicate usernames.

    fd: a descriptor open on the file, read instead of opening `path` (which errors still name),
    from its start whatever its position; digest (a hashlib object, with fd): updated with
    every byte of the file as it is read, once.

    header: None for a job's first file, else the job's header list; a different header is a
    CsvError. sink(usernames, balances, count) gets at most ``segment`` entries at a time, in
    file order: usernames count 32-byte little-endian words (username_to_word), balances
    count * N values of n_bytes bytes each, little-endian, entry-major (narrow: not padded to
    32). They are memoryviews of buffers that are reused once sink returns (sink copies what it
    keeps). Returns (currencies, count): the file's header[1:] and its number of entries.
    Raises CsvError ('FILE:LINE: problem', ...) after having sunk the entries before the bad line.

    Lines are parsed in C (cython_ext/_csvscan.pyx); a line the C loop does not take is decided
    by the csv module with the same rules, and from a line with '"' or a lone CR on, the rest of
    the file is read by the csv module: the results and errors are those of _scan_python."""
    return _scan_file(path, n_bytes, header, sink, segment, chunk, fd=fd, digest=digest)


def _scan_file(path, n_bytes, header, sink, segment=SEGMENT, chunk=CHUNK, on_header=None, fd=None,
               digest=None):
    _check_scan_args(n_bytes, segment)
    shown = os.fspath(path)
    try:
        with _binary(path, fd, digest) as f:
            return _scan_open(f, shown, n_bytes, header, sink, segment, chunk, on_header)
    except OSError as e:
        raise CsvError(f"{shown}: cannot read: {e.strerror or e}") from None
    except _SinkError as e:
        raise e.args[0] from None


def _fill_line(chunks, path, line):
    """Read more for the line that starts at chunks.pos, unless it is already too long."""
    if chunks.have - chunks.pos >= MAX_LINE_BYTES:
        raise CsvError(f"{path}:{line}: {_LONG_LINE}")
    chunks.fill()


def _scan_open(f, path, n_bytes, header, sink, segment, chunk, on_header):
    chunks = _Chunks(f, chunk)
    chunks.start()
    finder = _csvscan.Scanner(1, 1, 1)
    while True:   # the header: the first non-blank line
        status = finder.first_line(chunks.buf, chunks.pos, chunks.have, chunks.eof)
        chunks.pos = finder.pos
        if status == _csvscan.SLOW:
            break
        if status == _csvscan.SWITCH:   # quotes or a lone CR before or in the header
            entries = _Entries(segment, sink)
            try:
                file_header = _scan_text(chunks.rest(), path, n_bytes, header, entries,
                                         finder.line - 1, on_header=on_header)
            except CsvError as e:
                return _finish(path, None, entries, e)
            return _finish(path, file_header, entries)
        if chunks.eof:
            raise CsvError(f"{path}: empty file (no header)")
        _fill_line(chunks, path, finder.line)
    line = finder.line
    file_header = _one_row(path, line, _line_text(chunks, finder))
    _check_header(file_header, path, line, header)
    if on_header is not None:
        on_header(file_header)
    ncols = len(file_header)
    chunks.pos = finder.nx
    scanner = _csvscan.Scanner(ncols - 1, n_bytes, segment, line + 1)
    entries = _ScannedEntries(scanner, sink)
    scan = scanner.scan
    try:
        while True:
            status = scan(chunks.buf, chunks.pos, chunks.have, chunks.eof)
            chunks.pos = scanner.pos
            if status == _csvscan.FULL:
                entries.flush()
            elif status == _csvscan.SLOW:   # a line for the csv module's rules
                line = scanner.line
                row = _one_row(path, line, _line_text(chunks, scanner))
                entry = _row_entry(row, ncols, n_bytes)
                if entry is None:
                    raise _bad_row(path, line, row, file_header, n_bytes)
                entries.add(*entry)
                scanner.line = line + 1
                chunks.pos = scanner.nx
            elif status == _csvscan.SWITCH:   # the csv module reads the rest
                # the rest in Python buffers, the waiting entries first (the same segments)
                entries = _Entries(segment, sink, *scanner.take(), entries.total)
                _scan_text(chunks.rest(), path, n_bytes, header, entries, scanner.line - 1,
                           file_header)
                break
            elif chunks.eof:
                break
            else:
                _fill_line(chunks, path, scanner.line)
    except CsvError as e:
        return _finish(path, file_header, entries, e)
    return _finish(path, file_header, entries)


def line_of_entry(path, k, fd=None):
    """The line (1-based, as in errors) where entry k (0-based, blank lines not counted) of a
    file that scanned cleanly starts. Counted in C, but for a file's part from a line with '"'
    or a lone CR on (the csv module's line rules). fd: as for scan_file."""
    return _entry_lines(path, k, fd=fd)[0]


def _entry_lines(path, k, chunk=CHUNK, fd=None):
    """(first line, last line) of the k-th record after the header: they differ only for a
    quoted record with line breaks, never a valid entry (no field of one holds a CR or LF)."""
    shown = os.fspath(path)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"entry index must be a non-negative integer, got {k!r}")
    try:
        with _binary(path, fd) as f:
            chunks = _Chunks(f, chunk)
            chunks.start()
            counter = _csvscan.Scanner(1, 1, 1)
            while True:
                status = counter.line_of(chunks.buf, chunks.pos, chunks.have, chunks.eof, k + 1)
                chunks.pos = counter.pos
                if status == _csvscan.FOUND:
                    return counter.line, counter.line
                if status == _csvscan.SWITCH:
                    reader, seen, line0 = csv.reader(chunks.rest()), counter.nonblank, counter.line - 1
                    for row in reader:
                        if row:
                            if seen == k + 1:
                                return line0 + _record_start(reader.line_num, row), line0 + reader.line_num
                            seen += 1
                    break
                if chunks.eof:
                    break
                chunks.fill()
    except OSError as e:
        raise CsvError(f"{shown}: cannot read: {e.strerror or e}") from None
    except csv.Error:   # only past the entry asked for: it was not there
        pass
    raise ValueError(f"{shown}: no entry {k}")


def _widened(balances, n_bytes):
    """Narrow balances of n_bytes each -> 32-byte words, the kernel's."""
    count = len(balances) // n_bytes
    out = bytearray(WORD * count)
    _records.widen(balances, count, n_bytes, out)
    return out


def _word_list(usernames):
    words = bytes(usernames)
    return [words[i:i + WORD] for i in range(0, len(words), WORD)]


class _Found(Exception):
    pass


class _Job:
    """The files of one job, read in order: one header, usernames unique across all files.
    Duplicates are found with a set of the username words (the small-scale API)."""

    def __init__(self, n_bytes):
        self.n_bytes, self.header, self.seen, self.done = n_bytes, None, set(), []

    def read(self, path, sink):
        """scan_file of the job's next file; sink(currencies, usernames, balances, count) gets
        32-byte words. Returns (currencies, count)."""
        shown, n_bytes, seen = os.fspath(path), self.n_bytes, self.seen
        currencies = []

        def check(usernames, balances, count):
            before = len(seen)
            seen.update(_word_list(usernames))
            if len(seen) != before + count:
                seen.clear()   # its memory, for the search
                raise self._duplicate(self.done + [shown])
            sink(currencies, usernames, _widened(balances, n_bytes), count)

        file_currencies, count = _scan_file(path, n_bytes, self.header, check,
                                            on_header=lambda h: currencies.extend(h[1:]))
        self.header = ["username"] + file_currencies
        self.done.append(shown)
        return file_currencies, count

    def _duplicate(self, paths):
        """The error of the job's first duplicate username, searched for again in ``paths``."""
        seen = set()
        for path in paths:
            k = 0

            def first_repeat(usernames, balances, count):
                nonlocal k
                for word in _word_list(usernames):
                    if word in seen:
                        raise _Found(path, k, word)
                    seen.add(word)
                    k += 1
            try:
                _scan_file(path, self.n_bytes, None, first_repeat)
            except _Found as found:
                _, where, word = found.args
                break
        else:   # cannot happen: the set said there is one
            return CsvError(f"{paths[-1]}: duplicate username")
        seen = None
        for first_path in paths:
            k = 0

            def first_of(usernames, balances, count):
                nonlocal k
                words = bytes(usernames)
                at = words.find(word)
                while at >= 0 and at % WORD:
                    at = words.find(word, at + 1)
                if at >= 0:
                    raise _Found(k + at // WORD)
                k += count
            try:
                _scan_file(first_path, self.n_bytes, None, first_of)
            except _Found as found:
                first = found.args[0]
                break
        name = word_to_username(word)
        return CsvError(f"{path}:{line_of_entry(path, where)}: duplicate username {_q(name)} "
                        f"(first seen at {first_path}:{line_of_entry(first_path, first)})")


def read_csvs(paths, n_bytes=DEFAULT_N_BYTES):
    """Read the files of one job in order: same header, usernames unique across all files.

    Raises the first error in file order, line order. Returns one batch per file.
    """
    check_n_bytes(n_bytes, "n_bytes")
    job, batches = _Job(n_bytes), []
    for path in paths:
        usernames, balances = bytearray(), bytearray()

        def keep(currencies, users, bals, count):
            usernames.extend(users)
            balances.extend(bals)
        currencies, count = job.read(path, keep)
        batches.append(EntryBatch(os.fspath(path), currencies, count, usernames, balances))
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
    job, cutters = _Job(n_bytes), []

    def sink(currencies, usernames, balances, count):
        if not cutters:
            cutters.append(_Cutter(size, currencies, emit))
        cutters[0].add(usernames, balances, count)

    for path in paths:
        job.read(path, sink)
    if cutters:
        cutters[0].finish()
