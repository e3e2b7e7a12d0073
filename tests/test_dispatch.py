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
from summa_aggregation.daemon.loader import Loader
from summa_aggregation.daemon.spawners import MockSpawner
from summa_aggregation.wire import SubmitRequest

from worker_helpers import WorkerProcess

LATER = 10.0     # how far past the PING the verdict is asked for: far beyond the 0.3 s window


@pytest.fixture
def worker():
    process = WorkerProcess()
    yield process
    process.stop()


def dispatcher_for(endpoint, tmp_path):
    config = DaemonConfig(data_dir=str(tmp_path), insecure=True, heartbeat_interval=0.1,
                          heartbeat_liveness=3)
    spec = SubmitRequest([str(tmp_path / "never-read.csv")], 1, "mock", "interleaved", 14, 4)
    spawner = MockSpawner(config, endpoints=[endpoint])
    loader = Loader(spec, threading.Event())       # never started: it hands out nothing
    return Dispatcher(Job("job-heartbeat", spec), config, zmq.Context.instance(), spawner,
                      spawner.spawn_executors(1), loader, None)


def ping(dispatcher):
    executor = dispatcher.executors[0]
    executor.probation = True          # pinged like a busy worker, with no batch to finish
    executor.heartbeat(time.monotonic(), dispatcher.config.heartbeat_interval)
    return executor


@pytest.mark.timeout(60)
def test_an_answer_that_waited_while_the_loop_was_busy_keeps_the_worker(worker, tmp_path):
    dispatcher = dispatcher_for(worker.endpoint, tmp_path)
    try:
        executor = ping(dispatcher)
        assert executor.heartbeat_socket.poll(10_000)    # the PONG is there, not yet read
        dispatcher._heartbeats(time.monotonic() + LATER)  # as if the loop came back 10 s late
        assert dispatcher.executors == [executor]
        assert dispatcher.job.progress["replacements"] == 0 and not executor.probation
    finally:
        dispatcher.close()


@pytest.mark.timeout(60)
def test_a_worker_that_does_not_answer_is_replaced(worker, tmp_path):
    dispatcher = dispatcher_for(worker.endpoint, tmp_path)
    os.kill(worker.process.pid, signal.SIGSTOP)          # alive, answering nothing
    try:
        executor = ping(dispatcher)
        dispatcher._heartbeats(time.monotonic() + LATER)
        assert executor not in dispatcher.executors
        assert dispatcher.job.progress["replacements"] == 1   # a reconnect, on probation
        assert dispatcher.executors[0].probation
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
        dispatcher.close()
