"""SPEC section 7 end to end: Summa v1 CSVs, keccak256 usernames and sorted trees, through
the daemon, the result store, proofs and summa-verify (the reader's and the sorter's own rules
are tested in test_csv_v1.py, test_keccak.py and test_sort.py)."""
import csv
import json
import logging
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from summa_aggregation.cython_ext import reference
from summa_aggregation.daemon.client import DaemonError
from summa_aggregation.mst import store
from summa_aggregation.mst.csv_reader import username_to_word
from summa_aggregation.mst.limits import depth_for
from summa_aggregation.mst.proof import InvalidProof, verify_proof
from summa_aggregation.mst.tree import MerkleSumTree
from summa_aggregation.wire import Code, SubmitRequest
from summa_aggregation.worker.client import WorkerClient, WorkerError, build_request

from daemon_helpers import daemon_in_process, run_job, wait_until
from test_commands import last_json, one_line_error

pytestmark = pytest.mark.timeout(180)

CURRENCIES = ["balance_ETH_ETH", "balance_USDT_ETH", "balance_BTC_BTC", "balance_SOL_SOL"]
# 100 bytes of UTF-8: 40 two-byte characters and 20 ASCII ones
LONG_NAME = "ü" * 40 + "user@example.com-xx0"
assert len(LONG_NAME.encode()) == 100


def write_entries(path, entries, v1=False):
    """A CSV of (username, balances) pairs, in the v1.1 layout (SPEC 4) or Summa v1's (SPEC 7)."""
    n = len(entries[0][1])
    with open(path, "w", encoding="utf-8", newline="") as handle:
        if v1:
            handle.write("username;balances\n")
            for name, balances in entries:
                handle.write(f"{name};{','.join(map(str, balances))}\n")
        else:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["username", *CURRENCIES[:n]])
            writer.writerows([name, *balances] for name, balances in entries)
    return path


def reference_root(entries, layout="interleaved", encoding="bytes", is_sorted=False):
    levels = reference.build_tree(entries, layout, encoding=encoding, is_sorted=is_sorted)
    (root_hash, balances), = levels[-1]
    return {"hash": "0x%064x" % root_hash, "balances": ["0x%064x" % b for b in balances]}


def kernel_root(entries, layout="interleaved", encoding="bytes"):
    """The kernel's root of one tree over `entries` in the given order."""
    words = b"".join(username_to_word(name, encoding) for name, _ in entries)
    balances = b"".join(b.to_bytes(32, "little") for _, bs in entries for b in bs)
    tree = MerkleSumTree.build(words, balances, len(entries), len(entries[0][1]), layout=layout,
                               depth=depth_for(len(entries)))
    return tree.root.to_json()


def by_bytes(entries):
    return sorted(entries, key=lambda entry: entry[0].encode())


# ---- keccak256 ------------------------------------------------------------------------------

def test_keccak256_vectors(vectors):
    spec = vectors["username_encodings"]["keccak256"]
    assert reference.keccak256(b"").hex() == spec["empty_string_digest"][2:]
    for example in spec["examples"]:
        digest = reference.keccak256(example["username"].encode())
        assert "0x" + digest.hex() == example["keccak256"]
        field = int(example["field"], 16)
        assert reference.username_to_field(example["username"], "keccak256") == field
        assert username_to_word(example["username"], "keccak256") == field.to_bytes(32, "little")
        assert (int.from_bytes(digest, "big") != field) == example["reduced"]


