"""How the daemon scales: CSV to root, memory, store size and proofs, from 2^20 to 2^26 (2^28) entries.

    python bench/bench_scale.py [--sizes 20 22 24 26] [--big] [--workers 2] [--currencies 1]
                                [--data /var/tmp/summa-bench] [--proofs 2000] [--clients 8]
                                [--proof-seconds 120] [--keep]

Sizes are log2 entry counts; --big appends 28 (about 25 min and tens of GB of disk: no test
starts it). The CSVs live in --data as users-<log2>-c<currencies>.csv and are reused when present
(they are written as NAME.partial and renamed, so a killed run never leaves a truncated CSV that
looks whole). Before each size the free disk of --data is checked against the CSV (when it must be
written) and the store; a size that does not fit is skipped with a message.

For each size, one job through a real summa-daemon (plaintext, MockSpawner: local summa-worker
processes): `summa-submit build CSV --executors W --wait` with the default options (one CSV = one
mini-tree). It measures
  wall s, entries/s   the submit's wall time, CSV to root, store written (the daemon writes
                      DATA_DIR/results/JOB before the job is done)
  daemon RSS MiB      the summa-daemon's VmHWM, read after the job (before any proof)
  worker RSS MiB      the largest VmHWM of the daemon's worker processes, sampled every 0.25 s
                      while the job runs (they exit at its end); n/a if the job ended before a sample
  store B/entry       the bytes of every file of DATA_DIR/results/JOB / entries
  summa-proof s, MiB  `summa-proof DIR USERNAME`: wall and peak RSS (wait4), median of 5 random
                      usernames (its RSS counts the pages of the mapped store it touched)
  export proofs/s     `summa-proof DIR --usernames FILE` with --proofs usernames, one proof JSON per
                      line: proofs / wall, the load included (n/a where the flag is missing)
  daemon p50/p99 ms, proofs/s   PROOF requests to the daemon from --clients processes, each with
                      its own DaemonClient and random usernames, --proofs requests in all after a
                      warm-up (the daemon loads the store on the first one): latency percentiles
                      over every request, and requests / wall of the parallel phase
  (each proof throughput measure stops after --proof-seconds and counts what was done, saying so)
  floor s, efficiency the kernel's floor: (n(N+1) + (n-1)(2N+2)) permutations x the µs per
                      permutation measured in this process (hash_level over 2^16 interleaved
                      parents, median of 5; the mean of a measure just before the job and one
                      just after it, both printed: on a shared machine the speed drifts during a
                      long job) / workers; efficiency = floor / wall.
A size whose job fails prints its error and the benchmark goes on; every daemon is stopped.
Each size's daemon directory (its store included) is deleted after its row unless --keep.
"""
import argparse
import json
import multiprocessing
import os
import queue
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from bench_daemon import BIN, Daemon  # noqa: E402  (bench/ is not a package)
from gen_csv import generate  # noqa: E402
from tables import table  # noqa: E402

from summa_aggregation.cython_ext import _kernel  # noqa: E402
from summa_aggregation.cython_ext.params import LAYOUTS  # noqa: E402
from summa_aggregation.daemon.client import DaemonClient  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
KERNEL_PARENTS = 1 << 16
SINGLE_PROOFS = 5
WARMUP_REQUESTS = 5
HEADERS = ("entries", "wall s", "entries/s", "daemon RSS MiB", "worker RSS MiB", "store B/entry",
           "summa-proof s", "summa-proof MiB", "export proofs/s", "daemon p50 ms", "p99 ms",
           "proofs/s", "floor s", "efficiency")


class SizeFailed(Exception):
    """This size cannot go on (its job failed, the daemon did not start...): the message says why."""


# ---- disk and CSVs ---------------------------------------------------------------------------

def csv_bytes(entries, currencies):
    """About what gen_csv writes: 10-character names, balances of up to 13 digits (below 2^40)."""
    return entries * (12 + 14 * currencies)


def store_bytes(entries, currencies):
    """An upper bound of the result directory: 100 B per entry with one currency (85 measured),
    and each more currency adds a word to each of the ~2 records per entry."""
    return entries * (100 + 64 * (currencies - 1))


