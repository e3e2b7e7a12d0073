"""The loop both servers (summa-worker, summa-daemon) share around their serve(): signal
handlers that only ask it to stop, and one exit status for how it ended."""
import signal
import sys

from .memory import RebindError


class StopOnSignals:
    """Signal handlers only ask the loop to stop; the old handlers come back on exit."""

    def __init__(self, stoppable, signals=(signal.SIGTERM, signal.SIGINT)):
        self.stoppable, self.signals, self.previous = stoppable, signals, {}

    def __enter__(self):
        for sig in self.signals:
            self.previous[sig] = signal.signal(sig, lambda *_: self.stoppable.stop())
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def serve_until_stopped(server, prog):
    """Run server.serve() until a signal stops it; the exit status. A memory reset that could
    not bind its address again ends it too, as a one-line error (the server stopped cleanly)."""
    with StopOnSignals(server):
        try:
            server.serve()
        except RebindError as error:
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 1
    print(f"{prog}: stopped", flush=True)
    return 0
