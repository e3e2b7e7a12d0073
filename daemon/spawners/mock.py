"""MockSpawner: real summa-worker processes on this machine (only the name is old).

Each worker binds a free port of 127.0.0.1 and says which on its first line. Given fixed
endpoints instead, the spawner starts nothing and hands out executors for those addresses,
whether or not anything listens there (negative tests use that).
Workers die with the daemon even if it is SIGKILLed: they get PR_SET_PDEATHSIG.
"""
import ctypes
import itertools
import os
import selectors
import signal
import subprocess
import sys
import time

from ..executor import Executor
from .base import ExecutorSpawner, SpawnError

START_SECONDS = 30     # a worker that has not said where it listens by then failed to start
STOP_SECONDS = 3       # SIGTERM, then this long, then SIGKILL


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl   # resolved here: after fork only call it
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


class MockSpawner(ExecutorSpawner):
    def __init__(self, config, cancel_endpoint=None, endpoints=None, env=None):
        super().__init__(config, cancel_endpoint)
        self.endpoints = itertools.cycle(endpoints) if endpoints else None
        self.env = {**os.environ, **(env or {})}
        self.processes = []

    def _command(self):
        command = [sys.executable, "-m", "summa_aggregation.worker.cli",
                   "--bind", "tcp://127.0.0.1:*", "--threads", str(self.worker_threads)]
        if self.cancel_endpoint:
            command += ["--cancel", self.cancel_endpoint]
        if self.config.keys_dir:     # its own pair and the daemon's public key, nothing else
            command += ["--keys", self.config.worker_keys_dir()]
        else:
            command += ["--insecure"]    # the daemon itself was explicitly set to plaintext
        return command

    def _start(self):
        process = subprocess.Popen(self._command(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   text=True, env=self.env, preexec_fn=_die_with_parent)
        self.processes.append(process)
        return process

    def _endpoint_of(self, process, deadline):
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        try:
            if not selector.select(max(deadline - time.monotonic(), 0)):
                raise SpawnError(f"worker pid {process.pid} did not start within {START_SECONDS} s")
            line = process.stdout.readline()
        finally:
            selector.close()
        if "listening on " not in line:
            raise SpawnError(f"worker pid {process.pid} failed to start (exit code {process.poll()})")
        return line.split("listening on ")[1].split()[0]

    def spawn_executors(self, count):
        if self.endpoints:
            return [Executor(next(self.endpoints)) for _ in range(count)]
        started = [self._start() for _ in range(count)]    # start all, then wait for all
        deadline = time.monotonic() + START_SECONDS
        return [Executor(self._endpoint_of(p, deadline), f"worker pid {p.pid}", p) for p in started]

    def spawn_executor(self):
        return self.spawn_executors(1)[0]

    def replace(self, executor, now):
        if self.endpoints:
            return super().replace(executor, now)
        self._stop([executor.handle])
        return self.spawn_executor()

    def quarantine(self, executor):
        if self.endpoints:
            return None
        self._stop([executor.handle])
        return self.spawn_executor()

    def terminate_executors(self):
        self._stop(self.processes)
        self.processes = []

    @staticmethod
    def _stop(processes):
        """SIGTERM every worker, wait a bounded time, SIGKILL the rest; reap them all."""
        running = [p for p in processes if p is not None and p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for process in processes:
            if process is not None and process.stdout:
                process.stdout.close()
