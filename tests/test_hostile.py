"""Hostile input: fuzzed protocol messages and CSV files, garbage on the worker's and the daemon's sockets.

The fuzz tests are deterministic (derandomize=True, no example database) with a fixed budget of
examples. Their contract: the protocol decoder and its field checks either accept a message or
raise ProtocolError; the CSV reader either reads a file or raises CsvError with one line that names
the file, and stream_csvs gives read_csvs's entries or its error. The socket tests send a few
hundred malformed messages to real processes on 127.0.0.1 and check that they still serve, and
that their peak RSS (VmHWM) stayed within a generous bound; the last ones point summa-submit at a
server that answers nonsense.
libzmq limits each frame, not the number of frames of a message, and holds a message whole
before the program sees it; the memory guard (wire/memory.py) bounds that: floods of many
frames, big and tiny, from plaintext and from CURVE-authorized peers, end in a disconnection with
the heap within --max-memory-mb (or the daemon's max_memory_mb) plus what arrives while the guard
looks.
"""
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from zmq.utils.monitor import recv_monitor_message

from summa_aggregation import wire
from summa_aggregation.cython_ext.params import LAYOUTS
from summa_aggregation.daemon import spawners
from summa_aggregation.daemon.job import check_submit as check_submit_of
from summa_aggregation.mst.csv_job import read_csvs, stream_csvs
from summa_aggregation.mst.csv_reader import CsvError
from summa_aggregation.wire import BuildRequest, Code, ProtocolError, SubmitRequest
from summa_aggregation.wire.keys import KeyDir, generate
from summa_aggregation.wire.memory import MemoryGuard, RebindError, heap_in_use, rebind
from summa_aggregation.worker.build_request import check_build
from summa_aggregation.worker.client import SEED_ENTRIES, WorkerClient, build_request

from daemon_helpers import DaemonProcess, job_id_of, run_job, single_tree_root, write_csv
from worker_helpers import BIN, WorkerProcess, random_batch, receive, wait_until

RSS_BOUND_MB = 300     # "never allocates beyond the configured limits": a generous peak bound
GUARD_SLACK_MB = 128   # what may still arrive while the memory guard notices (near the limit it looks every 2 ms)
MIB = 1 << 20
FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
COMMANDS = sorted(wire.COMMAND_NAMES)
BUILD_FIELDS = ["job", "batch", "count", "n_currencies", "layout", "n_bytes", "depth", "usernames",
                "balances", "json", "currencies"]
SUBMIT_FIELDS = ["csvs", "executors", "spawner", "layout", "n_bytes", "batch_size", "uploads"]
UPLOAD_FIELDS = ["upload", "name", "size", "offset", "data", "sha256"]
FIELDS = sorted(set(BUILD_FIELDS + SUBMIT_FIELDS + UPLOAD_FIELDS + ["username", "seq", "code", "message"]))


