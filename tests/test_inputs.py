"""What a client may make the daemon read (input_dirs), and uploads through the control socket.

Real daemons (summa-daemon processes, or one in this process where its internals are looked
at), real sockets on 127.0.0.1, real files: symbolic links, FIFOs, directories. A path outside
input_dirs is refused at SUBMIT with one line that never says whether it exists; a file that is
not regular is refused without blocking; nothing of a refused file's contents appears in an
error, a job record or the daemon's log. Uploads go in bounded chunks with back-pressure; every
hostile request is refused with a clear error and writes nothing outside DATA_DIR/uploads.
"""
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time

import pytest
import zmq

from summa_aggregation import wire
from summa_aggregation.daemon.inputs import InputError, InputPolicy
from summa_aggregation.daemon.uploads import CHUNK_BYTES, WINDOW
from summa_aggregation.wire import Code, SubmitRequest

from daemon_helpers import DaemonProcess, job_id_of, one_line, single_tree_root, write_csv
from worker_helpers import BIN, receive, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from gen_csv import generate  # noqa: E402

UPLOAD_DIR = re.compile(r"[0-9a-f]{32}")


def request(sockets, daemon, command, body, seconds=10):
    """One request on a fresh DEALER; (command, body) of the answer."""
    dealer = sockets(zmq.DEALER, daemon.control)
    dealer.send_multipart(wire.frames(command, body))
    return receive(dealer, seconds)


def refused(answer, code):
    command, body = answer
    assert command == wire.ERROR, body
    assert body["code"] == code, body
    assert body["message"] and "\n" not in body["message"], body
    return body["message"]


def submit_body(paths=(), uploads=None):
    return SubmitRequest(list(paths), 1, "mock", "interleaved", 14, None, uploads).body()


def tree(top):
    """Every path under `top`, relative, with a marker for directories."""
    found = set()
    for where, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(where, name)
            found.add(os.path.relpath(path, top) + ("/" if os.path.isdir(path) else ""))
    return found


def uploads_of(daemon):
    return sorted(os.listdir(os.path.join(daemon.data_dir, "uploads")))


