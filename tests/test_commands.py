"""The console scripts, run as a user runs them: subprocesses of the venv's bin directory."""
import json

import pytest

from summa_aggregation.mst import store

FOUR = [f"entry_16_{i}.csv" for i in range(1, 5)]


def last_json(result):
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines, "no stdout"
    return json.loads(lines[-1])


def one_line_error(result, prog, code=None):
    """The failure contract: non-zero exit, exactly one stderr line naming the command, no traceback."""
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory, fixtures_dir, run_script):
    """One summa-aggregate --out run shared by the proof and verify tests (read-only for them)."""
    target = tmp_path_factory.mktemp("agg") / "result"
    result = run_script("summa-aggregate", "--workers", "1", "--out", target,
                         *[fixtures_dir / f for f in FOUR])
    return target, last_json(result)


@pytest.fixture
def proof_file(result_dir, run_script, tmp_path):
    target, _ = result_dir
    result = run_script("summa-proof", target, "MBlfbBGI")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "proof.json"
    path.write_text(result.stdout)
    return path


# --- summa-aggregate -----------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["1", "2"])
def test_aggregate_four_files(run_script, fixtures_dir, vectors, tree_layout, workers):
    result = run_script("summa-aggregate", "--workers", workers, "--layout", tree_layout,
                        *[fixtures_dir / f for f in FOUR])
    assert last_json(result) == vectors["layouts"][tree_layout]["root_of_entry_64.csv"]
    assert "Traceback" not in result.stderr


def test_aggregate_default_layout_is_interleaved(run_script, fixtures_dir, vectors):
    result = run_script("summa-aggregate", "--workers", "1", fixtures_dir / "entry_16.csv")
    assert last_json(result) == vectors["layouts"]["interleaved"]["root_of_entry_16.csv"]


def test_aggregate_portable_kernel(run_script, fixtures_dir, vectors):
    result = run_script("summa-aggregate", "--workers", "2", *[fixtures_dir / f for f in FOUR],
                        env={"SUMMA_KERNEL": "portable"})
    assert last_json(result) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]


@pytest.mark.parametrize("batch_size", ["16", "8", "64"])
def test_batch_size_gives_the_single_tree_root(run_script, fixtures_dir, vectors, tree_layout, batch_size):
    plain = run_script("summa-aggregate", "--workers", "1", "--layout", tree_layout,
                       fixtures_dir / "entry_64.csv")
    batched = run_script("summa-aggregate", "--workers", "2", "--layout", tree_layout,
                         "--batch-size", batch_size, fixtures_dir / "entry_64.csv")
    expected = vectors["layouts"][tree_layout]["root_of_entry_64.csv"]
    assert last_json(plain) == last_json(batched) == expected


def test_batch_size_across_files(run_script, fixtures_dir, vectors):
    """Batches cut across file boundaries: 4 files of 16 in batches of 32."""
    result = run_script("summa-aggregate", "--workers", "2", "--batch-size", "32",
                        *[fixtures_dir / f for f in FOUR])
    assert last_json(result) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]


def test_out_writes_the_result(result_dir, vectors):
    target, printed = result_dir
    assert printed == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["root"] == printed
    assert manifest["entries"] == 64 and manifest["entry_counts"] == [16] * 4
    assert [p.rsplit("/", 1)[-1] for p in manifest["inputs"]] == FOUR
    tree, _ = store.load(target)
    assert tree.root.to_json() == printed


# --- summa-proof and summa-verify ---------------------------------------------------------

def test_proof_then_verify(result_dir, proof_file, run_script):
    _, root = result_dir
    proof = json.loads(proof_file.read_text())
    assert proof["entry"]["username"] == "MBlfbBGI" and proof["index"] == 1
    assert proof["root"] == root and len(proof["path"]) == 6
    result = run_script("summa-verify", proof_file)
    assert result.returncode == 0, result.stderr
    assert "MBlfbBGI" in result.stdout and root["hash"] in result.stdout


def test_proof_of_a_user_in_a_later_file(result_dir, run_script, tmp_path):
    target, root = result_dir
    result = run_script("summa-proof", target, "b28fbBGI")  # second entry of entry_16_4.csv
    proof = json.loads(result.stdout)
    assert proof["index"] == 3 * 16 + 1 and proof["root"] == root
    assert run_script("summa-verify", "-", input=result.stdout).returncode == 0


def test_verify_reads_stdin(proof_file, run_script):
    result = run_script("summa-verify", "-", input=proof_file.read_text())
    assert result.returncode == 0, result.stderr
    bad = json.loads(proof_file.read_text())
    bad["entry"]["balances"][0] = str(int(bad["entry"]["balances"][0]) + 1)
    one_line_error(run_script("summa-verify", "-", input=json.dumps(bad)), "summa-verify", 1)


@pytest.mark.parametrize("tamper", ["balance", "username", "path", "root", "not json", "empty"])
def test_verify_tampered_proof(proof_file, run_script, tamper):
    proof = json.loads(proof_file.read_text())
    if tamper == "balance":
        proof["entry"]["balances"][1] = "0"
    elif tamper == "username":
        proof["entry"]["username"] = "dxGaEAii"
    elif tamper == "path":
        proof["path"][3]["hash"] = "0x" + "0" * 63 + "1"
    elif tamper == "root":
        proof["root"]["balances"][0] = "0x" + "0" * 64
    text = {"not json": "{", "empty": ""}.get(tamper, json.dumps(proof))
    proof_file.write_text(text)
    result = run_script("summa-verify", proof_file)
    one_line_error(result, "summa-verify", 1)
    assert result.stdout == ""