def peak_rss_mb(pid):
    """VmHWM of a process: the most resident memory it ever had, in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        return int(re.search(r"VmHWM:\s+(\d+) kB", handle.read()).group(1)) / 1024




# ---- 1. the protocol decoder and its field checks, fuzzed ------------------------------------------

INTERESTING_INTS = [-2 ** 63, -1, 0, 1, 2, 3, 14, 30, 31, 32, 64, 65, 1024, 1025, 2 ** 30, 2 ** 31,
                    2 ** 32, 2 ** 63 - 1, 2 ** 64 - 1]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.sampled_from(INTERESTING_INTS), st.integers(-2 ** 63, 2 ** 64 - 1),
    st.floats(), st.text(max_size=20), st.binary(max_size=40),
    st.sampled_from(["interleaved", "sum-first", "mock", "job-1", "a b", "", "/tmp/x.csv"]),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16)),
    st.builds(msgpack.Timestamp, st.integers(0, 2 ** 32 - 1), st.integers(0, 999_999_999)))
KEYS = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12), st.binary(max_size=8),
                 st.integers(-2 ** 63, 2 ** 64 - 1), st.none(), st.booleans(), st.floats(allow_nan=False))
VALUES = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(KEYS, children, max_size=5)), max_leaves=20)
MAPS = st.dictionaries(KEYS, VALUES, max_size=8)

# msgpack headers that declare far more than follows: str, bin, array, map, ext of 2^32 - 1 and 2^16 - 1
HUGE_DECLARATIONS = [b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
                     b"\xdf\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x05", b"\xc9\x7f\xff\xff\xff\xff",
                     b"\xda\xff\xff", b"\xc5\xff\xff", b"\xdc\xff\xff", b"\xde\xff\xff", b"\xc8\xff\xff\x01",
                     b"\xd9\xff", b"\xc4\xff", b"\xd8\x01", b"\xd7\xff"]


def pack(value, use_bin_type=True):
    return msgpack.packb(value, use_bin_type=use_bin_type)


CLEAN_SCALARS = st.one_of(st.none(), st.booleans(), st.sampled_from(INTERESTING_INTS),
                         st.integers(-2 ** 63, 2 ** 64 - 1), st.text(max_size=20), st.binary(max_size=40))
CLEAN_VALUES = st.recursive(CLEAN_SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.text(max_size=8), children, max_size=5)), max_leaves=12)
# maps that decode: str keys (mostly the protocol's field names), no ext types
CLEAN_MAPS = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), CLEAN_VALUES, max_size=8)


@st.composite
def bodies(draw):
    """A BODY frame: msgpack of random values, a huge declared length, deep nesting, or bytes."""
    kind = draw(st.integers(-6, 6))
    if kind < 0:   # likely to decode: then the field checks get it
        return pack(draw(st.one_of(CLEAN_MAPS, near_valid(wide=False))))
    if kind == 0:
        return pack(draw(MAPS), draw(st.booleans()))
    if kind == 1:
        return pack(draw(VALUES))
    if kind == 2:   # a map whose value (or a value inside an array) declares more than there is
        prefix = draw(st.sampled_from([b"", b"\x81\xa3job", b"\x81\xa5usernames", b"\x91",
                                       b"\x82\xa1a\xc0\xa1b"]))
        return prefix + draw(st.sampled_from(HUGE_DECLARATIONS)) + draw(st.binary(max_size=16))
    if kind == 3:   # nested arrays or maps, deeper than any sane decoder stack
        depth = draw(st.sampled_from([10, 100, 1000, 5000]))
        opener = draw(st.sampled_from([b"\x91", b"\x81\xa1a", b"\x81\x01"]))
        return opener * depth + b"\xc0"
    if kind == 4:   # a valid map, then truncated or followed by garbage
        packed = pack(draw(MAPS))
        cut = draw(st.integers(0, len(packed)))
        return packed[:cut] + draw(st.binary(max_size=8))
    if kind == 5:   # beyond the unpack limits: a long array, a wide map, a long string
        return pack(draw(st.sampled_from([{"a": [0] * 1025}, {str(i): i for i in range(65)},
                                          {"job": "x" * (1 << 16 | 1)}, [{"job": 1}] * 3])))
    return draw(st.binary(max_size=64))


@st.composite
def frame_lists(draw):
    if draw(st.integers(0, 3)) == 0:   # anything at all: 0 to 5 frames of arbitrary bytes
        return draw(st.lists(st.binary(max_size=48), max_size=5))
    header = wire.HEADER if draw(st.integers(0, 5)) else draw(st.binary(max_size=10))
    command = draw(st.sampled_from(COMMANDS)) if draw(st.integers(0, 5)) else draw(st.binary(max_size=2))
    parts = [header, command, draw(bodies())]
    if draw(st.integers(0, 9)) == 0:
        parts.append(draw(st.binary(max_size=8)))
    return parts


def one_line(message):
    return isinstance(message, str) and message != "" and len(message.splitlines()) == 1


def refused(error):
    assert isinstance(error.code, Code), error
    assert one_line(error.message), error.message


def check_submit(body):
    return check_submit_of(body, ("mock",))


def try_checks(body):
    """Run every field check on a body: each returns or raises ProtocolError, nothing else."""
    for check in (check_build, check_submit, wire.check_job, wire.check_cancel, wire.read_upload,
                  wire.read_chunk, wire.read_finish):
        try:
            result = check(body)
        except ProtocolError as error:
            refused(error)
            continue
        event(f"accepted by {check.__name__}")
        if check is check_build:
            assert isinstance(result, BuildRequest)
            assert 1 <= result.count <= 1 << result.depth
            assert len(result.usernames) == 32 * result.count
            assert len(result.balances) == 32 * result.count * result.n_currencies
        elif isinstance(result, SubmitRequest):
            assert bool(result.csvs) != bool(result.uploads) and 1 <= result.executors <= 1024
        elif check is wire.read_upload:
            assert result.size >= 0 and result.name and "/" not in result.name
        elif check is wire.read_chunk:
            assert re.fullmatch(r"[0-9a-f]{32}", result[0]) and result[1] >= 0 and isinstance(result[2], bytes)
        elif check is wire.read_finish:
            assert re.fullmatch(r"[0-9a-f]{32}", result[0]) and re.fullmatch(r"[0-9a-f]{64}", result[1])
        else:
            assert isinstance(result, str) and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", result)


@FUZZ
@given(parts=frame_lists(), limit=st.sampled_from([wire.DEFAULT_MAX_MESSAGE_BYTES, MIB, 64]))
@example(parts=[], limit=MIB)
@example(parts=[wire.HEADER, wire.PING, b"\x91" * 100_000 + b"\xc0"], limit=MIB)
@example(parts=[wire.HEADER, wire.BUILD, b"\x81\xa9usernames\xc6\x00\x10\x00\x01" + bytes(1 << 20 | 1)],
         limit=MIB)
@example(parts=[wire.HEADER, wire.STATUS, pack({1: "x"})], limit=MIB)
@example(parts=[wire.HEADER, wire.STATUS, pack({"job": msgpack.ExtType(1, b"x")})], limit=MIB)
@example(parts=[wire.HEADER, wire.STATUS, b"\x81\xa3job\xa2\xff\xfe"], limit=MIB)   # not UTF-8
def test_parse_accepts_or_raises_protocol_error(parts, limit):
    try:
        command, body = wire.parse(parts, limit)
    except ProtocolError as error:
        refused(error)
        event(f"parse refused: {error.code.name}")
        return
    event("parsed")
    assert command in wire.COMMAND_NAMES and isinstance(body, dict)
    try_checks(body)


def valid_build_body():
    usernames, balances = random_batch(3, 2)
    return BuildRequest("job-1", 0, 3, 2, "interleaved", 14, 2, usernames, balances,
                        currencies=["ETH_ETH", "BTC_BTC"]).body()


def valid_submit_body():
    return SubmitRequest(["/tmp/a.csv"], 2, "mock", "interleaved", 14, 4).body()


def valid_upload_body():
    return {"name": "users.csv", "size": 1000}


def valid_chunk_body():
    return {"upload": "0123456789abcdef" * 2, "offset": 0, "data": b"username,", "sha256": "ab" * 32}


@st.composite
def near_valid(draw, wide=True):
    """A valid BUILD, SUBMIT or job body with a few fields dropped, added or replaced (by
    integers beyond msgpack's range too, when `wide`)."""
    body = draw(st.sampled_from([valid_build_body, valid_submit_body, lambda: {"job": "job-1"},
                                 valid_upload_body, valid_chunk_body]))()
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.integers(0, 3)) == 0:
            body.pop(key, None)
        else:
            body[key] = draw(st.one_of(VALUES, st.sampled_from(INTERESTING_INTS),
                                       st.integers(-2 ** 300, 2 ** 300) if wide else st.nothing(),
                                       st.binary(max_size=200),
                                       st.lists(st.text(max_size=4), max_size=3)))
    return body


