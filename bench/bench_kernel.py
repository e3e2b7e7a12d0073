"""Poseidon kernel benchmarks: permutations, per-call cost, light-poseidon, tree builds, memory.

    python bench/bench_kernel.py [--runs 7] [--tree-runs 5] [--big | --no-big]

Prints tables, asserts nothing. Every figure is the median (and min) of repeated runs, the
configurations interleaved round by round so that the noise of a shared machine spreads evenly;
ratios are taken between figures of this same run. All of it is single-threaded.

  a. µs per Poseidon t=2 permutation, _kernel.permute_words on random canonical states, lanes
     1 and 4, every available backend; and one 1-element hash through Python, hash_words(w, 1, 1).
  b. µs per call of light-poseidon (pip install light-poseidon==0.1.1; import light_poseidon_python),
     Hasher(1): one input is one t=2 permutation, 8 full + 56 partial rounds, like ours.
  c. light-poseidon per call / ours, per call through Python and batched.
  d. MerkleSumTree.build of 2^16 entries x 2 currencies, interleaved and sum-first.
  e. the 2^20 x 1-currency tree: node buffer size and peak RSS, built in a fresh child process
     (run by default when the estimated build time is under 60 s; --big forces, --no-big skips).
"""
import argparse
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

from summa_aggregation.cython_ext import _kernel
from summa_aggregation.cython_ext.params import LAYOUTS, WORD
from summa_aggregation.mst.limits import depth_for
from summa_aggregation.mst.tree import MerkleSumTree
from tables import table  # bench/ is first on sys.path when a script here runs

MIB = 1 << 20
LIGHT_PIP = "light-poseidon==0.1.1"
# circomlib Poseidon([1]) (t=2): light-poseidon must return this for hash([1])
CIRCOM_POSEIDON_1 = 0x29176100eaa962bdc1fe6c654d6a3c130e96a4d1168b33848b897dc502820133
_BELOW_2_253 = bytes(b & 0x1F for b in range(256))


# ---- helpers --------------------------------------------------------------------------------

def interleaved_runs(configs, runs):
    """configs: name -> callable returning seconds. Round-robin runs; name -> list of seconds."""
    results = {name: [] for name in configs}
    for _ in range(runs):
        for name, measure in configs.items():
            results[name].append(measure())
    return results


def med_min(values):
    return statistics.median(values), min(values)


def fmt(value, digits=2):
    return f"{value:.{digits}f}"


def random_words(rng, count, bits=253):
    """count random 32-byte little-endian words, each below 2^bits (bits 253: canonical)."""
    if bits == 253:
        buf = bytearray(rng.randbytes(WORD * count))
        buf[31::WORD] = bytes(buf[31::WORD]).translate(_BELOW_2_253)
        return buf
    nbytes = bits // 8
    assert bits % 8 == 0, "whole bytes only"
    buf = bytearray(WORD * count)
    raw = rng.randbytes(nbytes * count)
    for j in range(nbytes):
        buf[j::WORD] = raw[j::nbytes]
    return buf


def calibrate(measure_n, target, first=256):
    """Smallest n (doubling from `first`) whose run takes about `target` seconds."""
    n = first
    while True:
        seconds = measure_n(n)
        if seconds >= target / 8 or n >= 1 << 26:
            return max(first, int(n * target / max(seconds, 1e-9)))
        n *= 8


def available_backends():
    """(the default backend, the backends this CPU runs, fastest first as the kernel lists them)."""
    start = _kernel.backend()
    if hasattr(_kernel, "available_backends"):
        found = list(_kernel.available_backends())
    else:
        found = []
        for name in getattr(_kernel, "BACKENDS", ("portable", "adx")):
            try:
                _kernel.set_backend(name)
                found.append(name)
            except ValueError:  # KernelError: not on this CPU
                pass
        _kernel.set_backend(start)
    return start, found[::-1]


def lane_counts():
    """lanes 1 and 4, and the kernel's LANES if different (permute_words clamps to the
    backend's own width)."""
    return sorted({1, 4, _kernel.LANES})


def kernel_info():
    path = _kernel.__file__
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(path)))
    return f"{os.path.relpath(path)} (built {stamp})"


