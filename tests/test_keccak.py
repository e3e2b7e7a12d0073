"""Keccak-256 in C (cython_ext/keccak.h, exposed by _csvscan) bit for bit against pycryptodome,
the spec's vectors for the keccak256 username encoding, and that it is not SHA3-256; the batch
the scanner hashes usernames with (keccak_avx512.h: 8 at a time with AVX-512F, or the portable
code), under every backend this CPU runs, and the whole reader under both."""
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from summa_aggregation.cython_ext import _csvscan
from summa_aggregation.cython_ext.params import P
from summa_aggregation.mst.csv_reader import _scan_python, keccak256, scan_file, username_to_word

keccak = pytest.importorskip("Crypto.Hash.keccak")   # pycryptodome, in the test extras

VECTORS = json.loads((Path(__file__).parent / "data" / "vectors.json").read_text())
SPEC = VECTORS["username_encodings"]["keccak256"]


def reference(data):
    return keccak.new(digest_bits=256, data=bytes(data)).digest()


def field_word(data):
    return (int.from_bytes(reference(data), "big") % P).to_bytes(32, "little")


def test_every_length_up_to_700():
    rng = random.Random(256)
    for n in range(701):
        data = rng.randbytes(n)
        assert _csvscan.keccak256(data) == reference(data), n
        assert _csvscan.keccak256_word(data) == field_word(data), n


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 135, 136, 137, 271, 272, 273, 407, 408, 409, 1000,
                               4096, 65536 + 7, 1 << 20])
def test_block_edges_and_long_inputs(n):
    for fill in (b"\x00", b"\xff", b"a"):
        data = fill * n
        assert _csvscan.keccak256(data) == reference(data), (n, fill)
    data = random.Random(n).randbytes(n)
    assert _csvscan.keccak256(data) == reference(data)


def test_random_data():
    rng = random.Random(7)
    for _ in range(2000):
        data = rng.randbytes(rng.choice([rng.randrange(140), rng.randrange(2000)]))
        assert _csvscan.keccak256(data) == reference(data)
        assert _csvscan.keccak256_word(data) == field_word(data)


def test_any_bytes_like():
    data = b"summa keccak bytes-like"
    want = reference(data)
    assert keccak256(data) == want
    assert _csvscan.keccak256(bytearray(data)) == want
    assert _csvscan.keccak256(memoryview(data)) == want
    assert _csvscan.keccak256(memoryview(b"xx" + data + b"yy")[2:-2]) == want
    assert _csvscan.keccak256(memoryview(data * 2)[::2]) == reference((data * 2)[::2])   # not contiguous
    import array
    words = array.array("I", range(50))
    assert _csvscan.keccak256(words) == reference(words.tobytes())
    assert _csvscan.keccak256(b"") == _csvscan.keccak256(bytearray()) == _csvscan.keccak256(memoryview(b""))
    with pytest.raises(TypeError):
        _csvscan.keccak256("a str is not bytes")
    out = _csvscan.keccak256(data)
    assert type(out) is bytes and len(out) == 32


def test_the_spec_vectors():
    assert "0x" + _csvscan.keccak256(b"").hex() == SPEC["empty_string_digest"]
    reduced = []
    for example in SPEC["examples"]:
        raw = example["username"].encode()
        digest = _csvscan.keccak256(raw)
        assert "0x" + digest.hex() == example["keccak256"]
        field = int(example["field"], 16)
        assert _csvscan.keccak256_word(raw) == field.to_bytes(32, "little")
        assert username_to_word(example["username"], "keccak256") == field.to_bytes(32, "little")
        assert (int.from_bytes(digest, "big") != field) == example["reduced"]
        reduced.append(example["reduced"])
    assert sorted(reduced) == [False, True]   # "MBlfbBGI" needs the reduction mod P