@FUZZ
@given(body=st.one_of(MAPS, near_valid(), near_valid()))
@example(body=valid_build_body())
@example(body=valid_submit_body())
@example(body={**valid_build_body(), "depth": -1})
@example(body={**valid_build_body(), "count": 0, "usernames": b"", "balances": b""})
@example(body={**valid_submit_body(), "batch_size": 1 << 31})
@example(body={**valid_submit_body(), "csvs": [b"/tmp/a.csv"]})
@example(body={**valid_submit_body(), "csvs": [], "uploads": ["0123456789abcdef" * 2]})
@example(body={**valid_submit_body(), "uploads": ["0123456789abcdef" * 2]})
@example(body={"name": "../x.csv", "size": 3})
@example(body=valid_chunk_body())
def test_field_checks_accept_or_raise_protocol_error(body):
    try_checks(body)


# ---- 2. the CSV reader, fuzzed ------------------------------------------------------------------

CSV_TOKENS = [",", ",", '"', '""', "\r", "\n", "\r\n", "0", "1", "7", "42", "007", "18446744073709551616",
              "9" * 40, "-", "-5", "+5", " ", "a", "b", "alice", "bob", "é", "𝟘", "٣", "\x00", "\ufeff",
              "\u2028", "\x85", "\x1f", "\x7f", "username", "balance_ETH_ETH", "balance_BTC_BTC",
              "balance_x", "ñame", "\t", "x" * 31, "y" * 40]
GOOD_HEADERS = {1: ["username,balance_ETH_ETH", "\ufeffusername,balance_ETH_ETH",
                    '"username","balance_ETH_ETH"'],
                2: ["username,balance_ETH_ETH,balance_BTC_BTC", "username,balance_A.1_x-y,balance_B_C"]}
BAD_HEADERS = ["", "username", "user,balance_ETH_ETH", "username,balance_ETH_ETH,balance_ETH_ETH",
               "username,balance_ETH", "username,balance_ETH_ETH,", "Username,balance_ETH_ETH"]
CLEAN_NAMES = st.text(alphabet="abcxyzAZ09_-.@é€ж", min_size=1, max_size=8)
CLEAN_BALANCES = st.one_of(st.integers(0, 2 ** 60).map(str), st.integers(0, 255).map(str))
TRICKY_NAMES = st.sampled_from(["alice", '"a,b"', '"x""y"', '"multi\nline"', "\ufeffa", "a\x00", "\x00a",
                                "", " ", "x" * 31, "x" * 32, "\xff" * 31, "é" * 16, "\x7f", "\u2028", "𝟘"])
TRICKY_BALANCES = st.one_of(st.integers(0, 2 ** 130).map(str), st.sampled_from(
    ["", "-5", "+5", " 5", "1.5", "1e5", "5_000", "0x10", "٣", "007", '"7"', "9" * 90, "-0", "²"]))
ENDINGS = st.sampled_from(["\n", "\r\n", "\r", "\n\n"])
TOKEN_SOUP = st.lists(st.sampled_from(CSV_TOKENS), max_size=60).map("".join)


@st.composite
def csv_texts(draw, n_columns):
    """A header of n_columns balance columns (or a bad one), rows that mostly fit, maybe a tail of junk."""
    if draw(st.integers(0, 9)):
        header = draw(st.sampled_from(GOOD_HEADERS[n_columns]))
    else:
        header = draw(st.sampled_from(BAD_HEADERS))
    text = header + draw(ENDINGS)
    for _ in range(draw(st.integers(0, 12))):   # most rows are fine, one in ten is not
        clean = draw(st.integers(0, 9)) > 0
        width = n_columns if clean or draw(st.booleans()) else draw(st.integers(0, 4))
        name = draw(CLEAN_NAMES if clean or draw(st.booleans()) else TRICKY_NAMES)
        balances = [draw(CLEAN_BALANCES if clean or draw(st.booleans()) else TRICKY_BALANCES)
                    for _ in range(width)]
        text += ",".join([name] + balances) + draw(ENDINGS)
    if draw(st.integers(0, 7)) == 0:
        text += draw(TOKEN_SOUP)
    return text


