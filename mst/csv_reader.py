"""Streaming, strict reader of one entry CSV file (Summa v1.1 or v1, the rules of a row and a
header are csv_rows.py's; a job's files, csv_job.py's).

Every problem is reported as one line ``FILE:LINE: problem`` (a ``CsvError``) so that an operator
can fix the input.

scan_file reads one file: lines are parsed in C (cython_ext/_csvscan.pyx) into packed entries,
usernames as little-endian 32-byte words (the layout the kernel reads; the digest is computed
there too) and balances narrow (N_BYTES each); a line the C loop does not take goes through the
csv module's rules here, and a file's part from a line with a quote or a lone CR on is read by
the csv module alone (_scan_python is that path for a whole file: the reference the C path is
tested against). peek_currencies reads a file's currencies before it is checked,
line_of_entry where an entry is.
"""
import csv
import io
import os

from ..cython_ext import _csvscan
from .csv_rows import (QUOTE_CHARS, V1_HEADER, CsvError, _Form, _row_entry, _row_entry_v1,
                       keccak256, username_to_word, v1_currencies, word_to_username)
from .limits import check_n_bytes, check_username_encoding

__all__ = [
    # this module's
    "CHUNK", "MAX_LINE_BYTES", "PEEK_BYTES", "SEGMENT", "FdReader", "line_of_entry",
    "peek_currencies", "scan_file",
    # csv_rows', imported from here too
    "QUOTE_CHARS", "V1_HEADER", "CsvError", "keccak256", "username_to_word", "v1_currencies",
    "word_to_username",
]


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
_BOM = b"\xef\xbb\xbf"


class _SinkError(Exception):
    """A sink's own CsvError on its way out of scan_file, past the handlers of the file's errors."""


def _sink(sink, *entries):
    try:
        sink(*entries)
    except CsvError as e:
        raise _SinkError(e) from None


class _Entries:
    """Entries collected in Python, handed to names(data, lengths, count) (when given) and
    sink(usernames, balances, count) every `segment`."""

    def __init__(self, segment, sink, names=None, taken=None, total=0):
        """taken: entries waiting already, as Scanner.take() gives them; total: entries sunk
        already."""
        self.segment, self.sink, self.names, self.total = segment, sink, names, total
        users, bals, count, data, lengths = taken or (b"", b"", 0, b"", b"")
        self.users, self.bals, self.count = bytearray(users), bytearray(bals), count
        self.data, self.lengths = bytearray(data), bytearray(lengths)

    def add(self, word, balances, raw):
        self.users += word
        self.bals += balances
        if self.names is not None:
            self.data += raw
            self.lengths += len(raw).to_bytes(4, "little")
        self.count += 1
        if self.count == self.segment:
            self.flush()

    def flush(self):
        if self.count:
            users, bals, count = self.users, self.bals, self.count
            data, lengths = self.data, self.lengths
            self.users, self.bals, self.count = bytearray(), bytearray(), 0
            self.data, self.lengths = bytearray(), bytearray()
            self.total += count
            if self.names is not None:
                _sink(self.names, data, lengths, count)
            _sink(self.sink, users, bals, count)


class _ScannedEntries:
    """The same for entries that live in a C Scanner's buffers (parsed there, or added)."""

    def __init__(self, scanner, sink, names=None):
        self.scanner, self.sink, self.names, self.total = scanner, sink, names, 0

    def add(self, word, balances, raw):
        if self.scanner.add(word, balances, raw if self.names is not None else None):
            self.flush()

    def flush(self):
        if self.scanner.count:
            self.total += self.scanner.count
            users, bals, count, data, lengths = self.scanner.take()
            if self.names is not None:
                _sink(self.names, data, lengths, count)
            _sink(self.sink, users, bals, count)


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


