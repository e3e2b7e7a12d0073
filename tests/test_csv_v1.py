"""Acceptance tests of the Summa v1 CSV format (SPEC section 7: header ``username;balances``, rows
``NAME;B0,B1,...``) and of the keccak256 username encoding in the reader (read_csvs, stream_csvs,
scan_file, line_of_entry, peek_currencies)."""
import os
from pathlib import Path

import pytest

from summa_aggregation.cython_ext.params import P
from summa_aggregation.mst import csv_reader
from summa_aggregation.mst.csv_job import read_csvs, stream_csvs
from summa_aggregation.mst.csv_reader import (
    CsvError, keccak256, line_of_entry, peek_currencies, scan_file, username_to_word,
    word_to_username)

from conftest import read_entries
from test_csv import error_of, write

FIXTURES = Path(__file__).parent / "data" / "fixtures"
V1 = "username;balances\n"
LONG_NAME = "ü" * 40 + "user@example.com-xx0"   # 100 bytes of UTF-8
assert len(LONG_NAME.encode()) == 100


def to_v1(entries):
    return V1 + "".join(f"{name};{','.join(map(str, balances))}\n" for name, balances in entries)


def to_v11(entries):
    n = len(entries[0][1])
    header = "username," + ",".join(f"balance_C{i}_ETH" for i in range(n)) + "\n"
    return header + "".join(f"{name},{','.join(map(str, balances))}\n" for name, balances in entries)


def names_of(batch):
    lengths = [int.from_bytes(batch.name_lengths[i:i + 4], "little")
               for i in range(0, len(batch.name_lengths), 4)]
    assert len(lengths) == batch.count
    out, at = [], 0
    for n in lengths:
        out.append(batch.names[at:at + n].decode())
        at += n
    assert at == len(batch.names)
    return out


# --- the same entries as v1.1 -----------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["bytes", "keccak256"])
def test_v1_gives_the_entries_of_the_same_v11_file(tmp_path, encoding):
    entries = read_entries(FIXTURES / "entry_16.csv")
    v1 = write(tmp_path, "entry_16_v1.csv", to_v1(entries))
    (new,) = read_csvs([v1], encoding=encoding)
    (old,) = read_csvs([FIXTURES / "entry_16.csv"], encoding=encoding)
    assert new.currencies == ["currency_0", "currency_1"]
    assert old.currencies == ["balance_ETH_ETH", "balance_USDT_ETH"]
    assert (new.count, new.usernames, new.balances) == (old.count, old.usernames, old.balances)
    assert new.names == old.names and new.name_lengths == old.name_lengths
    assert names_of(new) == [name for name, _ in entries]
    assert new.usernames[:32] == username_to_word("dxGaEAii", encoding)
    if encoding == "bytes":
        assert word_to_username(new.usernames[32:64]) == "MBlfbBGI"
    else:
        assert int.from_bytes(new.usernames[32:64], "little") == \
            int.from_bytes(keccak256(b"MBlfbBGI"), "big") % P
    assert [line_of_entry(v1, k) for k in range(16)] == list(range(2, 18))


def test_v1_multi_file_job_and_stream(tmp_path):
    entries = read_entries(FIXTURES / "entry_64.csv")
    paths = [write(tmp_path, f"part{i}.csv", to_v1(entries[16 * i:16 * i + 16])) for i in range(4)]
    batches = read_csvs(paths)
    assert [b.count for b in batches] == [16] * 4
    assert all(b.currencies == ["currency_0", "currency_1"] for b in batches)
    (whole,) = read_csvs([FIXTURES / "entry_64.csv"])
    assert b"".join(b.usernames for b in batches) == whole.usernames
    assert b"".join(b.balances for b in batches) == whole.balances
    out = []
    stream_csvs(paths, 32, out.append, encoding="keccak256")
    assert [b.count for b in out] == [32, 32]
    assert out[0].currencies == ["currency_0", "currency_1"]
    assert names_of(out[1]) == [name for name, _ in entries[32:]]
    assert out[1].usernames == b"".join(username_to_word(n, "keccak256") for n, _ in entries[32:])