def test_verify_root_option(result_dir, proof_file, run_script):
    _, root = result_dir
    assert run_script("summa-verify", "--root", root["hash"], proof_file).returncode == 0
    assert run_script("summa-verify", "--root", root["hash"].upper().replace("0X", "0x"),
                      proof_file).returncode == 0
    wrong = "0x" + "1" * 64
    result = run_script("summa-verify", "--root", wrong, proof_file)
    assert wrong in one_line_error(result, "summa-verify", 1)


def test_verify_missing_file(run_script, tmp_path):
    line = one_line_error(run_script("summa-verify", tmp_path / "nope.json"), "summa-verify")
    assert "nope.json" in line


def test_proof_unknown_username(result_dir, run_script):
    target, _ = result_dir
    line = one_line_error(run_script("summa-proof", target, "nobody"), "summa-proof", 1)
    assert "nobody" in line


def test_proof_missing_result_dir(run_script, tmp_path):
    line = one_line_error(run_script("summa-proof", tmp_path / "none", "dxGaEAii"), "summa-proof")
    assert "none" in line


def test_proof_usage_error(run_script):
    one_line_error(run_script("summa-proof"), "summa-proof", 2)


# --- summa-aggregate failures -------------------------------------------------------------

def test_bad_csv_negative_balance(run_script, fixtures_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("username,balance_ETH_ETH,balance_USDT_ETH\nalice,1,2\nbob,-5,3\n")
    result = run_script("summa-aggregate", "--out", tmp_path / "out", fixtures_dir / "entry_16.csv", bad)
    line = one_line_error(result, "summa-aggregate", 1)
    assert f"{bad}:3" in line and "negative" in line
    assert not (tmp_path / "out").exists()


def test_duplicate_username_across_files(run_script, fixtures_dir):
    line = one_line_error(run_script("summa-aggregate", fixtures_dir / "entry_16.csv",
                                     fixtures_dir / "entry_16_1.csv"), "summa-aggregate", 1)
    assert "entry_16_1.csv:2" in line and "entry_16.csv:2" in line and "dxGaEAii" in line


def test_existing_out_dir(run_script, fixtures_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    line = one_line_error(run_script("summa-aggregate", "--out", out, fixtures_dir / "entry_16.csv"),
                          "summa-aggregate")
    assert "out" in line and "exists" in line
    assert [p.name for p in out.iterdir()] == ["keep"]


@pytest.mark.parametrize("args, code", [
    (["--n-bytes", "0"], None), (["--n-bytes", "32"], None), (["--n-bytes", "x"], 2),
    (["--batch-size", "3"], 2), (["--batch-size", "0"], 2), (["--workers", "0"], None),
    (["--layout", "sorted"], 2), ([], 2),
])
def test_bad_options(run_script, fixtures_dir, args, code):
    csvs = [fixtures_dir / "entry_16.csv"] if args else []
    one_line_error(run_script("summa-aggregate", *args, *csvs), "summa-aggregate", code)


def test_nonexistent_csv(run_script, tmp_path):
    line = one_line_error(run_script("summa-aggregate", tmp_path / "missing.csv"), "summa-aggregate")
    assert "missing.csv" in line


def test_per_balance_range_failure(run_script, fixtures_dir, tmp_path):
    """--n-bytes 2: entry_16.csv holds balances above 2^16: refused, naming the currency."""
    result = run_script("summa-aggregate", "--n-bytes", "2", "--out", tmp_path / "out",
                        fixtures_dir / "entry_16.csv")
    line = one_line_error(result, "summa-aggregate", 1)
    assert "balance_ETH_ETH" in line or "balance_USDT_ETH" in line
    assert not (tmp_path / "out").exists()
    assert result.stdout == ""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_total_range_failure(run_script, tmp_path, workers):
    """Every balance fits in one byte but the USDT total of the second file does not."""
    one = tmp_path / "one.csv"
    one.write_text("username,balance_ETH_ETH,balance_USDT_ETH\na,1,1\nb,1,1\n")
    two = tmp_path / "two.csv"
    two.write_text("username,balance_ETH_ETH,balance_USDT_ETH\nc,1,200\nd,1,100\n")
    result = run_script("summa-aggregate", "--workers", workers, "--n-bytes", "1", "--out",
                        tmp_path / "out", one, two)
    line = one_line_error(result, "summa-aggregate", 1)
    assert "balance_USDT_ETH" in line and "balance_ETH_ETH" not in line
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_aggregation_range_failure(run_script, tmp_path):
    """Each file's totals fit; the sum of the mini-tree roots does not."""
    for name, rows in (("one.csv", "a,1,200\n"), ("two.csv", "b,1,100\n")):
        (tmp_path / name).write_text("username,balance_ETH_ETH,balance_USDT_ETH\n" + rows)
    result = run_script("summa-aggregate", "--n-bytes", "1", "--out", tmp_path / "out",
                        tmp_path / "one.csv", tmp_path / "two.csv")
    assert "balance_USDT_ETH" in one_line_error(result, "summa-aggregate", 1)
    assert not (tmp_path / "out").exists()


# --- installation ----------------------------------------------------------------------

def test_every_spec_command_is_installed(bin_dir):
    for prog in ("summa-worker", "summa-daemon", "summa-submit", "summa-aggregate",
                 "summa-proof", "summa-verify"):
        assert (bin_dir / prog).exists(), prog