def _scan_text(f, path, form, header, entries, line0=0):
    """The csv module's path over the text file ``f``: each entry goes to entries.add(word,
    balances, raw). ``line0`` lines of the file come before f's first one; unless form.seen (the
    header was read already), f starts with the header."""
    lines = _BoundedLines(f)
    reader = csv.reader(lines)
    base = line0   # the lines before the current reader's first one
    try:
        if not form.seen:
            file_header = next((row for row in reader if row), None)
            if file_header is None:
                raise CsvError(f"{path}: empty file (no header)")
            form.take_header(file_header, path, line0 + reader.line_num, header)
        if form.v1:   # the rows: ';' between the two fields
            base = line0 + lines.count
            reader = csv.reader(lines, delimiter=";")
            row_entry, arg = _row_entry_v1, form.ncur
        else:
            row_entry, arg = _row_entry, len(form.header)
        n_bytes, keccak, add = form.n_bytes, form.keccak, entries.add
        for row in reader:
            if not row:
                continue  # blank line
            if arg is None:   # Summa v1, the job's first entry: it says N
                form.first_row(row, path, base + _record_start(reader.line_num, row))
                arg = form.ncur
            entry = row_entry(row, arg, n_bytes, keccak)
            if entry is None:
                raise form.bad_row(path, base + _record_start(reader.line_num, row), row)
            add(*entry)
    except csv.Error as e:
        raise CsvError(f"{path}:{base + reader.line_num}: malformed CSV: {e}") from None
    except _LongLine:
        raise CsvError(f"{path}:{line0 + lines.count + 1}: {_LONG_LINE}") from None


def _finish(path, form, entries, error=None):
    """Sink the entries not sunk yet, those before the bad line if there is one (a sink's own
    error, e.g. a duplicate, comes first: it is earlier in the file), then raise the error, or
    return (currencies, count)."""
    entries.flush()
    if error is not None:
        raise error
    if not entries.total:
        raise CsvError(f"{path}: no entries (the file has a header only)")
    return form.header[1:], entries.total


def _check_scan_args(n_bytes, segment, encoding, names):
    check_n_bytes(n_bytes, "n_bytes")
    if isinstance(segment, bool) or not isinstance(segment, int) or segment < 1:
        raise ValueError(f"segment must be a positive integer, got {segment!r}")
    if names is not None and not callable(names):
        raise ValueError(f"names must be a callable or None, got {type(names).__name__}")
    return check_username_encoding(encoding, "encoding") == "keccak256"


def _scan_python(path, n_bytes, header, sink, segment=SEGMENT, encoding="bytes", names=None):
    """scan_file with the csv module alone: the reference of the C path, and its fallback."""
    keccak = _check_scan_args(n_bytes, segment, encoding, names)
    shown = os.fspath(path)
    entries, form = _Entries(segment, sink, names), _Form(n_bytes, keccak)
    try:
        with _open(path) as f:
            try:
                _scan_text(f, shown, form, header, entries)
            except CsvError as e:
                return _finish(shown, form, entries, e)
            return _finish(shown, form, entries)
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


class _Prefix(io.RawIOBase):
    """The first `limit` bytes of a raw file; cut: the limit was reached before its end."""

    def __init__(self, f, limit):
        self.f, self.left, self.cut = f, limit, False

    def readable(self):
        return True

    def readinto(self, b):
        if self.left <= 0:
            self.cut = True
            return 0
        with memoryview(b) as view:
            n = self.f.readinto(view[:min(len(view), self.left)]) or 0
        self.left -= n
        return n


PEEK_BYTES = 2 * MAX_LINE_BYTES + (1 << 16)   # peek_currencies reads at most this much


def peek_currencies(fd):
    """The balance column names of a CSV (an open descriptor, read from its start with pread),
    for what must be known before scan_file has checked the file (if they are wrong, scan_file
    fails the job). v1.1: the header's columns after the first, unchecked; Summa v1
    ('username;balances'): ["currency_0", ...], as many as the first entry row has balances.
    [] when unknown: an empty or unreadable file, a v1 file without a NAME;BALANCES first row,
    or no answer within the first PEEK_BYTES bytes (the most it reads)."""
    try:
        prefix = _Prefix(FdReader(fd), PEEK_BYTES)
        with io.TextIOWrapper(io.BufferedReader(prefix), newline="", encoding="utf-8-sig",
                              errors="replace") as handle:
            lines = _PeekLines(handle, prefix)
            header = next((row for row in csv.reader(lines) if row), [])
            if header != [V1_HEADER]:
                return [] if lines.cut else header[1:]
            row = next((row for row in csv.reader(lines, delimiter=";") if row), [])
            if lines.cut or len(row) != 2:
                return []
            return v1_currencies(row[1].count(",") + 1)
    except (OSError, csv.Error):
        return []