def test_scan_file_returns_the_unnamed_currencies(tmp_path):
    path = write(tmp_path, "a.csv", V1 + "alice;1,2,3\nbob;4,5,6\n")
    calls = []
    result = scan_file(path, 14, None, lambda u, b, n: calls.append(("sink", n)),
                       names=lambda d, l, n: calls.append(("names", bytes(d), bytes(l), n)))
    assert result == (["currency_0", "currency_1", "currency_2"], 2)
    assert calls == [("names", b"alicebob", b"\x05\0\0\0\x03\0\0\0", 2), ("sink", 2)]
    later = scan_file(path, 14, ["username", "currency_0", "currency_1", "currency_2"], print)
    assert later == result


def test_v1_usernames_may_hold_commas_and_quoted_semicolons(tmp_path):
    path = write(tmp_path, "a.csv", V1 + 'a,b;1\n"c;d";2\n"e""f";3\n,;4\n')
    (batch,) = read_csvs([path])
    assert names_of(batch) == ["a,b", "c;d", 'e"f', ","]
    assert [word_to_username(batch.usernames[i:i + 32]) for i in range(0, 128, 32)] == names_of(batch)
    assert [line_of_entry(path, k) for k in range(4)] == [2, 3, 4, 5]


def test_a_v1_header_is_not_a_bad_v11_header(tmp_path):
    path = write(tmp_path, "a.csv", "\ufeff\r\n" + V1.replace("\n", "\r\n") + "alice;1\r\n")
    (batch,) = read_csvs([path])
    assert batch.currencies == ["currency_0"] and batch.count == 1
    message = error_of([write(tmp_path, "b.csv", "username;balances;x\nalice;1\n")])
    assert "b.csv:1: bad header" in message and "Summa v1 header is exactly 'username;balances'" in message


# --- each malformed v1 line: its own one-line error --------------------------------------------

@pytest.mark.parametrize("line, words", [
    ("carol", "no ';' after the username"),
    ("carol,1,2", "no ';' after the username"),
    ("carol;1;2", "more than one ';'"),
    ("carol;1,2;", "more than one ';'"),
    ("carol;;1,2", "more than one ';'"),
    ("carol;1", "missing balances: expected 2 balances after ';' (as on line 2, the first entry), got 1"),
    ("carol;1,2,3", "extra balances: expected 2 balances after ';' (as on line 2, the first entry), got 3"),
    ("carol;1,2,", "extra balances"),
    ("carol;", "missing balances"),
    ("carol;1,", "balance '' in currency_1 is not a decimal integer"),
    ("carol;-1,2", "negative balance '-1' in currency_0"),
    ("carol;1,-2", "negative balance '-2' in currency_1"),
    ("carol;1.5,2", "balance '1.5' in currency_0 is not a decimal integer"),
    ("carol;1, 2", "balance ' 2' in currency_1 is not a decimal integer"),
    ("carol; 1,2", "balance ' 1' in currency_0 is not a decimal integer"),
    ("carol;1e5,2", "not a decimal integer"),
    ("carol;0x10,2", "not a decimal integer"),
    ("carol;1," + str(2 ** 112),
     "balance '5192296858534827628530496329220096' in currency_1 is out of range"),
    (";1,2", "empty username"),
    ('"";1,2', "empty username"),
    ("ca\trol;1,2", "contains control characters"),
    ('"ca\nrol";1,2', "contains control characters"),
    ("x" * 40 + ";1,2", "username too long: 40 bytes"),
    (LONG_NAME + ";1,2", "username too long: 100 bytes"),
    ("alice;5,6", "duplicate username 'alice' (first seen at {path}:2)"),
    (b"car\xffol;1,2", "bytes that are not valid UTF-8"),
    ('"a\rb";1,2', "contains control characters"),
])
def test_each_malformed_v1_line(tmp_path, line, words):
    raw = V1.encode() + b"alice;1,2\n\nbob;3,4\n" + (line if isinstance(line, bytes) else line.encode())
    path = write(tmp_path, "bad.csv", raw + b"\ndave;7,8\n")
    message = error_of([path])
    assert message.startswith(f"{path}:5: ")
    assert words.format(path=path) in message, message


