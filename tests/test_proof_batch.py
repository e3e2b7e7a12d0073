"""Proofs in batches from a version-2 result (issue 11): each distinct node hashed once, the
verified nodes kept in a bounded cache, the export and the daemon's proof server; the proofs
stay byte for byte the reference's whatever the batch and the cache, and damage is refused.

What is guaranteed (mst/store.py, StoredTree): a proof that leaves is the undamaged store's
proof. A proof whose bytes read do not verify raises StoreError: its entry and its group's
entries are read every time; its stored siblings are read below the first verified node its
climb meets (a fresh tree: up to the unit root). A damaged record that a proof no longer reads
(its verified copy is cached, or the batch computed that node from its entries) is not seen.
"""
import json
import os
import random
import shutil
import threading
import time

import msgpack
import pytest
import zmq

from summa_aggregation import wire
from summa_aggregation.daemon.broker import Daemon
from summa_aggregation.daemon.config import DaemonConfig
from summa_aggregation.daemon.proofs import CACHED_RESULTS
from summa_aggregation.mst import store
from summa_aggregation.mst.shape import TreeShape
from summa_aggregation.mst.store_writer import narrow_record_bytes, stored_records
from summa_aggregation.wire import Code, SubmitRequest

from daemon_helpers import FINISHED, daemon_in_process, reference_tree, write_csv
from worker_helpers import wait_until

# name: (unit size, layout, currencies, file sizes, batch size)
STORES = {
    "k3": (8, "interleaved", 2, (150, 37, 90), None),
    "k5": (32, "sum-first", 1, (300, 77), 64),
    "k2": (4, "interleaved", 1, (40, 9), None),
    "k1": (2, "sum-first", 1, (21,), None),
    "k0": (1, "interleaved", 1, (5, 3), None),
}