class _PeekLines:
    """The lines of a text file read through a _Prefix; cut: a line was cut by its limit."""

    def __init__(self, f, prefix):
        self.f, self.prefix, self.cut = f, prefix, False

    def __iter__(self):
        return self

    def __next__(self):
        line = self.f.readline()
        if not line:
            self.cut = self.cut or self.prefix.cut
            raise StopIteration
        if not line.endswith(("\n", "\r")) and self.prefix.cut:
            self.cut = True
        return line


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


def _one_row(path, line, text, delimiter=","):
    """The csv row of one line that has no '"' and no CR (what csv makes of it in the file)."""
    try:
        return next(csv.reader((text,), delimiter=delimiter))
    except csv.Error as e:
        raise CsvError(f"{path}:{line}: malformed CSV: {e}") from None


def scan_file(path, n_bytes, header, sink, segment=SEGMENT, chunk=CHUNK, fd=None, digest=None,
              encoding="bytes", names=None):
    """Read one CSV file (Summa v1.1 or v1) with every check of SPEC sections 4 and 7 except
    duplicate usernames.

    fd: a descriptor open on the file, read instead of opening `path` (which errors still name),
    from its start whatever its position; digest (a hashlib object, with fd): updated with
    every byte of the file as it is read, once.

    header: None for a job's first file, else the job's header list (["username"] + the first
    file's currencies); a different header is a CsvError, and so is a file of the other format.
    encoding: "bytes" or "keccak256" (limits.USERNAME_ENCODINGS), how usernames become words.

    sink(usernames, balances, count) gets at most ``segment`` entries at a time, in file order:
    usernames count 32-byte little-endian words (username_to_word), balances count * N values of
    n_bytes bytes each, little-endian, entry-major (narrow: not padded to 32). names, when given,
    is called just before each sink call as names(data, lengths, count) with the same entries'
    usernames: their UTF-8 bytes concatenated, and their byte lengths as count uint32
    little-endian. All are memoryviews of buffers that are reused once the call returns (copy
    what you keep). Returns (currencies, count): the file's header[1:] (["currency_0", ...] for a
    Summa v1 file) and its number of entries. Raises CsvError ('FILE:LINE: problem', ...) after
    having sunk the entries before the bad line.

    Lines are parsed in C (cython_ext/_csvscan.pyx, the keccak256 digests too); a line the C loop
    does not take is decided by the csv module with the same rules, and from a line with '"' or a
    lone CR on, the rest of the file is read by the csv module: the results and errors are those
    of _scan_python."""
    return _scan_file(path, n_bytes, header, sink, segment, chunk, fd=fd, digest=digest,
                      encoding=encoding, names=names)


def _scan_file(path, n_bytes, header, sink, segment=SEGMENT, chunk=CHUNK, on_header=None, fd=None,
               digest=None, encoding="bytes", names=None):
    keccak = _check_scan_args(n_bytes, segment, encoding, names)
    shown = os.fspath(path)
    try:
        with _binary(path, fd, digest) as f:
            return _scan_open(f, shown, _Form(n_bytes, keccak, on_header), header, sink, names,
                              segment, chunk)
    except OSError as e:
        raise CsvError(f"{shown}: cannot read: {e.strerror or e}") from None
    except _SinkError as e:
        raise e.args[0] from None


def _fill_line(chunks, path, line):
    """Read more for the line that starts at chunks.pos, unless it is already too long."""
    if chunks.have - chunks.pos >= MAX_LINE_BYTES:
        raise CsvError(f"{path}:{line}: {_LONG_LINE}")
    chunks.fill()


def _next_line(chunks, finder, path):
    """Skip blank lines to the next line: SLOW (it is finder's [pos, ce), complete), SWITCH (it
    has '"' or a lone CR) or None (the end of the file)."""
    while True:
        status = finder.first_line(chunks.buf, chunks.pos, chunks.have, chunks.eof)
        chunks.pos = finder.pos
        if status == _csvscan.SLOW or status == _csvscan.SWITCH:
            return status
        if chunks.eof:
            return None
        _fill_line(chunks, path, finder.line)