@pytest.mark.parametrize("text, words", [
    ("", "bad.csv: empty file (no header)"),
    ("\n\r\n", "bad.csv: empty file (no header)"),
    (V1, "bad.csv: no entries (the file has a header only)"),
    (V1 + "\n\n", "bad.csv: no entries (the file has a header only)"),
    ("username;balance\nalice;1\n", "bad.csv:1: bad header"),
    ("Username;balances\nalice;1\n", "bad.csv:1: bad header"),
    (V1 + "alice;" + ",".join("1" * 65) + "\n", "bad.csv:2: 65 balances after ';', at most 64"),
    (V1 + "\nalice\n", "bad.csv:3: no ';' after the username"),
])
def test_bad_v1_files(tmp_path, text, words):
    message = error_of([write(tmp_path, "bad.csv", text)])
    assert words in message


def test_every_file_of_a_v1_job_has_the_first_files_balance_count(tmp_path):
    a = write(tmp_path, "a.csv", V1 + "alice;1,2\n")
    b = write(tmp_path, "b.csv", V1 + "\nbob;1,2,3\n")
    assert error_of([a, b]) == (f"{b}:3: extra balances: expected 2 balances after ';' "
                                "(as in the job's first file), got 3")
    c = write(tmp_path, "c.csv", V1 + "carol;1,2\n")
    assert [batch.count for batch in read_csvs([a, c])] == [1, 1]


# --- a job is one format ---------------------------------------------------------------------

def test_mixing_formats_fails_clearly(tmp_path):
    v1 = write(tmp_path, "v1.csv", V1 + "alice;1\n")
    v11 = write(tmp_path, "v11.csv", "username,balance_ETH_ETH\nbob,1\n")
    message = error_of([v1, v11])
    assert message.startswith(f"{v11}:1: the job mixes Summa v1 and v1.1 CSV formats")
    message = error_of([v11, v1])
    assert message.startswith(f"{v1}:1: the job mixes Summa v1 and v1.1 CSV formats")
    out = []
    with pytest.raises(CsvError, match="mixes Summa v1 and v1.1"):
        stream_csvs([v1, v11], 1, out.append)
    assert [b.count for b in out] == [1]   # the batch before the error
    for header in (["username", "currency_0"], ["username", "balance_ETH_ETH"]):
        with pytest.raises(CsvError, match="mixes|differs") as info:
            scan_file(v11 if header[1] == "currency_0" else v1, 14, header, print)
        assert "\n" not in str(info.value)


# --- keccak256 ------------------------------------------------------------------------------

def test_a_100_byte_username_under_each_encoding(tmp_path):
    for name, text in (("v11.csv", f"username,balance_ETH_ETH\nalice,1\n{LONG_NAME},2\n"),
                       ("v1.csv", f"{V1}alice;1\n{LONG_NAME};2\n")):
        path = write(tmp_path, name, text)
        (batch,) = read_csvs([path], encoding="keccak256")
        assert batch.count == 2 and names_of(batch) == ["alice", LONG_NAME]
        assert batch.usernames[32:] == username_to_word(LONG_NAME, "keccak256")
        assert int.from_bytes(batch.usernames[32:], "little") == \
            int.from_bytes(keccak256(LONG_NAME.encode()), "big") % P
        assert error_of([path]) == (f"{path}:3: username too long: 100 bytes, its value is not "
                                    "below the field modulus (at most 31 bytes always fit)")
    with pytest.raises(ValueError, match="username too long: 100 bytes"):
        username_to_word(LONG_NAME)
    assert username_to_word(LONG_NAME, "keccak256") == batch.usernames[32:]


@pytest.mark.parametrize("v1", [False, True], ids=["v1.1", "v1"])
def test_keccak_duplicates_are_the_usernames(tmp_path, v1):
    entries = [(LONG_NAME, [1]), ("x", [2]), ("y", [3]), (LONG_NAME, [4])]
    path = write(tmp_path, "dup.csv", (to_v1 if v1 else to_v11)(entries))
    assert error_of([path], encoding="keccak256") == \
        f"{path}:5: duplicate username {LONG_NAME!r} (first seen at {path}:2)"
    fmt = to_v1 if v1 else to_v11
    other = write(tmp_path, "other.csv", fmt([("q", [1]), ("x", [5])]))
    first = write(tmp_path, "first.csv", fmt(entries[:3]))
    assert error_of([first, other], encoding="keccak256") == \
        f"{other}:3: duplicate username 'x' (first seen at {first}:3)"
    first = write(tmp_path, "first.csv", fmt(entries[1:3]))
    assert error_of([first, other]) == f"{other}:3: duplicate username 'x' (first seen at {first}:2)"