class Made:
    def __init__(self, directory, files, expected):
        self.directory, self.files, self.expected = directory, files, expected
        self.names = [name for entries in files for name, _ in entries]
        self.proofs = {name: expected.proof(name) for name in self.names}
        self.manifest = json.loads((directory / "manifest.json").read_text())

    def open(self, **kwargs):
        return store.StoredTree(str(self.directory), self.manifest, **kwargs)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every store of STORES, built by a daemon with that unit size, and its reference."""
    work = tmp_path_factory.mktemp("proof-batch")
    out = {}
    for key, (unit, layout, n, sizes, batch) in STORES.items():
        paths, files = [], []
        for i, count in enumerate(sizes):
            paths.append(work / f"{key}-{i}.csv")
            files.append(write_csv(paths[-1], count, n_currencies=n, seed=i, prefix=f"{key}{i}-"))
        with daemon_in_process(work / f"data-{key}", unit_size=unit) as (daemon, client):
            job = client.submit(SubmitRequest([str(p) for p in paths], 2, "mock", layout, 14, batch))
            wait_until(lambda: client.status(job)["state"] in FINISHED, seconds=90, interval=0.02)
            assert client.status(job)["state"] == "done", client.status(job)
            target = work / key
            shutil.copytree(os.path.join(daemon.results_dir, job), target)
        made = Made(target, files, reference_tree(files, layout, batch))
        assert made.manifest["unit_depth"] == unit.bit_length() - 1
        out[key] = made
    return out


@pytest.fixture(params=sorted(STORES))
def one(request, made):
    return made[request.param]


def dumps(proofs):
    return [json.dumps(p) for p in proofs]


# ---- equal to the reference, whatever the batch ---------------------------------------------------

def test_a_batch_equals_single_proofs_and_the_reference(one):
    names, wanted = one.names, one.proofs
    tree = one.open()
    assert dumps(tree.proofs(names)) == dumps(wanted[n] for n in names)   # all, in input order
    rng = random.Random(3)
    picked = rng.choices(names, k=min(80, 3 * len(names))) + names[:3] + names[:3]   # repeats
    assert dumps(one.open().proofs(picked)) == dumps(wanted[n] for n in picked)
    fresh = one.open()
    for name in rng.sample(names, min(12, len(names))):
        proof = fresh.proof(name)
        assert json.dumps(proof) == json.dumps(wanted[name])
        assert fresh.proof(proof["index"]) == proof
    by_index = [wanted[n]["index"] for n in picked]
    assert tree.proofs(by_index) == [wanted[n] for n in picked]
    copies = tree.proofs([names[0], names[0]])
    assert copies[0] == copies[1] and copies[0] is not copies[1]


def test_the_cache_changes_no_proof(one):
    names, wanted = one.names, one.proofs
    k = one.manifest["unit_depth"]
    rng = random.Random(5)
    for budget in (store.CACHE_BYTES, 4096, 1 << 10, 0):
        tree = one.open(cache_bytes=budget)
        assert tree.cache_bytes <= budget
        if budget == 0:
            assert tree.cache_level == k and tree.cache_bytes == 0
        tree.proofs(rng.sample(names, len(names) // 3))           # a part cached by proofs
        assert tree.proofs(names) == [wanted[n] for n in names]
        while tree.warm():                                          # then all of it
            pass
        if tree.cache_bytes:
            per_unit = (2 << (k - tree.cache_level)) - 2
            assert tree.paths.cached == per_unit * tree.shape.units
        picked = rng.choices(names, k=50)
        assert [tree.proof(n) for n in picked[:10]] == [wanted[n] for n in picked[:10]]
        assert tree.proofs(picked) == [wanted[n] for n in picked]


def test_proof_lines_are_the_json_lines_of_the_proofs(one):
    names, wanted = one.names, one.proofs
    tree = one.open()
    head = names[::-1][:30]
    keys = head + ["nobody", names[1], wanted[names[2]]["index"]]
    text, indices = tree.proof_lines(keys)
    assert indices[len(head)] is None and indices.count(None) == 1
    expected = [json.dumps(wanted[n] if isinstance(n, str) else wanted[names[2]],
                           separators=(",", ":")) for n in keys if n != "nobody"]
    assert text.decode().splitlines() == expected


def test_the_export_equals_the_reference(made, run_script, tmp_path):
    one = made["k3"]
    rng = random.Random(7)
    names = one.names + rng.choices(one.names, k=40) + ["nobody", "é\u2028x"]
    listing = tmp_path / "names.txt"
    listing.write_text("\n".join(names) + "\n", encoding="utf-8")
    result = run_script("summa-proof", one.directory, "--usernames", listing)
    assert result.returncode == 1 and "2 username(s) not in" in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(names)
    for name, line in zip(names, lines):
        if name in one.proofs:
            assert line == json.dumps(one.proofs[name], separators=(",", ":"))
        else:
            assert json.loads(line) == {"username": name, "error": "not in the tree"}
    single = run_script("summa-proof", one.directory, one.names[77])
    assert single.returncode == 0 and single.stdout == json.dumps(one.proofs[one.names[77]], indent=2) + "\n"


def test_the_cache_is_bounded():
    # 2^28 entries of one currency in units of 2^16: levels 10..15 of 4096 units, 23.1 MiB
    assert store.cache_level(4096, 16, 1, 14) == 10
    assert store._records.StoredPaths.cache_bytes_for(4096, 16, 10, 1, 14) == 4096 * 126 * 47
    assert store.cache_level(32, 15, 1, 14) == 2          # 2^20 in units of 2^15: all of it
    assert store.cache_level(64, 16, 1, 14) == 4          # 2^22 in units of 2^16
    for units, k, n in ((1 << 14, 16, 1), (4096, 16, 8), (1, 16, 64)):
        level = store.cache_level(units, k, n, 14)
        assert store._records.StoredPaths.cache_bytes_for(units, k, level, n, 14) <= store.CACHE_BYTES


# ---- damage -----------------------------------------------------------------------------------

def copy_of(one, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(one.directory, target)
    return target, json.loads((target / "manifest.json").read_text())


def flip(path, offset, bit=0x10):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ bit]))


def places(one, name):
    """(position, global index, unit serial, index in the unit) of an entry."""
    m = one.manifest
    shape = TreeShape(m["entry_counts"], m["mini_depth"], m["unit_depth"])
    index = one.proofs[name]["index"]
    batch, local = shape.locate(index)
    return shape.position(batch, local), index, shape.serial(batch, local), \
        local & ((1 << shape.unit_depth) - 1)


def sibling_offset(one, name, level, byte=5, own=False):
    """Where in nodes.bin the stored sibling of an entry's path at unit level `level` is (with
    own, the path's own node there)."""
    m = one.manifest
    k = m["unit_depth"]
    _, _, serial, in_unit = places(one, name)
    offset = (1 << (k - 1)) - (2 << (k - level))
    narrow = narrow_record_bytes(m["n_currencies"], m["n_bytes"])
    node = (in_unit >> level) ^ (0 if own else 1)
    return (serial * stored_records(k) + offset + node) * narrow + byte


