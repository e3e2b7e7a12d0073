# cython: boundscheck=False, wraparound=False, language_level=3
"""Packed-record chores of the result store, in C: no hashing, no I/O, no object per record.

A wide word is 32 bytes little-endian (what the kernel reads); a narrow balance is its low
N_BYTES bytes (what the store keeps: every balance and every sum is below 2^(8 N_BYTES) once
the root passed its range check). A record is a hash word then N balances.
"""
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset


class RecordError(ValueError):
    """Buffers that do not hold what the counts say."""


cdef inline void _need(bint ok, str what) except *:
    if not ok:
        raise RecordError(what)


def widen(const uint8_t[::1] narrow, int64_t count, int n_bytes, uint8_t[::1] out):
    """count narrow values of n_bytes bytes -> count 32-byte words (zero-extended)."""
    _need(1 <= n_bytes <= 32 and count >= 0 and narrow.shape[0] >= count * n_bytes
          and out.shape[0] >= 32 * count, "widen: buffer sizes do not match the count")
    cdef int64_t i
    with nogil:
        for i in range(count):
            memcpy(&out[32 * i], &narrow[n_bytes * i], n_bytes)
            memset(&out[32 * i + n_bytes], 0, 32 - n_bytes)


def narrow_records(const uint8_t[::1] wide, int64_t count, int n_cur, int n_bytes,
                   uint8_t[::1] out):
    """Wide node records -> narrow ones (hash kept whole, balances cut to n_bytes).

    Returns -1, or the index of the first record whose balance does not fit in n_bytes
    (nothing is ever cut silently)."""
    cdef int64_t wide_rec = 32 * (1 + n_cur), narrow_rec = 32 + n_cur * n_bytes
    _need(1 <= n_bytes <= 32 and n_cur >= 1 and count >= 0 and wide.shape[0] >= count * wide_rec
          and out.shape[0] >= count * narrow_rec, "narrow_records: buffer sizes do not match")
    cdef int64_t i, bad = -1
    cdef int c, b
    cdef const uint8_t *src
    cdef uint8_t *dst
    with nogil:
        for i in range(count):
            src = &wide[i * wide_rec]
            dst = &out[i * narrow_rec]
            memcpy(dst, src, 32)
            for c in range(n_cur):
                memcpy(&dst[32 + c * n_bytes], &src[32 * (1 + c)], n_bytes)
                for b in range(n_bytes, 32):
                    if src[32 * (1 + c) + b]:
                        bad = i
                        break
                if bad >= 0:
                    break
            if bad >= 0:
                break
    return bad


def widen_records(const uint8_t[::1] narrow, int64_t count, int n_cur, int n_bytes,
                  uint8_t[::1] out):
    """The inverse of narrow_records."""
    cdef int64_t wide_rec = 32 * (1 + n_cur), narrow_rec = 32 + n_cur * n_bytes
    _need(1 <= n_bytes <= 32 and n_cur >= 1 and count >= 0 and narrow.shape[0] >= count * narrow_rec
          and out.shape[0] >= count * wide_rec, "widen_records: buffer sizes do not match")
    cdef int64_t i
    cdef int c
    with nogil:
        for i in range(count):
            memcpy(&out[i * wide_rec], &narrow[i * narrow_rec], 32)
            for c in range(n_cur):
                memcpy(&out[i * wide_rec + 32 * (1 + c)], &narrow[i * narrow_rec + 32 + c * n_bytes],
                       n_bytes)
                memset(&out[i * wide_rec + 32 * (1 + c) + n_bytes], 0, 32 - n_bytes)


cdef inline uint64_t _load64(const uint8_t *p) nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)      # little-endian hosts only (x86-64, arm64): the words are LE too
    return v


cdef inline uint64_t _mix(uint64_t h) nogil:
    h ^= h >> 31
    h *= 0xBF58476D1CE4E5B9ULL
    h ^= h >> 29
    h *= 0x94D049BB133111EBULL
    h ^= h >> 32
    return h


def fingerprints(const uint8_t[::1] usernames, int64_t count, uint64_t key0, uint64_t key1,
                 uint64_t[::1] out):
    """A keyed 64-bit fingerprint of each 32-byte username word.

    Not a cryptographic hash: equal fingerprints are always confirmed against the usernames,
    so a collision costs a comparison, never a wrong answer; the per-job key keeps a client
    from choosing usernames that all collide."""
    _need(count >= 0 and usernames.shape[0] >= 32 * count and out.shape[0] >= count,
          "fingerprints: buffer sizes do not match the count")
    cdef int64_t i
    cdef uint64_t h
    cdef int w
    with nogil:
        for i in range(count):
            h = key0
            for w in range(4):
                h = _mix(h ^ _load64(&usernames[32 * i + 8 * w]))
            out[i] = _mix(h ^ key1)
    return None