BAD_BYTES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\x00", b"\r", b"\n", b","]


@st.composite
def csv_contents(draw, n_columns):
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return (draw(st.sampled_from(["", "username,balance_ETH_ETH\n"])) + draw(TOKEN_SOUP)).encode()
    data = draw(csv_texts(n_columns)).encode()
    if kind == 2:   # a stray byte somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(BAD_BYTES)) + data[at:]
    return data


@st.composite
def csv_files(draw):
    n_columns = draw(st.sampled_from([1, 2]))
    first = draw(csv_contents(n_columns))
    if draw(st.booleans()):
        return [first]
    return [first, draw(csv_contents(n_columns if draw(st.integers(0, 5)) else 3 - n_columns))]


MANY_ROWS = ("username,balance_ETH_ETH\n" + "".join(f"u{i},{i}\n" for i in range(4100))).encode()


def entries_of(batches):
    usernames = b"".join(bytes(b.usernames) for b in batches)
    balances = b"".join(bytes(b.balances) for b in batches)
    return usernames, balances, sum(b.count for b in batches)


def csv_refused(error, paths):
    message = str(error)
    assert one_line(message), message
    assert any(message.startswith(f"{path}:") for path in paths), (message, paths)
    return message


@FUZZ
@given(contents=csv_files(), n_bytes=st.sampled_from([1, 8, 14, 31]))
@example(contents=[b"username,balance_ETH_ETH\nalice," + b"1" * 200_000 + b"\n"], n_bytes=14)
@example(contents=[b"username,balance_ETH_ETH\n\"alice\n,1\n"], n_bytes=14)
@example(contents=[b"username,balance_ETH_ETH\nalice,1\n", b"username,balance_ETH_ETH\nalice,2\n"],
         n_bytes=14)
@example(contents=[b"\xef\xbb\xbfusername,balance_ETH_ETH\r\n\r\nal\x00ice,1\r\n"], n_bytes=14)
@example(contents=[MANY_ROWS], n_bytes=14)                       # beyond one SEGMENT (4096 rows)
@example(contents=[MANY_ROWS + b"u4100,-1\n"], n_bytes=14)        # an error after a flushed segment
@example(contents=[MANY_ROWS, b"username,balance_ETH_ETH\nu17,1\n"], n_bytes=14)   # a late duplicate
def test_csv_reader_reads_or_raises_one_line_csv_error(tmp_path, contents, n_bytes):
    paths = []
    for i, content in enumerate(contents):
        path = tmp_path / f"fuzz-{i}.csv"
        path.write_bytes(content)
        paths.append(str(path))
    try:
        expected = entries_of(read_csvs(paths, n_bytes))
        event(f"read {min(expected[2], 5)}+ entries")
    except CsvError as error:
        expected = csv_refused(error, paths)
        event("refused: " + re.sub(r"^[^:]*:(\d+:)? *", "", expected).split()[0])
    streamed = []
    try:
        stream_csvs(paths, 4, streamed.append, n_bytes)
    except CsvError as error:
        # the same checks and the same first error as read_csvs
        assert csv_refused(error, paths) == expected
        return
    assert all(b.count == 4 for b in streamed[:-1]) and 1 <= streamed[-1].count <= 4
    assert entries_of(streamed) == expected


# ---- 3. garbage on the worker's socket ------------------------------------------------------------

def random_value(rng, depth=0):
    kind = rng.randrange(10 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(INTERESTING_INTS + [rng.randrange(-2 ** 63, 2 ** 64)])
    if kind == 3:
        return rng.uniform(-1e300, 1e300)
    if kind == 4:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xd800)]))
                       for _ in range(rng.randrange(20)))
    if kind == 5:
        return rng.randbytes(rng.randrange(64))
    if kind == 6:
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(8)))
    if kind == 7:
        return rng.choice(["interleaved", "sum-first", "mock", "job-1", "", "/tmp/x.csv", "a b"])
    if kind == 8:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return random_map(rng, depth + 1)


def random_map(rng, depth=0):
    keys = [rng.choice(FIELDS) if rng.random() < 0.7 else random_value(rng, 3) for _ in range(rng.randrange(8))]
    body = {}
    for key in keys:
        try:
            hash(key)
        except TypeError:
            continue
        body[key] = random_value(rng, depth)
    return body


def mutated(rng, body):
    body = dict(body)
    for key in rng.sample(sorted(body), rng.randrange(1, 3)):
        if rng.random() < 0.3:
            del body[key]
        else:
            body[key] = random_value(rng, 2)
    return body