def csv_for(data, log2, currencies):
    """The CSV of 2^log2 entries in `data`, written first if it is not there (via NAME.partial)."""
    path = os.path.join(data, f"users-{log2}-c{currencies}.csv")
    if os.path.exists(path):
        print(f"  reusing {path}", flush=True)
        return path
    partial = path + ".partial"
    began = time.perf_counter()
    print(f"  generating {path} ...", end=" ", flush=True)
    generate(partial, 1 << log2, currencies)
    os.replace(partial, path)
    print(f"{time.perf_counter() - began:.1f} s", flush=True)
    return path


def disk_problem(data, log2, currencies):
    """None when the CSV (if it must be written) and the store fit in `data`'s free space."""
    entries = 1 << log2
    present = os.path.exists(os.path.join(data, f"users-{log2}-c{currencies}.csv"))
    need = store_bytes(entries, currencies) + (0 if present else csv_bytes(entries, currencies))
    free = shutil.disk_usage(data).free
    if need > free:
        return (f"needs about {need / GIB:.1f} GiB in {data} (the store"
                f"{'' if present else ' and the CSV'}), only {free / GIB:.1f} GiB free")
    return None


def random_usernames(path, count, rng):
    """`count` usernames of random lines of the CSV, found by seeking (the file is never read whole)."""
    size = os.path.getsize(path)
    names = []
    with open(path, "rb") as handle:
        start = len(handle.readline()) - 1        # the header's newline: the next line is row 1
        if size - 1 <= start:
            raise SizeFailed(f"{path}: no entries")
        while len(names) < count:
            handle.seek(rng.randrange(start, size - 1))
            handle.readline()                     # the rest of the line the seek fell in
            line = handle.readline()
            if line:                              # empty: the seek fell in the last line
                names.append(line.split(b",", 1)[0].decode("utf-8"))
    return names


# ---- measures ---------------------------------------------------------------------------------

def kernel_us_per_permutation(n_currencies, runs=5):
    """µs per Poseidon permutation of hash_level: 2^16 interleaved parents (2N + 2 each), median."""
    record = 32 * (n_currencies + 1)
    children = bytearray(2 * KERNEL_PARENTS * record)      # zero words are valid field elements
    parents = bytearray(KERNEL_PARENTS * record)
    code = LAYOUTS.index("interleaved")
    _kernel.hash_level(children, KERNEL_PARENTS, n_currencies, code, parents)    # warm up
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        _kernel.hash_level(children, KERNEL_PARENTS, n_currencies, code, parents)
        times.append(time.perf_counter() - began)
    return statistics.median(times) / (KERNEL_PARENTS * (2 * n_currencies + 2)) * 1e6


def tree_permutations(entries, n_currencies):
    return entries * (n_currencies + 1) + (entries - 1) * (2 * n_currencies + 2)


def vm_hwm_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            return int(re.search(r"VmHWM:\s+(\d+) kB", handle.read()).group(1)) / 1024
    except (OSError, AttributeError):
        return None                               # gone, or a zombie (no VmHWM line)


class WorkerPeak(threading.Thread):
    """The largest VmHWM of the daemon's child processes, sampled every `interval` s until stop()."""

    def __init__(self, daemon, interval=0.25):
        super().__init__(name="worker-rss", daemon=True)
        self.daemon_process, self.interval = daemon, interval
        self.stopped = threading.Event()
        self.peak = None

    def sample(self):
        for pid in self.daemon_process.children():
            mib = vm_hwm_mib(pid)
            if mib is not None and (self.peak is None or mib > self.peak):
                self.peak = mib

    def run(self):
        while True:
            self.sample()
            if self.stopped.wait(self.interval):
                return

    def stop(self):
        self.stopped.set()
        self.join()


class ScaleDaemon(Daemon):
    """bench_daemon's daemon, its stderr in DIRECTORY/daemon.log (its workers' too), killed when
    it does not start or does not stop by itself."""

    def __init__(self, directory, input_dirs=None):
        self.log = os.path.join(directory, "daemon.log")
        with open(self.log, "w") as log:
            try:
                super().__init__(directory, stderr=log, input_dirs=input_dirs)
            except BaseException:
                self.kill()
                raise

    def log_tail(self, lines=5):
        """The last lines of its log that are not the plaintext warnings, indented."""
        with open(self.log, errors="replace") as handle:
            text = [line.rstrip() for line in handle if line.strip() and "WARNING insecure" not in line
                    and "WARNING --insecure" not in line]
        return "".join(f"\n    {line}" for line in text[-lines:])

    def kill(self):
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self):
        try:
            super().stop()
        except BaseException:
            self.kill()
            raise


