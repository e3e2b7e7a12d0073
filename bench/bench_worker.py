"""The worker on loopback: overhead against the kernel, wire size, cancellation latency.

    python bench/bench_worker.py [--runs 7] [--log2 14] [--currencies 2]

Starts a real summa-worker process on 127.0.0.1 and measures, in the same run:
  1. building a 2^K-entry, N-currency mini-tree through the worker (send, build, receive,
     decode) against MerkleSumTree.build called directly in this process: medians and ratio;
  2. bytes on the wire per entry for the BUILD message against the packed payload
     (32 bytes per username and per balance), and the same for the RESULT against its nodes;
  3. cancellation: a long build (portable kernel, 2^14 x 4 currencies) is cancelled once it
     runs; the time from sending CANCEL to receiving the CANCELLED error.
"""
import argparse
import os
import statistics
import sys
import time


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tables import table  # noqa: E402
from worker_helpers import WorkerProcess, random_batch, wait_until  # noqa: E402

from summa_aggregation.mst.tree import MerkleSumTree  # noqa: E402
from summa_aggregation import wire  # noqa: E402
from summa_aggregation.worker.client import WorkerClient  # noqa: E402
from summa_aggregation.wire import BuildRequest, Code  # noqa: E402


def median_min(values):
    return statistics.median(values), min(values)


def overhead(endpoint, runs, count, n_currencies):
    usernames, balances = random_batch(count, n_currencies)
    depth = (count - 1).bit_length()
    request = BuildRequest("bench", 0, count, n_currencies, "interleaved", 14, depth, usernames, balances)
    direct, remote = [], []
    with WorkerClient(endpoint, timeout=120) as client:
        client.build(request)   # warm up both sides
        for _ in range(runs):   # interleaved, so both see the same machine
            began = time.perf_counter()
            MerkleSumTree.build(usernames, balances, count, n_currencies, depth=depth)
            direct.append(time.perf_counter() - began)
            began = time.perf_counter()
            result = client.build(request)
            remote.append(time.perf_counter() - began)
    payload = len(usernames) + len(balances)
    build_bytes = sum(len(f) for f in wire.frames(wire.BUILD, request.body()))
    result_body = {"job": "bench", "batch": 0, "depth": depth, "count": count,
                   "n_currencies": n_currencies, "nodes": result.nodes}
    result_bytes = sum(len(f) for f in wire.frames(wire.RESULT, result_body))
    return median_min(direct), median_min(remote), payload, build_bytes, len(result.nodes), result_bytes


def cancel_latency(runs):
    process = WorkerProcess(env={"SUMMA_KERNEL": "portable"})
    latencies = []
    try:
        usernames, balances = random_batch(1 << 14, 4)
        with WorkerClient(process.endpoint, timeout=60) as client:
            for run in range(runs):
                job = f"cancel-{run}"
                client.send(wire.BUILD, BuildRequest(job, 0, 1 << 14, 4, "interleaved", 14, 14,
                                                     usernames, balances).body())
                wait_until(lambda: client.ping()["running"] == 1)
                began = time.perf_counter()
                client.cancel(job)
                command, body = client.receive()
                latencies.append(time.perf_counter() - began)
                assert command == wire.ERROR and body["code"] == Code.CANCELLED, body
    finally:
        process.stop()
    return latencies


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--log2", type=int, default=14, help="batch of 2^K entries (14)")
    parser.add_argument("--currencies", type=int, default=2)
    args = parser.parse_args(argv)
    count = 1 << args.log2
    process = WorkerProcess()
    try:
        (d_med, d_min), (r_med, r_min), payload, build_bytes, nodes, result_bytes = overhead(
            process.endpoint, args.runs, count, args.currencies)
    finally:
        process.stop()
    table(("path", "median s", "min s", "vs direct (median)"),
          [("MerkleSumTree.build in this process", f"{d_med:.4f}", f"{d_min:.4f}", "1.000"),
           ("through summa-worker on loopback", f"{r_med:.4f}", f"{r_min:.4f}", f"{r_med / d_med:.3f}")],
          f"1. a 2^{args.log2} x {args.currencies}-currency mini-tree, {args.runs} runs "
          f"(target: at most 1.10)")
    table(("message", "bytes", "per entry", "packed payload per entry", "ratio"),
          [("BUILD", f"{build_bytes:,}", f"{build_bytes / count:.2f}", f"{payload / count:.2f}",
            f"{build_bytes / payload:.4f}"),
           ("RESULT", f"{result_bytes:,}", f"{result_bytes / count:.2f}", f"{nodes / count:.2f} (nodes)",
            f"{result_bytes / nodes:.4f}")],
          "2. wire size (target: within 10% of the packed payload)")
    latencies = cancel_latency(args.runs)
    med, low = median_min(latencies)
    table(("measure", "median ms", "min ms", "max ms"),
          [("CANCEL sent -> CANCELLED received", f"{med * 1e3:.2f}", f"{low * 1e3:.2f}",
            f"{max(latencies) * 1e3:.2f}")],
          f"3. cancelling a running build (portable kernel, 2^14 x 4), {args.runs} runs "
          f"(target: under 100 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