def garbage(rng, commands):
    """One hostile message (a list of frames) for a peer that takes `commands`."""
    kind = rng.randrange(8)
    if kind == 0:
        return [rng.randbytes(rng.randrange(64)) for _ in range(rng.randrange(1, 6))]
    if kind == 1:
        return [rng.choice([wire.HEADER, b"SUMMA00", b"SUMMA01\x00", b""]), rng.randbytes(rng.randrange(3)),
                rng.randbytes(rng.randrange(64))]
    if kind == 2:
        return [wire.HEADER, rng.choice(COMMANDS), pack(random_map(rng), rng.random() < 0.8)]
    if kind == 3:
        return [wire.HEADER, rng.choice(commands),
                rng.choice([b"", b"\x81\xa3job"]) + rng.choice(HUGE_DECLARATIONS)
                + rng.randbytes(rng.randrange(8))]
    if kind == 4:
        return [wire.HEADER, rng.choice(commands),
                rng.choice([b"\x91", b"\x81\xa1a"]) * rng.randrange(100, 3000)]
    if kind == 5:
        body = rng.choice([valid_build_body, valid_submit_body, valid_upload_body, valid_chunk_body,
                           lambda: {"job": "job-1", "username": "alice"}])()
        return [wire.HEADER, rng.choice(commands), pack(mutated(rng, body))]
    if kind == 6:
        parts = wire.frames(rng.choice(commands), random_map(rng))
        if rng.random() < 0.5:
            return parts + [b"extra"] * rng.randrange(1, 3)
        return parts[:rng.randrange(3)] or [b""]
    return [wire.HEADER, wire.PING, pack({"seq": random_value(rng)})]


def hostile_build(rng):
    """A BUILD that passes the field checks but carries words the kernel must refuse (or not)."""
    count, n = rng.randrange(1, 5), rng.randrange(1, 4)
    usernames = b"".join(rng.choice([rng.randbytes(32), b"\xff" * 32, bytes(32), (7).to_bytes(32, "little")])
                         for _ in range(count))
    balances = b"".join(rng.choice([rng.randbytes(32), b"\xff" * 14 + bytes(18), (5).to_bytes(32, "little")])
                        for _ in range(count * n))
    request = BuildRequest(f"hostile-{rng.randrange(4)}", rng.randrange(4), count, n,
                           rng.choice(LAYOUTS), 14, 2, usernames, balances, rng.random() < 0.3)
    return wire.frames(wire.BUILD, request.body())


def expects_reply(parts, commands, take_work):
    """Does the peer answer this message? Every message gets one answer, but for a CANCEL that
    the worker accepts (it answers nothing). `take_work` says whether a valid SUBMIT or BUILD
    may be sent: if not, None (do not send it)."""
    try:
        command, body = wire.parse(parts)
    except ProtocolError:
        return True
    if command == wire.SHUTDOWN:   # it would stop the daemon; a worker just refuses it
        return None
    if command not in commands:
        return True
    try:
        if command == wire.CANCEL and wire.BUILD in commands:   # the worker
            wire.check_cancel(body)
            return False
        if command == wire.BUILD:
            check_build(body)
            return True if take_work else None
        if command == wire.SUBMIT:
            filled = {"executors": 1, "spawner": "mock", **{k: v for k, v in body.items() if v is not None}}
            check_submit_of(filled, spawners.available())
            return None
    except ProtocolError:
        return True
    return True


def send_garbage(sockets, endpoint, commands, n_messages, n_dealers, seed, take_work=False):
    """Send n_messages hostile messages over n_dealers DEALERs; returns each DEALER's expected
    number of answers."""
    rng = random.Random(seed)
    dealers = [sockets(zmq.DEALER, endpoint) for _ in range(n_dealers)]
    expected = [0] * n_dealers
    sent = 0
    while sent < n_messages:
        parts = hostile_build(rng) if take_work and rng.random() < 0.1 else garbage(rng, commands)
        answer = expects_reply(parts, commands, take_work)
        if answer is None:
            continue
        i = rng.randrange(n_dealers)
        dealers[i].send_multipart(parts)
        expected[i] += answer
        sent += 1
    return dealers, expected


def collect_answers(dealers, expected, seconds=60):
    """Every expected answer, parsed; each must be a well-formed message."""
    answers = [[] for _ in dealers]

    def all_in():
        for dealer, got in zip(dealers, answers):
            while dealer.poll(0):
                got.append(wire.parse(dealer.recv_multipart()))
        return all(len(got) >= n for got, n in zip(answers, expected))
    wait_until(all_in, seconds, interval=0.01)
    assert [len(got) for got in answers] == expected
    return [answer for got in answers for answer in got]


def monitored_dealer(sockets, endpoint):
    """A DEALER connected to `endpoint` and a monitor of its disconnections, set up before it connects."""
    dealer = sockets(zmq.DEALER)
    monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    dealer.connect(endpoint)
    return dealer, monitor


def wait_for_answer_or_disconnect(dealer, monitor, seconds=30):
    """Poll until `dealer` receives a message ("answer") or is disconnected ("disconnected")."""
    try:
        def outcome():
            if dealer.poll(0):
                return "answer"
            if monitor.poll(0):
                recv_monitor_message(monitor)
                return "disconnected"
            return None
        return wait_until(outcome, seconds, interval=0.005)
    finally:
        dealer.disable_monitor()
        monitor.close(linger=0)