def other_units(one, name):
    _, _, serial, _ = places(one, name)
    return [n for n in one.names if places(one, n)[2] != serial]


def check_answers(one, names, answers, refused):
    """Every answer is the reference's proof or a StoreError; `refused` are StoreErrors."""
    for name, answer in zip(names, answers):
        if isinstance(answer, store.StoreError):
            assert "damaged" in str(answer) and "\n" not in str(answer)
        else:
            assert answer == one.proofs[name], name
    for name in refused:
        assert isinstance(answers[names.index(name)], store.StoreError), name


@pytest.mark.parametrize("what", ["nodes level 2", "nodes level 4", "own nodes level 2",
                                  "own nodes level 3", "balances", "usernames"])
def test_damage_is_refused_on_a_fresh_open(made, tmp_path, what):
    """A sibling or the path's own stored node (each pair is checked against the stored node
    one level up), an entry: the proof that reads it is refused, the others are right."""
    one = made["k5"]                                  # units of 2^5: nodes.bin levels 2..4
    victim = one.names[45]
    target, manifest = copy_of(one, tmp_path)
    position, index, _, _ = places(one, victim)
    n, n_bytes = manifest["n_currencies"], manifest["n_bytes"]
    if "nodes" in what:
        flip(target / "nodes.bin", sibling_offset(one, victim, int(what[-1]), own=what.startswith("own")))
    elif what == "balances":
        flip(target / "balances.bin", position * n * n_bytes + 2)
    else:
        flip(target / "usernames.bin", position * 32, 0x01)
    tree = store.StoredTree(str(target), manifest)
    with pytest.raises(store.StoreError, match="damaged"):
        tree.proof(victim)
    with pytest.raises(store.StoreError, match="damaged"):
        store.StoredTree(str(target), manifest).proof(index)
    others = other_units(one, victim)[:40]
    batch = [victim] + others
    check_answers(one, batch, tree.proofs_or_errors(batch), [victim])
    assert tree.proofs(others) == [one.proofs[n] for n in others]
    with pytest.raises(store.StoreError):
        tree.proofs(batch)
    # every entry at once: an answer is the reference's or a StoreError, never another proof
    fresh = store.StoredTree(str(target), manifest)
    check_answers(one, one.names, fresh.proofs_or_errors(one.names),
                  [] if "nodes" in what else [victim])


def test_a_damaged_upper_tree_is_refused_at_open_and_a_verified_copy_stays(made, tmp_path):
    one = made["k3"]
    target, manifest = copy_of(one, tmp_path)
    opened = store.StoredTree(str(target), manifest)
    flip(target / "upper.bin", 70)
    with pytest.raises(store.StoreError, match="upper.bin does not lead to the manifest's root"):
        store.StoredTree(str(target), manifest)
    assert opened.proofs(one.names) == [one.proofs[n] for n in one.names]