def _scan_open(f, path, form, header, sink, names, segment, chunk):
    chunks = _Chunks(f, chunk)
    chunks.start()
    finder = _csvscan.Scanner(1, 1, 1)
    status = _next_line(chunks, finder, path)   # the header: the first non-blank line
    if status is None:
        raise CsvError(f"{path}: empty file (no header)")
    if status == _csvscan.SWITCH:   # quotes or a lone CR before or in the header
        return _text_rest(chunks, path, form, header, _Entries(segment, sink, names), finder.line)
    line = finder.line
    form.take_header(_one_row(path, line, _line_text(chunks, finder)), path, line, header)
    chunks.pos = finder.nx
    n_bytes, keccak, v1 = form.n_bytes, form.keccak, form.v1
    if form.header is None:   # Summa v1, the job's first file: its first entry says N
        finder.line = line + 1
        status = _next_line(chunks, finder, path)
        if status is None:
            return _finish(path, form, _Entries(segment, sink, names))   # no entries
        if status == _csvscan.SWITCH:
            return _text_rest(chunks, path, form, header, _Entries(segment, sink, names),
                              finder.line)
        line = finder.line
        row = _one_row(path, line, _line_text(chunks, finder), ";")
        form.first_row(row, path, line)
        if form.header is None:
            raise form.bad_row(path, line, row)
        line -= 1   # the scanner starts at that row, as at any other
    scanner = _csvscan.Scanner(form.ncur, n_bytes, segment, line + 1, keccak=keccak, v1=v1,
                               names=names is not None)
    entries = _ScannedEntries(scanner, sink, names)
    scan, entry_of, delimiter = scanner.scan, form.entry, ";" if v1 else ","
    try:
        while True:
            status = scan(chunks.buf, chunks.pos, chunks.have, chunks.eof)
            chunks.pos = scanner.pos
            if status == _csvscan.FULL:
                entries.flush()
            elif status == _csvscan.SLOW:   # a line for the csv module's rules
                line = scanner.line
                row = _one_row(path, line, _line_text(chunks, scanner), delimiter)
                entry = entry_of(row)
                if entry is None:
                    raise form.bad_row(path, line, row)
                entries.add(*entry)
                scanner.line = line + 1
                chunks.pos = scanner.nx
            elif status == _csvscan.SWITCH:   # the csv module reads the rest
                # the rest in Python buffers, the waiting entries first (the same segments)
                entries = _Entries(segment, sink, names, scanner.take(), entries.total)
                _scan_text(chunks.rest(), path, form, header, entries, scanner.line - 1)
                break
            elif chunks.eof:
                break
            else:
                _fill_line(chunks, path, scanner.line)
    except CsvError as e:
        return _finish(path, form, entries, e)
    return _finish(path, form, entries)


def _text_rest(chunks, path, form, header, entries, line):
    """The csv module reads the file from `line` (at chunks.pos) on."""
    try:
        _scan_text(chunks.rest(), path, form, header, entries, line - 1)
    except CsvError as e:
        return _finish(path, form, entries, e)
    return _finish(path, form, entries)


def line_of_entry(path, k, fd=None):
    """The line (1-based, as in errors) where entry k (0-based, blank lines not counted) of a
    file that scanned cleanly starts. Counted in C, but for a file's part from a line with '"'
    or a lone CR on (the csv module's line rules, with ';' for a Summa v1 file's rows). fd: as
    for scan_file."""
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
            target, v1 = 0, False   # the header first: its format says how records are read
            while True:
                status = counter.line_of(chunks.buf, chunks.pos, chunks.have, chunks.eof, target)
                chunks.pos = counter.pos
                if status == _csvscan.FOUND:
                    if target:
                        return counter.line, counter.line
                    try:
                        v1 = _one_row(shown, counter.line, _line_text(chunks, counter)) == [V1_HEADER]
                    except CsvError:
                        pass
                    counter.nonblank, counter.line, chunks.pos = 1, counter.line + 1, counter.nx
                    target = k + 1
                    continue
                if status == _csvscan.SWITCH:
                    rest, seen, line0 = chunks.rest(), counter.nonblank, counter.line - 1
                    reader = csv.reader(rest, delimiter=";" if v1 else ",")
                    if not seen:   # the header is in the csv part: read with ',', as any header
                        header = next((row for row in reader if row), None)
                        seen = 1
                        if header == [V1_HEADER]:
                            line0 += reader.line_num
                            reader = csv.reader(rest, delimiter=";")
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