def ping(sockets, endpoint, seq):
    dealer = sockets(zmq.DEALER, endpoint)
    dealer.send_multipart(wire.frames(wire.PING, {"seq": seq}))
    command, body = receive(dealer, 30)
    assert command == wire.PONG and body["seq"] == seq, body
    return body


WORKER_COMMANDS = [wire.BUILD, wire.CANCEL, wire.PING]


@pytest.mark.timeout(120)
def test_garbage_on_the_worker_socket_never_crashes_it(sockets):
    worker = WorkerProcess("--max-message-mb", "1")
    pid = worker.process.pid
    try:
        dealers, expected = send_garbage(sockets, worker.endpoint, WORKER_COMMANDS, 400, 5, seed=11,
                                         take_work=True)
        # beyond --max-message-mb 1: the worker disconnects the sender before reading the frame
        for size in (MIB + 1, 2 * MIB, 5 * MIB):
            for parts in ([wire.HEADER, wire.PING, b"\x00" * size], [b"\x00" * size],
                          [wire.HEADER, wire.BUILD, b"\x81\xa9usernames\xc6" + size.to_bytes(4, "big")
                           + bytes(size)]):
                oversized, monitor = monitored_dealer(sockets, worker.endpoint)
                oversized.send_multipart(parts, copy=False)
                assert wait_for_answer_or_disconnect(oversized, monitor) == "disconnected"
        answers = collect_answers(dealers, expected)
        for command, body in answers:
            assert command in (wire.ERROR, wire.PONG, wire.RESULT), (command, body)
            if command == wire.ERROR:
                assert body["code"] in set(Code) and one_line(body["message"]), body
        assert sum(command == wire.ERROR for command, _ in answers) > len(answers) // 2
        assert worker.process.poll() is None
        ping(sockets, worker.endpoint, 1)
        assert peak_rss_mb(pid) < RSS_BOUND_MB
    finally:
        assert worker.stop() == 0


@pytest.mark.timeout(90)
def test_a_tiny_build_of_a_huge_tree_is_refused_within_the_message_limit(sockets):
    worker = WorkerProcess("--max-message-mb", "1")
    pid = worker.process.pid
    try:
        dealer = sockets(zmq.DEALER, worker.endpoint)
        usernames, balances = random_batch(1, 1)
        request = BuildRequest("huge", 0, 1, 1, "interleaved", 14, 22, usernames, balances)
        dealer.send_multipart(wire.frames(wire.BUILD, request.body()))
        # its answer (a RESULT of 2^23 - 1 records) could never be within the 1 MiB limit
        wait_until(lambda: dealer.poll(0) or peak_rss_mb(pid) > RSS_BOUND_MB, 60, interval=0.01)
        assert peak_rss_mb(pid) < RSS_BOUND_MB
        command, body = receive(dealer, 1)
        assert command == wire.ERROR and body["code"] == Code.BAD_FIELD, body
    finally:
        worker.stop()


def test_the_memory_guard_says_when_the_heap_is_over_its_limit():
    context = zmq.Context()
    base = heap_in_use()
    guard = MemoryGuard(context, base + 64 * MIB)
    alarm = guard.subscribe()
    try:
        assert guard.measurable and not alarm.poll(50)
        ballast = bytearray(128 * MIB)
        assert alarm.poll(10_000), "no alarm within 10 s"
        assert int(alarm.recv()) >= base + 128 * MIB
        del ballast
    finally:
        alarm.close(linger=0)
        guard.stop()
        context.term()


def test_a_reset_that_cannot_get_its_address_back_says_so_in_one_line(sockets):
    holder = sockets(zmq.ROUTER)
    holder.bind("tcp://127.0.0.1:*")
    taken = holder.getsockopt_string(zmq.LAST_ENDPOINT)
    old = sockets(zmq.ROUTER)
    with pytest.raises(RebindError, match=r"^cannot listen on tcp://127\.0\.0\.1:\d+ again") as caught:
        rebind(old, lambda: sockets(zmq.ROUTER), taken, seconds=0.1)
    assert old.closed and "\n" not in str(caught.value)


def flood_of_frames(sockets, endpoint, curve=None, frames=2000, frame_bytes=900 * 1024):
    """One message of `frames` frames, each under a 1 MiB limit (1.8 GB in all); its outcome."""
    dealer = sockets(zmq.DEALER)
    if curve is not None:
        dealer.curve_publickey, dealer.curve_secretkey = curve.public, curve.secret
        dealer.curve_serverkey = curve.server_public
    monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    dealer.connect(endpoint)
    dealer.send_multipart([b"\x00" * frame_bytes] * frames, copy=False)   # zero-copy: one buffer
    return wait_for_answer_or_disconnect(dealer, monitor)


def stopped_worker_log(worker):
    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(10)
    log = worker.process.stderr.read()
    worker.stop()
    return log


