"""Streaming, strict reader for the entry CSV files of a job.

Every problem is reported as one line ``FILE:LINE: problem`` (a ``CsvError``) so that an operator
can fix the input. Two formats (SPEC sections 4 and 7), chosen by each file's header:

- Summa v1.1 (SPEC 4): header ``username,balance_<CURRENCY>_<CHAIN>,...``, rows
  ``NAME,B0,B1,...``, read as CSV (',' between fields, '"' quoting, LF or CRLF, a BOM skipped).
- Summa v1 (SPEC 7): the header row is exactly ``username;balances``; rows ``NAME;B0,B1,...``.
  The rules:

  * The file is v1 when its header row (the first non-blank one, read as CSV with ',' as any
    header is) is the single field ``username;balances``. Anything else is a v1.1 header and is
    checked as one.
  * Every row after it is read as CSV with ';' as the delimiter and '"' quoting, as summa-solvency
    v1 read it (the Rust csv crate, delimiter b';'): a row must have exactly two fields, the
    username and the balances. So a username may hold ',' (and, quoted, ';' or '"'); a line with
    no ';' or with a second one (outside quotes) is an error. The second field is split on ','
    into the balances (no quoting inside it, no spaces).
  * The currencies are unnamed: ``currency_0`` ... ``currency_{N-1}``. N is the number of
    balances of the first entry row of the job's first file (at most MAX_CURRENCIES); every row
    of every file of the job must have N ("missing balances" / "extra balances" otherwise).
  * Everything else is as in v1.1: blank lines skipped, balances decimal digits only, below
    2^(8 N_BYTES), usernames non-empty UTF-8 without control characters, the encoding's length
    rule, unique across the job, an empty file, a header-only file.
  * A job's later files are read with ``header=["username", "currency_0", ...]`` (the first
    file's currencies with "username" in front, as for v1.1). That header cannot be a v1.1 one
    (its columns must match balance_<CURRENCY>_<CHAIN>), so it says "the job is v1": a v1.1
    file in a v1 job, or a v1 file in a v1.1 job, is an error ("mixes Summa v1 and v1.1").

Username encodings (SPEC 7), per job: ``bytes`` (the default, SPEC 2): the UTF-8 bytes read as
one big-endian integer, which must be below P (at most 32 bytes); ``keccak256``: the Keccak-256
digest (Ethereum's, not SHA3-256) of the UTF-8 bytes read big-endian, reduced mod P; any length
then. Under keccak256 two usernames are duplicates when their bytes are equal.

scan_file reads one file: lines are parsed in C (cython_ext/_csvscan.pyx) into packed entries,
usernames as little-endian 32-byte words (the layout the kernel reads; the digest is computed
there too) and balances narrow (N_BYTES each); a line the C loop does not take goes through the
csv module's rules here, and a file's part from a line with a quote or a lone CR on is read by
the csv module alone (_scan_python is that path for a whole file: the reference the C path is
tested against). read_csvs and stream_csvs add the job's checks (one header, unique usernames)
and widen the balances to 32-byte words.
"""
import csv
import io
import os
import re
import sys
from array import array
from dataclasses import dataclass
from itertools import accumulate

from ..cython_ext import _csvscan, _kernel, _records
from ..cython_ext.params import P, WORD
from .limits import DEFAULT_N_BYTES, check_n_bytes, check_power_of_two, check_username_encoding

_NAME_MAX_SAFE = 31  # any 31-byte value is below P (P has 254 bits)
_COLUMN = re.compile(r"balance_[A-Za-z0-9.-]+_[A-Za-z0-9.-]+").fullmatch
_CONTROL = re.compile("[\x00-\x1f\x7f]").search
# undecodable bytes come through errors='surrogateescape' as these, so we can name the line
_UNDECODABLE = re.compile("[\udc80-\udcff]").search
V1_HEADER = "username;balances"
_MIXED = "the job mixes Summa v1 and v1.1 CSV formats"
_V1_ROW = "a Summa v1 row is NAME;B0,B1,..."


class CsvError(ValueError):
    """One line, 'FILE:LINE: problem' (or 'FILE: problem' when no line applies)."""


@dataclass
class EntryBatch:
    path: str
    currencies: list[str]  # the header's balance column names (currency_0, ... for Summa v1)
    count: int
    usernames: bytearray  # count words: the username's field value, 32 bytes little-endian
    balances: bytearray  # count * len(currencies) words, entry-major, 32 bytes little-endian
    names: bytes = None  # when known: the usernames' UTF-8 bytes, concatenated
    name_lengths: bytes = None  # when known: count byte lengths of those, uint32 little-endian