def directory_bytes(path):
    return sum(os.lstat(os.path.join(top, name)).st_size
               for top, _, names in os.walk(path) for name in names)


def last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def run_child(argv, workdir, timeout):
    """Run argv with stdout and stderr in files; returns (seconds, peak RSS MiB from wait4, exit
    code or None when killed at `timeout` s, stdout file, stderr text). The caller closes stdout."""
    out = tempfile.TemporaryFile(dir=workdir)
    with tempfile.TemporaryFile(dir=workdir) as err:
        began = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        killed = threading.Event()
        killer = threading.Timer(timeout, lambda: (killed.set(), child.kill()))
        killer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        code = None if killed.is_set() and child.returncode < 0 else child.returncode
        out.seek(0)
        err.seek(0)
        return seconds, usage.ru_maxrss / 1024, code, out, err.read().decode(errors="replace")


def single_proofs(result, names, workdir, timeout):
    """Median wall s and peak RSS MiB of `summa-proof DIR USERNAME` over `names`."""
    walls, peaks = [], []
    for name in names:
        seconds, peak, code, out, err = run_child([os.path.join(BIN, "summa-proof"), result, name],
                                                  workdir, timeout)
        with out:
            if code is None:
                raise RuntimeError(f"summa-proof {name}: not done within {timeout:.0f} s")
            if code != 0 or json.load(out)["entry"]["username"] != name:
                raise RuntimeError(f"summa-proof {name}: exit {code}: {last_line(err)}")
        walls.append(seconds)
        peaks.append(peak)
    return statistics.median(walls), statistics.median(peaks)


def export_proofs(result, names, workdir, timeout):
    """Proofs per second of `summa-proof DIR --usernames FILE` (one proof JSON per output line);
    stopped at `timeout` s, the proofs written by then count."""
    listing = os.path.join(workdir, "usernames.txt")
    with open(listing, "w", encoding="utf-8") as handle:
        handle.write("".join(name + "\n" for name in names))
    seconds, _, code, out, err = run_child(
        [os.path.join(BIN, "summa-proof"), result, "--usernames", listing], workdir, timeout)
    with out:
        if code not in (0, None):
            raise RuntimeError(f"exit {code}: {last_line(err)}")
        lines = out.read().splitlines()
    if code is None:
        lines = lines[:-1]                        # the last one may be cut
        print(f"    export: stopped after {timeout:.0f} s, {len(lines)} of {len(names)} proofs written",
              flush=True)
    elif len(lines) != len(names):
        raise RuntimeError(f"{len(lines)} lines for {len(names)} usernames")
    if not lines:
        raise RuntimeError(f"no proof within {timeout:.0f} s")
    first = json.loads(lines[0])["entry"]["username"]
    if first != names[0]:
        raise RuntimeError(f"the first proof is of {first!r}, not {names[0]!r}")
    return len(lines) / seconds


def _proof_client(endpoint, job, csv, seed, requests, seconds, barrier, results):
    """One client process: warm up, wait for the others, then time up to `requests` PROOFs,
    for at most `seconds`."""
    try:
        names = random_usernames(csv, requests + WARMUP_REQUESTS, random.Random(seed))
        with DaemonClient(endpoint, timeout=120) as client:
            for name in names[:WARMUP_REQUESTS]:
                client.proof(job, name)
            barrier.wait(600)
            latencies = []
            cpu = _cpu_seconds()
            began = time.monotonic()              # CLOCK_MONOTONIC: one clock for every process
            for name in names[WARMUP_REQUESTS:]:
                sent = time.perf_counter()
                proof = client.proof(job, name)
                latencies.append(time.perf_counter() - sent)
                if proof["entry"]["username"] != name:
                    raise RuntimeError(f"the proof of {name!r} is of {proof['entry']['username']!r}")
                if time.monotonic() - began > seconds:
                    break
            results.put(("ok", began, time.monotonic(), latencies, _cpu_seconds() - cpu))
    except BaseException as error:  # noqa: B902 - reported to the parent, which goes on
        barrier.abort()
        results.put(("error", f"{type(error).__name__}: {error}"))