def test_damage_after_caching(made, tmp_path):
    """A tree that verified and cached everything: damage to a cached record is not read (the
    proof stays right) until the cache is dropped; damage below the cache and to entries is."""
    one = made["k5"]
    target, manifest = copy_of(one, tmp_path)
    tree = store.StoredTree(str(target), manifest, cache_bytes=4096)   # levels 3..4 only
    assert tree.cache_level == 3
    while tree.warm():
        pass
    assert tree.proofs(one.names) == [one.proofs[n] for n in one.names]
    a, b, c = one.names[10], one.names[100], one.names[200]
    flip(target / "nodes.bin", sibling_offset(one, a, 4))      # cached: not read again
    assert tree.proof(a) == one.proofs[a]
    flip(target / "nodes.bin", sibling_offset(one, b, 2))      # below the cache: read
    with pytest.raises(store.StoreError, match="damaged"):
        tree.proof(b)
    position, index, _, _ = places(one, c)
    flip(target / "balances.bin", position * manifest["n_bytes"] + 1)
    with pytest.raises(store.StoreError, match="damaged"):
        tree.proof(c)
    assert tree.proof(a) == one.proofs[a]
    tree.forget()                                               # the cache gone: read again
    with pytest.raises(store.StoreError, match="damaged"):
        tree.proof(a)
    with pytest.raises(store.StoreError, match="damaged"):
        tree.proof(index)


def test_damage_before_caching_never_enters_the_cache(made, tmp_path):
    one = made["k5"]
    target, manifest = copy_of(one, tmp_path)
    victim = one.names[70]
    flip(target / "nodes.bin", sibling_offset(one, victim, 3))
    tree = store.StoredTree(str(target), manifest)
    while tree.warm():                          # the damaged pair does not verify: left out
        pass
    assert tree.paths.cached < ((2 << (5 - tree.cache_level)) - 2) * tree.shape.units
    with pytest.raises(store.StoreError, match="damaged"):
        tree.proof(victim)
    check_answers(one, one.names, [tree.proofs_or_errors([n])[0] for n in one.names], [victim])
    others = other_units(one, victim)
    assert tree.proofs(others) == [one.proofs[n] for n in others]


# ---- the daemon's proof server ----------------------------------------------------------------

def linked_job(data_dir, result, csvs):
    """A finished job whose result is `result` (a link), as the daemon finds it at start."""
    job = "20200101-000000-batch1"
    os.makedirs(data_dir / "jobs")
    os.makedirs(data_dir / "results")
    os.symlink(result, data_dir / "results" / job)
    record = {"job": job, "state": "done", "error": None, "root": None, "submitted": 0,
              "started": 0, "loaded": 0, "finished": 0, "quarantined": [], "progress": {},
              "spec": {"csvs": [str(c) for c in csvs], "executors": 1, "spawner": "mock",
                       "layout": "interleaved", "n_bytes": 14, "batch_size": None}}
    (data_dir / "jobs" / f"{job}.json").write_text(json.dumps(record))
    return job


def receive(dealer, seconds=20):
    assert dealer.poll(int(seconds * 1000)), "no answer"
    frames = dealer.recv_multipart()
    return frames[1], msgpack.unpackb(frames[2], raw=False)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("megabytes", [0, 1])
def test_the_daemons_proof_cache_follows_its_config(made, tmp_path, megabytes):
    one = made["k3"]
    target, _ = copy_of(one, tmp_path)
    job = linked_job(tmp_path / "data", target, [tmp_path / "x.csv"])
    with daemon_in_process(tmp_path / "data", proof_cache_mb=megabytes) as (daemon, client):
        for name in one.names[:20]:
            assert client.proof(job, name) == one.proofs[name]
        client.status(job)                       # the proof thread has loaded it by now
        assert daemon.proof_server.cache_bytes == megabytes << 20
        tree = daemon.proof_server.results[job]
        assert tree.cache_bytes <= megabytes << 20
        if megabytes:
            assert tree.cache_level < tree.shape.unit_depth and tree.cache_bytes > 0
        else:
            assert tree.cache_level == tree.shape.unit_depth and tree.cache_bytes == 0


