# cython: boundscheck=False, wraparound=False, language_level=3
"""Thin Cython shell around poseidon_kernel.h: buffers in, buffers out, GIL released.

A field word is 32 bytes, canonical, little-endian. A node record is 1 + N words: the hash,
then the N balances. Nothing here creates a Python object per node.
"""
import os

from libc.stdint cimport int64_t, uint8_t, uint64_t

from .params import kernel_schedule

cdef extern from "poseidon_kernel.h" nogil:
    ctypedef struct sk_control:
        int cancel
        int64_t done
    int SK_OK, SK_CANCELLED, SK_OVERFLOW, SK_NOT_IN_FIELD, SK_BAD_ARGS
    int SK_MAX_CURRENCIES, SK_MAX_ELEMENTS, SK_LANES
    void sk_init(const uint8_t *full_rc, const uint8_t *partial_rc, const uint8_t *mds,
                 const uint8_t *partial_matrix)
    int sk_hash_leaves(const uint8_t *usernames, const uint8_t *balances, int64_t n,
                       int n_cur, uint8_t *out, sk_control *ctl)
    int sk_hash_level(const uint8_t *children, int64_t n_parents, int n_cur, int layout,
                      uint8_t *parents, sk_control *ctl)
    int sk_hash_words(const uint8_t *msgs, int64_t count, int n_el, uint8_t *out)
    void sk_permute_words(uint8_t *states, int64_t count, int lanes)
    void sk_sum_columns(const uint8_t *balances, int64_t count, int n_cur, uint64_t *out)
    int sk_set_backend(int backend)
    int sk_get_backend()

MAX_CURRENCIES = SK_MAX_CURRENCIES
MAX_ELEMENTS = SK_MAX_ELEMENTS
LANES = SK_LANES


class KernelError(ValueError):
    """The kernel refused its input."""


class Cancelled(Exception):
    """A build stopped because its Control was cancelled."""


class BalanceOverflow(KernelError):
    """A balance sum left the field; the caller's range check names the currency."""


cdef class Control:
    """Shared with a running build: cancel() stops it at the next chunk; done counts nodes."""
    cdef sk_control ctl

    def __cinit__(self):
        self.ctl.cancel = 0
        self.ctl.done = 0

    def cancel(self):
        self.ctl.cancel = 1

    @property
    def cancelled(self):
        return self.ctl.cancel != 0

    @property
    def done(self):
        return self.ctl.done


cdef _check(int rc):
    if rc == SK_OK:
        return
    if rc == SK_CANCELLED:
        raise Cancelled("build cancelled")
    if rc == SK_OVERFLOW:
        raise BalanceOverflow("a balance sum does not fit in the field")
    if rc == SK_NOT_IN_FIELD:
        raise KernelError("a word is not a canonical field element (>= p)")
    raise KernelError("bad arguments to the kernel")


def _words(values):
    return b"".join(int(v).to_bytes(32, "little") for v in values)


def _init():
    full, partial, mds, matrix = kernel_schedule()
    cdef bytes f = _words(full), pr = _words(partial), m = _words(mds), pm = _words(matrix)
    sk_init(f, pr, m, pm)


_init()


BACKENDS = ("portable", "adx", "ifma")


def backend():
    """The field arithmetic in use: 'ifma' (AVX-512, 8 hashes per instruction), 'adx'
    (mulx/adcx/adox assembly) or 'portable' (C with 128-bit products)."""
    return BACKENDS[sk_get_backend()]


def available_backends():
    """The backends this CPU can run, slowest first."""
    current = sk_get_backend()
    found = tuple(name for i, name in enumerate(BACKENDS) if sk_set_backend(i))
    sk_set_backend(current)
    return found


def set_backend(name):
    """Force a backend, for tests and benchmarks; SUMMA_KERNEL does the same at import."""
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r} (expected one of {', '.join(BACKENDS)})")
    if not sk_set_backend(BACKENDS.index(name)):
        raise KernelError(f"kernel backend {name!r} is not available on this CPU")


def hash_leaves(const uint8_t[::1] usernames, const uint8_t[::1] balances, int64_t n,
                int n_currencies, uint8_t[::1] out, Control control=None):
    """Leaf records for n entries into out (n * (1 + N) words)."""
    if n < 0 or usernames.shape[0] < 32 * n or balances.shape[0] < 32 * n * n_currencies \
            or out.shape[0] < 32 * n * (n_currencies + 1):
        raise KernelError("buffer too small for the entry count")
    if n == 0:
        return
    cdef sk_control *ctl = &control.ctl if control is not None else NULL
    cdef int rc
    with nogil:
        rc = sk_hash_leaves(&usernames[0], &balances[0], n, n_currencies, &out[0], ctl)
    _check(rc)


def hash_level(const uint8_t[::1] children, int64_t n_parents, int n_currencies, int layout,
               uint8_t[::1] parents, Control control=None):
    """Parent records from 2 * n_parents child records; layout 0 interleaved, 1 sum-first."""
    cdef int64_t rec = 32 * (n_currencies + 1)
    if n_parents < 1 or children.shape[0] < 2 * rec * n_parents \
            or parents.shape[0] < rec * n_parents:
        raise KernelError("buffer too small for the node count")
    cdef sk_control *ctl = &control.ctl if control is not None else NULL
    cdef int rc
    with nogil:
        rc = sk_hash_level(&children[0], n_parents, n_currencies, layout, &parents[0], ctl)
    _check(rc)


def hash_words(const uint8_t[::1] messages, int64_t count, int n_elements):
    """Hashes of count messages of n_elements words each; returns count words."""
    if count < 1 or messages.shape[0] < 32 * count * n_elements:
        raise KernelError("buffer too small for the message count")
    out = bytearray(32 * count)
    cdef uint8_t[::1] o = out
    cdef int rc
    with nogil:
        rc = sk_hash_words(&messages[0], count, n_elements, &o[0])
    _check(rc)
    return bytes(out)


def sum_columns(const uint8_t[::1] balances, int64_t count, int n_currencies):
    """Exact per-currency totals (Python ints) of count entries of n_currencies words."""
    if count < 0 or n_currencies < 1 or balances.shape[0] < 32 * count * n_currencies:
        raise KernelError("buffer too small for the entry count")
    out = bytearray(40 * n_currencies)
    cdef uint8_t[::1] o = out
    if count:
        with nogil:
            sk_sum_columns(&balances[0], count, n_currencies, <uint64_t *>&o[0])
    return [int.from_bytes(out[40 * c:40 * c + 40], "little") for c in range(n_currencies)]


def permute_words(uint8_t[::1] states, int64_t count, int lanes=SK_LANES):
    """Permute count states of 2 words in place (for benchmarks and tests)."""
    if count < 1 or states.shape[0] < 64 * count:
        raise KernelError("buffer too small for the state count")
    with nogil:
        sk_permute_words(&states[0], count, lanes)


if os.environ.get("SUMMA_KERNEL"):
    set_backend(os.environ["SUMMA_KERNEL"])