def tree_permutations(count, n_currencies, layout, depth=None):
    """Permutations of MerkleSumTree.build: t=2 has rate 1, so one per absorbed element.
    Leaves: count * (1 + N) (padding leaves are a cached record); parents: 2^depth - 1 nodes
    of 2N + 2 (interleaved) or N + 2 (sum-first) elements."""
    depth = depth_for(count) if depth is None else depth
    per_parent = 2 * n_currencies + 2 if layout == "interleaved" else n_currencies + 2
    return count * (n_currencies + 1) + ((1 << depth) - 1) * per_parent


def tree_inputs(rng, count, n_currencies, kind=bytearray):
    """Packed words: usernames below 2^64, balances below 2^40."""
    usernames, balances = random_words(rng, count, 64), random_words(rng, count * n_currencies, 40)
    return (usernames, balances) if kind is bytearray else (kind(usernames), kind(balances))


# ---- a. our permutation ---------------------------------------------------------------------

def bench_ours(rng, runs, target):
    start, backends = available_backends()
    configs, sizes = {}, {}
    try:
        for backend in backends:
            for lanes in lane_counts():
                def run_n(n, backend=backend, lanes=lanes, buf=None):
                    buf = random_words(rng, 2 * n) if buf is None else buf
                    _kernel.set_backend(backend)
                    began = time.perf_counter()
                    _kernel.permute_words(buf, n, lanes)
                    return time.perf_counter() - began
                n = calibrate(run_n, target)
                buf = random_words(rng, 2 * n)  # permuting in place keeps the states canonical
                sizes[(backend, lanes)] = n
                configs[("permute", backend, lanes)] = \
                    lambda run_n=run_n, n=n, buf=buf: run_n(n, buf=buf) / n

            def call_n(n, backend=backend, words=None):
                words = words or [bytes(random_words(rng, 1)) for _ in range(n)]
                hash_words = _kernel.hash_words
                _kernel.set_backend(backend)
                began = time.perf_counter()
                for w in words:
                    hash_words(w, 1, 1)
                return time.perf_counter() - began
            n = calibrate(call_n, target)
            words = [bytes(random_words(rng, 1)) for _ in range(n)]
            configs[("call", backend)] = lambda call_n=call_n, n=n, words=words: call_n(n, words=words) / n

            def batch_n(n, backend=backend, msgs=None):
                msgs = random_words(rng, n) if msgs is None else msgs
                _kernel.set_backend(backend)
                began = time.perf_counter()
                _kernel.hash_words(msgs, n, 1)
                return time.perf_counter() - began
            n = calibrate(batch_n, target)
            msgs = random_words(rng, n)
            configs[("batch", backend)] = lambda batch_n=batch_n, n=n, msgs=msgs: batch_n(n, msgs=msgs) / n
        results = interleaved_runs(configs, runs)
    finally:
        _kernel.set_backend(start)
    return start, backends, {k: med_min([s * 1e6 for s in v]) for k, v in results.items()}


def print_ours(default, backends, ours, runs):
    rows = []
    for backend in backends:
        keys = [(("permute", backend, lanes), f"permute_words, lanes={lanes} (batched)")
                for lanes in lane_counts()]
        keys += [(("batch", backend), "hash_words(msgs, n, 1) (batched 1-element hashes)"),
                 (("call", backend), "hash_words(w, 1, 1) one call through Python")]
        for key, what in keys:
            med, low = ours[key]
            rows.append((backend + (" (default)" if backend == default else ""), what,
                         fmt(med), fmt(low), fmt(1 / med, 3)))
    table(("backend", "what", "median µs", "min µs", "M/s (median)"), rows,
          f"a. our kernel: µs per t=2 permutation / per 1-element hash, single thread, "
          f"median and min of {runs} runs", left=2)


# ---- b. light-poseidon ----------------------------------------------------------------------

def load_light():
    """(module, hasher, note) or (None, None, why it cannot be benchmarked)."""
    try:
        import light_poseidon_python as light
    except ImportError:
        return None, None, f"not installed (pip install {LIGHT_PIP})"
    try:
        hasher = light.Hasher(1)
        value = int.from_bytes(hasher.hash_raw([1]), "big")
    except Exception as error:  # the t=3-only package 'light-poseidon-python' lands here
        return None, None, (f"the installed light_poseidon_python rejects a 1-input hash ({error}); "
                            f"it is probably the 2-input-only package 'light-poseidon-python': "
                            f"pip uninstall light-poseidon-python && pip install {LIGHT_PIP}")
    note = ""
    if value != CIRCOM_POSEIDON_1:
        note = f"WARNING: Hasher(1).hash_raw([1]) = {value:#x}, not circomlib's Poseidon([1])"
    return light, hasher, note