def v1_currencies(n):
    """The names of a Summa v1 file's n unnamed currencies."""
    return [f"currency_{i}" for i in range(n)]


def _is_v1_job(header):
    """Whether a job's header (["username"] + the first file's currencies) is a Summa v1 job's."""
    return (header is not None and len(header) >= 2 and header[0] == "username"
            and list(header[1:]) == v1_currencies(len(header) - 1))


def _q(text):
    """repr() of a field for an error, cut to QUOTE_CHARS (a field may be megabytes long)."""
    return repr(text) if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]!r}... ({len(text)} characters)"


def _username_problem(name, keccak=False):
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
    if not keccak and len(raw) > _NAME_MAX_SAFE and int.from_bytes(raw, "big") >= P:
        return (f"username too long: {len(raw)} bytes, its value is not below the field "
                f"modulus (at most {_NAME_MAX_SAFE} bytes always fit)")
    return None


def keccak256(data):
    """The Keccak-256 digest (Ethereum's padding, not SHA3-256) of bytes, 32 bytes (in C)."""
    return _csvscan.keccak256(data)


def username_to_word(username, encoding="bytes"):
    """The username's field value as a 32-byte LE word: under ``bytes`` its UTF-8 bytes read
    big-endian (which must be below P), under ``keccak256`` the Keccak-256 digest of those bytes
    read big-endian, mod P (any length). ValueError says why a username is refused."""
    keccak = check_username_encoding(encoding, "encoding") == "keccak256"
    if not isinstance(username, str):
        raise ValueError(f"username must be a str, got {type(username).__name__}")
    problem = _username_problem(username, keccak)
    if problem:
        raise ValueError(problem)
    raw = username.encode("utf-8")
    if keccak:
        return _csvscan.keccak256_word(raw)
    return int.from_bytes(raw, "big").to_bytes(WORD, "little")