def test_a_long_username_builds_proves_and_verifies_under_keccak256(run_script, tmp_path):
    entries = [(LONG_NAME, [7, 8]), ("bob", [1, 2]), ("日本語のユーザー名" * 4, [3, 4])]
    path = write_entries(tmp_path / "long.csv", entries)
    out = tmp_path / "result"
    result = run_script("summa-aggregate", "--workers", "1", "--username-encoding", "keccak256",
                        "--out", out, path)
    assert last_json(result) == reference_root(entries, encoding="keccak256")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["username_encoding"] == "keccak256" and manifest["is_sorted"] is False
    proof_run = run_script("summa-proof", out, LONG_NAME)
    assert proof_run.returncode == 0, proof_run.stderr
    proof = json.loads(proof_run.stdout)
    assert proof["entry"]["username"] == LONG_NAME
    assert proof["username_encoding"] == "keccak256" and proof["is_sorted"] is False
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(proof_run.stdout)
    verified = run_script("summa-verify", proof_file)
    assert verified.returncode == 0, verified.stderr
    assert "keccak256" in verified.stdout
    # the same proof read as bytes: the username does not even fit the field
    proof["username_encoding"] = "bytes"
    with pytest.raises(InvalidProof, match="too long"):
        verify_proof(proof)
    del proof["username_encoding"]          # an old proof's reading: bytes
    with pytest.raises(InvalidProof):
        verify_proof(proof)


def test_a_long_username_is_refused_under_bytes(run_script, tmp_path):
    path = write_entries(tmp_path / "long.csv", [("bob", [1]), (LONG_NAME, [2])])
    line = one_line_error(run_script("summa-aggregate", "--workers", "1", path), "summa-aggregate")
    assert f"{path}:3: username too long: 100 bytes" in line


def test_keccak256_proofs_by_username_and_index_in_the_daemon(tmp_path):
    entries = [(f"customer-{i}@exchange.example.com", [i, 2 * i + 1]) for i in range(300)]
    path = write_entries(tmp_path / "many.csv", entries)
    with daemon_in_process(tmp_path / "data") as (daemon, client):
        job = client.submit(SubmitRequest([str(path)], 2, "mock", "sum-first", 14, 64, None,
                                          "keccak256"))
        wait_until(lambda: client.status(job)["state"] in ("done", "failed"), seconds=120)
        record = client.status(job)
        assert record["state"] == "done", record["error"]
        assert record["root"] == kernel_root(entries, "sum-first", "keccak256")
        for name in (entries[0][0], entries[150][0], entries[-1][0]):
            proof = client.proof(job, name)
            assert proof["entry"]["username"] == name
            assert proof["username_encoding"] == "keccak256"
            assert verify_proof(proof)[0] == int(record["root"]["hash"], 16)
        with pytest.raises(DaemonError, match="is not in job"):
            client.proof(job, "nobody@example.com")
    tree, _ = store.load(tmp_path / "data" / "results" / job)
    assert tree.index_of(entries[7][0]) == 7
    assert tree.index_of("not-there") is None
    assert tree.proof(7)["entry"]["username"] == entries[7][0]
    store.check(tmp_path / "data" / "results" / job)


def test_keccak256_duplicates_are_usernames_not_digests(run_script, tmp_path):
    path = write_entries(tmp_path / "dup.csv", [(LONG_NAME, [1]), ("x", [2]), (LONG_NAME, [3])])
    line = one_line_error(run_script("summa-aggregate", "--workers", "1", "--username-encoding",
                                     "keccak256", path), "summa-aggregate")
    assert f"{path}:4: duplicate username {LONG_NAME!r} (first seen at {path}:2)" in line


def test_damaged_names_never_give_a_wrong_proof(run_script, tmp_path):
    entries = [("alice", [1]), ("bob", [2]), ("carol", [3])]
    out = tmp_path / "result"
    last_json(run_script("summa-aggregate", "--workers", "1", "--username-encoding", "keccak256",
                         "--out", out, write_entries(tmp_path / "a.csv", entries)))
    names = out / "names.bin"
    os.chmod(names, 0o644)
    names.write_bytes(names.read_bytes().replace(b"bob", b"bib"))
    tree, _ = store.load(out)
    with pytest.raises(store.StoreError, match="names.bin"):
        tree.proof(1)
    assert tree.index_of("bob") is None            # the stored name no longer says bob
    with pytest.raises(store.StoreError, match="names.bin"):
        store.check(out)


