"""The kernel and its C helpers: field arithmetic, Poseidon and tree levels in C (_kernel.pyx and
its headers, batch calls, GIL released, cancellable), the contract's numbers (params.py) and the
pure-Python reference the kernel is tested against (reference.py); and the CSV reader's fast
path (_csvscan.pyx: the lines of a buffer to packed entries, for mst/csv_reader.py).

It imports nothing of ours, does no I/O, and knows no sockets, JSON or argparse."""
