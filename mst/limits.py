"""What a tree may be asked for, each rule written once: layouts, currency counts, N_BYTES,
depths, power-of-two sizes, and the byte sizes of packed entries and trees.

Each check raises ValueError starting with `what` (a flag, a message field, a setting), so a
caller only puts its own error type around it: the CSV reader, the trees, the worker's BUILD,
the daemon's SUBMIT and every command read the same words.
"""
from ..cython_ext import _kernel
from ..cython_ext.params import LAYOUTS, WORD

DEFAULT_LAYOUT = LAYOUTS[0]
DEFAULT_N_BYTES = 14
MAX_N_BYTES = 31      # every total below 2^(8 * 31) is below P, so a range check is exact
MAX_DEPTH = 30        # 2^30 leaves: beyond any message, batch or machine of this project


class CurrencyMismatch(ValueError):
    """Packed balances that hold another number of currencies per entry than stated."""


def _whole(value):
    return type(value) is int      # True is an int to Python, not a count to us


def layout_code(layout, what="layout"):
    """The kernel's code of a layout name."""
    if layout not in LAYOUTS:
        raise ValueError(f"{what}: unknown layout {layout!r} (expected one of: {', '.join(LAYOUTS)})")
    return LAYOUTS.index(layout)


def check_n_currencies(n, what="n_currencies"):
    if not _whole(n) or not 1 <= n <= _kernel.MAX_CURRENCIES:
        raise ValueError(f"{what} must be an integer from 1 to {_kernel.MAX_CURRENCIES}, got {n!r}")
    return n


def check_n_bytes(n_bytes, what="N_BYTES"):
    if not _whole(n_bytes) or not 1 <= n_bytes <= MAX_N_BYTES:
        raise ValueError(f"{what} must be an integer from 1 to {MAX_N_BYTES}, got {n_bytes!r}")
    return n_bytes


def check_power_of_two(size, what="batch size"):
    if not _whole(size) or size < 1 or size & (size - 1) or size > 1 << MAX_DEPTH:
        raise ValueError(f"{what} must be a power of two from 1 to 2^{MAX_DEPTH}, got {size!r}")
    return size


def check_shape(count, depth, what="count and depth"):
    """A tree of `count` entries padded to 2^depth leaves."""
    if not (_whole(count) and _whole(depth) and 0 <= depth <= MAX_DEPTH and 1 <= count <= 1 << depth):
        raise ValueError(f"{what}: need 1 <= count <= 2^depth and depth <= {MAX_DEPTH}, "
                         f"got {count!r} and {depth!r}")


def check_packed(usernames, balances, count, n_currencies, names=("usernames", "balances")):
    """Packed entries: count username words, count x n_currencies balance words."""
    if len(usernames) != WORD * count:
        raise ValueError(f"{names[0]}: {len(usernames)} bytes, expected {WORD * count} for "
                         f"{count} entries")
    if len(balances) != WORD * count * n_currencies:
        if len(balances) % (WORD * count) == 0:
            raise CurrencyMismatch(f"{names[1]} holds {len(balances) // (WORD * count)} currencies "
                                   f"per entry, n_currencies says {n_currencies}")
        raise ValueError(f"{names[1]}: {len(balances)} bytes, expected "
                         f"{WORD * count * n_currencies} for {count} entries x {n_currencies}")


def record_bytes(n_currencies):
    """A node: its hash, then its balances."""
    return WORD * (n_currencies + 1)


def tree_bytes(depth, n_currencies):
    """A complete tree of depth `depth`, every level, in one buffer."""
    return record_bytes(n_currencies) * ((2 << depth) - 1)


def depth_for(count):
    """ceil(log2(count)), and 0 for a single entry."""
    return max(count - 1, 0).bit_length()


USERNAME_ENCODINGS = ("bytes", "keccak256")   # SPEC section 7
DEFAULT_USERNAME_ENCODING = USERNAME_ENCODINGS[0]


def check_username_encoding(encoding, what="username encoding"):
    if encoding not in USERNAME_ENCODINGS:
        raise ValueError(f"{what}: unknown username encoding {encoding!r} (expected one of: "
                         f"{', '.join(USERNAME_ENCODINGS)})")
    return encoding
