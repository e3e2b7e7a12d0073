from pathlib import Path

import pytest

from summa_aggregation.cython_ext.params import P
from summa_aggregation.mst.csv_job import read_csvs, stream_csvs
from summa_aggregation.mst.csv_reader import CsvError, username_to_word, word_to_username

from mst_helpers import read_csv

FIXTURES = Path(__file__).parent / "data" / "fixtures"
HEADER = "username,balance_ETH_ETH,balance_USDT_ETH\n"


def word(n):
    return n.to_bytes(32, "little")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def error_of(paths, **kw):
    with pytest.raises(CsvError) as info:
        read_csvs([str(p) for p in paths], **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def bad_file(tmp_path, text, name="bad.csv", **kw):
    return error_of([write(tmp_path, name, text)], **kw)


# --- good files --------------------------------------------------------------------------

def test_fixture_loads():
    batch = read_csv(FIXTURES / "entry_16.csv")
    assert batch.count == 16
    assert batch.currencies == ["balance_ETH_ETH", "balance_USDT_ETH"]
    assert len(batch.usernames) == 16 * 32
    assert len(batch.balances) == 16 * 2 * 32
    assert batch.usernames[:32] == int.from_bytes(b"dxGaEAii", "big").to_bytes(32, "little")
    assert batch.balances[:32] == word(11888)
    assert batch.balances[32:64] == word(41163)
    assert word_to_username(batch.usernames[:32]) == "dxGaEAii"


@pytest.mark.parametrize("name, count", [
    ("entry_16_1.csv", 16), ("entry_16_no_overflow.csv", 16), ("entry_64.csv", 64)])
def test_other_fixtures_load(name, count):
    assert read_csv(FIXTURES / name).count == count


def test_no_overflow_fixture_values():
    batch = read_csv(FIXTURES / "entry_16_no_overflow.csv", n_bytes=8)
    assert batch.balances[:32] == word(2**64 - 1)
    with pytest.raises(CsvError, match="out of range"):
        read_csv(FIXTURES / "entry_16_no_overflow.csv", n_bytes=7)


def test_multi_file_job():
    paths = [FIXTURES / f"entry_16_{i}.csv" for i in (1, 2, 3, 4)]
    batches = read_csvs(paths)
    assert [b.count for b in batches] == [16] * 4
    assert [b.path for b in batches] == [str(p) for p in paths]


@pytest.mark.parametrize("name", ["alice", "zoë", "用户", "a" * 31, "x y", "ünïcødé-𝔘"])
def test_username_round_trip(name):
    w = username_to_word(name)
    assert len(w) == 32
    assert w == int.from_bytes(name.encode(), "big").to_bytes(32, "little")
    assert word_to_username(w) == name


@pytest.mark.parametrize("name, words", [
    ("", "empty"), ("a\x00", "control"), ("\x00a", "control"), ("a\x7f", "control"),
    ("a" * 33, "too long"), ("a\ud800", "not valid Unicode")])
def test_username_to_word_rejects(name, words):
    with pytest.raises(ValueError, match=words):
        username_to_word(name)


@pytest.mark.parametrize("name, words", [
    ("", "empty"), ("a\x00", "control"), ("\x00a", "control"), ("a\x7f", "control"),
    ("a\ud800", "not valid Unicode")])
def test_username_to_word_keccak256_keeps_the_other_rules(name, words):
    with pytest.raises(ValueError, match=words):
        username_to_word(name, "keccak256")


@pytest.mark.parametrize("name", ["a" * 33, "1" + "0" * 31, "ü" * 400, "alice"])
def test_username_to_word_keccak256_takes_any_length(name):
    w = username_to_word(name, "keccak256")
    assert len(w) == 32 and int.from_bytes(w, "little") < P
    assert w == username_to_word(name, encoding="keccak256")
    assert w != username_to_word("x" + name, "keccak256")


def test_username_to_word_encoding_is_checked():
    assert username_to_word("alice", "bytes") == username_to_word("alice")
    with pytest.raises(ValueError, match="unknown username encoding 'sha3'"):
        username_to_word("alice", "sha3")


def test_read_csvs_gives_the_usernames_bytes(tmp_path):
    path = write(tmp_path, "a.csv", HEADER + "alice,1,2\nzoë,3,4\n\"b,ob\",5,6\n")
    (batch,) = read_csvs([path])
    assert batch.names == "alicezoëb,ob".encode()
    assert batch.name_lengths == b"".join(n.to_bytes(4, "little") for n in (5, 4, 4))


def test_many_leading_zeros_are_still_a_number(tmp_path):
    path = write(tmp_path, "a.csv", HEADER + "alice,1," + "0" * 5000 + "7\n")
    assert read_csv(path).balances[32:] == word(7)
    message = bad_file(tmp_path, HEADER + "alice,1," + "0" * 5000 + "1" * 81 + "\n")
    assert "bad.csv:2:" in message and "out of range" in message


def test_username_limit_is_the_modulus():
    # p = 0x3064..., so 32 bytes starting '0' (0x30 0x30...) fit and starting '1' do not
    assert P.to_bytes(32, "big")[:2] == b"\x30\x64"
    assert word_to_username(username_to_word("0" * 32)) == "0" * 32
    with pytest.raises(ValueError, match="too long: 32 bytes"):
        username_to_word("1" + "0" * 31)


def test_bom_crlf_blank_lines_and_quotes(tmp_path):
    text = "\ufeffusername,balance_ETH_ETH\r\n\r\nalice,0005\r\n\"b,ob\",\"7\"\r\n\r\n"
    batch = read_csv(write(tmp_path, "ok.csv", text))
    assert batch.count == 2
    assert batch.currencies == ["balance_ETH_ETH"]
    assert word_to_username(batch.usernames[32:64]) == "b,ob"
    assert batch.balances == bytearray(word(5) + word(7))


def test_every_file_needs_the_first_files_header(tmp_path):
    a = write(tmp_path, "a.csv", HEADER + "alice,1,2\n")
    same = write(tmp_path, "same.csv", HEADER + "bob,1,2\n")
    other = write(tmp_path, "b.csv", "username,balance_ETH_ETH\ncarol,1\n")
    assert [b.count for b in read_csvs([a, same])] == [1, 1]
    with pytest.raises(CsvError, match="b.csv:1: header differs"):
        read_csvs([a, other])


# --- bad inputs --------------------------------------------------------------------------

@pytest.mark.parametrize("field, words", [
    ("-5", "negative"), ("+5", "not a decimal integer"), (" 5", "not a decimal integer"),
    ("5 ", "not a decimal integer"), ("1.5", "not a decimal integer"),
    ("1e5", "not a decimal integer"), ("5_000", "not a decimal integer"),
    ("", "not a decimal integer"), ("٣", "not a decimal integer"),
    ("²", "not a decimal integer"), ("0x10", "not a decimal integer")])
def test_bad_balance(tmp_path, field, words):
    message = bad_file(tmp_path, HEADER + "alice,1,2\nbob,3,4\ncarol,5," + field + "\n")
    assert "bad.csv:4:" in message
    assert words in message
    assert "balance_USDT_ETH" in message


def test_balance_out_of_range_names_the_column(tmp_path):
    text = HEADER + "alice,1,2\nbob,3," + str(2**112) + "\n"
    message = bad_file(tmp_path, text)
    assert "bad.csv:3:" in message and "out of range" in message
    assert "balance_USDT_ETH" in message
    ok = write(tmp_path, "ok.csv", HEADER + "alice,1," + str(2**112 - 1) + "\n")
    assert read_csv(ok).balances[32:] == word(2**112 - 1)
    message = bad_file(tmp_path, HEADER + "alice,256,0\n", name="small.csv", n_bytes=1)
    assert "small.csv:2:" in message and "balance_ETH_ETH" in message and "2^8" in message


def test_huge_balance_is_out_of_range(tmp_path):
    message = bad_file(tmp_path, HEADER + "alice,1," + "9" * 5000 + "\n")
    assert "bad.csv:2:" in message and "out of range" in message


@pytest.mark.parametrize("n_bytes", [0, 32, -1, 1.5, True, "14"])
def test_bad_n_bytes(tmp_path, n_bytes):
    path = write(tmp_path, "a.csv", HEADER + "alice,1,2\n")
    with pytest.raises(ValueError, match="n_bytes"):
        read_csv(path, n_bytes=n_bytes)
    with pytest.raises(ValueError, match="n_bytes"):
        read_csvs([path], n_bytes=n_bytes)


@pytest.mark.parametrize("row, words", [
    ("alice,1", ["missing columns", "expected 3", "got 2"]),
    ("alice,1,2,3", ["extra columns", "expected 3", "got 4"]),
    ("alice", ["missing columns", "got 1"]),
    (",", ["missing columns"])])
def test_wrong_column_count(tmp_path, row, words):
    message = bad_file(tmp_path, HEADER + "bob,1,2\n" + row + "\n")
    assert "bad.csv:3:" in message
    for w in words:
        assert w in message


@pytest.mark.parametrize("header, words", [
    ("user,balance_ETH_ETH", "first column must be 'username'"),
    ("Username,balance_ETH_ETH", "first column must be 'username'"),
    (" username,balance_ETH_ETH", "first column must be 'username'"),
    ("username", "no balance columns"),
    ("username,balance_ETH", "balance_<CURRENCY>_<CHAIN>"),
    ("username,ETH_ETH", "balance_<CURRENCY>_<CHAIN>"),
    ("username,balance_ETH_ETH,", "balance_<CURRENCY>_<CHAIN>"),
    ("username,balance_E TH_ETH", "balance_<CURRENCY>_<CHAIN>"),
    ("username,balance_ETH_ETH_X", "balance_<CURRENCY>_<CHAIN>"),
    ("username,balance_ETH_ETH,balance_ETH_ETH", "duplicate column"),
])
def test_bad_header(tmp_path, header, words):
    columns = header.count(",") + 1
    message = bad_file(tmp_path, header + "\nalice" + ",1" * (columns - 1) + "\n")
    assert "bad.csv:1:" in message and "header" in message and words in message


def test_good_header_characters(tmp_path):
    path = write(tmp_path, "a.csv", "username,balance_usdc.e-2_ARB-1\nalice,1\n")
    assert read_csv(path).currencies == ["balance_usdc.e-2_ARB-1"]


def test_too_many_columns(tmp_path):
    def text(n):
        names = ",".join(f"balance_C{i}_ETH" for i in range(n))
        return f"username,{names}\nalice" + ",1" * n + "\n"
    assert read_csv(write(tmp_path, "ok.csv", text(64))).count == 1
    message = bad_file(tmp_path, text(65))
    assert "bad.csv:1:" in message and "65" in message and "64" in message and "columns" in message


@pytest.mark.parametrize("text", ["", "\ufeff", "\n\n", "\r\n"])
def test_empty_file(tmp_path, text):
    message = bad_file(tmp_path, text)
    assert "bad.csv: " in message and "empty" in message


@pytest.mark.parametrize("text", [HEADER, HEADER + "\n\n"])
def test_header_only(tmp_path, text):
    message = bad_file(tmp_path, text)
    assert "bad.csv" in message and "no entries" in message


def test_header_differs_from_first_file(tmp_path):
    a = write(tmp_path, "a.csv", HEADER + "alice,1,2\n")
    b = write(tmp_path, "b.csv", "username,balance_USDT_ETH,balance_ETH_ETH\nbob,1,2\n")
    message = error_of([a, b])
    assert "b.csv:1:" in message and "header differs" in message and "a.csv" not in message


def test_username_too_long(tmp_path):
    message = bad_file(tmp_path, HEADER + "alice,1,2\n" + "x" * 40 + ",1,2\n")
    assert "bad.csv:3:" in message and "too long" in message and "40 bytes" in message
    assert read_csv(write(tmp_path, "ok.csv", HEADER + "é" * 15 + "a,1,2\n")).count == 1


@pytest.mark.parametrize("name, words", [
    ("", "empty username"), ("\"\"", "empty username"),
    ("\"\x00alice\"", "control"), ("al\tice", "control"), ("alice\x7f", "control"),
    ("\"ali\nce\"", "control")])
def test_bad_username(tmp_path, name, words):
    message = bad_file(tmp_path, HEADER + "bob,1,2\n" + name + ",1,2\n")
    assert "bad.csv:3:" in message and words in message


def test_duplicate_username_in_one_file(tmp_path):
    text = HEADER + "alice,1,2\nbob,1,2\n\ncarol,1,2\nalice,3,4\n"
    message = bad_file(tmp_path, text)
    assert "bad.csv:6:" in message and "duplicate username 'alice'" in message
    assert "first seen at " + str(tmp_path / "bad.csv") + ":2)" in message


def test_duplicate_username_across_files(tmp_path):
    a = write(tmp_path, "a.csv", HEADER + "x,1,2\ny,1,2\nalice,1,2\n")
    b = write(tmp_path, "b.csv", HEADER + "p,1,2\n\nq,1,2\nr,1,2\ns,1,2\nalice,1,2\n")
    message = error_of([a, b])
    assert message == f"{b}:7: duplicate username 'alice' (first seen at {a}:4)"
    # a single file is its own job
    assert read_csv(b).count == 5


def test_username_header_word_is_not_a_duplicate_of_the_header(tmp_path):
    text = HEADER + "username,1,2\nusername,1,2\n"
    message = bad_file(tmp_path, text)
    assert "bad.csv:3:" in message and str(tmp_path / "bad.csv") + ":2)" in message


def test_first_error_wins(tmp_path):
    a = write(tmp_path, "a.csv", HEADER + "alice,1,2\nbob,1,-2\n")
    b = write(tmp_path, "b.csv", "nonsense\n")
    message = error_of([a, b])
    assert "a.csv:3:" in message and "negative" in message


@pytest.mark.parametrize("raw", [b"al\xffice,1,2\n", b"alice,1,\xff\n", b"\xc3(,1,2\n"])
def test_invalid_utf8(tmp_path, raw):
    message = bad_file(tmp_path, HEADER.encode() + b"bob,1,2\n" + raw)
    assert "bad.csv:3:" in message and "UTF-8" in message


def test_invalid_utf8_in_header(tmp_path):
    message = bad_file(tmp_path, b"username,balance_\xff_ETH\nalice,1\n")
    assert "bad.csv:1:" in message and "UTF-8" in message


def test_multiline_record_reports_its_first_line(tmp_path):
    message = bad_file(tmp_path, HEADER + "bob,1,2\n\"a\nb\nc\",1,2\n")
    assert "bad.csv:3:" in message


def test_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = error_of(["missing.csv"])
    assert message == "missing.csv: cannot read: No such file or directory"
    with pytest.raises(CsvError, match="missing.csv: cannot read"):
        read_csv("missing.csv")


def test_directory_is_unreadable(tmp_path):
    message = error_of([tmp_path])
    assert str(tmp_path) in message and "cannot read" in message


def test_error_is_a_value_error():
    assert issubclass(CsvError, ValueError)


# --- cutting into batches while reading (stream_csvs) ------------------------------------

def ragged_files(tmp_path, sizes=(5, 11, 1)):
    paths = []
    for f, size in enumerate(sizes):
        rows = "".join(f"u{f}-{i},{(f * 31 + i) % 97},{i}\n" for i in range(size))
        paths.append(write(tmp_path, f"part{f}.csv", HEADER + rows))
    return paths


def streamed(paths, size):
    out = []
    stream_csvs(paths, size, out.append)
    return out


@pytest.mark.parametrize("size", [1, 2, 4, 8, 16, 64])
def test_stream_cuts_every_file_into_batches_of_the_size(tmp_path, size):
    paths = ragged_files(tmp_path)
    whole = read_csvs(paths)
    out = streamed(paths, size)
    total = 17
    assert [b.count for b in out] == [size] * (total // size) + ([total % size] if total % size else [])
    assert b"".join(b.usernames for b in out) == b"".join(b.usernames for b in whole)
    assert b"".join(b.balances for b in out) == b"".join(b.balances for b in whole)
    for b in out:
        assert len(b.usernames) == 32 * b.count and len(b.balances) == 64 * b.count
        assert b.currencies == whole[0].currencies


def test_stream_over_the_fixtures():
    batches = read_csvs([FIXTURES / f"entry_16_{i}.csv" for i in (1, 2, 3, 4)])
    out = streamed([FIXTURES / f"entry_16_{i}.csv" for i in (1, 2, 3, 4)], 32)
    assert [b.count for b in out] == [32, 32]
    assert out[0].usernames == batches[0].usernames + batches[1].usernames


@pytest.mark.parametrize("size", [0, 3, 6, -4, 2.0, True, 1 << 31])
def test_stream_size_must_be_a_power_of_two(tmp_path, size):
    with pytest.raises(ValueError, match="power of two"):
        streamed(ragged_files(tmp_path), size)
