"""summa-worker: entry point reserved for the ZeroMQ mini-tree server (issue #3)."""
import sys


def main(argv=None):
    print("summa-worker: error: not available in this release; the ZeroMQ mini-tree server "
          "arrives with issue #3. Use summa-aggregate meanwhile.", file=sys.stderr)
    return 2
