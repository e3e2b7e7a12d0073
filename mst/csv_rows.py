"""The rules of one row and one header of an entry CSV file, of both formats and both username
encodings: what is a valid header, username, balance and row, the entry (username word, narrow
balances, username bytes) a valid row gives, and why an invalid one is refused (a ``CsvError``,
one line ``FILE:LINE: problem``, so that an operator can fix the input). Reading a file is
csv_reader.py's, a job's files csv_job.py's.

Two formats (SPEC sections 4 and 7), chosen by each file's header:

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
"""
import re

from ..cython_ext import _csvscan, _kernel
from ..cython_ext.params import P, WORD
from .limits import check_username_encoding

_NAME_MAX_SAFE = 31  # any 31-byte value is below P (P has 254 bits)
_COLUMN = re.compile(r"balance_[A-Za-z0-9.-]+_[A-Za-z0-9.-]+").fullmatch
_CONTROL = re.compile("[\x00-\x1f\x7f]").search
# undecodable bytes come through errors='surrogateescape' as these, so we can name the line
_UNDECODABLE = re.compile("[\udc80-\udcff]").search
V1_HEADER = "username;balances"
_MIXED = "the job mixes Summa v1 and v1.1 CSV formats"
_V1_ROW = "a Summa v1 row is NAME;B0,B1,..."
QUOTE_CHARS = 80  # errors quote at most this much of a field


class CsvError(ValueError):
    """One line, 'FILE:LINE: problem' (or 'FILE: problem' when no line applies)."""


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
