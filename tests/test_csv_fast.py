"""The C fast path of the CSV reader (scan_file, cython_ext/_csvscan.pyx) against the csv-module
path it must equal (_scan_python): the same entries, in the same sink calls, and the same error.

Files are generated from a seed: mostly good rows, bad lines of every kind at random places,
LF and CRLF, blank lines, a BOM, quotes and lone CRs (the csv module reads the rest of the file),
non-ASCII usernames, 1 to 4 currencies, balances at the edges of 2^(8 N_BYTES); each is read
with small chunks and segments so that lines and entries straddle their boundaries. The same
for Summa v1 files (``username;balances``, rows ``NAME;B0,B1,...``), under both username
encodings (bytes, keccak256), with and without the names callback.
"""
import csv
import random

import pytest

from summa_aggregation.cython_ext import _csvscan, _records
from summa_aggregation.cython_ext.params import P
from summa_aggregation.mst import csv_reader, csv_rows
from summa_aggregation.mst.csv_job import _widened, read_csvs
from summa_aggregation.mst.csv_reader import (
    SEGMENT, V1_HEADER, CsvError, _entry_lines, _scan_python, line_of_entry, scan_file,
    username_to_word, v1_currencies)

ENCODINGS = ["bytes", "keccak256"]
COLUMNS = ["balance_ETH_ETH", "balance_USDT_ETH", "balance_BTC_BTC", "balance_A.1_x-y"]
N_BYTES = [1, 2, 3, 7, 8, 9, 14, 16, 24, 31]
ASCII_NAME = "abcxyzABCXYZ0189 _-.@!#$%&'()*+/:;<=>?[]^`{|}~\\"


def good_name(rng, k):
    kind = rng.randrange(12)
    if kind == 0:
        return rng.choice(["é", "用户", "zoë", "𝔘", "ж", "\u0085", "\u2028", "\ufeffa", "€"]) + str(k)
    if kind == 1:
        return rng.choice(["a" * 31, "é" * 15 + "a", "0" * 32, "0" * 31 + "1", " ", "x y",
                           "0dNrà" + "a" * 26, "0dNq" + "~" * 28])   # 32 bytes below P = 0x30644e72e1...
    return "".join(rng.choice(ASCII_NAME) for _ in range(rng.randint(1, 12))) + f"{k}"


def good_balance(rng, n_bytes):
    top = 2 ** (8 * n_bytes)
    kind = rng.randrange(10)
    if kind == 0:
        return str(top - 1)
    if kind == 1:
        return "0" * rng.randint(1, 5) + str(rng.randrange(top))
    if kind == 2:
        return rng.choice(["0", "00", "0" * 79 + "1", "0" * 90 + "7", str(min(top - 1, 2 ** 64 - 1))])
    if kind == 3:
        return str(min(top - 1, 10 ** 19 + rng.randrange(10 ** 19)))
    return str(rng.randrange(min(top, 2 ** 40)))