def partition(const uint64_t[::1] keys, const uint64_t[::1] values, uint64_t[::1] out_keys,
              uint64_t[::1] out_values, int64_t[::1] starts, int bits):
    """Counting sort of (key, value) pairs by the key's top `bits` bits (1 to 8);
    starts gets the 2^bits + 1 bucket offsets."""
    cdef int64_t n = keys.shape[0], i
    cdef int buckets = 1 << bits, shift = 64 - bits, b
    _need(1 <= bits <= 8 and values.shape[0] == n and out_keys.shape[0] >= n
          and out_values.shape[0] >= n and starts.shape[0] == buckets + 1,
          "partition: buffer sizes do not match")
    cdef int64_t fill[256]
    with nogil:
        for b in range(buckets + 1):
            starts[b] = 0
        for i in range(n):
            starts[(keys[i] >> shift) + 1] += 1
        for b in range(buckets):
            starts[b + 1] += starts[b]
            fill[b] = starts[b]
        for i in range(n):
            b = keys[i] >> shift
            out_keys[fill[b]] = keys[i]
            out_values[fill[b]] = values[i]
            fill[b] += 1


def count_up(uint64_t[::1] out, uint64_t start):
    """out[i] = start + i."""
    cdef int64_t i
    with nogil:
        for i in range(out.shape[0]):
            out[i] = start + i


def sort_pairs(uint64_t[::1] keys, uint64_t[::1] values):
    """Sort (key, value) pairs by key, then by value, in place (LSD radix sort)."""
    cdef int64_t n = keys.shape[0]
    _need(values.shape[0] == n, "sort_pairs: keys and values differ in length")
    if n < 2:
        return
    cdef uint64_t *tk = <uint64_t *>malloc(n * sizeof(uint64_t))
    cdef uint64_t *tv = <uint64_t *>malloc(n * sizeof(uint64_t))
    if tk == NULL or tv == NULL:
        free(tk)
        free(tv)
        raise MemoryError()
    cdef uint64_t *sk = &keys[0]
    cdef uint64_t *sv = &values[0]
    cdef uint64_t *dk = tk
    cdef uint64_t *dv = tv
    cdef uint64_t *swap
    cdef int64_t count[256]
    cdef int64_t i, total
    cdef int shift, b, pass_
    cdef uint64_t digit
    try:
        with nogil:
            # values first (the tie-break), then keys: 16 passes of 8 bits, skipping the
            # passes where every element has the same digit (most of a key's top byte)
            for pass_ in range(16):
                shift = 8 * (pass_ % 8)
                for b in range(256):
                    count[b] = 0
                for i in range(n):
                    digit = (sv[i] if pass_ < 8 else sk[i]) >> shift
                    count[digit & 255] += 1
                if count[((sv[0] if pass_ < 8 else sk[0]) >> shift) & 255] == n:
                    continue
                total = 0
                for b in range(256):
                    total += count[b]
                    count[b] = total - count[b]
                for i in range(n):
                    digit = ((sv[i] if pass_ < 8 else sk[i]) >> shift) & 255
                    dk[count[digit]] = sk[i]
                    dv[count[digit]] = sv[i]
                    count[digit] += 1
                swap = sk; sk = dk; dk = swap
                swap = sv; sv = dv; dv = swap
            if sk != &keys[0]:
                memcpy(&keys[0], sk, n * sizeof(uint64_t))
                memcpy(&values[0], sv, n * sizeof(uint64_t))
    finally:
        free(tk)
        free(tv)


def equal_runs(const uint64_t[::1] keys):
    """Indices i where keys[i] == keys[i + 1] in a sorted array (few: duplicates, collisions)."""
    cdef int64_t n = keys.shape[0], i
    found = []
    for i in range(n - 1):
        if keys[i] == keys[i + 1]:
            found.append(i)
    return found


def lower_bound(const uint64_t[::1] keys, uint64_t key):
    """The first index whose key is >= key, in a sorted array."""
    cdef int64_t low = 0, high = keys.shape[0], middle
    with nogil:
        while low < high:
            middle = (low + high) >> 1
            if keys[middle] < key:
                low = middle + 1
            else:
                high = middle
    return low
