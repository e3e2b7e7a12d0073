"""A summa-worker that lies, for the integrity tests: it builds the right mini-tree, then
changes one node of what it returns, or it builds, consistently, the mini-tree of a batch it
changed (move-balance, swap-usernames, swap-entries). SUMMA_FAULT picks which:
  root-hash       the root's hash
  root-balance    the root's first balance (+1)
  top-child       the hash of the root's left child
  leaf-balance    the first balance of the last real leaf (+1)
  wide-balance    a byte above N_BYTES in the first balance of node 0 of level 2 (off the
                  root's totals: only the store's narrowing sees it when nothing is sampled)
  move-balance    5 units of the first currency moved from one real leaf of the batch (the
                  first with at least 5) to another (the last), the tree then rebuilt from
                  the changed balances: the root, its totals and every hash agree; only the
                  two leaves' balances differ from what was sent
  swap-usernames  the usernames of the first and the last real leaf swapped (their balances
                  left in place), the tree rebuilt: only those two leaves' hashes are wrong
  swap-entries    the first and the last real entry swapped whole (username and balances),
                  the tree rebuilt: the two leaves' balances differ from what was sent when
                  the entries' balances differ
                  (these three lie about batches of at least 2 entries, and only about those)
  forget-first    no lie: it drops the first BUILD it gets, as a worker restarted in place
                  would, and goes on answering PINGs
  fat-pong        no lie in its trees: every PONG carries 1 MiB of padding (over the 64 KiB
                  a PONG may have on the daemon's heartbeat connection)
  late-replay     no lie in its trees: it keeps every RESULT it sends, and before a RESULT for
                  batch B of job J sends the kept RESULT of batch B of any other job id (an
                  earlier attempt of a resumed job) to the same peer, as if it came late
Run it as summa-worker: python tests/faulty_worker.py --bind tcp://127.0.0.1:*
(importing it changes nothing; changed_request() is what the rebuilding lies send to the
honest build, for the tests' own use)
"""
import dataclasses
import os
import sys

from summa_aggregation import wire
from summa_aggregation.cython_ext.params import WORD
from summa_aggregation.worker import cli, server

honest_build = server.Worker._build
honest_accept = server.Worker._accept
honest_reply = server.Worker._reply
REBUILT = ("move-balance", "swap-usernames", "swap-entries")
MOVED = 5


def _word(words, i):
    return int.from_bytes(words[i * WORD:(i + 1) * WORD], "little")


def _set_word(words, i, value):
    words[i * WORD:(i + 1) * WORD] = value.to_bytes(WORD, "little")


def changed_request(request, fault):
    """The BUILD request with the batch changed as `fault` says (None when it cannot be):
    the honest build of it is then a consistent tree of the wrong batch."""
    n, count = request.n_currencies, request.count
    if count < 2:
        return None
    usernames, balances = bytearray(request.usernames), bytearray(request.balances)
    last = count - 1
    if fault == "move-balance":      # from the first leaf with MOVED to spare, to the last one
        first = next((i for i in range(last) if _word(balances, i * n) >= MOVED), None)
        if first is None:
            return None
        _set_word(balances, first * n, _word(balances, first * n) - MOVED)
        _set_word(balances, last * n, _word(balances, last * n) + MOVED)
    else:
        entry = slice(0, WORD), slice(last * WORD, count * WORD)
        usernames[entry[0]], usernames[entry[1]] = usernames[entry[1]], usernames[entry[0]]
        if fault == "swap-entries":
            row = slice(0, n * WORD), slice(last * n * WORD, count * n * WORD)
            balances[row[0]], balances[row[1]] = balances[row[1]], balances[row[0]]
    return dataclasses.replace(request, usernames=bytes(usernames), balances=bytes(balances))


def rebuilding_build(self, task):
    """The honest build of a changed batch: every hash of the tree agrees with its children."""
    request = changed_request(task.request, os.environ["SUMMA_FAULT"])
    if request is None:
        return honest_build(self, task)
    original = task.request
    task.request = request
    try:
        return honest_build(self, task)
    finally:
        task.request = original


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


def replaying_forward(self):
    """The compute threads' answers go out here: keep each RESULT, and replay first the kept
    RESULT of the same batch of any other job id to the same peer."""
    kept = self.__dict__.setdefault("kept", {})
    while self.results.poll(0):
        parts = self.results.recv_multipart()
        command, body = wire.parse(parts[1:], self.max_message_bytes)
        if command == wire.RESULT:
            for (job, batch), old in list(kept.items()):
                if batch == body.get("batch") and job != body.get("job"):
                    self.router.send_multipart([parts[0], *wire.frames(wire.RESULT, old)])
            kept[(body.get("job"), body.get("batch"))] = body
        self.router.send_multipart(parts)


def install(fault):
    """Make every Worker of this process lie as `fault` says."""
    if fault == "forget-first":
        server.Worker._accept = forgetful_accept
    elif fault == "fat-pong":
        server.Worker._reply = fat_reply
    elif fault == "late-replay":
        server.Worker._forward_results = replaying_forward
    elif fault in REBUILT:
        server.Worker._build = rebuilding_build
    else:
        server.Worker._build = lying_build


if __name__ == "__main__":
    install(os.environ.get("SUMMA_FAULT", "root-hash"))
    sys.exit(cli.main())