def light_distribution():
    try:
        from importlib.metadata import packages_distributions, version
        names = packages_distributions().get("light_poseidon_python", [])
        return ", ".join(f"{name} {version(name)}" for name in names) or "unknown distribution"
    except Exception:
        return "unknown distribution"


def bench_light(light, hasher, rng, runs, target):
    # the int methods take a u64 only (0.1.1 raises OverflowError above 2^64 - 1); the bytes
    # methods take any 32-byte field word. The permutation's cost does not depend on the value.
    def ints(n):
        return [int.from_bytes(random_words(rng, 1, 64)[:8], "little") for _ in range(n)]

    def words_le(n):
        return [bytes(random_words(rng, 1)) for _ in range(n)]

    def words_be(n):
        return [w[::-1] for w in words_le(n)]

    methods = {
        "Hasher(1).hash_raw([int < 2^64]) -> 32 bytes": (hasher.hash_raw, ints),
        "Hasher(1).hash([int < 2^64]) -> hex str": (hasher.hash, ints),
        "poseidon_hash([int < 2^64]) -> hex str": (light.poseidon_hash, ints),
        "Hasher(1).hash_bytes_le([32 bytes]) -> hex str": (hasher.hash_bytes_le, words_le),
        "Hasher(1).hash_bytes_be([32 bytes]) -> hex str": (hasher.hash_bytes_be, words_be),
        "poseidon_hash_bytes([32 bytes BE]) -> hex str": (light.poseidon_hash_bytes, words_be),
    }
    configs = {}
    for name, (method, make) in methods.items():
        def call_n(n, method=method, make=make, args=None):
            args = args or make(n)
            began = time.perf_counter()
            for a in args:
                method([a])
            return time.perf_counter() - began
        n = calibrate(call_n, target)
        args = make(n)
        configs[name] = lambda call_n=call_n, n=n, args=args: call_n(n, args=args) / n
    results = interleaved_runs(configs, runs)
    return {k: med_min([s * 1e6 for s in v]) for k, v in results.items()}


# ---- d. tree builds -------------------------------------------------------------------------

def bench_tree(rng, runs, count=1 << 16, n_currencies=2):
    usernames, balances = tree_inputs(rng, count, n_currencies)
    configs = {}
    for layout in LAYOUTS:
        def build(layout=layout):
            began = time.perf_counter()
            MerkleSumTree.build(usernames, balances, count, n_currencies, layout=layout)
            return time.perf_counter() - began
        configs[layout] = build
    for layout in LAYOUTS:  # warm the zero-record cache and the allocator
        MerkleSumTree.build(usernames[:WORD], balances[:WORD * n_currencies], 1, n_currencies,
                            layout=layout)
    results = interleaved_runs(configs, runs)
    return {k: med_min(v) for k, v in results.items()}


def print_tree(results, runs, permute_us, count=1 << 16, n_currencies=2):
    rows = []
    for layout, (med, low) in results.items():
        perms = tree_permutations(count, n_currencies, layout)
        us = med / perms * 1e6
        rows.append((layout, fmt(med, 3), fmt(low, 3), f"{count / med:,.0f}", f"{perms:,}",
                     fmt(us), fmt(us / permute_us)))
    table(("layout", "median s", "min s", "entries/s", "permutations", "µs/perm",
           "x raw perm"), rows,
          f"d. MerkleSumTree.build, 2^{count.bit_length() - 1} entries x {n_currencies} currencies "
          f"(usernames < 2^64, balances < 2^40), backend {_kernel.backend()}, {runs} runs "
          f"('x raw perm': µs/perm over the fastest permute_words of table a)")


# ---- e. the 2^20 x 1 tree, in a child process ------------------------------------------------

def _rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    return 0


def _peak():
    """Peak RSS of this process's memory map (VmHWM): unlike ru_maxrss, it does not inherit the
    parent's peak across fork/vfork + exec, which subprocess uses."""
    return _status_bytes("VmHWM")