@pytest.mark.timeout(120)
@pytest.mark.parametrize("authorized", [False, True], ids=["plaintext", "curve-key-holder"])
def test_a_message_of_many_frames_is_dropped_within_the_memory_limit(sockets, tmp_path, authorized):
    keys = generate(str(tmp_path / "keys")) if authorized else None
    worker = WorkerProcess("--max-message-mb", "1", "--max-memory-mb", "64",
                           *(("--keys", keys) if keys else ()))
    pid = worker.process.pid
    try:
        idle = peak_rss_mb(pid)
        curve = KeyDir(keys).curve("daemon").for_server(KeyDir(keys).public("worker")) if keys else None
        assert flood_of_frames(sockets, worker.endpoint, curve) == "disconnected"
        assert peak_rss_mb(pid) < idle + 64 + GUARD_SLACK_MB
        with WorkerClient(worker.endpoint, timeout=30, keys=KeyDir(keys) if keys else None) as client:
            assert client.build(build_request("after", 0, SEED_ENTRIES, as_json=True))["depth"] == 1
    finally:
        log = stopped_worker_log(worker)
    assert "over the limit of 64 MiB; dropping every connection" in log, log


@pytest.mark.timeout(120)
def test_a_flood_on_a_worker_mid_job_costs_retries_not_the_root(tmp_path, sockets):
    entries = write_csv(tmp_path / "e.csv", 8192, n_currencies=2, seed=21)
    worker = WorkerProcess("--max-message-mb", "8", "--max-memory-mb", "64",
                           env={"SUMMA_KERNEL": "portable"})
    try:
        record = run_job(tmp_path, [worker.endpoint], tmp_path / "e.csv", batch_size=256,
                         while_running=lambda: flood_of_frames(sockets, worker.endpoint))
    finally:
        log = stopped_worker_log(worker)
    assert "dropping every connection" in log, log
    assert record["state"] == "done" and record["root"] == single_tree_root(entries), record


def raw_zmtp_connection(endpoint, socket_type=b"DEALER"):
    """A TCP connection that has done a plaintext (NULL) ZMTP 3.0 handshake as `socket_type`: from
    here on, bytes go to libzmq's decoder as they are, with no sending library buffering them."""
    host, port = endpoint[len("tcp://"):].rsplit(":", 1)
    connection = socket.create_connection((host, int(port)), timeout=30)
    connection.sendall(b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + bytes(32))
    greeting = b""
    while len(greeting) < 64:
        greeting += connection.recv(64 - len(greeting))
    ready = b"\x05READY\x0bSocket-Type" + len(socket_type).to_bytes(4, "big") + socket_type
    connection.sendall(b"\x04" + bytes([len(ready)]) + ready)
    return connection


@pytest.mark.timeout(120)
def test_millions_of_one_byte_frames_are_dropped_within_the_memory_limit(sockets):
    worker = WorkerProcess("--max-message-mb", "1", "--max-memory-mb", "64")
    pid = worker.process.pid
    try:
        idle = peak_rss_mb(pid)
        connection = raw_zmtp_connection(worker.endpoint)
        frames = b"\x01\x01x" * 1_000_000      # flags MORE, length 1, one byte: never a last frame
        with pytest.raises(OSError):            # reset by the worker; 200 M frames would be 13 GB
            for _ in range(200):
                connection.sendall(frames)
        connection.close()
        assert peak_rss_mb(pid) < idle + 64 + GUARD_SLACK_MB
        ping(sockets, worker.endpoint, 3)
    finally:
        log = stopped_worker_log(worker)
    assert "dropping every connection" in log, log


# ---- 4. garbage on the daemon's control socket ------------------------------------------------------

DAEMON_COMMANDS = [wire.SUBMIT, wire.STATUS, wire.PROOF, wire.LIST, wire.CANCEL, wire.UPLOAD, wire.CHUNK,
                   wire.FINISH, wire.DELETE]   # never SHUTDOWN


def daemon_garbage(rng, job):
    """Requests about a real job with hostile fields (usernames above all)."""
    username = rng.choice(["", "\x00", "a\x00", "user0-1", "user0-" + "9" * 60, "é" * 40, "\u2028",
                           "x" * 65_000, "\ud7ff", rng.randbytes(8).hex()])
    body = rng.choice([{"job": job, "username": username}, {"job": job, "username": rng.randrange(2 ** 64)},
                       {"job": job + rng.choice(["", "x", "\n", "/../"]), "username": username},
                       {"job": job, "username": [username]}])
    return [wire.HEADER, rng.choice([wire.PROOF, wire.STATUS, wire.PROOF]), pack(body)]


@pytest.mark.timeout(120)
def test_garbage_on_the_daemon_control_socket_never_crashes_it(tmp_path, sockets):
    daemon = DaemonProcess(tmp_path)
    entries = write_csv(tmp_path / "small.csv", 16, 2)
    first = daemon.submit("build", tmp_path / "small.csv", "--wait")
    assert first.returncode == 0, first.stderr
    job = job_id_of(first.stdout)

    dealers, expected = send_garbage(sockets, daemon.control, DAEMON_COMMANDS, 300, 5, seed=12)
    rng = random.Random(13)
    for i in range(100):
        dealers[i % 5].send_multipart(daemon_garbage(rng, job))
        expected[i % 5] += 1
    big = [wire.HEADER, wire.STATUS, b"\xc6" + (4 * MIB).to_bytes(4, "big") + bytes(4 * MIB)]
    for i in range(3):   # large, but within what the control socket takes: answered
        dealers[i].send_multipart(big, copy=False)
        expected[i] += 1
    answers = collect_answers(dealers, expected)
    for command, body in answers:
        assert command in (wire.ERROR, wire.REPLY), (command, body)
        if command == wire.ERROR:
            assert Code(body["code"]) != Code.INTERNAL and one_line(body["message"]), body

    assert daemon.process.poll() is None
    listing = daemon.submit("list")
    assert listing.returncode == 0 and job in listing.stdout, listing
    again = daemon.submit("build", tmp_path / "small.csv", "--wait")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1]) == single_tree_root(entries)
    assert peak_rss_mb(daemon.pid) < RSS_BOUND_MB


