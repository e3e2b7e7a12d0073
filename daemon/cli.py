"""summa-daemon and summa-submit: entry points reserved for the orchestrator (issue #4)."""
import sys


def _not_yet(prog):
    print(f"{prog}: error: not available in this release; the orchestrator daemon and its "
          f"client arrive with issue #4. Use summa-aggregate meanwhile.", file=sys.stderr)
    return 2


def daemon_main(argv=None):
    return _not_yet("summa-daemon")


def submit_main(argv=None):
    return _not_yet("summa-submit")