def secret_words(path):
    """Pieces of a system file that must never come back to a client: each line's first
    fields (what a header error used to quote)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    except OSError:
        return []
    return [line[:20] for line in lines] + [":".join(line.split(":")[:2]) for line in lines if ":" in line]


# ---- 1. paths outside input_dirs --------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_system_file_is_refused_at_submit_without_a_word_of_it(tmp_path):
    daemon = DaemonProcess(tmp_path)
    targets = [p for p in ("/etc/shadow", "/etc/passwd", "/proc/self/environ") if os.path.lexists(p)]
    assert targets
    for target in targets:
        result = daemon.submit("build", target, "--wait")
        assert result.returncode == 1, result
        line = one_line(result.stderr, "summa-submit: error: field 'csvs': ")
        assert f"{target}: not inside the daemon's input_dirs ({tmp_path}, " in line, line
        for word in secret_words(target):
            assert word not in result.stderr and word not in result.stdout, word
    assert daemon.submit("list").stdout == ""                  # no job was made
    assert os.listdir(os.path.join(daemon.data_dir, "jobs")) == []
    log = daemon.log()
    for target in targets:
        for word in secret_words(target):
            assert word not in log, word
    assert daemon.process.poll() is None


@pytest.mark.timeout(60)
def test_the_refusal_is_the_same_whether_the_path_exists_or_not(tmp_path, sockets):
    (tmp_path / "in").mkdir()
    daemon = DaemonProcess(tmp_path, {"input_dirs": [str(tmp_path / "in")]})
    (tmp_path / "elsewhere").mkdir()
    write_csv(tmp_path / "elsewhere" / "real.csv", 4)
    pairs = [("/etc/passwd", "/etc/no-such-file-here"),
             (str(tmp_path / "elsewhere" / "real.csv"), str(tmp_path / "elsewhere" / "nope.csv")),
             ("/etc", "/no-such-directory/at-all"),
             (str(tmp_path / "in-evil.csv"), str(tmp_path / "in-evil" / "x.csv"))]   # prefix tricks
    (tmp_path / "in-evil.csv").write_text("username,balance_ETH_ETH\nalice,1\n")
    for existing, missing in pairs:
        said = [refused(request(sockets, daemon, wire.SUBMIT, submit_body([path])), Code.BAD_FIELD)
                for path in (existing, missing)]
        assert said[0].replace(existing, "PATH") == said[1].replace(missing, "PATH"), said
        assert said[0] == f"field 'csvs': {existing}: not inside the daemon's input_dirs ({tmp_path / 'in'})"
    # '..' cannot walk out, and is refused on its words alone, wherever it would lead
    for path in (f"{tmp_path}/in/../elsewhere/real.csv", f"{tmp_path}/in/../in/x.csv", f"{tmp_path}/in/./x.csv"):
        message = refused(request(sockets, daemon, wire.SUBMIT, submit_body([path])), Code.BAD_FIELD)
        assert "not a normalized absolute path" in message, message
    for path in ("relative.csv", f"{tmp_path}/in/x\n.csv", f"{tmp_path}/in/x\x00.csv"):
        refused(request(sockets, daemon, wire.SUBMIT, submit_body([path])), Code.BAD_FIELD)
    assert daemon.submit("list").stdout == ""


@pytest.mark.timeout(60)
def test_a_link_out_of_input_dirs_is_refused_and_a_link_within_is_followed(tmp_path, sockets):
    inputs = tmp_path / "in"
    inputs.mkdir()
    entries = write_csv(tmp_path / "outside.csv", 8)
    (inputs / "to-outside.csv").symlink_to(tmp_path / "outside.csv")
    (inputs / "to-passwd.csv").symlink_to("/etc/passwd")
    (inputs / "etc").symlink_to("/etc")                  # a directory link: its files are outside
    write_csv(inputs / "real.csv", 8, seed=3)
    (inputs / "alias.csv").symlink_to("real.csv")
    daemon = DaemonProcess(tmp_path, {"input_dirs": [str(inputs)]})
    for path in (inputs / "to-outside.csv", inputs / "to-passwd.csv", inputs / "etc" / "passwd"):
        message = refused(request(sockets, daemon, wire.SUBMIT, submit_body([str(path)])), Code.BAD_FIELD)
        assert message == (f"field 'csvs': {path}: not inside the daemon's input_dirs once symbolic "
                           f"links are followed ({inputs})"), message
        assert "root:" not in message
    done = daemon.submit("build", inputs / "alias.csv", "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) != single_tree_root(entries)
    assert daemon.status(job_id_of(done.stdout))["spec"]["csvs"] == [str(inputs / "alias.csv")]


@pytest.mark.timeout(60)
def test_the_daemons_own_files_are_never_inputs(tmp_path, sockets):
    """tmp_path is an input dir and holds the daemon's data_dir: job records and results in
    there stay out of reach."""
    daemon = DaemonProcess(tmp_path)
    write_csv(tmp_path / "users.csv", 16)
    job = job_id_of(daemon.submit("build", tmp_path / "users.csv", "--wait").stdout)
    for path in (os.path.join(daemon.data_dir, "jobs", f"{job}.json"),
                 os.path.join(daemon.result_dir(job), "usernames.bin"), os.path.join(daemon.data_dir, "lock")):
        message = refused(request(sockets, daemon, wire.SUBMIT, submit_body([path])), Code.BAD_FIELD)
        assert message == f"field 'csvs': {path}: one of the daemon's own files (its data_dir or " \
                          f"keys_dir), never an input", message


# ---- 2. what is inside, but not a regular file -------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_file_that_is_not_regular_fails_its_job_at_once(tmp_path, kind, fixtures_dir, vectors):
    daemon = DaemonProcess(tmp_path)
    path = tmp_path / f"users-{kind}.csv"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    began = time.monotonic()
    result = daemon.submit("build", path, "--wait", timeout=30)
    elapsed = time.monotonic() - began
    assert result.returncode == 1, result
    line = one_line(result.stderr, f"summa-submit: job {job_id_of(result.stdout)} failed: ")
    what = "a named pipe (FIFO)" if kind == "fifo" else "a directory"
    assert line.endswith(f"{path}: {what}, not a regular file (the daemon reads CSVs from regular "
                         f"files only)"), line
    assert elapsed < 20, elapsed
    assert not daemon.worker_pids()     # refused before any worker started
    # and the daemon serves on
    done = daemon.submit("build", fixtures_dir / "entry_64.csv", "--wait")
    assert json.loads(done.stdout.splitlines()[-1]) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]


def test_the_loader_checks_again_what_it_really_opens(tmp_path):
    """Between SUBMIT and the loader, a file can become a link out, a FIFO, or sit under a
    directory that became a link out: the open refuses each, without blocking."""
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    write_csv(inputs / "sub" / "a.csv", 4)
    write_csv(inputs / "b.csv", 4)
    outside = tmp_path / "out"
    outside.mkdir()
    write_csv(outside / "a.csv", 4, seed=9)
    policy = InputPolicy([str(inputs)])
    for path in (inputs / "sub" / "a.csv", inputs / "b.csv"):
        assert policy.check(str(path)) == str(path)      # as a SUBMIT finds them
        os.close(policy.open(str(path)))
    os.rename(inputs / "sub", tmp_path / "old-sub")
    (inputs / "sub").symlink_to(outside)                 # the directory, now a link out
    with pytest.raises(InputError, match="once symbolic links are followed"):
        policy.open(str(inputs / "sub" / "a.csv"))
    os.unlink(inputs / "b.csv")
    os.mkfifo(inputs / "b.csv")                          # the file, now a FIFO
    with pytest.raises(InputError, match=r"b\.csv: a named pipe \(FIFO\), not a regular file"):
        policy.open(str(inputs / "b.csv"))
    os.unlink(inputs / "b.csv")
    (inputs / "b.csv").symlink_to("/dev/zero")           # a link out to a device
    with pytest.raises(InputError, match="once symbolic links are followed"):
        policy.open(str(inputs / "b.csv"))
    with pytest.raises(InputError, match="not inside the daemon's input_dirs"):
        policy.open("/dev/zero")


@pytest.mark.timeout(60)
def test_summa_aggregate_reads_exactly_the_files_it_was_given(tmp_path, fixtures_dir, vectors):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    result = subprocess.run([os.path.join(BIN, "summa-aggregate"), "--workers", "1", str(fifo)],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert one_line(result.stderr, "summa-aggregate: error: ").endswith(
        f"{fifo}: a named pipe (FIFO), not a regular file (the daemon reads CSVs from regular files only)")
    link = tmp_path / "link.csv"                 # named on the command line: it is what was given
    link.symlink_to(fixtures_dir / "entry_64.csv")
    result = subprocess.run([os.path.join(BIN, "summa-aggregate"), "--workers", "1", str(link)],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("setting", ["missing", "data_dir", "results"])
def test_unusable_input_dirs_stop_the_daemon_with_one_line(tmp_path, setting):
    value = {"missing": [str(tmp_path / "no-such-dir")], "data_dir": ["."], "results": ["results/x"]}[setting]
    with pytest.raises(RuntimeError):
        DaemonProcess(tmp_path, {"input_dirs": value})
    log = (tmp_path / "daemon-0.log").read_text()
    assert one_line(log, "summa-daemon: error: input_dirs: "), log


@pytest.mark.timeout(60)
def test_the_default_input_dir_is_made_under_the_data_dir(tmp_path, fixtures_dir, vectors):
    daemon = DaemonProcess(tmp_path, {"input_dirs": ["inputs"]})
    inputs = os.path.join(daemon.data_dir, "inputs")
    assert os.path.isdir(inputs) and os.stat(inputs).st_mode & 0o7027 == 0, oct(os.stat(inputs).st_mode)
    target = os.path.join(inputs, "entry_64.csv")
    with open(fixtures_dir / "entry_64.csv", "rb") as source, open(target, "wb") as copy:
        copy.write(source.read())
    done = daemon.submit("build", target, "--wait")
    assert json.loads(done.stdout.splitlines()[-1]) == vectors["layouts"]["interleaved"]["root_of_entry_64.csv"]
    refused_here = daemon.submit("build", fixtures_dir / "entry_64.csv")
    assert refused_here.returncode == 1 and "not inside the daemon's input_dirs" in refused_here.stderr


# ---- 3. uploads ------------------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_an_upload_of_2_20_entries_gives_the_root_of_the_same_file_by_path(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    csv = inputs / "users.csv"
    generate(str(csv), 1 << 20, 1, seed=20)
    size = os.path.getsize(csv)
    daemon = DaemonProcess(tmp_path, {"input_dirs": [str(inputs)]})

    by_path = daemon.submit("build", csv, "--wait", timeout=240)
    assert by_path.returncode == 0, by_path.stderr
    began = time.monotonic()
    with daemon.client(timeout=30) as client:       # the upload alone, timed
        upload = client.upload(str(csv))
    seconds = time.monotonic() - began
    print(f"\nupload of {size / 1e6:.1f} MB (2^20 entries): {seconds:.2f} s, "
          f"{size / 1e6 / seconds:.0f} MB/s")
    assert uploads_of(daemon) == [upload]
    assert os.path.getsize(os.path.join(daemon.data_dir, "uploads", upload, "users.csv")) == size

    began = time.monotonic()
    by_upload = daemon.submit("build", "--upload", csv, "--wait", timeout=240)
    print(f"summa-submit build --upload --wait: {time.monotonic() - began:.2f} s")
    assert by_upload.returncode == 0, by_upload.stderr
    assert json.loads(by_upload.stdout.splitlines()[-1]) == json.loads(by_path.stdout.splitlines()[-1])
    record = daemon.status(job_id_of(by_upload.stdout))
    assert record["state"] == "done" and len(record["uploads"]) == 1
    stored = record["spec"]["csvs"][0]
    assert stored == os.path.join(daemon.data_dir, "uploads", record["uploads"][0], "users.csv")
    # the job's upload is gone once it ended; the one no job used is still waiting
    wait_until(lambda: uploads_of(daemon) == [upload], seconds=10)


@pytest.mark.timeout(120)
def test_hostile_uploads_are_refused_and_write_nothing_outside_the_uploads_dir(tmp_path, sockets):
    daemon = DaemonProcess(tmp_path, {"max_upload_mb": 4, "max_uploads": 3})
    uploads = os.path.join(daemon.data_dir, "uploads")
    before = tree(tmp_path)

    def begin(name="users.csv", size=100):
        command, body = request(sockets, daemon, wire.UPLOAD, {"name": name, "size": size})
        assert command == wire.REPLY, body
        assert body["chunk_bytes"] == CHUNK_BYTES and body["window"] == WINDOW
        assert UPLOAD_DIR.fullmatch(body["upload"]), body
        return body["upload"]

    def chunk(upload, offset, data, dealer=None):
        if dealer is None:
            return request(sockets, daemon, wire.CHUNK, {"upload": upload, "offset": offset, "data": data})
        dealer.send_multipart(wire.frames(wire.CHUNK, {"upload": upload, "offset": offset, "data": data}))

    def gone(upload):
        wait_until(lambda: upload not in os.listdir(uploads), seconds=10)
        assert "no upload" in refused(chunk(upload, 0, b"x"), Code.NO_SUCH_UPLOAD)

    # names that are not a plain file name
    for name in ("../evil.csv", "../../evil.csv", "..", ".", "a/b.csv", "/etc/cron.d/x", "x\x00.csv",
                 "line\nbreak.csv", ".hidden.csv", "", "x" * 256):
        message = refused(request(sockets, daemon, wire.UPLOAD, {"name": name, "size": 10}), Code.BAD_FIELD)
        assert message.startswith("field 'name': "), message
    for body in ({"name": "a.csv", "size": -1}, {"name": "a.csv"}, {"size": 3}, {"name": 7, "size": 3},
                 {"name": "a.csv", "size": "3"}):
        refused(request(sockets, daemon, wire.UPLOAD, body), Code.BAD_FIELD)

    # a chunk at a wrong offset discards the upload
    upload = begin()
    assert request(sockets, daemon, wire.CHUNK, {"upload": upload, "offset": 0, "data": b"abc"})[1]["received"] == 3
    assert "where 3 was next" in refused(chunk(upload, 5, b"defgh"), Code.BAD_FIELD)
    gone(upload)
    # past the declared size, too big, empty
    for offset, data, words in ((0, b"y" * 101, "past the 100 bytes"), (0, b"", "of 0 bytes")):
        upload = begin()
        assert words in refused(chunk(upload, offset, data), Code.BAD_FIELD)
        gone(upload)
    upload = begin(size=CHUNK_BYTES + 1)
    assert f"(1 to {CHUNK_BYTES})" in refused(chunk(upload, 0, bytes(CHUNK_BYTES + 1)), Code.BAD_FIELD)
    gone(upload)

    # beyond max_upload_mb: at once, and counting what the uploads in progress hold
    assert "max_upload_mb (4 MiB" in refused(request(sockets, daemon, wire.UPLOAD, {"name": "big.csv",
                                                     "size": (4 << 20) + 1}), Code.OVER_LIMIT)
    held = [begin(size=3 << 20)]
    refused(request(sockets, daemon, wire.UPLOAD, {"name": "more.csv", "size": 2 << 20}), Code.OVER_LIMIT)
    # max_uploads in progress
    held += [begin(size=10), begin(size=64 * 10)]
    assert "max_uploads" in refused(request(sockets, daemon, wire.UPLOAD, {"name": "x.csv", "size": 1}),
                                    Code.OVER_LIMIT)

    # a client ignoring the window: chunks beyond it are refused (and the upload goes)
    flooded = held.pop()
    dealer = sockets(zmq.DEALER, daemon.control)
    for burst in range(10):
        for i in range(64):
            chunk(flooded, 64 * burst + i, b"z", dealer)
        answers = [receive(dealer, 10) for _ in range(64)]
        errors = [body["message"] for command, body in answers if command == wire.ERROR]
        if any("beyond the window" in message for message in errors):
            break
    else:
        pytest.fail("64 chunks sent at once never went beyond the window")
    gone(flooded)

    # a wrong SHA-256: the upload is discarded, not stored
    data = b"username,balance_ETH_ETH\nalice,1\n"
    upload = begin(size=len(data))
    assert request(sockets, daemon, wire.CHUNK, {"upload": upload, "offset": 0, "data": data})[0] == wire.REPLY
    wrong = hashlib.sha256(data + b"!").hexdigest()
    message = refused(request(sockets, daemon, wire.FINISH, {"upload": upload, "sha256": wrong}), Code.BAD_FIELD)
    assert f"whose SHA-256 is {hashlib.sha256(data).hexdigest()}, not {wrong}" in message
    gone(upload)
    assert "no upload" in refused(request(sockets, daemon, wire.SUBMIT, submit_body(uploads=[upload])),
                                  Code.NO_SUCH_UPLOAD)
    # FINISH before every byte came
    upload = begin(size=10)
    assert "FINISH after 0 of the 10 bytes" in refused(
        request(sockets, daemon, wire.FINISH, {"upload": upload, "sha256": "0" * 64}), Code.BAD_FIELD)
    gone(upload)

    # unknown, malformed and unfinished upload ids
    stranger = secrets.token_hex(16)
    for command, body in ((wire.CHUNK, {"upload": stranger, "offset": 0, "data": b"x"}),
                          (wire.FINISH, {"upload": stranger, "sha256": "0" * 64}),
                          (wire.SUBMIT, submit_body(uploads=[stranger]))):
        refused(request(sockets, daemon, command, body), Code.NO_SUCH_UPLOAD)
    for body in ({"upload": "../../etc", "offset": 0, "data": b"x"}, {"upload": stranger.upper(), "offset": 0,
                                                                      "data": b"x"},
                 {"upload": held[0], "offset": 0, "data": "text, not bytes"},
                 {"upload": held[0], "offset": -1, "data": b"x"}):
        refused(request(sockets, daemon, wire.CHUNK, body), Code.BAD_FIELD)
    assert "not finished" in refused(request(sockets, daemon, wire.SUBMIT, submit_body(uploads=[held[0]])),
                                     Code.NOT_READY)
    refused(request(sockets, daemon, wire.SUBMIT, {**submit_body(["/x.csv"]), "uploads": [held[0]]}),
            Code.BAD_FIELD)

    # nothing was written but directories of uploads, named by the daemon
    after = tree(tmp_path)
    assert {p for p in after - before if not p.startswith("data/uploads/")} <= {"data/jobs/"}, after - before
    assert all(UPLOAD_DIR.fullmatch(name) for name in os.listdir(uploads))
    assert not os.path.exists(tmp_path / "evil.csv") and not os.path.exists(os.path.join(daemon.data_dir, "evil.csv"))

    # and the daemon serves on: an honest upload builds
    entries = write_csv(tmp_path / "honest.csv", 40, seed=4)
    done = daemon.submit("build", "--upload", tmp_path / "honest.csv", "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == single_tree_root(entries)
    assert daemon.process.poll() is None


@pytest.mark.timeout(60)
def test_abandoned_uploads_and_those_no_job_uses_are_removed(tmp_path, sockets):
    daemon = DaemonProcess(tmp_path, {"upload_timeout": 1.0})
    command, body = request(sockets, daemon, wire.UPLOAD, {"name": "half.csv", "size": 10})
    half = body["upload"]
    assert request(sockets, daemon, wire.CHUNK, {"upload": half, "offset": 0, "data": b"12345"})[0] == wire.REPLY
    with daemon.client() as client:
        write_csv(tmp_path / "whole.csv", 4)
        whole = client.upload(str(tmp_path / "whole.csv"))
    assert sorted([half, whole]) == uploads_of(daemon)
    wait_until(lambda: uploads_of(daemon) == [], seconds=10)        # neither chunk nor SUBMIT came
    refused(request(sockets, daemon, wire.CHUNK, {"upload": half, "offset": 5, "data": b"67890"}),
            Code.NO_SUCH_UPLOAD)
    refused(request(sockets, daemon, wire.SUBMIT, submit_body(uploads=[whole])), Code.NO_SUCH_UPLOAD)
    assert "removed: no chunk for 1 s" in daemon.log() and "removed: no SUBMIT" in daemon.log()


@pytest.mark.timeout(60)
def test_an_upload_goes_when_its_job_fails_and_a_crash_leaves_nothing(tmp_path):
    leftover = tmp_path / "data" / "uploads" / ("ab" * 16)
    leftover.mkdir(parents=True)
    (leftover / ".users.csv.partial").write_bytes(b"username,balance_ETH_ETH\nhalf")
    daemon = DaemonProcess(tmp_path)
    assert uploads_of(daemon) == []                   # what a crash left is removed at start
    bad = tmp_path / "bad.csv"
    bad.write_text("username,balance_ETH_ETH\nalice,5\nbob,-7\n")
    result = daemon.submit("build", "--upload", bad, "--wait")
    assert result.returncode == 1
    job = job_id_of(result.stdout)
    line = one_line(result.stderr, f"summa-submit: job {job} failed: ")
    record = daemon.status(job)
    assert f"{record['spec']['csvs'][0]}:3: negative balance" in line, line
    wait_until(lambda: uploads_of(daemon) == [], seconds=10)


@pytest.mark.timeout(60)
def test_upload_of_what_cannot_be_read_here_exits_2(tmp_path):
    daemon = DaemonProcess(tmp_path)
    os.mkfifo(tmp_path / "pipe.csv")
    write_csv(tmp_path / "good.csv", 4)
    for path, words in ((tmp_path / "missing.csv", "No such file"), (tmp_path / "pipe.csv", "not a regular file"),
                        (tmp_path, "not a regular file")):
        result = daemon.submit("build", "--upload", tmp_path / "good.csv", path, timeout=30)
        assert result.returncode == 2, result
        assert words in one_line(result.stderr, f"summa-submit: error: {path}: cannot read: ")
    assert uploads_of(daemon) == [] and daemon.submit("list").stdout == ""


def test_the_client_refuses_a_daemon_that_answers_an_upload_oddly(tmp_path, sockets):
    """summa-submit against a server that asks for chunks beyond any control message."""
    import threading
    router = sockets(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:*")
    endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
    write_csv(tmp_path / "u.csv", 4)

    def serve():       # the one request the client sends: UPLOAD
        if router.poll(30_000):
            identity, *parts = router.recv_multipart()
            answer = {"upload": "0" * 32, "chunk_bytes": 1 << 30, "window": 4}
            router.send_multipart([identity, *wire.frames(wire.REPLY, answer)])
    server = threading.Thread(target=serve, daemon=True)
    server.start()
    result = subprocess.run([os.path.join(BIN, "summa-submit"), "--daemon", endpoint, "--timeout", "5",
                             "build", "--upload", str(tmp_path / "u.csv")], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result
    assert "out of range" in one_line(result.stderr, "summa-submit: error: ")
    server.join(15)