def test_reduction_edges():
    """Digests at or above P, 2P, ... 5P reduce to below P (found by searching small inputs)."""
    seen = set()
    for i in range(20000):
        data = b"r%d" % i
        value = int.from_bytes(_csvscan.keccak256(data), "big")
        seen.add(value // P)
        assert int.from_bytes(_csvscan.keccak256_word(data), "little") == value % P
    assert seen == {0, 1, 2, 3, 4, 5}


def test_it_is_not_sha3_256():
    for data in (b"", b"abc", b"dxGaEAii", b"x" * 136):
        assert _csvscan.keccak256(data) != hashlib.sha3_256(data).digest()
    assert _csvscan.keccak256(b"").hex() != \
        "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"   # SHA3-256("")


# --- the batch: 8 at a time with AVX-512F, or the portable code -----------------------------------
# The scanner's take() hashes a segment's usernames in one pass (keccak_avx512.h): single-block
# messages (0..135 bytes) 8 at a time where the CPU has AVX-512F, longer ones and the rest with the
# scalar function. keccak256_batch() runs that code on given messages; set_keccak_backend() (or
# SUMMA_KECCAK / SUMMA_KERNEL=portable at import) picks it.

KECCAK_BACKENDS = list(_csvscan.KECCAK_BACKENDS)
EDGES = [0, 1, 7, 8, 9, 55, 56, 127, 128, 134, 135, 136, 137, 271, 272, 700]


@pytest.fixture(params=KECCAK_BACKENDS)
def backend(request):
    if request.param not in _csvscan.available_keccak_backends():
        pytest.skip(f"keccak backend {request.param} needs a CPU this one is not")
    before = _csvscan.keccak_backend()
    _csvscan.set_keccak_backend(request.param)
    yield request.param
    _csvscan.set_keccak_backend(before)


def batch_reference(messages, word):
    return b"".join(field_word(m) if word else reference(m) for m in messages)


def check_batch(messages, word, slack=8):
    got = _csvscan.keccak256_batch(b"".join(messages), [len(m) for m in messages], word, slack)
    want = batch_reference(messages, word)
    assert len(got) == 32 * len(messages)
    for i, m in enumerate(messages):
        assert got[32 * i:32 * i + 32] == want[32 * i:32 * i + 32], (i, len(m))


def test_the_backends():
    assert _csvscan.keccak_backend() in _csvscan.available_keccak_backends()
    assert _csvscan.available_keccak_backends()[0] == "portable"
    with pytest.raises(ValueError):
        _csvscan.set_keccak_backend("sha3")
    before = _csvscan.keccak_backend()
    try:
        _csvscan.set_keccak_backend("portable")
        assert _csvscan.keccak_backend() == "portable"
        _csvscan.set_keccak_backend("auto")
        assert _csvscan.keccak_backend() == _csvscan.available_keccak_backends()[-1]
        if "avx512" not in _csvscan.available_keccak_backends():
            with pytest.raises(ValueError):
                _csvscan.set_keccak_backend("avx512")
    finally:
        _csvscan.set_keccak_backend(before)


@pytest.mark.parametrize("word", [False, True])
def test_batch_of_mixed_lengths(backend, word):
    rng = random.Random(8)
    lengths = EDGES + [rng.randrange(701) for _ in range(300)] + list(range(140))
    rng.shuffle(lengths)
    messages = [rng.randbytes(n) for n in lengths]
    for slack in (8, 0):   # 0: the last messages too near the end for 8-byte reads go scalar
        check_batch(messages, word, slack)


@pytest.mark.parametrize("count", [0, 1, 2, 7, 8, 9, 15, 16, 17, 23, 63, 65])
def test_batch_sizes_not_a_multiple_of_8(backend, count):
    rng = random.Random(count)
    for lengths in ([rng.choice(EDGES) for _ in range(count)], [rng.randrange(136) for _ in range(count)],
                    [10] * count, [0] * count, [135] * count):
        messages = [rng.randbytes(n) for n in lengths]
        check_batch(messages, True)
        check_batch(messages, False, slack=rng.randrange(9))


def test_batch_random_data_and_fills(backend):
    rng = random.Random(1600)
    for _ in range(40):
        messages = [rng.randbytes(rng.choice([rng.randrange(136), rng.randrange(701)]))
                    for _ in range(rng.randrange(1, 40))]
        check_batch(messages, True, slack=rng.randrange(9))
    for fill in (b"\x00", b"\xff", b"\x01", b"\x80"):   # bytes that look like padding
        check_batch([fill * n for n in EDGES + list(range(136))], False)
        check_batch([fill * n for n in EDGES + list(range(136))], True)


def test_batch_reduction_edges(backend):
    """Digests in every interval [k P, (k + 1) P), k = 0..5, reduce as int % P does."""
    messages = [b"r%d" % i for i in range(20000)]
    got = _csvscan.keccak256_batch(b"".join(messages), [len(m) for m in messages], True)
    seen = set()
    for i, m in enumerate(messages):
        value = int.from_bytes(reference(m), "big")
        seen.add(value // P)
        assert int.from_bytes(got[32 * i:32 * i + 32], "little") == value % P, m
    assert seen == {0, 1, 2, 3, 4, 5}


def test_batch_arguments():
    assert _csvscan.keccak256_batch(b"", []) == b""
    assert _csvscan.keccak256_batch(bytearray(b"abc"), [3]) == reference(b"abc")
    assert _csvscan.keccak256_batch(memoryview(b"abcd"), [1, 0, 3]) == \
        reference(b"a") + reference(b"") + reference(b"bcd")
    for data, lengths in ((b"abc", [2]), (b"abc", [4]), (b"abc", [-1, 4])):
        with pytest.raises(ValueError):
            _csvscan.keccak256_batch(data, lengths)
    with pytest.raises(ValueError):
        _csvscan.keccak256_batch(b"abc", [3], False, 9)


# --- the scanner: words computed at take() ------------------------------------------------------

def scan_all(data, segment, names, added=()):
    """Entries of `data` (v1.1 lines after a header) through a keccak Scanner; `added`: (index,
    name) pairs handed to add() (with the word keccak256_word gives) before the scanned line of
    that index. Returns [(word, balance, name or None)]."""
    scanner = _csvscan.Scanner(1, 8, segment, keccak=True, names=names, initial=2)
    got = []
    pending = dict(added)

    def take():
        users, bals, count, raw, lens = scanner.take()
        users, bals, raw, lens = bytes(users), bytes(bals), bytes(raw), bytes(lens)
        at = 0
        for i in range(count):
            name = None
            if names:
                n = int.from_bytes(lens[4 * i:4 * i + 4], "little")
                name, at = raw[at:at + n], at + n
            got.append((users[32 * i:32 * i + 32], bals[8 * i:8 * i + 8], name))
        if not names:
            assert raw == lens == b""

    lines = data.split(b"\n")
    for k, line in enumerate(lines):
        if k in pending:
            name = pending[k]
            if scanner.count == segment:
                take()
            if scanner.add(_csvscan.keccak256_word(name), (k + 1000).to_bytes(8, "little"),
                           name if names or k % 2 else None):
                take()
        buf = line + b"\n"
        pos = 0
        while pos < len(buf):
            status = scanner.scan(buf, pos, len(buf), True)
            pos = scanner.pos
            if status == _csvscan.FULL:
                take()
                continue
            assert status == _csvscan.NEED_MORE, (status, line)
            break
    take()
    return got


@pytest.mark.parametrize("names", [False, True])
@pytest.mark.parametrize("segment", [1, 5, 8, 9, 64, 1000])
def test_scanner_words(backend, names, segment):
    rng = random.Random(segment)
    usernames = []
    for k in range(300):
        n = rng.choice(EDGES[1:] + [rng.randrange(1, 40), rng.randrange(1, 300)])
        usernames.append(bytes(rng.choice(b"abcXYZ019_-.") for _ in range(n)) + b"%d" % k)
    usernames += ["é用户𝔘".encode() * 20, b"x" * 5000]
    data = b"\n".join(u + b",%d" % k for k, u in enumerate(usernames))
    added = [(k, b"added%d" % k + b"z" * (k % 150)) for k in (0, 3, 7, 8, 100, 200, 301)]
    got = scan_all(data, segment, names, added)
    want = []
    adds = dict(added)
    for k, u in enumerate(usernames):
        if k in adds:
            want.append((adds[k], k + 1000))
        want.append((u, k))
    assert len(got) == len(want)
    for (word, bal, name), (u, k) in zip(got, want):
        assert word == field_word(u), (k, len(u))
        assert int.from_bytes(bal, "little") == k
        assert name == (u if names else None)


# --- the whole reader under the other backend ----------------------------------------------------

def test_reader_both_backends_in_process(backend, tmp_path):
    """scan_file's words under this backend are username_to_word's (the csv-module path's)."""
    rng = random.Random(5)
    usernames = [rng.choice(["a", "bob", "é" * 67, "x" * 135, "y" * 136, "z" * 400, "用户"]) + str(k)
                 for k in range(2000)]
    path = tmp_path / "entries.csv"
    path.write_text("username,balance_ETH_ETH\n" + "".join(f"{u},{k}\n" for k, u in enumerate(usernames)),
                    encoding="utf-8")
    for names in (None, lambda data, lengths, count: None):
        results = []
        for reader in (scan_file, _scan_python):
            users = bytearray()

            def sink(u, b, count):
                users.extend(u)
            reader(path, 8, None, sink, segment=77, encoding="keccak256", names=names)
            results.append(bytes(users))
        assert results[0] == results[1]
        assert results[0] == b"".join(username_to_word(u, "keccak256") for u in usernames)


def run_python(code, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("SUMMA_KECCAK", "SUMMA_KERNEL")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)


def test_the_environment_picks_the_backend():
    code = "from summa_aggregation.cython_ext import _csvscan; print(_csvscan.keccak_backend())"
    best = _csvscan.available_keccak_backends()[-1]
    for env, want in (({}, best), ({"SUMMA_KECCAK": "portable"}, "portable"),
                      ({"SUMMA_KERNEL": "portable"}, "portable"), ({"SUMMA_KECCAK": "auto"}, best),
                      ({"SUMMA_KECCAK": "auto", "SUMMA_KERNEL": "portable"}, best)):
        done = run_python(code, **env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == want, env
    done = run_python(code, SUMMA_KECCAK="sha3")
    assert done.returncode != 0 and "unknown keccak backend" in done.stderr


def test_fast_reader_tests_under_the_other_backend():
    """tests/test_csv_fast.py (the C path against the csv-module path, keccak256 included) again,
    in a subprocess, under the backend this process does not use."""
    others = [b for b in _csvscan.available_keccak_backends() if b != _csvscan.keccak_backend()]
    if not others:
        pytest.skip("one keccak backend on this CPU, and these tests ran under it")
    here = Path(__file__).parent
    env = dict(os.environ, SUMMA_KECCAK=others[0])
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           str(here / "test_csv_fast.py")], cwd=here.parent, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def test_reduction_of_chosen_values(backend):
    """The batch's reduction (digest read big-endian, mod P) on values at the edges: m P - 1, m P,
    m P + 1 (the borrow through equal limbs), 2^256 - 1, 0, limbs of all ones or zeros."""
    values = [0, 1, P - 1, P, P + 1, (1 << 256) - 1, (1 << 256) - P, 1 << 255, (1 << 192) - 1]
    for m in range(1, 6):
        for delta in (-(1 << 128), -(1 << 64), -2, -1, 0, 1, 1 << 64, (1 << 64) - 1, 1 << 192):
            values.append(m * P + delta)
    rng = random.Random(4)
    values += [rng.getrandbits(256) for _ in range(100)]
    values += [rng.randrange(6) * P + rng.getrandbits(rng.choice([1, 63, 64, 65, 128, 200]))
               for _ in range(100)]
    values = [v for v in values if 0 <= v < 1 << 256]
    for count in (len(values), 1, 7, 9):
        chosen = values[:count]
        got = _csvscan.reduce_digests(b"".join(v.to_bytes(32, "big") for v in chosen))
        for i, v in enumerate(chosen):
            assert int.from_bytes(got[32 * i:32 * i + 32], "little") == v % P, hex(v)
