"""summa-aggregate: one run, no daemon to set up.

It starts an embedded daemon (the same code as summa-daemon) with the MockSpawner, so local
summa-worker processes build the mini-trees, submits one job through the ordinary client,
follows it, and moves the finished result directory to --out. The root node JSON is the last
line of stdout. The embedded daemon has no input_dirs: it may read exactly the CSVs of the
command line (Daemon's input_files) and nothing else.
"""
import json
import os
import shutil
import sys
import tempfile
import threading

from ..cython_ext.params import LAYOUTS
from ..mst import store
from ..mst.commands import Parser, add_variant_arguments, power_of_two, run
from ..mst.limits import DEFAULT_LAYOUT, DEFAULT_N_BYTES, check_n_bytes
from ..wire import SubmitRequest
from ..wire.keys import KeyDir, generate
from .broker import Daemon
from .client import DaemonClient, DaemonError
from .config import DaemonConfig
from .submit import Progress, follow


class JobFailed(ValueError):
    """The job ended failed or cancelled; the message is the daemon's reason."""


def _parser():
    parser = Parser(prog="summa-aggregate", description="Build the Merkle sum tree of the "
                    "entries in CSV... on this machine and print its root node JSON.")
    parser.add_argument("csvs", nargs="+", metavar="CSV")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="local worker processes (default: the CPU count)")
    parser.add_argument("--layout", choices=list(LAYOUTS), default=DEFAULT_LAYOUT)
    parser.add_argument("--n-bytes", type=int, default=DEFAULT_N_BYTES,
                        help="balances and their totals must be below 2^(8*N) (default 14)")
    parser.add_argument("--batch-size", type=power_of_two, metavar="2^K",
                        help="cut the entries into mini-trees of this many entries instead of "
                             "one mini-tree per CSV (the root is then that of one big tree)")
    add_variant_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="write the result directory here (must not exist)")
    return parser


def _aggregate(argv):
    args = _parser().parse_args(argv)
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    check_n_bytes(args.n_bytes)
    out = os.path.abspath(args.out) if args.out else None
    if out and os.path.lexists(out):
        raise store.StoreError(f"{args.out}: already exists (results are never overwritten)")
    # the daemon's data directory sits beside --out, so the result moves there by a rename
    data_dir = tempfile.mkdtemp(prefix=".summa-aggregate-", dir=os.path.dirname(out) if out else None)
    keys_dir = generate(os.path.join(data_dir, "keys"))    # this run's own CURVE keys
    csvs = [os.path.abspath(p) for p in args.csvs]
    try:
        daemon = Daemon(DaemonConfig(control=f"inproc://summa-aggregate-{os.getpid()}",
                                     cancel="tcp://127.0.0.1:*", data_dir=data_dir, log_level="WARNING",
                                     keys_dir=keys_dir, input_dirs=[]),
                        input_files=csvs)            # exactly the files it was given
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    serving = threading.Thread(target=daemon.serve, name="embedded-daemon", daemon=True)
    serving.start()
    try:
        with DaemonClient(daemon.control_endpoint, timeout=60, keys=KeyDir(keys_dir)) as client:
            try:
                job_id = client.submit(SubmitRequest(csvs, args.workers, "mock", args.layout,
                                                     args.n_bytes, args.batch_size, None,
                                                     args.username_encoding, args.sorted))
            except DaemonError as error:        # e.g. a path with control characters
                raise JobFailed(error.message) from None
            record = follow(client, job_id, Progress(), interval=0.05)
        if record["state"] != "done":
            raise JobFailed(record.get("error") or record["state"])
        if out:
            store.publish(os.path.join(data_dir, "results", job_id), out)
        print(json.dumps(record["root"]))
    finally:
        daemon.stop()
        serving.join()
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv=None):
    return run("summa-aggregate", _aggregate, argv)


if __name__ == "__main__":
    sys.exit(main())