def word_to_username(word):
    """Inverse of username_to_word under the ``bytes`` encoding only: a keccak256 word is a
    digest and gives no username back (keep the names: EntryBatch.names, scan_file's names)."""
    value = int.from_bytes(word, "little")
    return value.to_bytes((value.bit_length() + 7) // 8, "big").decode("utf-8")


def _header_problem(header):
    if any(_UNDECODABLE(c) for c in header):
        return "bytes that are not valid UTF-8"
    if header[0] != "username":
        hint = f" (a Summa v1 header is exactly {V1_HEADER!r})" if ";" in header[0] else ""
        return f"bad header: first column must be 'username', got {_q(header[0])}{hint}"
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


def _balances_problem(name, columns, fields, n_bytes, keccak):
    """Why an entry with the right number of fields is invalid, or None."""
    problem = _username_problem(name, keccak)
    if problem:
        return problem
    for column, field in zip(columns, fields):
        if field.startswith("-") and field[1:].isascii() and field[1:].isdigit():
            return f"negative balance {_q(field)} in {column}"
        if not (field.isascii() and field.isdigit()):
            return f"balance {_q(field)} in {column} is not a decimal integer"
        digits = field.lstrip("0")
        if len(digits) > 80 or int(digits or "0") >> (8 * n_bytes):
            return f"balance {_q(field)} in {column} is out of range (must be < 2^{8 * n_bytes})"
    return None


def _row_problem(row, header, n_bytes, keccak=False):
    """Why a (non-blank) v1.1 row is invalid, or None. The slow path: only called on failure."""
    if any(_UNDECODABLE(f) for f in row):
        return "bytes that are not valid UTF-8"
    if len(row) != len(header):
        which = "missing" if len(row) < len(header) else "extra"
        return f"{which} columns: expected {len(header)} columns, got {len(row)}"
    return _balances_problem(row[0], header[1:], row[1:], n_bytes, keccak)


def _row_problem_v1(row, ncur, origin, n_bytes, keccak=False):
    """The same for a Summa v1 row (ncur None: the number of balances is not known yet)."""
    if any(_UNDECODABLE(f) for f in row):
        return "bytes that are not valid UTF-8"
    if len(row) < 2:
        return f"no ';' after the username ({_V1_ROW})"
    if len(row) > 2:
        return f"more than one ';' ({len(row) - 1} outside quotes; {_V1_ROW})"
    fields = row[1].split(",")
    if ncur is not None and len(fields) != ncur:
        which = "missing" if len(fields) < ncur else "extra"
        return (f"{which} balances: expected {ncur} balance{'s' if ncur != 1 else ''} after ';' "
                f"({origin}), got {len(fields)}")
    return _balances_problem(row[0], v1_currencies(len(fields)), fields, n_bytes, keccak)


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


def _entry_of(name, fields, n_bytes, keccak):
    """(username word, narrow balances, username bytes) of an entry, or None when it is bad."""
    try:
        raw = name.encode()  # surrogates (undecodable bytes) raise here
    except UnicodeError:
        return None
    # isprintable() is a quick C check that rules control characters out for most names
    if not raw or (not name.isprintable() and _CONTROL(name)):
        return None
    if not keccak:
        value = int.from_bytes(raw, "big")
        if len(raw) > _NAME_MAX_SAFE and value >= P:
            return None
    balances = []
    for field in fields:
        if not (field.isascii() and field.isdigit()):
            return None
        try:
            balances.append(int(field).to_bytes(n_bytes, "little"))
        except OverflowError:   # out of range
            return None
        except ValueError:      # more digits than int() takes: leading zeros, or out of range
            digits = field.lstrip("0")
            if len(digits) > 80:
                return None
            try:
                balances.append(int(digits or "0").to_bytes(n_bytes, "little"))
            except OverflowError:
                return None
    word = _csvscan.keccak256_word(raw) if keccak else value.to_bytes(WORD, "little")
    return word, b"".join(balances), raw


def _row_entry(row, ncols, n_bytes, keccak=False):
    """(username word, narrow balances, username bytes) of a non-blank v1.1 csv row, or None
    when the row is bad (then _row_problem says why). The one place of the row rules: the csv
    path uses it for every row, the C path for the lines it hands back."""
    if len(row) != ncols:
        return None
    return _entry_of(row[0], row[1:], n_bytes, keccak)


def _row_entry_v1(row, ncur, n_bytes, keccak=False):
    """The same for a Summa v1 row ``NAME;B0,B1,...`` (read with delimiter ';')."""
    if len(row) != 2:
        return None
    fields = row[1].split(",")
    if len(fields) != ncur:
        return None
    return _entry_of(row[0], fields, n_bytes, keccak)


class _Form:
    """One file's format, as its header says, and what its rows are read with: v1 or v1.1, the
    file's header once known (v1.1: its row; v1: ["username", "currency_0", ...], known from the
    job's header or from the first entry row), the encoding."""

    def __init__(self, n_bytes, keccak, on_header=None):
        self.n_bytes, self.keccak, self.on_header = n_bytes, keccak, on_header
        self.seen = False     # the header line was read
        self.v1 = False
        self.header = None
        self.origin = None    # v1: where N came from, for the balance-count errors

    @property
    def ncur(self):
        return None if self.header is None else len(self.header) - 1

    def _set(self, header):
        self.header = header
        if self.on_header is not None:
            self.on_header(header)

    def take_header(self, row, path, line, header):
        """The file's header row (read with ','), checked against the job's ``header``."""
        self.seen = True
        if row == [V1_HEADER]:
            self.v1 = True
            if header is not None:
                if not _is_v1_job(header):
                    raise CsvError(f"{path}:{line}: {_MIXED}: this file is Summa v1 (header "
                                   f"{V1_HEADER!r}), the job's first file is v1.1 (header "
                                   f"{list(header)})")
                self.origin = "as in the job's first file"
                self._set(list(header))
            return
        problem = _header_problem(row)
        if problem:
            raise CsvError(f"{path}:{line}: {problem}")
        if header is not None:
            if _is_v1_job(header):
                raise CsvError(f"{path}:{line}: {_MIXED}: this file is v1.1 (header {row}), the "
                               f"job's first file is Summa v1 (header {V1_HEADER!r})")
            if row != list(header):
                raise CsvError(f"{path}:{line}: header differs from the job's first file "
                               f"(expected {list(header)}, got {row})")
        self._set(row)

    def first_row(self, row, path, line):
        """Summa v1, the job's first entry row (read with ';'): it says N. A row that is not
        NAME;BALANCES leaves N unknown: its own error follows."""
        if len(row) != 2:
            return
        n = row[1].count(",") + 1
        if n > _kernel.MAX_CURRENCIES:
            raise CsvError(f"{path}:{line}: {n} balances after ';', at most "
                           f"{_kernel.MAX_CURRENCIES} currencies are supported")
        self.origin = f"as on line {line}, the first entry"
        self._set(["username"] + v1_currencies(n))

    def entry(self, row):
        if self.v1:
            return _row_entry_v1(row, self.ncur, self.n_bytes, self.keccak)
        return _row_entry(row, len(self.header), self.n_bytes, self.keccak)

    def bad_row(self, path, line, row):
        if self.v1:
            problem = _row_problem_v1(row, self.ncur, self.origin, self.n_bytes, self.keccak)
        else:
            problem = _row_problem(row, self.header, self.n_bytes, self.keccak)
        return CsvError(f"{path}:{line}: {problem or 'invalid entry'}")


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