def bad_line(rng, ncols, n_bytes):
    name = "bad"
    balances = ["1"] * (ncols - 1)
    kind = rng.randrange(22)
    at = rng.randrange(ncols - 1)
    if kind == 0:
        return ",".join([name] + balances[:-1])            # missing column
    if kind == 1:
        return ",".join([name] + balances + ["2"])          # extra column
    if kind == 2:
        name = ""
    elif kind == 3:
        name = rng.choice(["a\x00", "\x00a", "al\tice", "a\x7f", "\x1f"])
    elif kind == 4:
        name = rng.choice(["x" * 40, "1" + "0" * 31, "é" * 16, "\U0001d518" * 8, "0dNr\u1100" + "a" * 25,
                           "0dNs" + "a" * 28, "0" * 33])
    elif kind == 5:
        balances[at] = rng.choice(["-5", "+5", " 5", "5 ", "1.5", "1e5", "5_000", "", "٣", "²", "0x10", "-0"])
    elif kind == 6:
        balances[at] = str(2 ** (8 * n_bytes) + rng.randrange(3))
    elif kind == 7:
        balances[at] = rng.choice(["9" * 81, "9" * 5000, "1" * 200_000, "0" * 4400 + "1"])
    elif kind == 8:
        return b"al\xffice," + ",".join(balances).encode()
    elif kind == 9:
        return rng.choice([b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe0\x80\x80",
                           b"\xf0\x80\x80\x80", b"\xc2", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"]) \
            + b"," + ",".join(balances).encode()
    elif kind == 10:
        balances[at] = rng.choice(["\xff", "1\x00", "\x00"])
        if balances[at] == "\xff":
            return ("u," + ",".join(balances)).encode("latin-1")
    elif kind == 11:
        return "\x00" * rng.randint(1, 3)
    elif kind == 12:
        return " " * rng.randint(1, 3)
    elif kind == 13:
        return ","
    elif kind == 14:   # a quote: the csv module's rules from here on
        return rng.choice(['"a,b",' + ",".join(balances), 'x"y,' + ",".join(balances),
                           '"multi\nline",' + ",".join(balances), '"unclosed,1', '"",1' + ",1" * (ncols - 2),
                           "u," + '"' + balances[0] + '"' + "".join("," + b for b in balances[1:])])
    elif kind == 15:   # a lone CR
        return rng.choice(["u\r," + ",".join(balances), "u," + ",".join(balances) + "\r\r", "\r"])
    elif kind == 16:
        name = "\ufeffa"   # a BOM past the start is a character
    elif kind == 17:
        return "bad\x0b,1" + ",1" * (ncols - 2)     # \x0b is a control character
    elif kind == 18:
        return b"\xef\xbb\xbf" + ",".join(["u"] + balances).encode()
    elif kind == 19:
        balances[at] = balances[at] + "\u2028"
    elif kind == 20:
        name = "a,b"      # one column too many
    else:
        name = "0" * 32   # fine after all: below the modulus (the csv module decides)
    return ",".join([name] + balances)


def file_of(rng, lines):
    """The bytes of a generated file: its lines, maybe a trailing blank one, a BOM and leading
    line breaks now and then, one line ending for all or a random one per line, the last line
    ended or not."""
    if rng.random() < 0.1:
        lines.append(b"")
    ending = rng.choice([b"\n", b"\r\n", None])
    out = b"\xef\xbb\xbf" if rng.random() < 0.15 else b""
    if rng.random() < 0.1:
        out += rng.choice([b"\n", b"\r\n", b"\n\r\n"])
    for i, line in enumerate(lines):
        out += line
        if i + 1 < len(lines) or rng.random() < 0.8:
            out += ending if ending else rng.choice([b"\n", b"\r\n"])
    return out


def make_file(rng, n_cur=None, n_bytes=None, rows=None):
    n_cur = n_cur or rng.randint(1, 4)
    n_bytes = n_bytes or rng.choice(N_BYTES)
    ncols = n_cur + 1
    header = ["username"] + COLUMNS[:n_cur]
    kind = rng.randrange(20)
    if kind == 0:
        head = rng.choice([",".join(header).replace("username", "user"), "username", "",
                           '"username",' + ",".join(header[1:]), "username," + COLUMNS[0] + ",",
                           "username\r" + "".join("," + c for c in header[1:])])
    else:
        head = ",".join(header)
    lines = [head.encode() if isinstance(head, str) else head]
    n_rows = rows if rows is not None else rng.choice([0, 1, 2, 5, 20, 60])
    p_bad = rng.choice([0, 0, 0.02, 0.1, 0.3])
    for k in range(n_rows):
        if rng.random() < 0.05:
            lines.append(b"")      # a blank line
        if rng.random() < p_bad:
            line = bad_line(rng, ncols, n_bytes)
        else:
            line = ",".join([good_name(rng, k)] + [good_balance(rng, n_bytes) for _ in range(n_cur)])
        lines.append(line.encode() if isinstance(line, str) else line)
    return file_of(rng, lines), n_bytes, header


def run(reader, path, n_bytes, header=None, names=False, **kw):
    """(result or error message, the sink calls in order: with names=True, each sink call comes
    right after a names call of the same count)."""
    calls = []

    def sink(usernames, balances, count):
        assert len(usernames) == 32 * count
        if names:
            assert calls and calls[-1][0] == "names" and calls[-1][3] == count
        calls.append((bytes(usernames), bytes(balances), count))

    def name_sink(data, lengths, count):
        assert len(lengths) == 4 * count
        assert sum(int.from_bytes(lengths[i:i + 4], "little") for i in range(0, 4 * count, 4)) \
            == len(data)
        calls.append(("names", bytes(data), bytes(lengths), count))
    if names:
        kw["names"] = name_sink
    try:
        result = reader(path, n_bytes, header, sink, **kw)
    except CsvError as error:
        message = str(error)
        assert "\n" not in message and message.startswith(str(path) + ":")
        result = message
    return result, calls


def same(path, n_bytes, header=None, segment=SEGMENT, chunk=csv_reader.CHUNK, encoding="bytes",
         names=False):
    expected = run(_scan_python, path, n_bytes, header, segment=segment, encoding=encoding,
                   names=names)
    got = run(scan_file, path, n_bytes, header, segment=segment, chunk=chunk, encoding=encoding,
              names=names)
    assert got == expected, path.read_bytes()[:2000]
    return got


@pytest.mark.parametrize("block", range(20))
def test_scan_file_equals_the_csv_path(tmp_path, block):
    outcomes = set()
    for seed in range(block * 60, block * 60 + 60):
        rng = random.Random(seed)
        data, n_bytes, header = make_file(rng)
        path = tmp_path / f"f{seed}.csv"
        path.write_bytes(data)
        segment = rng.choice([1, 2, 3, 7, 64, SEGMENT])
        chunk = rng.choice([4, 5, 16, 61, 1 << 22])
        encoding, names = rng.choice(ENCODINGS), rng.random() < 0.5
        result, calls = same(path, n_bytes, segment=segment, chunk=chunk, encoding=encoding,
                             names=names)
        if rng.random() < 0.3:   # as a later file of a job: its header must match
            same(path, n_bytes, header=rng.choice([header, header[:2], ["username", "balance_X_Y"],
                                                   ["username", "currency_0"]]),
                 segment=segment, chunk=chunk, encoding=encoding, names=names)
        outcomes.add(result.split(":")[-1].split("(")[0].strip()[:20] if isinstance(result, str)
                     else "ok")
    assert "ok" in outcomes and len(outcomes) > 3, outcomes


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_equal_the_csv_path(tmp_path, seed):
    rng = random.Random(1000 + seed)
    alphabet = [b"a", b"b", b"0", b"7", b"9", b",", b",", b"\n", b"\n", b"\r\n", b"\r", b'"', b"\x00", b"\xff",
                b"\xc3\xa9", b"\xc3", b" ", b"-", b"\xef\xbb\xbf", b"\t", b"\x7f", b"\xe2\x80\xa8"]
    for i in range(40):
        head = rng.choice([b"username,balance_ETH_ETH\n", b"username,balance_ETH_ETH,balance_BTC_BTC\r\n",
                           b"\xef\xbb\xbfusername,balance_ETH_ETH\n", b"\n\r\nusername,balance_ETH_ETH\n", b""])
        data = head + b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        path = tmp_path / f"r{i}.csv"
        path.write_bytes(data)
        same(path, rng.choice([1, 8, 14]), segment=rng.choice([1, 2, 5]), chunk=rng.choice([4, 7, 1 << 22]),
             encoding=rng.choice(ENCODINGS), names=rng.random() < 0.5)


def test_the_clean_lines_never_reach_python(tmp_path, monkeypatch):
    rows = "".join(f"user{i} x,{i * 7919 % 10 ** 12},{'0' * (i % 3)}{i}\r\n" for i in range(5000))
    path = tmp_path / "clean.csv"
    path.write_text("\ufeffusername,balance_ETH_ETH,balance_BTC_BTC\r\n\r\n" + rows
                    + "\n\nzoë,1,2\n" + "0" * 32 + ",3," + "0" * 80 + "4", encoding="utf-8")
    expected = run(_scan_python, path, 14)
    calls, original = [], csv_rows._row_entry

    def counted(*args):
        calls.append(args)
        return original(*args)
    monkeypatch.setattr(csv_rows, "_row_entry", counted)
    assert run(scan_file, path, 14, chunk=1000) == expected
    # only the 33-digit balance (leading zeros) is decided by the csv module's rules
    assert [c[0] for c in calls] == [["0" * 32, "3", "0" * 80 + "4"]]


def test_lines_and_segments_straddle_chunks(tmp_path):
    rng = random.Random(7)
    rows = []
    for k in range(700):
        rows.append(f"{good_name(rng, k)},{good_balance(rng, 9)},{good_balance(rng, 9)}")
        if k % 97 == 0:
            rows.append("")
    data = ("username,balance_ETH_ETH,balance_BTC_BTC\n" + "\r\n".join(rows) + "\n").encode()
    path = tmp_path / "long.csv"
    path.write_bytes(data)
    whole = same(path, 9)
    assert whole[0] == (["balance_ETH_ETH", "balance_BTC_BTC"], 700)
    for segment in (1, 5, 64, 699, 700, 701):
        for chunk in (4, 9, 33, 100, 4096):
            result, calls = same(path, 9, segment=segment, chunk=chunk)
            assert [c[2] for c in calls] == [segment] * (700 // segment) + ([700 % segment] if 700 % segment else [])
            assert b"".join(c[0] for c in calls) == whole[1][0][0]


@pytest.mark.parametrize("tail, problem", [
    ("u9,-1\n", "negative"), ('"q",1\nu9,x\n', "not a decimal"), ("\x00,1\n", "control"),
    ("u9,1\r", None), ("u9,1", None), ("u0,1\n", None)])
def test_entries_before_an_error_are_sunk(tmp_path, tail, problem):
    rows = "".join(f"u{i},{i}\n" for i in range(1, 300))
    path = tmp_path / "e.csv"
    path.write_text("username,balance_ETH_ETH\n" + rows + tail)
    for segment in (7, 256, SEGMENT):
        result, calls = same(path, 14, segment=segment, chunk=64)
        if problem:
            assert problem in result and sum(c[2] for c in calls) >= 299
        else:
            assert result[1] == sum(c[2] for c in calls) >= 300


@pytest.mark.parametrize("text, expected", [
    ("username,balance_ETH_ETH\nalice,1", (["balance_ETH_ETH"], 1)),      # no final newline
    ("username,balance_ETH_ETH\r\nalice,1\r\n\r\n", (["balance_ETH_ETH"], 1)),
    ("\ufeffusername,balance_ETH_ETH\n\nalice,1\n\n\nbob,2\n\n", (["balance_ETH_ETH"], 2)),
    ("\ufeff\n\nusername,balance_ETH_ETH\nalice,1\n", (["balance_ETH_ETH"], 1)),
    ("username,balance_ETH_ETH\n", "no entries"),
    ("username,balance_ETH_ETH\n\n\r\n", "no entries"),
    ("username,balance_ETH_ETH", "no entries"),
    ("", "empty file"), ("\ufeff", "empty file"), ("\n\r\n\n", "empty file"), ("\r", "empty file"),
    ("username,balance_ETH_ETH\nal\x00ice,1\n", ":2: username 'al\\x00ice' contains control"),
    ("username,balance_ETH_ETH\n\x00\n", ":2: missing columns"),
    ("username,balance_ETH_ETH\n" + "0" * 32 + ",1\n", (["balance_ETH_ETH"], 1)),
    ("username,balance_ETH_ETH\n1" + "0" * 31 + ",1\n", ":2: username too long: 32 bytes"),
    # P = 0x30644e72e1..., '0dNr' then 0xe1: 32 bytes around it
    ("username,balance_ETH_ETH\n0dNrà" + "a" * 26 + ",1\n", (["balance_ETH_ETH"], 1)),
    ("username,balance_ETH_ETH\n0dNq" + "~" * 28 + ",1\n", (["balance_ETH_ETH"], 1)),
    ("username,balance_ETH_ETH\n0dNr\u1100" + "a" * 25 + ",1\n", ":2: username too long: 32 bytes"),
    ("username,balance_ETH_ETH\n0dNr€" + "a" * 25 + ",1\n", ":2: username too long: 32 bytes"),
    ("username,balance_ETH_ETH\n0dNs" + "a" * 28 + ",1\n", ":2: username too long: 32 bytes"),
    ("username,balance_ETH_ETH\n" + "0" * 33 + ",1\n", ":2: username too long: 33 bytes"),
    ("username,balance_ETH_ETH\n" + "a" * 31 + ",1\n", (["balance_ETH_ETH"], 1)),
    ("username,balance_ETH_ETH\nx,00000000000000000000255\n", (["balance_ETH_ETH"], 1)),
    ("username,balance_ETH_ETH\nx,256\n", ":2: balance '256' in balance_ETH_ETH is out of range"),
])
def test_edges(tmp_path, text, expected):
    path = tmp_path / "x.csv"
    path.write_bytes(text.encode())
    result, calls = same(path, 1 if "256" in text or "255" in text else 14)
    if isinstance(expected, str):
        assert expected in result
    else:
        assert result == expected


def test_the_words_and_narrow_balances(tmp_path):
    path = tmp_path / "w.csv"
    big = 2 ** 248 - 1
    path.write_text(f"username,balance_ETH_ETH,balance_BTC_BTC\nzoë,{big},0\n{'0' * 32},7,{2 ** 64}\n")
    result, calls = run(scan_file, path, 31)
    assert result == (["balance_ETH_ETH", "balance_BTC_BTC"], 2)
    (users, balances, count), = calls
    assert users == username_to_word("zoë") + username_to_word("0" * 32)
    assert balances == b"".join(v.to_bytes(31, "little") for v in (big, 0, 7, 2 ** 64))
    assert int.from_bytes(username_to_word("0" * 32), "little") < P


@pytest.mark.parametrize("reader", [scan_file, _scan_python])
def test_a_sinks_error_ends_the_scan(tmp_path, reader):
    path = tmp_path / "s.csv"
    path.write_text("username,balance_ETH_ETH\n" + "".join(f"u{i},1\n" for i in range(100)) + '"q",1\n')
    calls = []

    def sink(usernames, balances, count):
        calls.append(count)
        raise CsvError("the sink's own")
    with pytest.raises(CsvError, match="^the sink's own$"):
        reader(path, 14, None, sink, segment=8)
    assert calls == [8]


def test_header_must_match_the_jobs(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("username,balance_ETH_ETH\nalice,1\n")
    assert run(scan_file, path, 14, ["username", "balance_ETH_ETH"])[0] == (["balance_ETH_ETH"], 1)
    message, calls = run(scan_file, path, 14, ["username", "balance_BTC_BTC"])
    assert message.startswith(f"{path}:1: header differs from the job's first file") and not calls


def test_unreadable(tmp_path):
    assert run(scan_file, tmp_path / "missing.csv", 14)[0] == \
        f"{tmp_path / 'missing.csv'}: cannot read: No such file or directory"
    assert "cannot read" in run(scan_file, tmp_path, 14)[0]
    with pytest.raises(ValueError, match="n_bytes"):
        scan_file(tmp_path / "x.csv", 32, None, print)
    with pytest.raises(ValueError, match="segment"):
        scan_file(tmp_path / "x.csv", 14, None, print, segment=0)


# --- line_of_entry ----------------------------------------------------------------------------

def csv_lines(path):
    """(first, last) line of every entry, with the csv module."""
    out = []
    with csv_reader._open(path) as f:
        reader = csv.reader(f)
        header = False
        for row in reader:
            if row:
                if header:
                    out.append((csv_reader._record_start(reader.line_num, row), reader.line_num))
                header = True
    return out


@pytest.mark.parametrize("seed", range(30))
def test_line_of_entry(tmp_path, seed):
    rng = random.Random(seed)
    lines = ["\ufeffusername,balance_ETH_ETH"] if seed % 3 == 0 else ["", "username,balance_ETH_ETH"]
    for k in range(rng.randint(1, 300)):
        lines += [""] * rng.choice([0, 0, 0, 1, 3])
        lines.append(f"u{k},{k}")
        if seed % 5 == 0 and rng.random() < 0.02:
            lines.append(rng.choice(['"a\nb",1', '"x""y",2', "z,3\r", '"\r\n",4']))
    text = "".join(line + rng.choice(["\n", "\r\n"]) for line in lines)
    path = tmp_path / "l.csv"
    path.write_bytes(text.encode())
    expected = csv_lines(path)
    for k in sorted(rng.sample(range(len(expected)), min(20, len(expected)))) + [len(expected) - 1]:
        assert _entry_lines(path, k, chunk=rng.choice([4, 50, 1 << 22])) == expected[k]
        assert line_of_entry(path, k) == expected[k][0]
    with pytest.raises(ValueError, match="no entry"):
        line_of_entry(path, len(expected))


def test_line_of_entry_is_fast(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"username,balance_ETH_ETH\n" + b"".join(b"u%d,%d\n\n" % (i, i) for i in range(200_000)))
    assert line_of_entry(path, 199_999) == 2 + 2 * 199_999


# --- read_csvs on top of scan_file: duplicates across segments and fallback files -------------

def test_duplicate_in_a_later_segment(tmp_path):
    n = SEGMENT + 100
    path = tmp_path / "d.csv"
    path.write_text("username,balance_ETH_ETH\n" + "".join(f"u{i},1\n" for i in range(n)) + "u5,1\n")
    with pytest.raises(CsvError) as info:
        read_csvs([path])
    assert str(info.value) == f"{path}:{n + 2}: duplicate username 'u5' (first seen at {path}:7)"


def test_duplicate_in_quoted_records(tmp_path):
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    a.write_text('username,balance_ETH_ETH\nx,1\n"x,y",1\n')
    b.write_text('username,balance_ETH_ETH\n\ny,1\n"multi\n\nline",2\n')
    with pytest.raises(CsvError, match=f"{b}:4: username .multi"):   # a valid entry has no line break
        read_csvs([a, b])
    b.write_text('username,balance_ETH_ETH\n\r\ny,1\n"z",1\n"x,y",2\n')
    with pytest.raises(CsvError) as info:
        read_csvs([a, b])
    assert str(info.value) == f"{b}:5: duplicate username 'x,y' (first seen at {a}:3)"


def test_widen():
    assert _widened(b"\x01\x02\x03\x04", 2) == b"\x01\x02" + bytes(30) + b"\x03\x04" + bytes(30)
    assert _widened(b"", 5) == b""
    with pytest.raises(ValueError):
        _records.widen(b"\x01\x02\x03", 2, 2, bytearray(64))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("quoted", [False, True], ids=["fast-path", "csv-module-path"])
def test_a_line_longer_than_any_valid_one_is_refused_before_it_is_held(tmp_path, quoted):
    """A hostile file (an upload, say) of one endless line costs a bounded buffer, not its
    size, and the error names the line without quoting it."""
    import tracemalloc
    path = tmp_path / "long.csv"
    with open(path, "wb") as handle:
        handle.write(b'username,balance_ETH_ETH\nalice,1\n' + (b'"q",1\n' if quoted else b""))
        for _ in range(96):                                # 96 MiB, no line end
            handle.write(b"7" * (1 << 20))
    line = 4 if quoted else 3
    outcomes = []
    for reader in (_scan_python, scan_file):
        tracemalloc.start()
        try:
            outcomes.append(run(reader, path, 8))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 48 << 20, f"{reader.__name__}: peak {peak >> 20} MiB for a 96 MiB line"
    assert outcomes[0] == outcomes[1]
    message, calls = outcomes[0]
    assert message == f"{path}:{line}: a line longer than 16 MiB (no valid line is that long)"
    assert sum(count for _, _, count in calls) == (2 if quoted else 1)   # the entries before it


@pytest.mark.timeout(60)
def test_errors_quote_at_most_a_little_of_a_field(tmp_path):
    for text, what in ((b"x" * 100_000 + b",balance_ETH_ETH\n", "first column"),
                       (b"username,balance_ETH_ETH\nalice," + b"9" * 100_000 + b"x\n", "balance")):
        path = tmp_path / "q.csv"
        path.write_bytes(text)
        message, _ = same(path, 8)
        assert what in message and len(message) < len(str(path)) + 250, message
        assert "(100001 characters)" in message or "(100000 characters)" in message


# --- keccak256 usernames ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["alice", "MBlfbBGI", "dxGaEAii", "x" * 33,
                                  "ü" * 40 + "user@example.com-xx0", "y" * 5000, "€" * 3000,
                                  "1" + "0" * 31, "a;b" * 70])
def test_keccak_words_in_c_are_username_to_word(tmp_path, name):
    path = tmp_path / "k.csv"
    path.write_text(f"username,balance_ETH_ETH\n{name},1\nbob,2\n", encoding="utf-8")
    result, calls = same(path, 14, encoding="keccak256", names=True)
    assert result == (["balance_ETH_ETH"], 2)
    (_, data, lengths, _), (users, _, _) = calls
    assert users == username_to_word(name, "keccak256") + username_to_word("bob", "keccak256")
    assert data == name.encode() + b"bob"
    assert lengths == len(name.encode()).to_bytes(4, "little") + (3).to_bytes(4, "little")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("v1", [False, True], ids=["v1.1", "v1"])
def test_keccak_usernames_up_to_the_csv_field_limit(tmp_path, v1):
    """The C loop takes usernames up to NAME_MAX_KECCAK bytes; a longer one is the csv module's,
    which takes up to csv.field_size_limit() characters (131,072: more bytes when not ASCII)."""
    limit = csv.field_size_limit()
    assert _csvscan.NAME_MAX_KECCAK == limit
    sep = ";" if v1 else ","
    head = "username;balances\n" if v1 else "username,balance_ETH_ETH\n"
    for names, problem in ((["a" * limit, "b" * 1000, "ü" * (limit - 1), "c" * (limit - 7) + "é"], None),
                           (["a" * 10, "b" * (limit + 1)],
                            ":3: malformed CSV: field larger than field limit")):
        path = tmp_path / "long.csv"
        path.write_text(head + "".join(f"{n}{sep}{i}\n" for i, n in enumerate(names)), encoding="utf-8")
        for segment, chunk in ((SEGMENT, 1 << 22), (1, 1 << 16), (3, 4099)):
            result, calls = same(path, 14, segment=segment, chunk=chunk, encoding="keccak256", names=True)
            if problem:
                assert problem in result
            else:
                assert result[1] == len(names)
                assert b"".join(c[1] for c in calls if c[0] == "names") == "".join(names).encode()
                assert b"".join(c[0] for c in calls if c[0] != "names") == \
                    b"".join(username_to_word(n, "keccak256") for n in names)


@pytest.mark.parametrize("encoding, longest", [("bytes", 26), ("keccak256", 3000)])
def test_names_buffers_grow(tmp_path, encoding, longest):
    names = [f"{'n' * (i % longest + 1)}{i}" for i in range(20000)]
    path = tmp_path / "n.csv"
    path.write_text("username,balance_ETH_ETH\n" + "".join(f"{n},{i}\n" for i, n in enumerate(names)))
    result, calls = same(path, 14, segment=7000, chunk=5000, encoding=encoding, names=True)
    assert result == (["balance_ETH_ETH"], 20000)
    assert [c[3] for c in calls if c[0] == "names"] == [7000, 7000, 6000]
    assert b"".join(c[1] for c in calls if c[0] == "names") == "".join(names).encode()


@pytest.mark.parametrize("encoding", [None, "sha3", "Bytes", 1])
def test_bad_encoding(tmp_path, encoding):
    path = tmp_path / "x.csv"
    path.write_text("username,balance_ETH_ETH\nalice,1\n")
    for reader in (scan_file, _scan_python):
        with pytest.raises(ValueError, match="username encoding"):
            reader(path, 14, None, print, encoding=encoding)
    with pytest.raises(ValueError, match="names"):
        scan_file(path, 14, None, print, names=3)


# --- Summa v1 files ----------------------------------------------------------------------------

V1_NAME = ASCII_NAME.replace(";", "") + ","   # a v1 username may hold ',' (';' is the delimiter)
V1_HEADERS = ["username;balance", "Username;balances", "username; balances", '"username;balances"',
              "username;balances;", "username,balances", "username;balances\r", '"username";balances',
              "username;balances,x", "", "username"]


def good_v1_name(rng, k):
    kind = rng.randrange(30)
    if kind == 0:
        return rng.choice(["é", "用户", "zoë", "𝔘", "\u0085", "\ufeffa", "€", "a,b", ",",
                           "a,,"]) + str(k)
    if kind == 1:
        return rng.choice(["a" * 31, "é" * 15 + "a", "0" * 32, "0dNrà" + "a" * 26, "0dNq" + "~" * 28])
    if kind == 2:   # quoted, so it may hold ';' or '"' (the csv module's path from here on)
        return rng.choice(['"a;b' + str(k) + '"', '"q""' + str(k) + '"', '"' + str(k) + '"'])
    if kind == 3:
        return "ü" * 40 + str(k)   # 81+ bytes: fine under keccak256 only
    return "".join(rng.choice(V1_NAME) for _ in range(rng.randint(1, 12))) + str(k)


def bad_v1_line(rng, ncur, n_bytes):
    name, balances = "bad", ["1"] * ncur
    kind = rng.randrange(17)
    at = rng.randrange(ncur)
    if kind == 0:
        return name + ";" + ",".join(balances[:-1])              # one balance missing
    if kind == 1:
        return name + ";" + ",".join(balances + ["2"])            # one too many
    if kind == 2:
        return name + "," + ",".join(balances)                    # no ';'
    if kind == 3:
        return name + ";" + ",".join(balances) + ";"              # a second ';'
    if kind == 4:
        return rng.choice([name + ";;" + ",".join(balances), "a;b;" + ",".join(balances)])
    if kind == 5:
        name = rng.choice(["", "a\x00", "al\tice", "x" * 40, "1" + "0" * 31, "\ufeffa", "a\x7f", "\x1f"])
    elif kind == 6:
        balances[at] = rng.choice(["-5", "+5", " 5", "", "1.5", "٣", "0x10", "-0", "5 ", "1e5", "²"])
    elif kind == 7:
        balances[at] = str(2 ** (8 * n_bytes) + rng.randrange(3))
    elif kind == 8:
        balances[at] = rng.choice(["9" * 81, "0" * 4400 + "1", "9" * 5000])
    elif kind == 9:
        return (rng.choice([b"al\xffice;", b"\xc3(;", b"\xed\xa0\x80;", b"u;\xff"])
                + ",".join(balances).encode())
    elif kind == 10:   # quotes: the csv module's rules from here on
        return rng.choice(['"a;b";' + ",".join(balances), 'x"y;' + ",".join(balances),
                           '"multi\nline";' + ",".join(balances), '"unclosed;1',
                           'u;"' + ",".join(balances) + '"', 'u;"1"' + ",1" * (ncur - 1),
                           '"a""b";' + ",".join(balances), '"";' + ",".join(balances)])
    elif kind == 11:   # a lone CR
        return rng.choice(["u\r;" + ",".join(balances), "u;" + ",".join(balances) + "\r\r", "\r"])
    elif kind == 12:
        return rng.choice([";", ";;", " ", "\x00", "username;balances", ",", "x;"])
    elif kind == 13:
        return name + ";" + ",".join(balances) + ","              # a trailing ',': one more, empty
    elif kind == 14:
        return name + "; " + ",".join(balances)
    elif kind == 15:
        return b"\xef\xbb\xbf" + (name + ";" + ",".join(balances)).encode()
    else:
        name = "0" * 32   # fine after all under bytes: below the modulus
    return name + ";" + ",".join(balances)


def make_v1_file(rng, n_cur=None, n_bytes=None, rows=None):
    n_cur = n_cur or rng.randint(1, 4)
    n_bytes = n_bytes or rng.choice(N_BYTES)
    head = rng.choice(V1_HEADERS) if rng.randrange(15) == 0 else V1_HEADER
    lines = [head.encode()]
    n_rows = rows if rows is not None else rng.choice([0, 1, 2, 5, 20, 60])
    p_bad = rng.choice([0, 0, 0.02, 0.1, 0.3])
    for k in range(n_rows):
        if rng.random() < 0.05:
            lines.append(b"")
        if rng.random() < p_bad:
            line = bad_v1_line(rng, n_cur, n_bytes)
        else:
            line = good_v1_name(rng, k) + ";" + ",".join(good_balance(rng, n_bytes) for _ in range(n_cur))
        lines.append(line.encode() if isinstance(line, str) else line)
    return file_of(rng, lines), n_bytes, ["username"] + v1_currencies(n_cur)


@pytest.mark.parametrize("block", range(20))
def test_v1_scan_file_equals_the_csv_path(tmp_path, block):
    outcomes = set()
    for seed in range(block * 60, block * 60 + 60):
        rng = random.Random(50_000 + seed)
        data, n_bytes, header = make_v1_file(rng)
        path = tmp_path / f"v{seed}.csv"
        path.write_bytes(data)
        segment = rng.choice([1, 2, 3, 7, 64, SEGMENT])
        chunk = rng.choice([4, 5, 16, 61, 1 << 22])
        encoding, names = rng.choice(ENCODINGS), rng.random() < 0.5
        result, calls = same(path, n_bytes, segment=segment, chunk=chunk, encoding=encoding,
                             names=names)
        if rng.random() < 0.3:   # as a later file of a job: N and the format are the job's
            later = rng.choice([header, header + ["currency_%d" % (len(header) - 1)], header[:2],
                                ["username", "balance_ETH_ETH"], ["username", "currency_1"]])
            same(path, n_bytes, header=later, segment=segment, chunk=chunk, encoding=encoding,
                 names=names)
        outcomes.add(result.split(":")[-1].split("(")[0].strip()[:20] if isinstance(result, str)
                     else "ok")
    assert "ok" in outcomes and len(outcomes) > 3, outcomes


@pytest.mark.parametrize("seed", range(40))
def test_v1_random_bytes_equal_the_csv_path(tmp_path, seed):
    rng = random.Random(3000 + seed)
    alphabet = [b"a", b"b", b"0", b"7", b"9", b",", b";", b";", b",", b"\n", b"\n", b"\r\n", b"\r", b'"',
                b"\x00", b"\xff", b"\xc3\xa9", b"\xc3", b" ", b"-", b"\xef\xbb\xbf", b"\t", b"\x7f"]
    for i in range(40):
        head = rng.choice([b"username;balances\n", b"username;balances\r\n",
                           b"\xef\xbb\xbfusername;balances\n", b"\n\r\nusername;balances\n",
                           b"username;balances\na;1,2\n", b""])
        data = head + b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        path = tmp_path / f"r{i}.csv"
        path.write_bytes(data)
        header = rng.choice([None, None, ["username", "currency_0"],
                             ["username", "currency_0", "currency_1"]])
        same(path, rng.choice([1, 8, 14]), header=header, segment=rng.choice([1, 2, 5]),
             chunk=rng.choice([4, 7, 1 << 22]), encoding=rng.choice(ENCODINGS), names=rng.random() < 0.5)


def test_v1_clean_lines_never_reach_python(tmp_path, monkeypatch):
    rows = "".join(f"user{i} x,y;{i * 7919 % 10 ** 12},{'0' * (i % 3)}{i}\r\n" for i in range(5000))
    path = tmp_path / "clean.csv"
    path.write_text("\ufeffusername;balances\r\n\r\n" + rows + "\n\nzoë;1,2\n" + "0" * 32 + ";3,"
                    + "0" * 80 + "4", encoding="utf-8")
    for encoding in ENCODINGS:
        expected = run(_scan_python, path, 14, encoding=encoding, names=True)
        assert expected[0] == (["currency_0", "currency_1"], 5002)
        calls, original = [], csv_rows._row_entry_v1

        def counted(*args):
            calls.append(args)
            return original(*args)
        monkeypatch.setattr(csv_rows, "_row_entry_v1", counted)
        assert run(scan_file, path, 14, chunk=1000, encoding=encoding, names=True) == expected
        monkeypatch.undo()
        # only the 81-character balance (leading zeros) is decided by the csv module's rules
        assert [c[0] for c in calls] == [["0" * 32, "3,"+ "0" * 80 + "4"]]


V1 = "username;balances\n"


@pytest.mark.parametrize("text, expected", [
    (V1 + "alice;1", (["currency_0"], 1)),
    (V1 + "alice;1,2,3\r\n\r\n", (["currency_0", "currency_1", "currency_2"], 1)),
    ("\ufeff\n\r\n" + V1 + "\n\nalice;1\nbob;2\n", (["currency_0"], 2)),
    (V1 + "a,b;1\n,;2\n", (["currency_0"], 2)),
    (V1 + '"a;b";1\n"c""d";2\n', (["currency_0"], 2)),
    (V1 + 'a;"1,2"\n', (["currency_0", "currency_1"], 1)),
    ('"username;balances"\nalice;1\n', (["currency_0"], 1)),
    (V1, "no entries"), (V1 + "\n\r\n", "no entries"), ("username;balances", "no entries"),
    (V1 + "alice\n", ":2: no ';' after the username"),
    (V1 + "alice,1\n", ":2: no ';' after the username"),
    (V1 + "alice;1;2\n", ":2: more than one ';' (2 outside quotes"),
    (V1 + "alice;1\nbob;1,2\n", ":3: extra balances: expected 1 balance after ';' (as on line 2, "
                                "the first entry), got 2"),
    (V1 + "\nalice;1,2\nbob;1\n", ":4: missing balances: expected 2 balances after ';' (as on line 3, "
                                  "the first entry), got 1"),
    (V1 + "alice;1,2\nbob;1,\n", ":3: balance '' in currency_1 is not a decimal integer"),
    (V1 + "alice;\n", ":2: balance '' in currency_0 is not a decimal integer"),
    (V1 + "alice;-1\n", ":2: negative balance '-1' in currency_0"),
    (V1 + "alice;1,x\n", ":2: balance 'x' in currency_1 is not a decimal integer"),
    (V1 + "alice;1, 2\n", ":2: balance ' 2' in currency_1 is not a decimal integer"),
    (V1 + ";1\n", ":2: empty username"),
    (V1 + "al\tice;1\n", ":2: username 'al\\tice' contains control"),
    (V1 + "x" * 40 + ";1\n", ":2: username too long: 40 bytes"),
    (V1 + "alice;" + ",".join(["1"] * 65) + "\n", ":2: 65 balances after ';', at most 64 currencies"),
    (V1 + "alice;" + ",".join(["1"] * 64) + "\n", (v1_currencies(64), 1)),
    (V1 + "x;256\n", ":2: balance '256' in currency_0 is out of range"),
    ("username;balances;\nalice;1\n", ":1: bad header: first column must be 'username', got "
                                      "'username;balances;' (a Summa v1 header is exactly"),
    ("username;Balances\nalice;1\n", ":1: bad header"),
])
def test_v1_edges(tmp_path, text, expected):
    path = tmp_path / "x.csv"
    path.write_bytes(text.encode())
    for encoding in ENCODINGS:
        result, calls = same(path, 1 if "256" in text else 14, encoding=encoding, names=True)
        if isinstance(expected, str):
            if "too long" in expected and encoding == "keccak256":
                assert result == (["currency_0"], 1)
            else:
                assert expected in result, result
        else:
            assert result == expected


@pytest.mark.parametrize("header, words", [
    (["username", "currency_0", "currency_1"], None),
    (["username", "currency_0"],
     ":2: extra balances: expected 1 balance after ';' (as in the job's first file), got 2"),
    (["username", "currency_0", "currency_1", "currency_2"], ":2: missing balances"),
    (["username", "balance_ETH_ETH", "balance_BTC_BTC"], ":1: the job mixes Summa v1 and v1.1 CSV formats"),
])
def test_v1_later_files(tmp_path, header, words):
    path = tmp_path / "later.csv"
    path.write_text(V1 + "alice;1,2\nbob;3,4\n")
    result, calls = same(path, 14, header=header)
    if words is None:
        assert result == (header[1:], 2)
    else:
        assert words in result and not calls
    other = tmp_path / "v11.csv"
    other.write_text("username,currency_0\nalice,1\n")
    result, _ = same(other, 14, header=["username", "currency_0"])
    assert ":1: bad header: column 'currency_0' does not match" in result
    other.write_text("username,balance_ETH_ETH\nalice,1\n")
    result, _ = same(other, 14, header=["username", "currency_0"])
    assert result.startswith(f"{other}:1: the job mixes Summa v1 and v1.1 CSV formats")


def csv_lines_v1(path):
    """(first, last) line of every entry of a v1 file, with the csv module (';' after the header)."""
    out = []
    with csv_reader._open(path) as f:
        lines = iter(f)
        head = csv.reader(lines)
        assert next(row for row in head if row) == [V1_HEADER]
        reader, base = csv.reader(lines, delimiter=";"), head.line_num
        for row in reader:
            if row:
                out.append((base + csv_reader._record_start(reader.line_num, row), base + reader.line_num))
    return out


@pytest.mark.parametrize("seed", range(30))
def test_line_of_entry_v1(tmp_path, seed):
    rng = random.Random(seed)
    lines = ["\ufeffusername;balances"] if seed % 3 == 0 else ["", "username;balances"]
    if seed % 7 == 0:
        lines[-1] = '"username;balances"'   # quoted: the csv module's path from the header on
    for k in range(rng.randint(1, 300)):
        lines += [""] * rng.choice([0, 0, 0, 1, 3])
        lines.append(f"u{k};{k}")
        if seed % 5 == 0 and rng.random() < 0.02:
            # with ';' these quotes open a field (with ',' they would not): a record over lines
            lines.append(rng.choice(['a;"b\nc"', 'x;"y\r\n\r\nz"', "z;3\r", '"\r\n";4', 'q,"r;s\nt"']))
    text = "".join(line + rng.choice(["\n", "\r\n"]) for line in lines)
    path = tmp_path / "l.csv"
    path.write_bytes(text.encode())
    expected = csv_lines_v1(path)
    for k in sorted(rng.sample(range(len(expected)), min(20, len(expected)))) + [len(expected) - 1]:
        assert _entry_lines(path, k, chunk=rng.choice([4, 50, 1 << 22])) == expected[k]
        assert line_of_entry(path, k) == expected[k][0]
    with pytest.raises(ValueError, match="no entry"):
        line_of_entry(path, len(expected))
