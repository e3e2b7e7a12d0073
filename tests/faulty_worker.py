"""A summa-worker that lies, for the integrity tests: it builds the right mini-tree, then
changes one node of what it returns. SUMMA_FAULT picks which:
  root-hash       the root's hash
  root-balance    the root's first balance (+1)
  top-child       the hash of the root's left child
  leaf-balance    the first balance of the last real leaf (+1)
  wide-balance    a byte above N_BYTES in the first balance of node 0 of level 2 (off the
                  root's totals: only the store's narrowing sees it when nothing is sampled)
  forget-first    no lie: it drops the first BUILD it gets, as a worker restarted in place
                  would, and goes on answering PINGs
  fat-pong        no lie in its trees: every PONG carries 1 MiB of padding (over the 64 KiB
                  a PONG may have on the daemon's heartbeat connection)
Run it as summa-worker: python tests/faulty_worker.py --bind tcp://127.0.0.1:*
"""
import os
import sys

from summa_aggregation import wire
from summa_aggregation.cython_ext.params import WORD
from summa_aggregation.worker import cli, server

honest_build = server.Worker._build
honest_accept = server.Worker._accept
honest_reply = server.Worker._reply


def lying_build(self, task):
    command, body = honest_build(self, task)
    if command != wire.RESULT or "nodes" not in body:
        return command, body
    nodes, n, depth = bytearray(body["nodes"]), body["n_currencies"], body["depth"]
    record = WORD * (n + 1)
    root = len(nodes) - record
    fault = os.environ.get("SUMMA_FAULT", "root-hash")
    if fault == "root-hash":
        nodes[root] ^= 1
    elif fault == "root-balance":
        nodes[root + WORD] ^= 1
    elif fault == "top-child":
        nodes[root - 2 * record] ^= 1 if depth else 0
    elif fault == "leaf-balance":
        nodes[(body["count"] - 1) * record + WORD] ^= 1
    elif fault == "wide-balance" and depth >= 3:
        level_2 = record * ((2 << depth) - (2 << (depth - 2)))
        nodes[level_2 + WORD + WORD - 1] ^= 0x40
    body["nodes"] = bytes(nodes)
    return command, body


def forgetful_accept(self, identity, request):
    if getattr(self, "forgot", False):
        return honest_accept(self, identity, request)
    self.forgot = True


def fat_reply(self, identity, command, body):
    if command == wire.PONG:
        body = {**body, "padding": bytes(1 << 20)}
    return honest_reply(self, identity, command, body)


if os.environ.get("SUMMA_FAULT") == "forget-first":
    server.Worker._accept = forgetful_accept
elif os.environ.get("SUMMA_FAULT") == "fat-pong":
    server.Worker._reply = fat_reply
else:
    server.Worker._build = lying_build

if __name__ == "__main__":
    sys.exit(cli.main())
