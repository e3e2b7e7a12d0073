"""summa-keys DIR: generate the key pairs of a deployment (see wire/keys.py)."""
import sys

from ..mst.commands import Parser
from ..wire.keys import KeysError, generate


def main(argv=None):
    parser = Parser(prog="summa-keys", description="Generate CURVE key pairs for the daemon, "
                    "the workers and clients, and the authorized list.")
    parser.add_argument("directory", metavar="DIR")
    args = parser.parse_args(argv)
    try:
        generate(args.directory)
    except (KeysError, OSError) as error:
        print(f"summa-keys: error: {error}", file=sys.stderr)
        return 1
    print(f"summa-keys: wrote daemon, worker and client key pairs and authorized/ to {args.directory}")
    return 0