def _maxrss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def big_child(count, n_currencies, layout, kind_name):
    """Runs in a fresh interpreter; prints one JSON line."""
    kind = {"bytes": bytes, "bytearray": bytearray}[kind_name]
    rng = random.Random(20)
    gc.collect()
    base_rss, base_peak, base_maxrss = _rss_now(), _peak(), _maxrss()
    usernames, balances = tree_inputs(rng, count, n_currencies, kind)
    inputs_rss = _rss_now()
    began = time.perf_counter()
    tree = MerkleSumTree.build(usernames, balances, count, n_currencies, layout=layout)
    seconds = time.perf_counter() - began
    print(json.dumps({
        "seconds": seconds, "nodes": len(tree.levels.nodes), "usernames_copy": len(tree.usernames),
        "usernames_shared": tree.usernames is usernames,
        "inputs": len(usernames) + len(balances), "base_rss": base_rss, "base_peak": base_peak,
        "inputs_rss": inputs_rss, "after_rss": _rss_now(), "peak": _peak(),
        "base_maxrss": base_maxrss, "maxrss": _maxrss(),
        "backend": _kernel.backend()}))


def run_big(count, n_currencies, layout, kind_name):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_big-child", str(count),
                          str(n_currencies), layout, kind_name],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  the child failed (exit {out.returncode}):\n{out.stderr}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_big(r, count, n_currencies, layout, kind_name):
    perms = tree_permutations(count, n_currencies, layout)
    tree_bytes = r["nodes"] + (0 if r["usernames_shared"] else r["usernames_copy"])
    delta = r["peak"] - r["base_peak"]
    rows = [
        ("build time (1 run)", f"{r['seconds']:.1f} s"),
        ("entries/s", f"{count / r['seconds']:,.0f}"),
        ("permutations / µs per permutation", f"{perms:,} / {r['seconds'] / perms * 1e6:.2f}"),
        ("len(tree.levels.nodes)", f"{r['nodes'] / MIB:.1f} MiB ({r['nodes'] / 1e6:.1f} MB)"),
        ("tree.usernames", f"{r['usernames_copy'] / MIB:.1f} MiB"
                           + (" (the caller's object, not a copy)" if r["usernames_shared"]
                              else " (a copy of the input)")),
        ("tree total (nodes + own usernames)", f"{tree_bytes / MIB:.1f} MiB ({tree_bytes / 1e6:.1f} MB)"
                                               f" -> target <= 200 MB: "
                                               f"{'met' if tree_bytes <= 200e6 else 'NOT met'}"),
        ("input buffers (usernames + balances)", f"{r['inputs'] / MIB:.1f} MiB"),
        ("child RSS before inputs", f"{r['base_rss'] / MIB:.1f} MiB"),
        ("child RSS after inputs / after build", f"{r['inputs_rss'] / MIB:.1f} / {r['after_rss'] / MIB:.1f} MiB"),
        ("child peak RSS (VmHWM) before inputs / after build",
         f"{r['base_peak'] / MIB:.1f} / {r['peak'] / MIB:.1f} MiB"),
        ("peak RSS delta (peak - peak before inputs)", f"{delta / MIB:.1f} MiB ({delta / 1e6:.1f} MB)"),
        ("  of which the build (peak - RSS after inputs)",
         f"{(r['peak'] - r['inputs_rss']) / MIB:.1f} MiB "
         f"({(r['peak'] - r['inputs_rss']) / 1e6:.1f} MB)"),
        ("  same from ru_maxrss (floor: parent's peak)",
         f"{r['base_maxrss'] / MIB:.1f} -> {r['maxrss'] / MIB:.1f} MiB, "
         f"delta {(r['maxrss'] - r['base_maxrss']) / MIB:.1f} MiB"),
        ("  build transient (peak - RSS after build)", f"{(r['peak'] - r['after_rss']) / MIB:.1f} MiB"),
    ]
    table(("quantity", "value"), rows,
          f"e. 2^{count.bit_length() - 1} entries x {n_currencies} currency tree, {layout}, "
          f"{kind_name} inputs, fresh child process, backend {r['backend']}", left=2)


# ---- main -----------------------------------------------------------------------------------