# ---- proofs of before section 7 ---------------------------------------------------------------

def test_old_proofs_still_verify(data_dir):
    proof = json.loads((data_dir / "result_v1.proof.json").read_text())
    assert "username_encoding" not in proof and "is_sorted" not in proof
    verify_proof(proof)


@pytest.mark.parametrize("field, value", [("username_encoding", "sha3"), ("username_encoding", 1),
                                          ("is_sorted", "yes"), ("is_sorted", 1)])
def test_a_proof_with_a_bad_variant_field_is_invalid(data_dir, field, value):
    proof = json.loads((data_dir / "result_v1.proof.json").read_text())
    proof[field] = value
    with pytest.raises(InvalidProof, match=field):
        verify_proof(proof)


# ---- Summa v1 CSVs ----------------------------------------------------------------------------

def test_a_v1_csv_gives_the_root_of_the_same_entries_in_v1_1(run_script, tmp_path, fixtures_dir,
                                                              entries_of, vectors, tree_layout):
    entries = entries_of(fixtures_dir / "entry_16.csv")
    v1 = write_entries(tmp_path / "entry_16_v1.csv", entries, v1=True)
    out = tmp_path / "result"
    result = run_script("summa-aggregate", "--workers", "1", "--layout", tree_layout, "--out", out, v1)
    assert last_json(result) == vectors["layouts"][tree_layout]["root_of_entry_16.csv"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["csv_format"] == "v1"
    assert manifest["currencies"] == ["currency_0", "currency_1"]


def test_a_job_may_not_mix_v1_and_v1_1_files(run_script, tmp_path, fixtures_dir, entries_of):
    entries = entries_of(fixtures_dir / "entry_16_1.csv")
    v1 = write_entries(tmp_path / "v1.csv", entries, v1=True)
    line = one_line_error(run_script("summa-aggregate", "--workers", "1", v1,
                                     fixtures_dir / "entry_16_2.csv"), "summa-aggregate")
    assert "entry_16_2.csv:1:" in line and "v1" in line


# ---- sorted trees -----------------------------------------------------------------------------

def test_the_worker_says_is_sorted(worker_process):
    entries = by_bytes([("dxGaEAii", [11888, 41163]), ("MBlfbBGI", [67823, 18651])])
    with WorkerClient(worker_process.endpoint, timeout=30) as client:
        plain = client.build(build_request("j", 0, entries, as_json=True))
        sorted_ = client.build(build_request("j", 1, entries, as_json=True, is_sorted=True))
        assert plain["is_sorted"] is False and sorted_["is_sorted"] is True
        assert plain["root"] == sorted_["root"]
        keccak = client.build(build_request("j", 2, entries, as_json=True,
                                            username_encoding="keccak256"))
        assert keccak["root"] == reference_root(entries, encoding="keccak256")
        request = build_request("j", 3, entries)
        request.username_encoding = "sha3-256"
        with pytest.raises(WorkerError) as refused:
            client.build(request)
        assert refused.value.code == Code.BAD_FIELD and "username_encoding" in refused.value.message


def test_sorted_job_and_its_proofs(run_script, tmp_path, fixtures_dir, entries_of, tree_layout):
    files = [fixtures_dir / f"entry_16_{i}.csv" for i in (1, 2, 3)]
    entries = [e for f in files for e in entries_of(f)]
    out = tmp_path / "result"
    result = run_script("summa-aggregate", "--workers", "2", "--layout", tree_layout, "--sorted",
                        "--out", out, *files)
    assert last_json(result) == kernel_root(by_bytes(entries), tree_layout)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["is_sorted"] is True
    first = by_bytes(entries)[0][0]
    proof = json.loads(run_script("summa-proof", out, first).stdout)
    assert proof["index"] == 0 and proof["is_sorted"] is True
    verify_proof(proof)
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    verified = run_script("summa-verify", path)
    assert verified.returncode == 0 and "sorted tree" in verified.stdout


def test_sorted_job_beyond_the_in_memory_limit(tmp_path, caplog):
    """1 MiB of sort memory holds some 9k of these entries: 40k sort in runs on disk."""
    entries = [(f"u{(i * 7919) % 40000:05d}-{'ß' * (i % 7)}", [i * 3 + 1, i]) for i in range(40000)]
    path = write_entries(tmp_path / "big.csv", entries)
    roots, runs = {}, {}
    for memory in (1, 256):
        with daemon_in_process(tmp_path / f"data-{memory}", sort_memory_mb=memory) as (daemon, client):
            caplog.set_level(logging.INFO, logger="summa.daemon")
            caplog.clear()
            job = client.submit(SubmitRequest([str(path)], 2, "mock", "interleaved", 14, None,
                                              None, "bytes", True))
            wait_until(lambda: client.status(job)["state"] in ("done", "failed"), seconds=150)
            record = client.status(job)
            assert record["state"] == "done", record["error"]
            roots[memory] = record["root"]
            said = [r.getMessage() for r in caplog.records if "runs on disk" in r.getMessage()]
            runs[memory] = int(re.search(r"\((\d+) runs on disk\)", said[0]).group(1))
            proof = client.proof(job, entries[12345][0])
            assert proof["is_sorted"] is True
            verify_proof(proof)
        leftovers = [name for _, dirs, files in os.walk(tmp_path / f"data-{memory}")
                     for name in dirs + files if "sort" in name]
        assert not leftovers
    assert runs[1] >= 3 and runs[256] == 0
    assert roots[1] == roots[256] == kernel_root(by_bytes(entries))


usernames = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12) \
    .filter(lambda name: len(name.encode()) <= 31 and name.strip("\ufeff") == name)


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory):
    base = tmp_path_factory.mktemp("sorted")
    with daemon_in_process(base / "data", input_dirs=[str(base)]) as (daemon, client):
        yield base, client


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(usernames, min_size=1, max_size=24, unique=True),
       n=st.integers(1, 4), layout=st.sampled_from(["interleaved", "sum-first"]),
       batch=st.sampled_from([None, 4]), seed=st.integers(0, 2 ** 32))
