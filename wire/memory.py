"""A memory budget for processes that take messages from the network.

libzmq bounds each frame (ZMQ_MAXMSGSIZE) but keeps every frame of a multipart message until
the last one arrives, and nothing bounds how many frames a message has: a peer can make a
socket hold any amount of memory before the program sees a byte. No socket option counts
that, so the budget is watched from outside: a thread samples the heap in use and, when it
is over the limit, says so on an inproc PUB socket. The loop that owns the exposed socket
subscribes, closes that socket (libzmq frees every half-received message with it) and binds
a fresh one. Its peers reconnect; PING/PONG tells a client whose batch was lost.
"""
import ctypes
import ctypes.util
import logging
import os
import threading
import time

import zmq

log = logging.getLogger("summa.memory")

MIB = 1 << 20
# A sample costs under a microsecond, a wake-up more: look as often as the heap could reach the
# limit, assuming it cannot grow faster than memory is copied, from every 2 ms to every 100 ms.
SAMPLE_SECONDS, MAX_SAMPLE_SECONDS = 0.002, 0.1
FASTEST_GROWTH = 8 << 30   # bytes per second
REPEAT_SECONDS = 1.0       # while still over the limit, say so again this often
REBIND_SECONDS = 5.0       # how long a fresh socket may wait for its port to be free again


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2      # glibc 2.33 and later
    except (OSError, AttributeError):
        return None
    function.restype = _Mallinfo2
    return function


_MALLINFO2 = _mallinfo2()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def heap_in_use():
    """Bytes this process has allocated with malloc and not freed (glibc), else its resident
    size (which, unlike the heap, does not shrink when memory is freed but kept), else None."""
    if _MALLINFO2 is not None:
        info = _MALLINFO2()
        return info.uordblks + info.hblkhd
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _cgroup_limit():
    """This process's cgroup memory limit (v2 memory.max or v1 memory.limit_in_bytes), or None."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as handle:
            lines = [line.rstrip("\n").split(":", 2) for line in handle]
    except OSError:
        return None
    limits = []
    for _, controllers, group in lines:
        if controllers == "":
            root, name = "/sys/fs/cgroup", "memory.max"
        elif "memory" in controllers.split(","):
            root, name = "/sys/fs/cgroup/memory", "memory.limit_in_bytes"
        else:
            continue
        # a container sees its own group mounted at the root, under the host's path name
        for path in (f"{root}{group.rstrip('/')}/{name}", f"{root}/{name}"):
            try:
                with open(path, encoding="ascii") as handle:
                    value = handle.read().strip()
            except OSError:
                continue
            if value.isdigit():
                limits.append(int(value))
            break
    return min(limits, default=None)


def memory_available():
    """The memory this process may use: physical memory, or its cgroup's limit if lower."""
    total = os.sysconf("SC_PHYS_PAGES") * _PAGE
    limit = _cgroup_limit()
    return total if limit is None else min(total, limit)


def default_budget(needed=None):
    """Three quarters of the memory available (so the guard acts before the OOM killer does),
    or `needed` bytes if that is less."""
    share = memory_available() // 4 * 3
    return share if needed is None else min(needed, share)


class MemoryGuard:
    """Publishes the heap size (an ASCII number of bytes) whenever it is over `limit` bytes."""

    def __init__(self, context, limit, name="summa"):
        self.context, self.limit, self.name = context, limit, name
        self.address = f"inproc://summa-memory-guard-{id(self)}"
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="memory-guard", daemon=True)
        self.measurable = heap_in_use() is not None
        if not self.measurable:
            log.warning("%s: cannot measure the heap here: the memory limit is not enforced", name)
            return
        self._thread.start()
        self._ready.wait()

    def subscribe(self):
        """A SUB socket that becomes readable when the heap is over the limit."""
        sock = self.context.socket(zmq.SUB)
        sock.linger = 0
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.address)
        return sock

    def _watch(self):
        pub = self.context.socket(zmq.PUB)
        pub.linger = 0
        pub.bind(self.address)
        self._ready.set()
        said_at, pause = None, SAMPLE_SECONDS
        try:
            while not self._stopping.wait(pause):
                used = heap_in_use()
                pause = min(max((self.limit - used) / FASTEST_GROWTH, SAMPLE_SECONDS), MAX_SAMPLE_SECONDS)
                if used <= self.limit:
                    said_at = None
                elif said_at is None or time.monotonic() - said_at >= REPEAT_SECONDS:
                    said_at = time.monotonic()
                    pub.send(str(used).encode())
        finally:
            pub.close()

    def stop(self):
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


def over_limit_message(sock, limit, what):
    """Read one alarm from a subscribe() socket; the warning to log about it."""
    used = int(sock.recv())
    while sock.poll(0):            # alarms that piled up say nothing new
        used = max(used, int(sock.recv()))
    return (f"memory: {used / MIB:.0f} MiB of heap in use, over the limit of {limit / MIB:.0f} MiB; "
            f"{what}")


class RebindError(RuntimeError):
    """The address a socket was renewed on stayed taken: the process cannot serve on."""


def rebind(old, make, endpoint, seconds=REBIND_SECONDS):
    """Close `old` (libzmq frees whatever it held for its peers) and return make() bound to
    the same endpoint, retrying while libzmq's own thread is still closing the old listener."""
    old.close(linger=0)
    sock = make()
    deadline = time.monotonic() + seconds
    while True:
        try:
            sock.bind(endpoint)
            return sock
        except zmq.ZMQError as error:
            if error.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                sock.close(linger=0)
                raise RebindError(f"cannot listen on {endpoint} again after dropping its "
                                  f"connections: {error}") from None
            time.sleep(0.01)