def test_keccak_entries_across_segments(tmp_path):
    n = csv_reader.SEGMENT + 1000
    names = [f"user-{i}-" + "é" * (i % 50) for i in range(n)]
    path = write(tmp_path, "many.csv", V1 + "".join(f"{n};{i},{2 * i}\n" for i, n in enumerate(names)))
    (batch,) = read_csvs([path], encoding="keccak256")
    assert names_of(batch) == names
    assert batch.usernames == b"".join(username_to_word(n, "keccak256") for n in names)
    dup = write(tmp_path, "dup.csv", path.read_text() + f"{names[700]};1,1\n")
    assert error_of([dup], encoding="keccak256") == \
        f"{dup}:{n + 2}: duplicate username {names[700]!r} (first seen at {dup}:702)"


@pytest.mark.parametrize("encoding", ["sha3-256", None, "KECCAK256"])
def test_unknown_encoding(tmp_path, encoding):
    path = write(tmp_path, "a.csv", V1 + "alice;1\n")
    for call in (lambda: read_csvs([path], encoding=encoding),
                 lambda: stream_csvs([path], 1, print, encoding=encoding),
                 lambda: username_to_word("alice", encoding)):
        with pytest.raises(ValueError, match="unknown username encoding"):
            call()


# --- peek_currencies -------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("username,balance_ETH_ETH,balance_BTC_BTC\nalice,1,2\n", ["balance_ETH_ETH", "balance_BTC_BTC"]),
    ("\ufeff\nusername,balance_ETH_ETH\n", ["balance_ETH_ETH"]),
    (V1 + "alice;1,2,3\n", ["currency_0", "currency_1", "currency_2"]),
    ("\ufeff\r\n" + V1 + "\n\r\nalice;1\n", ["currency_0"]),
    (V1 + '"a;b";1,2', ["currency_0", "currency_1"]),
    (V1, []), (V1 + "alice\n", []), (V1 + "a;1;2\n", []), ("", []), ("\n\n", []),
    ("nonsense\n", []), ("username\n", []),
])
def test_peek_currencies(tmp_path, text, expected):
    path = write(tmp_path, "p.csv", text)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 5, os.SEEK_SET)   # read from the start whatever the position
        assert peek_currencies(fd) == expected
        assert peek_currencies(fd) == expected
    finally:
        os.close(fd)


def test_peek_currencies_reads_a_bounded_prefix(tmp_path, monkeypatch):
    read = []
    original = csv_reader.FdReader.readinto

    def counted(self, b):
        n = original(self, b)
        read.append(n)
        return n
    monkeypatch.setattr(csv_reader.FdReader, "readinto", counted)
    path = tmp_path / "big.csv"
    with open(path, "w") as handle:
        handle.write(V1 + "alice;1,2\n" + "".join(f"u{i};1,2\n" for i in range(300_000)))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert peek_currencies(fd) == ["currency_0", "currency_1"]
        assert sum(read) <= 1 << 16
        monkeypatch.setattr(csv_reader, "PEEK_BYTES", 1000)
        with open(path, "w") as handle:   # no answer within the limit: unknown
            handle.write("\n" * 5000 + V1 + "alice;1\n")
        read.clear()
        assert peek_currencies(fd) == []
        assert sum(read) <= 1000
        with open(path, "w") as handle:
            handle.write(V1 + "a" * 5000 + ";1\n")
        assert peek_currencies(fd) == []
        with open(path, "w") as handle:
            handle.write(V1 + "a" * 900 + ";1\n")
        assert peek_currencies(fd) == ["currency_0"]
    finally:
        os.close(fd)
    assert peek_currencies(fd) == []   # closed: unreadable
