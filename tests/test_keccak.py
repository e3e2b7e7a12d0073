"""Keccak-256 in C (cython_ext/keccak.h, exposed by _csvscan) bit for bit against pycryptodome,
the spec's vectors for the keccak256 username encoding, and that it is not SHA3-256."""
import hashlib
import json
import random
from pathlib import Path

import pytest

from summa_aggregation.cython_ext import _csvscan
from summa_aggregation.cython_ext.params import P
from summa_aggregation.mst.csv_reader import keccak256, username_to_word

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
