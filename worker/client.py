"""A small client of one worker: a DEALER socket, every receive guarded by a poll timeout.

    python -m summa_aggregation.worker.client [--port 4000 | --endpoint tcp://HOST:PORT]

sends the two example entries of the original design to a running worker and prints the
mini-tree JSON it returns (what scripts/test_sending_entry.sh runs).
"""
import json
import os
import sys
from dataclasses import dataclass

import zmq

from .. import wire
from ..mst.commands import Parser, add_variant_arguments
from ..mst.csv_reader import username_to_word
from ..mst.limits import DEFAULT_LAYOUT, DEFAULT_N_BYTES, depth_for
from ..mst.words import word_of
from ..wire import BuildRequest, Code
from ..wire.keys import KeyDir, KeysError

SEED_CURRENCIES = ["balance_ETH_ETH", "balance_USDT_ETH"]
SEED_ENTRIES = [("dxGaEAii", (11888, 41163)), ("MBlfbBGI", (67823, 18651))]


class WorkerError(Exception):
    """The worker answered ERROR, or did not answer in time (code None)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = (Code(code) if code is not None else None), message


@dataclass
class MiniTree:
    job: str
    batch: int
    depth: int
    count: int
    n_currencies: int
    nodes: bytes


def pack_entries(entries, username_encoding="bytes"):
    """(username, balances) pairs -> (usernames, balances) packed words."""
    usernames = b"".join(username_to_word(name, username_encoding) for name, _ in entries)
    balances = b"".join(word_of(b) for _, bs in entries for b in bs)
    return usernames, balances


def build_request(job, batch, entries, layout=DEFAULT_LAYOUT, n_bytes=DEFAULT_N_BYTES, depth=None,
                  as_json=False, currencies=None, username_encoding="bytes", is_sorted=False):
    """A BUILD of (username, balances) pairs, the usernames encoded here as the daemon does."""
    usernames, balances = pack_entries(entries, username_encoding)
    count, n_currencies = len(entries), len(entries[0][1])
    return BuildRequest(job, batch, count, n_currencies, layout, n_bytes,
                        depth_for(count) if depth is None else depth, usernames, balances,
                        as_json, currencies, username_encoding, is_sorted)


class WorkerClient(wire.SocketClient):
    def __init__(self, endpoint, context=None, timeout=30.0,
                 max_message_bytes=wire.DEFAULT_MAX_MESSAGE_BYTES, keys=None):
        self.context = context or zmq.Context.instance()
        self.timeout, self.max_message_bytes = timeout, max_message_bytes
        # a worker admits daemon keys only: this client speaks as the daemon does
        curve = keys.curve("daemon").for_server(keys.public("worker")) if keys else None
        self.socket = wire.new_socket(self.context, zmq.DEALER, max_message_bytes, curve=curve)
        self.socket.connect(endpoint)

    def send(self, command, body):
        self.socket.send_multipart(wire.frames(command, body), copy=False)

    def receive(self, timeout=None):
        """The next (command, body); WorkerError(None, ...) when nothing comes in time."""
        seconds = self.timeout if timeout is None else timeout
        if not self.socket.poll(int(seconds * 1000)):
            raise WorkerError(None, f"no answer from the worker within {seconds:g} s")
        return wire.parse(self.socket.recv_multipart(copy=False), self.max_message_bytes)

    def ping(self, seq=0, timeout=None):
        self.send(wire.PING, {"seq": seq})
        command, body = self.receive(timeout)
        if command != wire.PONG or body.get("seq") != seq:
            raise WorkerError(Code.MALFORMED, f"expected PONG {seq}, got {wire.COMMAND_NAMES[command]}")
        return body

    def cancel(self, job):
        self.send(wire.CANCEL, {"job": job})

    def build(self, request, timeout=None):
        """Send one BUILD and wait for its answer: a MiniTree, or the JSON dict in JSON mode."""
        self.send(wire.BUILD, request.body())
        command, body = self.receive(timeout)
        if command == wire.ERROR:
            raise WorkerError(body.get("code", Code.INTERNAL), body.get("message", "?"))
        if command != wire.RESULT:
            raise WorkerError(Code.MALFORMED, f"expected RESULT, got {wire.COMMAND_NAMES[command]}")
        if request.as_json:
            return json.loads(body["json"])
        return MiniTree(body["job"], body["batch"], body["depth"], body["count"],
                        body["n_currencies"], body["nodes"])


def main(argv=None):
    parser = Parser(prog="test_sending_entry", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--endpoint", help="instead of --port: tcp://HOST:PORT")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--keys", metavar="DIR", default=os.environ.get("SUMMA_KEYS") or None,
                        help="CURVE key directory (summa-keys) holding the daemon's pair (workers "
                             "admit daemon keys only), or $SUMMA_KEYS")
    add_variant_arguments(parser)
    args = parser.parse_args(argv)
    endpoint = args.endpoint or f"tcp://127.0.0.1:{args.port}"
    entries = sorted(SEED_ENTRIES, key=lambda e: e[0].encode()) if args.sorted else SEED_ENTRIES
    request = build_request("seed", 0, entries, as_json=True, currencies=SEED_CURRENCIES,
                            username_encoding=args.username_encoding, is_sorted=args.sorted)
    try:
        keys = KeyDir(args.keys) if args.keys else None
        with WorkerClient(endpoint, timeout=args.timeout, keys=keys) as client:
            print(json.dumps(client.build(request), indent=2))
    except WorkerError as error:
        print(f"test_sending_entry: error: {endpoint}: {error.message}", file=sys.stderr)
        return 1
    except KeysError as error:
        print(f"test_sending_entry: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
