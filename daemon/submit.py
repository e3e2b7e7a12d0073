"""summa-submit: the client submission script.

Exit codes: 0 done (or the request succeeded), 1 the job failed or was cancelled,
2 usage or connection errors. The message on stderr says which.
"""
import argparse
import collections
import datetime
import errno
import json
import math
import os
import stat
import sys
import time

from ..cython_ext.params import LAYOUTS
from ..mst.commands import Parser, add_variant_arguments, power_of_two
from ..mst.limits import DEFAULT_LAYOUT, DEFAULT_N_BYTES
from ..wire import LIST_LIMIT, LIST_MAX, SubmitRequest
from ..wire.keys import KeyDir, KeysError
from .client import DEFAULT_DAEMON, DaemonClient, DaemonError

PROG = "summa-submit"
FINISHED = ("done", "failed", "cancelled")


def _parser():
    parser = Parser(prog=PROG, description="Submit and follow jobs of a running summa-daemon.")
    parser.add_argument("--daemon", metavar="ENDPOINT", default=os.environ.get("SUMMA_DAEMON", DEFAULT_DAEMON),
                        help=f"the daemon's control socket (default {DEFAULT_DAEMON}, or $SUMMA_DAEMON)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")
    parser.add_argument("--keys", metavar="DIR", default=os.environ.get("SUMMA_KEYS") or None,
                        help="CURVE key directory (summa-keys), or $SUMMA_KEYS; plaintext without")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="submit a build job; prints the job id first")
    build.add_argument("csvs", nargs="+", metavar="CSV")
    build.add_argument("--executors", type=int, help="workers for this job (daemon default: 2)")
    build.add_argument("--spawner", choices=["mock", "local", "cloud"], help="daemon default: mock")
    build.add_argument("--layout", choices=list(LAYOUTS), default=DEFAULT_LAYOUT)
    build.add_argument("--n-bytes", type=int, default=DEFAULT_N_BYTES)
    build.add_argument("--batch-size", type=power_of_two, metavar="2^K",
                       help="mini-trees of 2^K entries instead of one per CSV")
    add_variant_arguments(build)
    build.add_argument("--wait", action="store_true", help="follow the job; print its root last")
    build.add_argument("--upload", action="store_true",
                       help="send the CSVs to the daemon through its control socket (no shared "
                            "file system needed); it deletes them when the job ends")
    for name, text in (("status", "a job's state and progress as JSON"), ("cancel", "cancel a job"),
                       ("proof", "an inclusion proof as JSON"),
                       ("delete", "remove a finished job: its record and its result")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("job", metavar="JOB")
        if name == "proof":
            sub.add_argument("--username", required=True)
    listing = commands.add_parser("list", help="the jobs the daemon knows, newest first, one per line")
    listing.add_argument("--limit", type=_limit, default=LIST_LIMIT,
                         help=f"at most this many (default {LIST_LIMIT}, at most {LIST_MAX})")
    listing.add_argument("--since", type=_since, metavar="TIME",
                         help="only jobs submitted at or after TIME: unix seconds, or ISO-8601 "
                              "(2026-12-04, 2026-12-04T10:00, ...+01:00; without an offset: local time)")
    listing.add_argument("--after", metavar="CURSOR",
                         help="the next page: the cursor the last page ended with")
    commands.add_parser("shutdown", help="stop the daemon gracefully")
    return parser


def _limit(text):
    value = int(text)
    if not 1 <= value <= LIST_MAX:
        raise ValueError(text)
    return value


_limit.__name__ = f"count of jobs (1 to {LIST_MAX})"


def _since(text):
    """Unix seconds, or an ISO-8601 date or time (local time without an offset)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected unix seconds or an ISO-8601 time, got {text!r}")
        return value
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected unix seconds or an ISO-8601 time, got {text!r}") from None
    return moment.timestamp()


def _duration(seconds):
    """42 s under a minute, else H:MM:SS (1:02:03, 0:05:07)."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """One progress line, redrawn with \r, on stderr and only when stderr is a terminal (stdout
    keeps its contract: the job id first, the root JSON last).

    The total is the job's exact entry count once its CSVs are read, before that the estimate
    the daemon made from their sizes (shown with a ~), else unknown (counts only, no bar). The
    rate is over the last `window` seconds of records, not since the start, and the ETA is the
    entries left at that rate. `stream`, `enabled` and `clock` are for tests."""

    def __init__(self, stream=None, enabled=None, clock=time.monotonic, window=5.0, width=20):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled, self.clock, self.window, self.width = enabled, clock, window, width
        self.samples = collections.deque()     # (time, entries_done), oldest first
        self.drawn = 0                          # length of the line on screen

    def rate(self, done):
        """Entries per second over the last `window` seconds (None until time has passed)."""
        now = self.clock()
        if self.samples and done < self.samples[-1][1]:
            self.samples.clear()                # a counter that went back: start again
        self.samples.append((now, done))
        # keep one sample at or before the window's start, so the span covers the whole window
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()
        began, first = self.samples[0]
        return (done - first) / (now - began) if now > began else None

    def line(self, record):
        progress = record.get("progress") or {}
        state = record.get("state", "?")
        done = progress.get("entries_done") or 0
        total, estimated = progress.get("entries"), False
        if total is None and progress.get("entries_estimate"):
            total, estimated = progress["entries_estimate"], True
        rate = self.rate(done)
        parts = [f"{state:<9}"]
        if total:
            filled = min(done, total) * self.width // total
            parts.append(f"[{'#' * filled:<{self.width}}]")
            parts.append(f"{done:,}/{'~' if estimated else ''}{total:,} entries")
            parts.append(f"{min(done / total, 1):4.0%}")
        else:
            parts.append(f"{done:,} entries")
        parts.append(f"{rate:,.0f} entries/s" if rate is not None else "- entries/s")
        left = total - done if total else 0
        if total and state not in FINISHED and (left > 0 or estimated):
            # all entries built of an exact total: only the store is left, no ETA to give
            parts.append("ETA " + (_duration(left / rate) if left > 0 and rate else "?"))
        batches = progress.get("batches")
        parts.append(f"{progress.get('batches_done') or 0}/{batches or '?'} mini-trees")
        return "  ".join(parts)

    def show(self, record):
        if not self.enabled:
            return
        text = self.line(record)
        columns = self._columns()
        if columns:
            text = text[:columns - 1]           # a wrapped line cannot be redrawn with \r
        self.stream.write("\r" + text + " " * max(self.drawn - len(text), 0))
        self.stream.flush()
        self.drawn = len(text)

    def _columns(self):
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            return None

    def close(self):
        if self.enabled and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = 0


def follow(client, job_id, progress, interval=0.2):
    """Poll the job until it ends; returns its last record."""
    while True:
        record = client.status(job_id)
        progress.show(record)
        if record["state"] in FINISHED:
            progress.close()
            return record
        time.sleep(interval)


def _follow(client, job_id):
    progress = Progress()
    try:
        record = follow(client, job_id, progress)
    except KeyboardInterrupt:
        progress.close()
        print(f"{PROG}: stopped following job {job_id}; it goes on "
              f"({PROG} cancel {job_id} stops it)", file=sys.stderr)
        return 130
    if record["state"] == "done":
        print(json.dumps(record["root"]))
        return 0
    reason = record.get("error") or record["state"]
    print(f"{PROG}: job {job_id} {record['state']}: {reason}", file=sys.stderr)
    return 1


def _local_files(paths):
    """Every CSV to upload is a regular file this client can read, before any is sent."""
    for path in paths:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if not os.access(path, os.R_OK):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)


def _run(args, client):
    if args.command == "build":
        if args.upload:
            _local_files(args.csvs)
            uploads = [client.upload(path) for path in args.csvs]
            spec = SubmitRequest([], args.executors, args.spawner, args.layout, args.n_bytes,
                                 args.batch_size, uploads, args.username_encoding, args.sorted)
        else:
            spec = SubmitRequest([os.path.abspath(p) for p in args.csvs], args.executors,
                                 args.spawner, args.layout, args.n_bytes, args.batch_size, None,
                                 args.username_encoding, args.sorted)
        job_id = client.submit(spec)
        print(job_id, flush=True)
        return _follow(client, job_id) if args.wait else 0
    if args.command == "status":
        print(json.dumps(client.status(args.job), indent=2))
    elif args.command == "cancel":
        answer = client.cancel(args.job)
        print(f"{args.job}: {answer['state']}" + (f" ({answer['cancel']})" if answer.get("cancel") else ""))
        if answer.get("cancel"):          # refused: the job will end done
            return 1
    elif args.command == "proof":
        print(json.dumps(client.proof(args.job, args.username), indent=2))
    elif args.command == "delete":
        answer = client.delete(args.job)
        print(f"{answer['job']}: deleted")
    elif args.command == "list":
        jobs, cursor = client.list_page(args.limit, args.since, args.after)
        for record in jobs:
            progress = record["progress"]
            print(f"{record['job']}  {record['state']:<9}  {progress.get('batches_done', 0)}/"
                  f"{progress.get('batches') or '?'}  {record.get('error') or ''}".rstrip())
        if cursor is not None:       # on stderr: stdout stays one line per job
            more = [f"--limit {args.limit}"] if args.limit != LIST_LIMIT else []
            more += [f"--since {args.since!r}"] if args.since is not None else []
            print(f"{PROG}: more jobs: {PROG} list {' '.join(more + ['--after', cursor])}",
                  file=sys.stderr)
    elif args.command == "shutdown":
        client.shutdown()
        print("the daemon is stopping")
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        keys = KeyDir(args.keys) if args.keys else None
        with DaemonClient(args.daemon, timeout=args.timeout, keys=keys) as client:
            return _run(args, client)
    except KeysError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:           # a CSV to upload that cannot be read here
        where = f"{error.filename}: " if error.filename else ""
        print(f"{PROG}: error: {where}cannot read: {error.strerror or error}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError, AttributeError):
        # a server that is not a summa-daemon of this version
        print(f"{PROG}: error: the answer from {args.daemon} was not understood "
              f"(is that a summa-daemon of this version?)", file=sys.stderr)
        return 2
    except DaemonError as error:
        print(f"{PROG}: error: {error.message}", file=sys.stderr)
        return 2 if error.code is None else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