def bench_cancel(rng, runs, count=1 << 18, n_currencies=1):
    """Seconds from Control.cancel() to the build's thread having stopped, per backend."""
    import threading
    usernames, balances = tree_inputs(rng, count, n_currencies)
    rows, original = [], _kernel.backend()
    for backend in available_backends()[1]:
        _kernel.set_backend(backend)
        latencies = []
        for _ in range(runs):
            control, outcome = _kernel.Control(), []

            def build():
                try:
                    MerkleSumTree.build(usernames, balances, count, n_currencies, control=control)
                    outcome.append("finished")
                except _kernel.Cancelled:
                    outcome.append("cancelled")

            thread = threading.Thread(target=build)
            thread.start()
            while control.done < count // 4:   # cancel a quarter of the way into the leaves
                time.sleep(0.001)
            began = time.perf_counter()
            control.cancel()
            thread.join()
            latencies.append(time.perf_counter() - began)
            assert outcome == ["cancelled"], outcome
        med, low = med_min(latencies)
        rows.append((backend, fmt(med * 1e3, 3), fmt(max(latencies) * 1e3, 3)))
    _kernel.set_backend(original)
    table(("backend", "median ms", "max ms"), rows,
          f"f. cancel latency: Control.cancel() to the build's thread stopped, 2^18 x 1 tree, "
          f"{runs} runs (target: under 100 ms)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each micro-benchmark (7)")
    parser.add_argument("--tree-runs", type=int, default=5, help="runs of each 2^16 tree build (5)")
    parser.add_argument("--target", type=float, default=0.25,
                        help="seconds per micro-benchmark run (0.25)")
    big = parser.add_mutually_exclusive_group()
    big.add_argument("--big", action="store_true", help="build the 2^20 tree even if slow")
    big.add_argument("--no-big", action="store_true", help="skip the 2^20 tree")
    parser.add_argument("--big-inputs", choices=("bytearray", "bytes"), default="bytearray",
                        help="type of the 2^20 input buffers (bytearray, like the CSV reader's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--_big-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._big_child:
        count, n_currencies, layout, kind = args._big_child
        big_child(int(count), int(n_currencies), layout, kind)
        return 0

    rng = random.Random(args.seed)
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; kernel {kernel_info()}, "
          f"default backend {_kernel.backend()}, LANES={_kernel.LANES}")

    default, backends, ours = bench_ours(rng, args.runs, args.target)
    print_ours(default, backends, ours, args.runs)

    light, hasher, note = load_light()
    if light is None:
        print(f"\nb. light-poseidon: {note}")
        best_name, best = None, None
    else:
        lres = bench_light(light, hasher, rng, args.runs, args.target)
        best_name = min(lres, key=lambda k: lres[k][0])
        best = lres[best_name][0]
        table(("call", "median µs", "min µs", "k/s (median)"),
              [(k + ("  <- fastest" if k == best_name else ""), fmt(m), fmt(lo), f"{1e3 / m:,.1f}")
               for k, (m, lo) in lres.items()],
              f"b. light-poseidon ({light_distribution()}; module __version__ "
              f"{getattr(light, '__version__', '?')}): µs per 1-input hash = one t=2 permutation, "
              f"{args.runs} runs")
        if note:
            print("  " + note)

    if best is not None:
        rows = []
        for backend in backends:
            keys = [(("call", backend), "ours per call through Python, hash_words(w, 1, 1)"),
                    (("batch", backend), "ours batched, hash_words(msgs, n, 1)")]
            keys += [(("permute", backend, lanes), f"ours batched, permute_words lanes={lanes}")
                     for lanes in lane_counts()]
            for key, what in keys:
                rows.append((backend, what, fmt(ours[key][0]), fmt(best), fmt(best / ours[key][0])))
        table(("backend", "ours", "ours µs", "light µs", "light/ours"), rows,
              f"c. light-poseidon per call ({best_name.split(' ->')[0]}) / ours, medians "
              f"(> 1: ours is faster)", left=2)
    else:
        print("\nc. ratios: skipped (light-poseidon not available)")

    tree = bench_tree(rng, args.tree_runs)
    print_tree(tree, args.tree_runs, min(ours[("permute", default, lanes)][0] for lanes in lane_counts()))

    bench_cancel(rng, args.runs)

    count, n_currencies, layout = 1 << 20, 1, "interleaved"
    med, _ = tree["interleaved"]
    sec_per_perm = med / tree_permutations(1 << 16, 2, "interleaved")
    estimate = tree_permutations(count, n_currencies, layout) * sec_per_perm
    print(f"\ne. 2^20 x 1 tree: {tree_permutations(count, n_currencies, layout):,} permutations, "
          f"estimated {estimate:.0f} s at the 2^16 tree's rate")
    if args.no_big or (estimate > 60 and not args.big):
        print("  skipped" + (" (over 60 s: run with --big)" if not args.no_big else " (--no-big)"))
        return 0
    result = run_big(count, n_currencies, layout, args.big_inputs)
    if result:
        print_big(result, count, n_currencies, layout, args.big_inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
