"""summa-daemon: the long-running orchestrator (systemd runs it)."""
import logging
import sys

import zmq

from ..mst.commands import Parser
from ..wire.serve import serve_until_stopped
from . import config as daemon_config
from .broker import Daemon


def main(argv=None):
    parser = Parser(prog="summa-daemon", description="Run the Summa Aggregation orchestrator.")
    parser.add_argument("--config", metavar="FILE", help="TOML settings (see systemd/daemon.toml)")
    parser.add_argument("--control", metavar="ENDPOINT", help="client socket (default tcp://127.0.0.1:5555)")
    parser.add_argument("--data-dir", metavar="DIR", help="job records and results")
    parser.add_argument("--cancel", metavar="ENDPOINT", help="cancellation PUB socket")
    parser.add_argument("--keys", metavar="DIR", help="CURVE key directory (summa-keys DIR)")
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="run without CURVE: plaintext, unauthenticated sockets")
    args = parser.parse_args(argv)
    try:
        config = daemon_config.load(args.config, control=args.control, data_dir=args.data_dir,
                                    cancel=args.cancel, keys_dir=args.keys, insecure=args.insecure)
        logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                            format="summa-daemon: %(levelname)s %(message)s")
        daemon = Daemon(config)
    except daemon_config.ConfigError as error:
        print(f"summa-daemon: error: {error}", file=sys.stderr)
        return 2
    except zmq.ZMQError as error:
        print(f"summa-daemon: error: cannot bind its sockets: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"summa-daemon: error: {error.filename or config.data_dir}: {error.strerror}", file=sys.stderr)
        return 2
    print(f"summa-daemon: control on {daemon.control_endpoint}, cancellations on "
          f"{daemon.cancel_endpoint}, data in {config.data_dir}", flush=True)
    return serve_until_stopped(daemon, "summa-daemon")


if __name__ == "__main__":
    sys.exit(main())
