"""summa-worker: the mini-tree generator server.

Every option can also come from the environment, which is how a container or a Swarm service
configures it: SUMMA_WORKER_BIND, SUMMA_WORKER_CANCEL, SUMMA_WORKER_THREADS,
SUMMA_WORKER_PORT_OFFSET (added to the port of the bind address; a Swarm service sets it from
its task slot, so replicas sharing a host's network do not collide), SUMMA_WORKER_MAX_MESSAGE_MB,
SUMMA_WORKER_MAX_MEMORY_MB, SUMMA_WORKER_KEYS (a key directory: CURVE on every socket), SUMMA_WORKER_INSECURE=1 (plaintext:
without keys, the worker refuses to start unless this is set).
"""
import logging
import os
import re
import sys

import zmq

from ..cython_ext import _kernel
from ..mst.commands import Parser
from ..wire import DEFAULT_MAX_MESSAGE_BYTES
from ..wire.keys import KeyDir, KeysError
from ..wire.serve import serve_until_stopped
from .server import Worker

DEFAULT_BIND = "tcp://0.0.0.0:4000"


def _env_int(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"summa-worker: error: {name}={value!r} is not an integer") from None


def with_port_offset(endpoint, offset):
    """tcp://host:4000 with offset 2 -> tcp://host:4002 (wildcard ports are left alone)."""
    if not offset:
        return endpoint
    match = re.fullmatch(r"(tcp://.+):(\d+)", endpoint)
    if not match:
        raise SystemExit(f"summa-worker: error: a port offset needs a tcp://HOST:PORT bind "
                         f"address, got {endpoint!r}")
    return f"{match.group(1)}:{int(match.group(2)) + offset}"


def _parser():
    parser = Parser(prog="summa-worker", description="Serve mini-tree builds over ZeroMQ.")
    parser.add_argument("--bind", default=os.environ.get("SUMMA_WORKER_BIND", DEFAULT_BIND),
                        help=f"ROUTER address to bind (default {DEFAULT_BIND}; "
                             f"tcp://127.0.0.1:* picks a free port)")
    parser.add_argument("--cancel", metavar="ENDPOINT", default=os.environ.get("SUMMA_WORKER_CANCEL"),
                        help="the daemon's cancellation PUB socket to subscribe to")
    parser.add_argument("--threads", type=int, default=_env_int("SUMMA_WORKER_THREADS", 1),
                        help="batches built at once (default 1)")
    parser.add_argument("--port-offset", type=int, default=_env_int("SUMMA_WORKER_PORT_OFFSET", 0),
                        help="added to the bind port (default 0)")
    parser.add_argument("--max-message-mb", type=int,
                        default=_env_int("SUMMA_WORKER_MAX_MESSAGE_MB", DEFAULT_MAX_MESSAGE_BYTES >> 20),
                        help="largest message accepted, in MiB (default %(default)s)")
    parser.add_argument("--max-memory-mb", type=int, default=_env_int("SUMMA_WORKER_MAX_MEMORY_MB", 0),
                        help="heap budget in MiB; over it the worker drops every connection and its "
                             "work (default: (3 x threads + 2) x the message limit + 256, at most 3/4 "
                             "of the memory available)")
    parser.add_argument("--keys", metavar="DIR", default=os.environ.get("SUMMA_WORKER_KEYS") or None,
                        help="CURVE key directory (summa-keys); without it sockets are plaintext")
    parser.add_argument("--insecure", action="store_true",
                        default=os.environ.get("SUMMA_WORKER_INSECURE", "") not in ("", "0"),
                        help="run without --keys: plaintext, unauthenticated sockets")
    parser.add_argument("--log-level", default=os.environ.get("SUMMA_WORKER_LOG_LEVEL", "WARNING"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="summa-worker: %(levelname)s %(message)s")
    if args.threads < 1 or args.max_message_mb < 1 or args.max_memory_mb < 0:
        print("summa-worker: error: --threads and --max-message-mb must be at least 1, "
              "--max-memory-mb at least 0 (0: the default)", file=sys.stderr)
        return 2
    bind = with_port_offset(args.bind, args.port_offset)
    try:
        keys = KeyDir(args.keys) if args.keys else None
        if keys is None and not args.insecure:
            raise KeysError("no --keys DIR (summa-keys DIR makes keys); --insecure runs in plaintext")
        if keys is None:
            logging.getLogger("summa.worker").warning(
                "--insecure: this worker's sockets are neither encrypted nor authenticated")
        worker = Worker(bind, args.cancel, args.threads, args.max_message_mb << 20, keys=keys,
                        max_memory_bytes=args.max_memory_mb << 20)
    except KeysError as error:
        print(f"summa-worker: error: {error}", file=sys.stderr)
        return 2
    except zmq.ZMQError as error:
        print(f"summa-worker: error: cannot bind {bind}: {error}", file=sys.stderr)
        return 2
    print(f"summa-worker: listening on {worker.endpoint} (kernel {_kernel.backend()}, "
          f"{args.threads} thread{'s' if args.threads > 1 else ''}, memory limit "
          f"{worker.max_memory_bytes >> 20} MiB)", flush=True)
    return serve_until_stopped(worker, "summa-worker")


if __name__ == "__main__":
    sys.exit(main())