def test_sorted_root_is_the_reference_over_sorted_entries(shared_daemon, names, n, layout, batch, seed):
    base, client = shared_daemon
    import random
    rng = random.Random(seed)
    entries = [(name, [rng.getrandbits(20) for _ in range(n)]) for name in names]
    path = write_entries(base / f"h{seed}-{len(names)}-{n}.csv", entries)
    job = client.submit(SubmitRequest([str(path)], 1, "mock", layout, 14, batch, None, "bytes", True))
    wait_until(lambda: client.status(job)["state"] in ("done", "failed"), seconds=60, interval=0.02)
    record = client.status(job)
    assert record["state"] == "done", record["error"]
    # fixed batches of 4: mini-trees of depth 2 even when fewer entries fill one (SPEC 3)
    depth = max(depth_for(len(entries)), 2) if batch else None
    levels = reference.build_tree(entries, layout, depth=depth, is_sorted=True)
    (root_hash, balances), = levels[-1]
    assert record["root"] == {"hash": "0x%064x" % root_hash, "balances": ["0x%064x" % b for b in balances]}
    name = rng.choice(names)
    proof = client.proof(job, name)
    assert proof["index"] == by_bytes(entries).index(next(e for e in entries if e[0] == name))
    verify_proof(proof)


def test_sorted_and_keccak256_together(run_script, tmp_path):
    entries = [(LONG_NAME, [5]), ("zed", [1]), ("Ärger", [2]), ("a" * 64, [3]), ("a" * 63, [4])]
    out = tmp_path / "result"
    result = run_script("summa-aggregate", "--workers", "1", "--sorted", "--username-encoding",
                        "keccak256", "--out", out, write_entries(tmp_path / "both.csv", entries))
    assert last_json(result) == reference_root(entries, encoding="keccak256", is_sorted=True)
    tree, manifest = store.load(out)
    assert (manifest["username_encoding"], manifest["is_sorted"]) == ("keccak256", True)
    order = [name for name, _ in by_bytes(entries)]
    for name in order:
        proof = tree.proof(name)
        assert proof["index"] == order.index(name) and proof["is_sorted"] is True
        verify_proof(proof)


