"""Starting real summa-worker processes and talking to them with real sockets, for tests."""
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time

import zmq

from summa_aggregation import wire

BIN = os.path.dirname(sys.executable)


def free_port():
    """A port nothing listens on right now (for commands that must be given a port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_line(stream, seconds):
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    try:
        if not selector.select(seconds):
            raise TimeoutError(f"no line within {seconds} s")
        return stream.readline()
    finally:
        selector.close()


class WorkerProcess:
    """summa-worker on 127.0.0.1, on a port it picks; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, *args, env=None, bind="tcp://127.0.0.1:*"):
        full_env = {**os.environ, **(env or {})}
        if "--keys" not in args:
            args = (*args, "--insecure")                 # plaintext, said explicitly
        self.process = subprocess.Popen([os.path.join(BIN, "summa-worker"), "--bind", bind, *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=full_env)
        self.first_line = line = read_line(self.process.stdout, 30)
        if "listening on" not in line:
            self.process.kill()
            self.process.wait(30)
            error = self.process.stderr.read()
            self.stop()
            raise RuntimeError(f"worker did not start: {line!r} {error!r}")
        self.endpoint = line.split("listening on ")[1].split()[0]

    def stop(self, seconds=5):
        terminate(self.process, seconds)
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()
        return self.process.returncode


def terminate(process, seconds):
    """SIGTERM, a bounded wait, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(seconds)
    return process.returncode


def receive(sock, seconds=30):
    """One message, or a test failure instead of a hang."""
    assert sock.poll(int(seconds * 1000)), f"no message within {seconds} s"
    return wire.parse(sock.recv_multipart())


def random_batch(count, n_currencies, seed=0, bits=40):
    rng = random.Random(seed)
    usernames = b"".join((rng.getrandbits(64) | 1).to_bytes(32, "little") for _ in range(count))
    balances = b"".join(rng.getrandbits(bits).to_bytes(32, "little")
                        for _ in range(count * n_currencies))
    return usernames, balances


def wait_until(predicate, seconds=30, interval=0.01):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {seconds} s")


class Sockets:
    """A factory of raw sockets that closes every one of them with linger 0."""

    def __init__(self):
        self.context = zmq.Context()
        self.made = []

    def __call__(self, kind, connect=None):
        sock = wire.new_socket(self.context, kind)
        if connect:
            sock.connect(connect)
        self.made.append(sock)
        return sock

    def close(self):
        for sock in self.made:
            sock.close(linger=0)
        self.context.term()