def _cpu_seconds(pid=None):
    """User + system CPU seconds of a process, all its threads (libzmq's I/O thread too)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values, q):
    return sorted_values[max(0, min(len(sorted_values) - 1, int(round(q * len(sorted_values))) - 1))]


def daemon_proofs(daemon, job, csv, proofs, clients, seed, load_timeout, seconds, cpu=None):
    """(p50 ms, p99 ms, proofs/s) of PROOF requests from `clients` processes at once; with
    cpu={}, cpu["client"] and cpu["daemon"] become the CPU µs per request of the clients (their
    timed phase) and of the daemon process (from the first client's start to the last one's end,
    so it includes the clients' warm-up requests)."""
    with DaemonClient(daemon.endpoint, timeout=load_timeout) as client:     # the daemon loads the store
        client.proof(job, random_usernames(csv, 1, random.Random(seed))[0])
    context = multiprocessing.get_context("spawn")   # no fork of a process holding a ZeroMQ context
    barrier, results = context.Barrier(clients), context.Queue()
    each = max(1, proofs // clients)
    processes = [context.Process(target=_proof_client, daemon=True,
                                 args=(daemon.endpoint, job, csv, seed * 1000 + i, each, seconds,
                                       barrier, results))
                 for i in range(clients)]
    daemon_cpu = _cpu_seconds(daemon.process.pid)
    for process in processes:
        process.start()
    answers, deadline = [], time.monotonic() + 900 + seconds
    try:
        while len(answers) < clients:
            try:
                answers.append(results.get(timeout=1))
            except queue.Empty:
                if time.monotonic() > deadline or not any(p.is_alive() for p in processes):
                    raise RuntimeError(f"{clients - len(answers)} client processes ended "
                                       f"without an answer") from None
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
    daemon_cpu = _cpu_seconds(daemon.process.pid) - daemon_cpu
    errors = [a[1] for a in answers if a[0] == "error"]
    if errors:
        raise RuntimeError(errors[0])
    latencies = sorted(value for a in answers for value in a[3])
    if cpu is not None and latencies:
        cpu["client"] = sum(a[4] for a in answers) / len(latencies) * 1e6
        cpu["daemon"] = daemon_cpu / (len(latencies) + WARMUP_REQUESTS * clients) * 1e6
    if len(latencies) < each * clients:
        print(f"    daemon: stopped after {seconds:.0f} s, {len(latencies)} of {each * clients} requests",
              flush=True)
    wall = max(a[2] for a in answers) - min(a[1] for a in answers)
    return percentile(latencies, 0.50) * 1e3, percentile(latencies, 0.99) * 1e3, len(latencies) / wall


# ---- one size ---------------------------------------------------------------------------------

def one_size(args, log2, us_per_perm):
    """The row of 2^log2 entries (raises SizeFailed when its job does not finish)."""
    entries = 1 << log2
    csv = csv_for(args.data, log2, args.currencies)
    rng = random.Random(log2)
    directory = tempfile.mkdtemp(prefix=f"daemon-{log2}-", dir=args.data)
    measured = {}
    try:
        try:
            daemon = ScaleDaemon(directory)
        except Exception as error:
            with open(os.path.join(directory, "daemon.log"), errors="replace") as log:
                raise SizeFailed(f"the daemon did not start ({type(error).__name__}"
                                 f"{': ' if str(error) else ''}{error}): {last_line(log.read())}") from None
        try:
            kernel = [kernel_us_per_permutation(args.currencies)]     # just before the job ...
            peak = WorkerPeak(daemon)
            peak.start()
            began = time.perf_counter()
            try:
                done = daemon.submit("build", csv, "--executors", str(args.workers), "--wait",
                                     timeout=600 + 20e-6 * entries)
            except subprocess.TimeoutExpired as error:
                raise SizeFailed(f"summa-submit did not end within {error.timeout:.0f} s") from None
            finally:
                wall = time.perf_counter() - began
                peak.stop()
            if done.returncode != 0:
                raise SizeFailed(f"summa-submit exit {done.returncode}: {last_line(done.stderr)}"
                                 f"{daemon.log_tail()}")
            kernel.append(kernel_us_per_permutation(args.currencies))  # ... and just after it
            us_per_perm = statistics.mean(kernel)
            print(f"  kernel: {kernel[0]:.3f} µs per permutation before the job, {kernel[1]:.3f} "
                  f"after (the floor takes their mean: the machine's speed drifts)", flush=True)
            job = done.stdout.splitlines()[0]
            measured.update(wall=wall, daemon_rss=daemon.peak_rss_mib(), worker_rss=peak.peak)
            result = os.path.join(directory, "data", "results", job)
            measured["store"] = directory_bytes(result) / entries

            def attempt(name, function, *arguments):
                try:
                    measured[name] = function(*arguments)
                except Exception as error:    # one measure missing: the others go on
                    print(f"  2^{log2}: {name}: n/a ({type(error).__name__}: {error})", flush=True)

            load = 600 + 2e-6 * entries           # seconds to load and check a store, at most
            attempt("proof", single_proofs, result, random_usernames(csv, SINGLE_PROOFS, rng),
                    directory, load)
            attempt("export", export_proofs, result, random_usernames(csv, args.proofs, rng),
                    directory, load + args.proof_seconds)
            attempt("daemon", daemon_proofs, daemon, job, csv, args.proofs, args.clients, log2,
                    load, args.proof_seconds)
        finally:
            daemon.stop()
    finally:
        if args.keep:
            print(f"  kept {directory}", flush=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    floor = tree_permutations(entries, args.currencies) * us_per_perm * 1e-6 / args.workers
    return row(log2, measured, floor)


def row(log2, m, floor):
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)
    proof = m.get("proof", (None, None))
    daemon = m.get("daemon", (None, None, None))
    return (f"2^{log2}", fmt(m["wall"], ".2f"), fmt((1 << log2) / m["wall"], ",.0f"),
            fmt(m["daemon_rss"], ".0f"), fmt(m["worker_rss"], ".0f"), fmt(m["store"], ".1f"),
            fmt(proof[0], ".3f"), fmt(proof[1], ".0f"), fmt(m.get("export"), ",.0f"),
            fmt(daemon[0], ".2f"), fmt(daemon[1], ".2f"), fmt(daemon[2], ",.0f"),
            fmt(floor, ".2f"), fmt(floor / m["wall"], ".1%"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 22, 24, 26], metavar="LOG2",
                        help="log2 entry counts (default 20 22 24 26)")
    parser.add_argument("--big", action="store_true", help="append 28 (about 25 min)")
    parser.add_argument("--workers", type=int, default=2, help="--executors of each job (2)")
    parser.add_argument("--currencies", type=int, default=1)
    parser.add_argument("--data", default="/var/tmp/summa-bench",
                        help="the CSVs (reused) and each size's daemon directory")
    parser.add_argument("--proofs", type=int, default=2000, help="proofs of the throughput measures")
    parser.add_argument("--clients", type=int, default=8, help="client processes asking the daemon")
    parser.add_argument("--proof-seconds", type=float, default=120,
                        help="stop each proof throughput measure after about this long, counting "
                             "what was done (120)")
    parser.add_argument("--keep", action="store_true", help="keep each size's daemon directory")
    args = parser.parse_args(argv)
    sizes = args.sizes + ([28] if args.big and 28 not in args.sizes else [])
    if any(not 1 <= s <= 40 for s in sizes) or args.workers < 1 or args.clients < 1 or args.proofs < 1:
        parser.error("sizes must be from 1 to 40; --workers, --clients and --proofs at least 1")
    os.makedirs(args.data, exist_ok=True)
    us_per_perm = kernel_us_per_permutation(args.currencies)
    print(f"cpus: {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable); kernel {_kernel.backend()}: "
          f"{us_per_perm:.3f} µs per permutation (hash_level, 2^16 interleaved parents x "
          f"{args.currencies} currencies, median of 5)", flush=True)
    rows, failures = [], []
    for log2 in sizes:
        print(f"\n2^{log2} entries x {args.currencies} currencies, {args.workers} workers", flush=True)
        problem = disk_problem(args.data, log2, args.currencies)
        if problem:
            print(f"  skipping 2^{log2}: {problem}", flush=True)
            failures.append((f"2^{log2}", f"skipped: {problem}"))
            continue
        try:
            line = one_size(args, log2, us_per_perm)
        except SizeFailed as error:
            print(f"  2^{log2} failed: {error}", flush=True)
            failures.append((f"2^{log2}", f"failed: {error}"))
            continue
        rows.append(line)
        print("  " + ", ".join(f"{name} {value}" for name, value in zip(HEADERS, line)), flush=True)
    table(HEADERS, rows, f"scaling: summa-submit build --wait, one mini-tree per CSV, {args.workers} "
          f"local workers, {args.currencies} currencies, {os.cpu_count()} cpus, {us_per_perm:.3f} µs per "
          f"permutation; proofs: {args.proofs}, daemon with {args.clients} clients")
    for size, reason in failures:
        print(f"  {size}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
