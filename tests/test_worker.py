"""summa-worker over real sockets on loopback, in real processes."""
import json
import os
import signal
import subprocess
import sys

import msgpack
import pytest
import zmq

from summa_aggregation.mst.tree import MerkleSumTree
from summa_aggregation import wire
from summa_aggregation.worker.client import (SEED_CURRENCIES, SEED_ENTRIES, WorkerClient,
                                             WorkerError, build_request)
from summa_aggregation.worker.cli import with_port_offset
from summa_aggregation.wire import BuildRequest, Code

from worker_helpers import (BIN, WorkerProcess, free_port, random_batch, receive,
                            wait_until)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# builds that take seconds: the portable kernel on 2^14 entries x 4 currencies
LONG = dict(count=1 << 14, n_currencies=4)
SLOW_KERNEL = {"SUMMA_KERNEL": "portable"}


@pytest.fixture(scope="module")
def worker():
    process = WorkerProcess()
    yield process
    assert process.stop() == 0


@pytest.fixture
def client(worker):
    with WorkerClient(worker.endpoint, timeout=30) as c:
        yield c


def long_request(job, batch=0):
    usernames, balances = random_batch(LONG["count"], LONG["n_currencies"], seed=batch)
    return BuildRequest(job, batch, LONG["count"], LONG["n_currencies"], "interleaved", 14, 14,
                        usernames, balances)


# ---- the happy paths -----------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["interleaved", "sum-first"])
def test_seed_entries_give_the_spec_json(client, vectors, layout):
    request = build_request("seed", 0, SEED_ENTRIES, layout=layout, as_json=True,
                            currencies=SEED_CURRENCIES)
    assert client.build(request) == vectors["layouts"][layout]["seed_two_entries"]


@pytest.mark.parametrize("count,n_currencies,depth,layout", [
    (1, 1, 0, "interleaved"), (300, 2, 9, "interleaved"), (37, 3, 6, "sum-first"), (64, 16, 6, "sum-first")])
def test_minitree_over_the_wire_is_the_kernels(client, count, n_currencies, depth, layout):
    usernames, balances = random_batch(count, n_currencies, seed=count)
    request = BuildRequest("job-1", 5, count, n_currencies, layout, 14, depth, usernames, balances)
    result = client.build(request)
    local = MerkleSumTree.build(usernames, balances, count, n_currencies, layout=layout, depth=depth)
    assert (result.job, result.batch, result.depth, result.count) == ("job-1", 5, depth, count)
    assert result.nodes == bytes(local.levels.nodes)


def test_ping_is_answered(client):
    assert client.ping(seq=7)["seq"] == 7


# ---- bad messages: an ERROR with a code, and the worker keeps serving ---------------------

def good_body(**changes):
    usernames, balances = random_batch(3, 2)
    body = BuildRequest("job-bad", 1, 3, 2, "interleaved", 14, 2, usernames, balances).body()
    body.update(changes)
    return body


