"""Work units apart from the layout (issue 11): whatever the unit size, the root, the stored
tree and every proof are the spec's; duplicates are named exactly across files and units; and
the daemon's heap does not grow with the job."""
import os
import sys
import tracemalloc

import pytest

from summa_aggregation.mst import store
from summa_aggregation.mst.limits import depth_for
from summa_aggregation.wire import SubmitRequest

from daemon_helpers import FINISHED, daemon_in_process, reference_tree, write_csv
from worker_helpers import wait_until

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from gen_csv import generate  # noqa: E402

RAGGED = (300, 17, 1000, 5, 64)


def run(client, csvs, layout="interleaved", batch_size=None, executors=2):
    job = client.submit(SubmitRequest([str(p) for p in csvs], executors, "mock", layout, 14,
                                      batch_size))
    wait_until(lambda: client.status(job)["state"] in FINISHED, seconds=120, interval=0.02)
    return job, client.status(job)


CASES = [(layout, unit, n, batch) for layout in ("interleaved", "sum-first")
         for unit, n in ((2, 1), (16, 2), (128, 3), (4096, 4)) for batch in (None, 256)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("unit_size", [2, 16, 128, 4096, 0])
def test_ragged_csvs_give_the_reference_root_whatever_the_unit(tmp_path, unit_size):
    """Sizes 300, 17, 1000, 5, 64: units straddle nothing, padding units are never built, and
    with 4096 (more than any file) no file proves the unit depth, so each file is one unit."""
    cases = [c for c in CASES if c[1] == unit_size] if unit_size else \
        [("interleaved", 0, 1, None), ("sum-first", 0, 2, 128)]
    with daemon_in_process(tmp_path / "data", unit_size=unit_size) as (daemon, client):
        for layout, _, n, batch in cases:
            files, paths = [], []
            for i, count in enumerate(RAGGED):
                paths.append(tmp_path / f"{layout}-{n}-{batch}-{i}.csv")
                files.append(write_csv(paths[-1], count, n_currencies=n, seed=i, prefix=f"u{i}-"))
            job, record = run(client, paths, layout, batch)
            assert record["state"] == "done", record
            expected = reference_tree(files, layout, batch)
            assert record["root"] == expected.root.to_json(), (layout, n, batch)
            result = os.path.join(daemon.results_dir, job)
            store.check(result)
            tree, manifest = store.load(result)
            wanted = (unit_size or 1024).bit_length() - 1     # the rule's least for a small job
            assert manifest["unit_depth"] == min(wanted, depth_for(batch or max(RAGGED)))
            for entries in files:
                for name, _ in (entries[0], entries[-1], entries[len(entries) // 2]):
                    assert client.proof(job, name) == expected.proof(name) == tree.proof(name)


# ---- duplicates -------------------------------------------------------------------------------

def write_rows(path, rows, header="username,balance_ETH_ETH"):
    path.write_text(header + "\n" + "".join(f"{row}\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.timeout(120)
def test_duplicates_are_named_exactly_across_files_and_units(tmp_path):
    a = write_rows(tmp_path / "a.csv", [f"user{i},{i}" for i in range(40)])
    b = write_rows(tmp_path / "b.csv", ["new1,1", "", "new2,2", "user33,5", "new3,3"])
    inner = write_rows(tmp_path / "inner.csv", [f"x{i},1" for i in range(30)] + ["x2,9"])
    later_bad = write_rows(tmp_path / "later_bad.csv", ["y1,1", "y2,2", "y1,3", "y3,-4"])
    bad_first = write_rows(tmp_path / "bad_first.csv", ["z1,1", "z2,oops", "z1,3"])
    with daemon_in_process(tmp_path / "data", unit_size=4) as (_, client):
        _, record = run(client, [a, b])
        assert record["error"] == f"{b}:5: duplicate username 'user33' (first seen at {a}:35)"
        _, record = run(client, [inner], batch_size=8)     # across units and batches
        assert record["error"] == f"{inner}:32: duplicate username 'x2' (first seen at {inner}:4)"
        _, record = run(client, [later_bad])    # the first error in line order wins
        assert record["error"] == f"{later_bad}:4: duplicate username 'y1' (first seen at {later_bad}:2)"
        _, record = run(client, [bad_first])
        assert record["error"].startswith(f"{bad_first}:3: balance 'oops'")
        results = os.listdir(tmp_path / "data" / "results")
        assert results == [], "a failed job leaves nothing behind"


# ---- memory -----------------------------------------------------------------------------------

HEAP_BUDGET = 16 << 20


@pytest.mark.timeout(300)
def test_the_daemon_heap_does_not_grow_with_the_job(tmp_path):
    """Peak Python heap of the daemon (this process: control loop, loader, dispatcher, checker)
    during a 2^16 and a 2^19 job, same unit size: the difference stays under a fixed budget
    (the old daemon held ~300 bytes per entry: ~140 MiB more at 2^19)."""
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    generate(small, 1 << 16, seed=1)
    generate(big, 1 << 19, seed=2)
    peaks = {}
    with daemon_in_process(tmp_path / "data", unit_size=1 << 12) as (_, client):
        tracemalloc.start()
        try:
            for name, path in (("small", small), ("big", big)):
                before = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                _, record = run(client, [path])
                assert record["state"] == "done", record
                peaks[name] = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
    assert peaks["big"] - peaks["small"] < HEAP_BUDGET, peaks
