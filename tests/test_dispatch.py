"""The dispatcher's heartbeat rule, in process against a real worker: a worker is dead only when
a PING went unanswered for interval x liveness, never because the dispatcher's loop was busy
(answers that came meanwhile are read before any verdict)."""
import os
import signal
import threading
import time

import pytest
import zmq

from summa_aggregation.daemon.config import DaemonConfig
from summa_aggregation.daemon.dispatch import Dispatcher
from summa_aggregation.daemon.job import Job
from summa_aggregation.daemon.loader import Loader, Unit
from summa_aggregation.daemon.spawners import MockSpawner
from summa_aggregation.mst.store_writer import ResultWriter
from summa_aggregation.wire import SubmitRequest

LATER = 10.0     # how far past the PING the verdict is asked for: far beyond the 0.3 s window


def dispatcher_for(endpoint, tmp_path):
    config = DaemonConfig(data_dir=str(tmp_path), insecure=True, heartbeat_interval=0.1,
                          heartbeat_liveness=3)
    spec = SubmitRequest([str(tmp_path / "never-read.csv")], 1, "mock", "interleaved", 14, 4)
    spawner = MockSpawner(config, endpoints=[endpoint])
    writer = ResultWriter(str(tmp_path / "result"), 14)
    loader = Loader(spec, writer, threading.Event())       # never started: it hands out nothing
    return Dispatcher(Job("job-heartbeat", spec), config, zmq.Context.instance(), spawner,
                      spawner.spawn_executors(1), loader, writer, None)


def ping(dispatcher):
    executor = dispatcher.executors[0]
    executor.probation = True          # pinged like a busy worker, with no batch to finish
    executor.heartbeat(time.monotonic(), dispatcher.config.heartbeat_interval)
    return executor


@pytest.mark.timeout(60)
def test_an_answer_that_waited_while_the_loop_was_busy_keeps_the_worker(worker_process, tmp_path):
    dispatcher = dispatcher_for(worker_process.endpoint, tmp_path)
    try:
        executor = ping(dispatcher)
        assert executor.heartbeat_socket.poll(10_000)    # the PONG is there, not yet read
        dispatcher._heartbeats(time.monotonic() + LATER)  # as if the loop came back 10 s late
        assert dispatcher.executors == [executor]
        assert dispatcher.job.progress["replacements"] == 0 and not executor.probation
    finally:
        dispatcher.close()


@pytest.mark.timeout(60)
def test_a_worker_that_does_not_answer_is_replaced(worker_process, tmp_path):
    dispatcher = dispatcher_for(worker_process.endpoint, tmp_path)
    os.kill(worker_process.process.pid, signal.SIGSTOP)          # alive, answering nothing
    try:
        executor = ping(dispatcher)
        dispatcher._heartbeats(time.monotonic() + LATER)
        assert executor not in dispatcher.executors
        assert dispatcher.job.progress["replacements"] == 1   # a reconnect, on probation
        assert dispatcher.executors[0].probation
    finally:
        os.kill(worker_process.process.pid, signal.SIGCONT)
        dispatcher.close()


@pytest.mark.timeout(60, method="thread")     # a send blocked in libzmq ignores SIGALRM
def test_a_worker_libzmq_cannot_take_messages_for_never_blocks_the_loop(worker_process, tmp_path):
    """A DEALER with no pipe (its connection being re-made, e.g. after the worker sent a PONG
    over the heartbeat limit) cannot take a message: a blocking send would hang the job."""
    from worker_helpers import free_port
    dispatcher = dispatcher_for(worker_process.endpoint, tmp_path)
    try:
        executor = dispatcher.executors[0]
        for name in ("socket", "heartbeat_socket"):     # no pipe until a peer answers: none will
            old = getattr(executor, name)
            dispatcher.poller.unregister(old)
            del dispatcher.owner[old]
            old.close(linger=0)
            sock = dispatcher.context.socket(zmq.DEALER)
            sock.linger, sock.immediate = 0, True
            sock.connect(f"tcp://127.0.0.1:{free_port()}")
            setattr(executor, name, sock)
            dispatcher.poller.register(sock, zmq.POLLIN)
            dispatcher.owner[sock] = executor
        dispatcher.pending.append(0)
        dispatcher.depth = 2
        dispatcher.units.append(Unit(0, 0, 0, 0, 4, build_batch()))
        dispatcher.attempts.append(0)
        dispatcher._hand_out(time.monotonic())           # the BUILD cannot go: kept, not lost
        assert list(dispatcher.pending) == [0] and not executor.held and executor.probation
        executor.heartbeat(time.monotonic(), dispatcher.config.heartbeat_interval)
        dispatcher._heartbeats(time.monotonic() + LATER)  # the PING could not go: silence
        assert executor not in dispatcher.executors
        assert dispatcher.job.progress["replacements"] == 1
    finally:
        dispatcher.close()


def build_batch():
    from summa_aggregation.mst.csv_job import EntryBatch
    from worker_helpers import random_batch
    usernames, balances = random_batch(4, 1)
    return EntryBatch("b", ["balance_A_B"], 4, bytearray(usernames), bytearray(balances))