BAD_MESSAGES = {
    "wrong version": ([b"SUMMA00", wire.BUILD, msgpack.packb(good_body())], Code.BAD_VERSION),
    "unknown command": ([wire.HEADER, b"\x7f", msgpack.packb({})], Code.UNKNOWN_COMMAND),
    "two-byte command": ([wire.HEADER, b"\x01\x01", msgpack.packb(good_body())], Code.UNKNOWN_COMMAND),
    "header only": ([wire.HEADER], Code.MALFORMED),
    "missing body": ([wire.HEADER, wire.BUILD], Code.MALFORMED),
    "extra frame": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body()), b"x"], Code.MALFORMED),
    "garbage body": ([wire.HEADER, wire.BUILD, b"\xc1\xff\x00garbage"], Code.MALFORMED),
    "truncated body": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body())[:40]], Code.MALFORMED),
    "body not a map": ([wire.HEADER, wire.BUILD, msgpack.packb([1, 2, 3])], Code.MALFORMED),
    "result sent to a worker": ([wire.HEADER, wire.RESULT, msgpack.packb({})], Code.UNKNOWN_COMMAND),
    "missing field": ([wire.HEADER, wire.BUILD, msgpack.packb({"job": "j"})], Code.BAD_FIELD),
    "count is a string": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(count="3"))], Code.BAD_FIELD),
    "short usernames": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(usernames=b"\x01" * 64))],
                        Code.BAD_FIELD),
    "balances of 3 currencies": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(
        balances=b"\x00" * 32 * 9))], Code.CURRENCY_MISMATCH),
    "currency names don't match": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(
        currencies=["balance_A_B"]))], Code.CURRENCY_MISMATCH),
    "ragged balances": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(balances=b"\x00" * 100))],
                        Code.BAD_FIELD),
    "depth too small": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(depth=1))], Code.BAD_FIELD),
    "unknown layout": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(layout="sorted"))], Code.BAD_FIELD),
    "negative batch": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(batch=-1))], Code.BAD_FIELD),
    "n_bytes 40": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(n_bytes=40))], Code.BAD_FIELD),
    "bad job id": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(job="a b"))], Code.BAD_FIELD),
    "username not in the field": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(
        usernames=b"\xff" * 96))], Code.BAD_FIELD),
    "overflow under N_BYTES": ([wire.HEADER, wire.BUILD, msgpack.packb(good_body(
        n_bytes=1, balances=b"".join((200).to_bytes(32, "little") for _ in range(6))))], Code.OVERFLOW),
}


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_bad_message_gets_an_error_and_the_worker_keeps_serving(worker, sockets, name):
    message, code = BAD_MESSAGES[name]
    dealer = sockets(zmq.DEALER, worker.endpoint)
    dealer.send_multipart(message)
    command, body = receive(dealer)
    assert command == wire.ERROR, body
    assert body["code"] == code, body
    assert body["message"] and "\n" not in body["message"]
    with WorkerClient(worker.endpoint, context=sockets.context) as client:
        request = build_request("after", 0, SEED_ENTRIES, as_json=True)
        assert client.build(request)["depth"] == 1


def test_an_error_names_the_job_and_batch_it_refuses(worker, sockets):
    dealer = sockets(zmq.DEALER, worker.endpoint)
    dealer.send_multipart([wire.HEADER, wire.BUILD, msgpack.packb(good_body(layout="x"))])
    _, body = receive(dealer)
    assert (body["job"], body["batch"]) == ("job-bad", 1)


def test_oversized_message_is_dropped_and_others_are_served(sockets):
    process = WorkerProcess("--max-message-mb", "1")
    try:
        big = sockets(zmq.DEALER, process.endpoint)
        big.send_multipart([wire.HEADER, wire.BUILD, b"\x00" * (2 << 20)])
        with WorkerClient(process.endpoint, context=sockets.context) as client:
            assert client.ping(seq=1)["seq"] == 1
        assert not big.poll(200)   # zmq drops the peer; nothing is answered to it
    finally:
        assert process.stop() == 0


# ---- concurrency: PING during a build, CANCEL, --threads ------------------------------------

@pytest.fixture
def slow_worker():
    process = WorkerProcess(env=SLOW_KERNEL)
    yield process
    process.stop()


def test_ping_is_answered_during_a_build(slow_worker, sockets):
    builder = WorkerClient(slow_worker.endpoint, context=sockets.context)
    builder.send(wire.BUILD, long_request("long").body())
    with WorkerClient(slow_worker.endpoint, context=sockets.context) as pinger:
        pong = wait_until(lambda: (lambda p: p if p["running"] == 1 else None)(pinger.ping()))
        assert pong["running"] == 1
        assert not builder.socket.poll(0), "the build was meant to be still running"
    command, body = builder.receive(60)
    assert command == wire.RESULT and body["count"] == LONG["count"]
    builder.close()


def test_cancel_aborts_the_running_build_and_drops_the_queued_one(slow_worker, sockets):
    with WorkerClient(slow_worker.endpoint, context=sockets.context) as client:
        client.send(wire.BUILD, long_request("doomed", 0).body())
        client.send(wire.BUILD, long_request("doomed", 1).body())
        wait_until(lambda: client.ping()["running"] == 1)
        client.cancel("doomed")
        answers = [client.receive(30) for _ in range(2)]
        assert sorted(body["batch"] for _, body in answers) == [0, 1]
        assert all(cmd == wire.ERROR and body["code"] == Code.CANCELLED for cmd, body in answers)
        with pytest.raises(WorkerError) as late:    # a late batch of a cancelled job is refused
            client.build(long_request("doomed", 2))
        assert late.value.code == Code.CANCELLED
        assert client.build(build_request("next", 0, SEED_ENTRIES, as_json=True))["depth"] == 1