@pytest.mark.timeout(90)
def test_the_daemon_control_socket_refuses_a_huge_message(tmp_path, sockets):
    daemon = DaemonProcess(tmp_path)
    dealer, monitor = monitored_dealer(sockets, daemon.control)
    dealer.send_multipart([wire.HEADER, wire.LIST, bytes(320 * MIB)], copy=False)
    wait_for_answer_or_disconnect(dealer, monitor)
    listing = daemon.submit("list")
    assert listing.returncode == 0, listing
    assert peak_rss_mb(daemon.pid) < RSS_BOUND_MB


@pytest.mark.timeout(120)
def test_a_flood_of_frames_on_the_control_socket_stays_within_the_daemon_memory_limit(tmp_path, sockets):
    daemon = DaemonProcess(tmp_path, {"max_memory_mb": 128})
    entries = write_csv(tmp_path / "small.csv", 16, 2)
    idle = peak_rss_mb(daemon.pid)
    assert flood_of_frames(sockets, daemon.control, frames=4000) == "disconnected"   # 3.6 GB
    assert peak_rss_mb(daemon.pid) < idle + 128 + GUARD_SLACK_MB
    done = daemon.submit("build", tmp_path / "small.csv", "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == single_tree_root(entries)
    assert "over the limit of 128 MiB; dropping every client of " + daemon.control in daemon.log()


@pytest.mark.timeout(120)
def test_a_flood_of_subscriptions_on_the_cancel_socket_costs_what_is_sent_and_stops_nothing(tmp_path, sockets):
    """Distinct 245-byte topics on one connection until TCP holds the rest back. libzmq's trie
    keeps each one it reads (at a publish, or when a job ends) at about 32-48 bytes per topic
    byte: the daemon grows with what was sent, amplified that much and no more, and
    cancellations still reach their subscribers."""
    daemon = DaemonProcess(tmp_path, env={"SUMMA_KERNEL": "portable"})
    idle = peak_rss_mb(daemon.pid)
    connection = raw_zmtp_connection(daemon.cancel_endpoint, b"SUB")
    connection.settimeout(0.5)
    frame = b"\x00\xf5\x01"          # a short frame of 245 bytes: a subscription
    sent = 0
    try:
        for i in range(0, 100_000, 1000):
            connection.sendall(b"".join(frame + b"%08d" % n + bytes(236) for n in range(i, i + 1000)))
            sent += 1000
    except socket.timeout:
        sent += 1000                # part of this chunk went out: count it all
    listener = sockets(zmq.SUB)
    listener.setsockopt(zmq.SUBSCRIBE, wire.CANCEL_TOPICS)
    listener.connect(daemon.cancel_endpoint)
    write_csv(tmp_path / "big.csv", 1 << 15, 4, seed=5)
    job = job_id_of(daemon.submit("build", tmp_path / "big.csv", "--executors", "1").stdout)
    daemon.wait_state(job, ("running",))
    assert daemon.submit("cancel", job).returncode == 0
    assert listener.poll(30_000) and listener.recv() == wire.cancel_topic(job), daemon.log()
    assert daemon.wait_state(job)["state"] == "cancelled"
    connection.close()
    assert daemon.process.poll() is None and daemon.submit("list").returncode == 0
    job_mb = 64                       # the 2^15 x 4 job itself
    assert peak_rss_mb(daemon.pid) < idle + job_mb + 64 * sent * 245 / MIB, sent


# ---- 5. garbage from a "daemon": summa-submit against a server that answers nonsense ---------------

NONSENSE = {
    "one garbage frame": [b"garbage"],
    "another protocol version": [b"SUMMA02", wire.REPLY, pack({"jobs": []})],
    "an unknown error code": wire.frames(wire.ERROR, {"code": 99, "message": "from the future"}),
    "a reply without its field": wire.frames(wire.REPLY, {}),
    "job records that are not maps": wire.frames(wire.REPLY, {"jobs": [1, "x"]}),
}


@pytest.mark.parametrize("name", list(NONSENSE))
def test_summa_submit_against_a_server_that_answers_nonsense_fails_in_one_line(sockets, name):
    router = sockets(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:*")
    endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)

    def answer_once():
        if router.poll(30_000):
            router.send_multipart([router.recv_multipart()[0], *NONSENSE[name]])
    server = threading.Thread(target=answer_once, daemon=True)
    server.start()
    result = subprocess.run([os.path.join(BIN, "summa-submit"), "--daemon", endpoint, "--timeout", "10",
                             "list"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    server.join(35)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("summa-submit: error: "), result.stderr
    assert result.returncode in (1, 2), result