@pytest.mark.timeout(60)
def test_a_proof_waiting_before_the_daemon_serves_is_answered(made, tmp_path):
    """The control loop serves only once the proof thread's sockets are connected: before, a
    PROOF it read first went to an inproc PUSH with no peer yet and was refused as if 100,000
    requests were waiting."""
    one = made["k3"]
    target, _ = copy_of(one, tmp_path)
    job = linked_job(tmp_path / "data", target, [tmp_path / "x.csv"])
    daemon = Daemon(DaemonConfig(control=f"inproc://first-proof-{os.getpid()}", data_dir=str(tmp_path / "data"),
                                 cancel="tcp://127.0.0.1:*", insecure=True, log_level="WARNING"))
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(daemon.control_endpoint)
    for name in one.names[:5]:                   # queued before the loop and the thread start
        dealer.send_multipart(wire.frames(wire.PROOF, {"job": job, "username": name}))
    run = daemon.proof_server.run
    daemon.proof_server.run = lambda: (time.sleep(0.3), run())   # a thread slow to start: the race, every time
    serving = threading.Thread(target=daemon.serve, name="first-proof-daemon")
    serving.start()
    try:
        for name in one.names[:5]:
            command, body = receive(dealer)
            assert command == wire.REPLY and body["proof"] == one.proofs[name], body
    finally:
        dealer.close(linger=0)
        daemon.stop()
        serving.join()


def test_the_proof_caches_take_at_most_a_quarter_of_the_heap_budget(tmp_path):
    with daemon_in_process(tmp_path / "data", proof_cache_mb=128, max_memory_mb=1024) as (daemon, _):
        assert daemon.proof_server.cache_bytes == (1024 << 20) // (4 * CACHED_RESULTS)   # 64 MiB
    with daemon_in_process(tmp_path / "data2", proof_cache_mb=16, max_memory_mb=1024) as (daemon, _):
        assert daemon.proof_server.cache_bytes == 16 << 20


@pytest.mark.timeout(120)
def test_the_daemon_answers_proofs_in_batches(made, tmp_path):
    one = made["k3"]
    target, _ = copy_of(one, tmp_path)
    job = linked_job(tmp_path / "data", target, [tmp_path / "x.csv"])
    rng = random.Random(11)
    with daemon_in_process(tmp_path / "data") as (daemon, client):
        assert client.proof(job, one.names[0]) == one.proofs[one.names[0]]
        context = zmq.Context.instance()
        dealers = [context.socket(zmq.DEALER) for _ in range(4)]
        try:
            for dealer in dealers:
                dealer.linger = 0
                dealer.connect(daemon.control_endpoint)
            asked = []
            for d, dealer in enumerate(dealers):
                names = rng.choices(one.names, k=60) + ["nobody"]
                asked.append(names)
                for name in names:
                    dealer.send_multipart(wire.frames(wire.PROOF, {"job": job, "username": name}))
                dealer.send_multipart(wire.frames(wire.PROOF, {"job": job, "username": 7}))
                dealer.send_multipart(wire.frames(wire.PROOF, {"job": "20200101-000000-nojob0",
                                                               "username": "x"}))
            assert client.status(job)["state"] == "done"          # answered meanwhile
            for dealer, names in zip(dealers, asked):
                for name in names:
                    command, body = receive(dealer)
                    if name == "nobody":
                        assert command == wire.ERROR and body["code"] == Code.NOT_FOUND
                        assert "nobody" in body["message"] and body["job"] == job
                    else:
                        assert command == wire.REPLY and body["proof"] == one.proofs[name]
                command, body = receive(dealer)
                assert command == wire.ERROR and body["code"] == Code.BAD_FIELD
                command, body = receive(dealer)
                assert command == wire.ERROR and body["code"] == Code.NO_SUCH_JOB
        finally:
            for dealer in dealers:
                dealer.close(linger=0)
        server = daemon.proof_server
        assert server.batches < server.served          # some requests were verified together
        # damage to an entry, which every proof of it reads: INTERNAL, one line, never a proof
        victim = one.names[5]
        position, _, _, _ = places(one, victim)
        flip(target / "balances.bin", position * one.manifest["n_currencies"] * 14 + 3)
        with pytest.raises(Exception) as info:
            client.proof(job, victim)
        assert info.value.code == Code.INTERNAL and "damaged" in info.value.message
        assert "\n" not in info.value.message and job in info.value.message
        far = one.names[-1]
        assert client.proof(job, far) == one.proofs[far]