def test_cancel_published_on_the_pub_socket_stops_the_job(sockets):
    pub = sockets(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    process = WorkerProcess("--cancel", f"tcp://127.0.0.1:{port}", env=SLOW_KERNEL)
    try:
        with WorkerClient(process.endpoint, context=sockets.context) as client:
            client.send(wire.BUILD, long_request("broadcast").body())
            wait_until(lambda: client.ping()["running"] == 1)

            def cancelled():   # SUB joins late (slow joiner): publish until it is heard
                pub.send_multipart([wire.cancel_topic("broadcast")])
                return client.socket.poll(50)
            wait_until(cancelled)
            command, body = client.receive()
            assert command == wire.ERROR and body["code"] == Code.CANCELLED
    finally:
        assert process.stop() == 0


def test_threads_build_batches_side_by_side(sockets):
    process = WorkerProcess("--threads", "2", env=SLOW_KERNEL)
    try:
        with WorkerClient(process.endpoint, context=sockets.context) as client:
            client.send(wire.BUILD, long_request("pair", 0).body())
            client.send(wire.BUILD, long_request("pair", 1).body())
            pong = wait_until(lambda: (lambda p: p if p["running"] == 2 else None)(client.ping()))
            assert pong["queued"] == 0 and pong["threads"] == 2
            results = [client.receive(60) for _ in range(2)]
            assert sorted(body["batch"] for _, body in results) == [0, 1]
    finally:
        process.stop()


# ---- shutdown, configuration, the manual test script ----------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_worker_even_mid_build(sockets, sig):
    process = WorkerProcess(env=SLOW_KERNEL)
    with WorkerClient(process.endpoint, context=sockets.context) as client:
        client.send(wire.BUILD, long_request("interrupted").body())
        wait_until(lambda: client.ping()["running"] == 1)
        process.process.send_signal(sig)
        assert process.process.wait(timeout=5) == 0     # the bound: exit within 5 s
    assert "stopped" in process.process.stdout.read()
    process.stop()


def test_port_offset_and_environment(sockets):
    assert with_port_offset("tcp://0.0.0.0:4000", 3) == "tcp://0.0.0.0:4003"
    assert with_port_offset("tcp://0.0.0.0:4000", 0) == "tcp://0.0.0.0:4000"
    port = free_port()
    process = WorkerProcess(bind=f"tcp://127.0.0.1:{port - 2}",
                            env={"SUMMA_WORKER_PORT_OFFSET": "2", "SUMMA_WORKER_THREADS": "3"})
    try:
        assert process.endpoint == f"tcp://127.0.0.1:{port}"
        with WorkerClient(process.endpoint, context=sockets.context) as client:
            assert client.ping()["threads"] == 3
    finally:
        process.stop()


@pytest.mark.parametrize("option", [("--threads", "0"), ("--max-memory-mb", "-1")])
def test_bad_options_exit_2_with_one_line(option):
    result = subprocess.run([os.path.join(BIN, "summa-worker"), *option, "--insecure"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert option[0] in result.stderr


def test_the_memory_limit_defaults_to_what_the_work_needs_and_is_announced():
    derived = WorkerProcess("--threads", "2", "--max-message-mb", "10")
    derived.stop()
    assert "memory limit 336 MiB" in derived.first_line      # (3 x 2 + 2) x 10 + 256
    chosen = WorkerProcess(env={"SUMMA_WORKER_MAX_MEMORY_MB": "300"})
    chosen.stop()
    assert "memory limit 300 MiB" in chosen.first_line


def test_test_sending_entry_script_prints_the_seed_json(vectors):
    port = free_port()
    process = WorkerProcess(bind=f"tcp://127.0.0.1:{port}")
    try:
        result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "test_sending_entry.sh"), str(port)],
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "SUMMA_VENV": sys.prefix})
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == vectors["layouts"]["interleaved"]["seed_two_entries"]
    finally:
        assert process.stop() == 0