def test_a_result_written_before_the_variants_still_loads(run_script, tmp_path, fixtures_dir):
    """A version-2 manifest of before SPEC section 7 has none of its keys: bytes, unsorted."""
    out = tmp_path / "result"
    last_json(run_script("summa-aggregate", "--workers", "1", "--out", out,
                         fixtures_dir / "entry_16.csv"))
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    for key in ("username_encoding", "is_sorted", "csv_format"):
        del manifest[key]
    os.chmod(path, 0o644)
    path.write_text(json.dumps(manifest))
    tree, _ = store.load(out)
    proof = tree.proof("dxGaEAii")
    assert (proof["username_encoding"], proof["is_sorted"]) == ("bytes", False)
    verify_proof(proof)


# ---- the attacker's moves -----------------------------------------------------------------------

@pytest.mark.parametrize("body, words", [
    ({"username_encoding": "sha3-256"}, "unknown username encoding 'sha3-256'"),
    ({"username_encoding": 7}, "field 'username_encoding': expected a name"),
    ({"sorted": "yes"}, "field 'sorted': expected true or false"),
    ({"sorted": 1}, "field 'sorted': expected true or false"),
])
def test_a_hostile_submit_of_the_variants_is_refused_and_the_daemon_serves_on(tmp_path, fixtures_dir,
                                                                              body, words):
    from summa_aggregation import wire
    with daemon_in_process(tmp_path / "data") as (daemon, client):
        spec = SubmitRequest([str(fixtures_dir / "entry_16.csv")], 1, "mock", "interleaved", 14)
        with pytest.raises(DaemonError) as refused:
            client.request(wire.SUBMIT, {**spec.body(), **body})
        assert refused.value.code == Code.BAD_FIELD and words in refused.value.message
        job = client.submit(spec)         # and it still takes a good one
        wait_until(lambda: client.status(job)["state"] in ("done", "failed"), seconds=60)
        assert client.status(job)["state"] == "done"


def test_a_username_beyond_the_field_limit_is_one_line_under_keccak256(run_script, tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text("username,balance_ETH_ETH\nalice,1\n" + "x" * 200_000 + ",2\n")
    line = one_line_error(run_script("summa-aggregate", "--workers", "1", "--username-encoding",
                                     "keccak256", path), "summa-aggregate")
    assert f"{path}:3:" in line and len(line) < 400


@pytest.mark.parametrize("fault", ["move-balance", "swap-entries", "swap-usernames"])
def test_a_lying_worker_cannot_change_a_sorted_keccak256_root(tmp_path, worker_process, fault):
    """The leaf check compares the words sent, so it holds whatever the encoding and order."""
    from test_integrity import FaultyWorker
    entries = [(f"{'é' * (i % 5)}user-{(i * 37) % 512}@example.com", [i + 1, 2 * i]) for i in range(512)]
    path = write_entries(tmp_path / "e.csv", entries)
    liar = FaultyWorker(fault)
    try:
        record = run_job(tmp_path, [liar.endpoint, worker_process.endpoint], path, batch_size=64,
                         username_encoding="keccak256", sorted=True, verify_leaves=64)
    finally:
        liar.stop()
    assert record["state"] == "done", record
    assert record["root"] == kernel_root(by_bytes(entries), encoding="keccak256")
    assert record["quarantined"] == [liar.endpoint]
