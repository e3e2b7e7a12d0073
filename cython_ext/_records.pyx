# cython: boundscheck=False, wraparound=False, language_level=3
"""Packed-record chores of the result store and the result check, in C: no hashing, no I/O,
no object per record.

A wide word is 32 bytes little-endian (what the kernel reads); a narrow balance is its low
N_BYTES bytes (what the store keeps: every balance and every sum is below 2^(8 N_BYTES) once
the root passed its range check). A record is a hash word then N balances.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset


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


def first_bad_leaf(const uint8_t[::1] nodes, const uint8_t[::1] balances, int64_t count,
                   int n_cur, int depth, const uint8_t[::1] padding):
    """The first leaf of a returned mini-tree that is not what was sent, or -1.

    nodes: the tree's wide records, leaf level first (its first 2^depth records are the
    leaves); balances: the count entries' wide balance words, entry-major (what was sent);
    padding: the padding leaf's record (H(0, 0, ..., 0) and zero balances). A real leaf
    (index < count) must hold exactly the entry's balance words; a padding leaf must be the
    padding record, hash included. Byte compares only: no hashing, no object per leaf."""
    cdef int64_t rec = 32 * (1 + <int64_t>n_cur), width = 32 * <int64_t>n_cur, leaves, i, bad = -1
    _need(1 <= n_cur <= 64 and 0 <= depth <= 48, "first_bad_leaf: bad currency count or depth")
    leaves = <int64_t>1 << depth
    _need(0 <= count <= leaves and nodes.shape[0] >= leaves * rec
          and balances.shape[0] >= count * width and padding.shape[0] == rec,
          "first_bad_leaf: buffer sizes do not match the counts")
    cdef const uint8_t *leaf = &nodes[0]
    cdef const uint8_t *sent = &balances[0] if count else NULL
    cdef const uint8_t *pad = &padding[0]
    with nogil:
        for i in range(count):
            if memcmp(leaf + i * rec + 32, sent + i * width, width):
                bad = i
                break
        if bad < 0:
            for i in range(count, leaves):
                if memcmp(leaf + i * rec, pad, rec):
                    bad = i
                    break
    return bad


def first_bad_sum(const uint8_t[::1] nodes, int n_cur, int depth):
    """The first node above the leaves whose balances are not the sums of its two children's
    (its index in the buffer, leaf level first, the root last), or -1.

    Exact 256-bit additions, no reduction: under a checked root every sum is below
    2^(8 N_BYTES) < p, so an honest tree never wraps, and a carry out of 256 bits is a lie.
    The parent of buffer record j is record 2^depth + j // 2, for every level at once."""
    cdef int64_t rec = 32 * (1 + <int64_t>n_cur), leaves, total, p, bad = -1
    cdef const uint8_t *a
    cdef const uint8_t *b
    cdef const uint8_t *s
    cdef uint64_t x, t, u, carry
    cdef int k, limb, wrong
    _need(1 <= n_cur <= 64 and 0 <= depth <= 48, "first_bad_sum: bad currency count or depth")
    leaves = <int64_t>1 << depth
    total = 2 * leaves - 1
    _need(nodes.shape[0] == total * rec, "first_bad_sum: the buffer does not match the depth")
    cdef const uint8_t *base = &nodes[0]
    with nogil:
        for p in range(leaves, total):
            a = base + 2 * (p - leaves) * rec
            b = a + rec
            s = base + p * rec
            wrong = 0
            for k in range(1, n_cur + 1):
                carry = 0
                for limb in range(4):
                    x = _load64(a + 32 * k + 8 * limb)
                    t = x + _load64(b + 32 * k + 8 * limb)
                    u = t + carry
                    carry = (t < x) | (u < t)
                    wrong |= u != _load64(s + 32 * k + 8 * limb)
                wrong |= carry != 0
            if wrong:
                bad = p
                break
    return bad


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


def ends_of(const uint32_t[::1] lengths, uint64_t start, uint64_t[::1] out):
    """out[i] = start + lengths[0] + ... + lengths[i]: where each name ends in a names file
    (returns where the last one ends)."""
    cdef int64_t i
    _need(out.shape[0] == lengths.shape[0], "ends_of: lengths and out differ in length")
    with nogil:
        for i in range(lengths.shape[0]):
            start += lengths[i]
            out[i] = start
    return start


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


cdef inline int64_t _lower_bound(const uint64_t *keys, int64_t n, uint64_t key) noexcept nogil:
    """The first index whose key is >= key. The index's keys are keyed hashes, uniform, so up
    to 3 interpolation steps (each bracketed by a gallop out of its guess) narrow the range
    to a page before the binary search: a random lookup then reads about 5 pages of a
    memory-mapped index instead of log2(n) - 8 (~6 at 2^28 against ~20: disk reads when the
    index is not in the page cache). Any order of keys is searched correctly: the steps only
    ever keep keys[i] < key below `low` and keys[i] >= key from `high` on."""
    cdef int64_t low = 0, high = n, middle, guess, step
    cdef uint64_t first, last
    cdef int rounds
    for rounds in range(3):
        if high - low <= 64:
            break
        first, last = keys[low], keys[high - 1]
        if key <= first:
            return low
        if key > last:
            return high
        guess = low + <int64_t>(<double>(key - first) / <double>(last - first) * <double>(high - 1 - low))
        if guess < low:
            guess = low
        elif guess > high - 1:
            guess = high - 1
        step = 1
        if keys[guess] < key:
            low = guess + 1
            while low + step - 1 < high:
                if keys[low + step - 1] >= key:
                    high = low + step - 1
                    break
                low += step
                step <<= 1
        else:
            high = guess
            while high - step >= low:
                if keys[high - step] < key:
                    low = high - step + 1
                    break
                high -= step
                step <<= 1
    while low < high:
        middle = (low + high) >> 1
        if keys[middle] < key:
            low = middle + 1
        else:
            high = middle
    return low


def lower_bound(const uint64_t[::1] keys, uint64_t key):
    """The first index whose key is >= key, in a sorted array."""
    cdef int64_t n = keys.shape[0], found
    if n == 0:
        return 0
    with nogil:
        found = _lower_bound(&keys[0], n, key)
    return found


# ---- proofs: the paths of a batch through a stored tree (store.py) ------------------------
#
# A stored tree of depth D over units of depth k: a unit's levels 0 and 1 are recomputed from
# its entries, its levels 2 .. k-1 are narrow records in nodes.bin (per real unit, in serial
# order), the unit roots and everything above are the verified upper tree (a copy in memory).
# Nodes are named by (level L, id = global leaf index >> L). PathBatch walks the paths of a
# batch of proofs up, level by level, each distinct node once; the hashing is the caller's
# (the kernel), one call per level. StoredPaths holds what they read and the cache of verified
# copies of the nodes at unit levels c .. k-1, where a later climb stops at the first one it
# meets. Invariant of the cache: nodes enter it in sibling pairs whose parent is verified (a
# cached node or a unit root), so a cached node's sibling and ancestors, up to the unit root,
# are cached too: a climb that stops at one finds all its siblings above in the cache.

cdef inline void _widen_one(const uint8_t *src, uint8_t *dst, int n_cur, int n_bytes) noexcept nogil:
    cdef int c
    memcpy(dst, src, 32)
    for c in range(n_cur):
        memcpy(dst + 32 * (1 + c), src + 32 + c * n_bytes, n_bytes)
        memset(dst + 32 * (1 + c) + n_bytes, 0, 32 - n_bytes)


cdef inline bint _narrow_one(const uint8_t *src, uint8_t *dst, int n_cur, int n_bytes) noexcept nogil:
    cdef int c, b
    for c in range(n_cur):
        for b in range(n_bytes, 32):
            if src[32 * (1 + c) + b]:
                return False
    memcpy(dst, src, 32)
    for c in range(n_cur):
        memcpy(dst + 32 + c * n_bytes, src + 32 * (1 + c), n_bytes)
    return True


cdef inline bint _same_narrow(const uint8_t *wide, const uint8_t *narrow, int n_cur,
                              int n_bytes) noexcept nogil:
    """Whether a wide record equals a narrow one (zero-extended)."""
    cdef int c, b
    if memcmp(wide, narrow, 32):
        return False
    for c in range(n_cur):
        if memcmp(wide + 32 * (1 + c), narrow + 32 + c * n_bytes, n_bytes):
            return False
        for b in range(n_bytes, 32):
            if wide[32 * (1 + c) + b]:
                return False
    return True


cdef class StoredPaths:
    """What the proofs of one result read, and the verified nodes they leave behind.

    usernames, balances, nodes: the memory-mapped files (read as the proofs need them, never
    trusted); upper: the verified copy of the upper tree (wide records, leaves first); the
    shape as per-batch arrays (entry positions, counts, units before). Verified node cache:
    the unit levels cache_level .. k-1 of every real unit, narrow records and a known-flag
    each, allocated (calloc: untouched pages cost nothing) at the first insertion; its size is
    cache_bytes, fixed when the tree is opened."""
    cdef const uint8_t[::1] usernames, balances, nodes, upper
    cdef const int64_t[::1] prefix, counts, units_before
    cdef readonly int n_cur, n_bytes, depth, mini_depth, unit_depth, group_level, cache_level
    cdef readonly int64_t units, slot_records, per_unit, cache_bytes, cached
    cdef int rec, narrow
    cdef uint8_t *cache
    cdef uint8_t *known

    def __init__(self, usernames, balances, nodes, upper, int n_cur, int n_bytes, int depth,
                 int mini_depth, int unit_depth, prefix, counts, units_before, int cache_level):
        _need(1 <= n_cur <= 64 and 1 <= n_bytes <= 32 and 0 <= unit_depth <= mini_depth <= depth <= 62,
              "StoredPaths: bad shape")          # 64: the kernel's most currencies
        self.usernames, self.balances, self.nodes, self.upper = usernames, balances, nodes, upper
        self.prefix, self.counts, self.units_before = prefix, counts, units_before
        _need(self.prefix.shape[0] == self.counts.shape[0] + 1 and
              self.units_before.shape[0] == self.counts.shape[0] + 1, "StoredPaths: bad batch arrays")
        self.n_cur, self.n_bytes, self.depth = n_cur, n_bytes, depth
        self.mini_depth, self.unit_depth = mini_depth, unit_depth
        self.group_level = min(unit_depth, 2)
        self.units = self.units_before[self.counts.shape[0]]
        self.rec, self.narrow = 32 * (1 + n_cur), 32 + n_cur * n_bytes
        self.slot_records = ((<int64_t>1 << (unit_depth - 1)) - 2) if unit_depth >= 2 else 0
        _need(self.nodes.shape[0] >= self.slot_records * self.narrow * self.units and
              self.upper.shape[0] >= self.rec * ((<int64_t>2 << (depth - unit_depth)) - 1) and
              self.usernames.shape[0] >= 32 * self.prefix[self.prefix.shape[0] - 1] and
              self.balances.shape[0] >= n_cur * n_bytes * self.prefix[self.prefix.shape[0] - 1],
              "StoredPaths: buffers smaller than the shape")
        if unit_depth < 3 or cache_level >= unit_depth:
            cache_level = unit_depth          # no cache: nothing stored to stop at
        _need(cache_level >= 2 or unit_depth < 3, "StoredPaths: the cache starts at level 2")
        self.cache_level = cache_level
        self.per_unit = ((<int64_t>2 << (unit_depth - cache_level)) - 2) if cache_level < unit_depth else 0
        self.cache_bytes = self.per_unit * self.units * (self.narrow + 1)
        self.cache, self.known, self.cached = NULL, NULL, 0

    def __dealloc__(self):
        free(self.cache)
        free(self.known)

    @staticmethod
    def cache_bytes_for(int64_t units, int unit_depth, int cache_level, int n_cur, int n_bytes):
        """The memory of the verified node cache from cache_level up (0 when there is none)."""
        if unit_depth < 3 or cache_level >= unit_depth:
            return 0
        return ((<int64_t>2 << (unit_depth - cache_level)) - 2) * units * (33 + n_cur * n_bytes)

    cdef inline int64_t _serial(self, uint64_t slot) noexcept nogil:
        cdef int shift = self.mini_depth - self.unit_depth
        return self.units_before[slot >> shift] + <int64_t>(slot & ((<uint64_t>1 << shift) - 1))

    cdef inline const uint8_t *_stored(self, int level, uint64_t node) noexcept nogil:
        """The narrow record of node `node` at unit level 2 <= level < k, in nodes.bin."""
        cdef int k = self.unit_depth
        cdef int64_t j = <int64_t>(node & ((<uint64_t>1 << (k - level)) - 1))
        cdef int64_t offset = ((<int64_t>1 << (k - 1)) - (<int64_t>2 << (k - level)))
        return &self.nodes[(self._serial(node >> (k - level)) * self.slot_records + offset + j)
                           * self.narrow]

    cdef inline int64_t _cached(self, int level, uint64_t node) noexcept nogil:
        """The cache slot of node `node` at unit level c <= level < k."""
        cdef int k = self.unit_depth
        cdef int64_t j = <int64_t>(node & ((<uint64_t>1 << (k - level)) - 1))
        cdef int64_t offset = ((<int64_t>2 << (k - self.cache_level)) - (<int64_t>2 << (k - level)))
        return self._serial(node >> (k - level)) * self.per_unit + offset + j

    cdef inline bint _known(self, int level, uint64_t node) noexcept nogil:
        return (self.known != NULL and self.cache_level <= level < self.unit_depth
                and self.known[self._cached(level, node)] != 0)

    cdef inline const uint8_t *_upper(self, int level, uint64_t node) noexcept nogil:
        cdef int u = self.depth - self.unit_depth
        return &self.upper[self.rec * (((<int64_t>2 << u) - (<int64_t>2 << (u - level))) + <int64_t>node)]

    cdef inline void _best_copy(self, int level, uint64_t node, uint8_t *out) noexcept nogil:
        """The record node `node` at unit level 2 <= level <= k must be, wide: the unit root
        (level k), its verified copy if the cache holds it, else the stored record."""
        if level == self.unit_depth:
            memcpy(out, self._upper(0, node), self.rec)
        elif self._known(level, node):
            _widen_one(self.cache + self._cached(level, node) * self.narrow, out, self.n_cur, self.n_bytes)
        else:
            _widen_one(self._stored(level, node), out, self.n_cur, self.n_bytes)

    cdef int _allocate(self) except -1:
        if self.cache == NULL and self.per_unit:
            self.cache = <uint8_t *>calloc(self.per_unit * self.units, self.narrow)
            self.known = <uint8_t *>calloc(self.per_unit * self.units, 1)
            if self.cache == NULL or self.known == NULL:
                free(self.cache)
                free(self.known)
                self.cache, self.known = NULL, NULL
                raise MemoryError()
        return 0

    cdef void _insert_pair(self, int64_t at, const uint8_t *left, const uint8_t *right) noexcept nogil:
        """Keep a verified sibling pair (wide records) at cache slots at, at + 1: both or
        neither (a verified node always narrows: its sums are at most the root's)."""
        cdef uint8_t pair[2 * (32 + 64 * 32)]
        if self.known[at] and self.known[at + 1]:
            return
        if not (_narrow_one(left, pair, self.n_cur, self.n_bytes) and
                _narrow_one(right, pair + self.narrow, self.n_cur, self.n_bytes)):
            return
        memcpy(self.cache + at * self.narrow, pair, 2 * self.narrow)
        self.cached += 2 - self.known[at] - self.known[at + 1]
        self.known[at] = 1
        self.known[at + 1] = 1

    cdef inline int64_t _slot(self, int64_t serial) noexcept nogil:
        """The upper tree's leaf slot of the real unit `serial`."""
        cdef int64_t low = 0, high = self.counts.shape[0], middle
        while high - low > 1:                 # the last batch whose first unit is <= serial
            middle = (low + high) >> 1
            if self.units_before[middle] <= serial:
                low = middle
            else:
                high = middle
        return (low << (self.mini_depth - self.unit_depth)) + serial - self.units_before[low]

    def warm_pairs(self, int level, int64_t start, int64_t count):
        """A private wide copy of the stored children (at unit level `level`, c <= level < k)
        of parents start .. start + count - 1 at level + 1, parents numbered unit after unit
        (serial * 2^(k - level - 1) + j); warm_insert() keeps those that verify."""
        cdef int k = self.unit_depth, n = self.n_cur, nb = self.n_bytes
        cdef int64_t per = <int64_t>1 << (k - level - 1), q, serial, j, first
        _need(self.cache_level <= level < k and start >= 0 and count >= 0
              and start + count <= self.units * per, "warm_pairs: out of range")
        out_buf = bytearray(2 * self.rec * count)
        cdef uint8_t[::1] out = out_buf
        cdef int64_t offset = (<int64_t>1 << (k - 1)) - (<int64_t>2 << (k - level))
        with nogil:
            for q in range(count):
                serial = (start + q) // per
                j = (start + q) - serial * per
                first = (serial * self.slot_records + offset + 2 * j) * self.narrow
                _widen_one(&self.nodes[first], &out[2 * q * self.rec], n, nb)
                _widen_one(&self.nodes[first + self.narrow], &out[(2 * q + 1) * self.rec], n, nb)
        return out_buf

    def warm_insert(self, int level, int64_t start, int64_t count, const uint8_t[::1] children,
                    const uint8_t[::1] parents):
        """Keep the pairs of warm_pairs() whose hash (parents, hashed from that very copy)
        equals their parent's verified copy (a cached node, or the unit root); returns how
        many pairs did not (damage: their subtrees stay uncached, proofs there find it)."""
        cdef int k = self.unit_depth, n = self.n_cur, nb = self.n_bytes
        cdef int64_t per = <int64_t>1 << (k - level - 1), q, serial, j, at, bad = 0
        cdef int64_t coff = (<int64_t>2 << (k - self.cache_level)) - (<int64_t>2 << (k - level))
        cdef int64_t poff = (<int64_t>2 << (k - self.cache_level)) - (<int64_t>2 << (k - level - 1))
        cdef bint ok
        _need(self.cache_level <= level < k and start >= 0 and count >= 0
              and start + count <= self.units * per and children.shape[0] >= 2 * self.rec * count
              and parents.shape[0] >= self.rec * count, "warm_insert: out of range")
        self._allocate()
        with nogil:
            for q in range(count):
                serial = (start + q) // per
                j = (start + q) - serial * per
                if level + 1 == k:
                    ok = memcmp(&parents[q * self.rec],
                                &self.upper[self.rec * self._slot(serial)], self.rec) == 0
                else:
                    at = serial * self.per_unit + poff + j
                    ok = self.known[at] != 0 and _same_narrow(&parents[q * self.rec],
                                                              self.cache + at * self.narrow, n, nb)
                if not ok:
                    bad += 1
                    continue
                self._insert_pair(serial * self.per_unit + coff + 2 * j, &children[2 * q * self.rec],
                                  &children[(2 * q + 1) * self.rec])
        return bad

    def forget(self):
        """Drop every verified node (they are found again as proofs are verified)."""
        free(self.cache)
        free(self.known)
        self.cache, self.known, self.cached = NULL, NULL, 0


cdef class PathBatch:
    """The paths of a batch of proofs (ascending, distinct global leaf indices of entries).

    leaf_inputs() -> the entries of every group of 2^h leaves the paths start in (h =
    min(k, 2)); start(leaves, level1, top) takes their hashes; then climb() -> (children,
    parents) once (then (None, 0)), and push(hashed parents); failures counts the nodes that
    did not equal what they must be; emit() -> every proof's siblings and entry, the very
    bytes that were hashed, checked or verified copies; remember() caches the verified nodes."""
    cdef StoredPaths t
    cdef readonly int64_t count, groups, failures
    cdef readonly int level
    cdef object indices, group_ids, group_of, users, bals, leaves, level1
    cdef object ids, records
    cdef list level_ids, level_parent, level_children, expected

    def __init__(self, StoredPaths t, indices):
        self.t = t
        self.indices = indices
        cdef const uint64_t[::1] g = indices
        cdef int64_t m = g.shape[0], i, q = 0
        cdef int h = t.group_level
        self.count = m
        self.group_ids = bytearray(8 * m)
        self.group_of = bytearray(8 * m)
        cdef uint64_t[::1] gid = memoryview(self.group_ids).cast("Q")
        cdef int64_t[::1] gof = memoryview(self.group_of).cast("q")
        for i in range(m):
            if q == 0 or gid[q - 1] != g[i] >> h:
                gid[q] = g[i] >> h
                q += 1
            gof[i] = q - 1
        self.groups = q
        self.failures = 0
        self.level = h
        self.level_ids, self.level_parent, self.level_children = [], [], []
        self.expected = None

    def leaf_inputs(self):
        """(username words, wide balance words, leaf count) of every leaf of every group;
        leaves past a batch's end are zero entries (hashed like the padding)."""
        cdef StoredPaths t = self.t
        cdef int h = t.group_level, n = t.n_cur, nb = t.n_bytes, s, c
        cdef int64_t size = <int64_t>1 << h, q = self.groups, i, leaf, b, local, position
        cdef int64_t count = q * size, width = n * nb
        cdef uint64_t g, dmask = (<uint64_t>1 << t.mini_depth) - 1
        self.users = bytearray(32 * count)
        self.bals = bytearray(32 * n * count)
        cdef uint8_t[::1] users = self.users, bals = self.bals
        cdef const uint64_t[::1] gid = memoryview(self.group_ids).cast("Q")
        cdef int64_t batches = t.counts.shape[0]
        with nogil:
            for i in range(q):
                for s in range(size):
                    leaf = i * size + s
                    g = (gid[i] << h) + <uint64_t>s
                    b = <int64_t>(g >> t.mini_depth)
                    local = <int64_t>(g & dmask)
                    if b < batches and local < t.counts[b]:
                        position = t.prefix[b] + local
                        memcpy(&users[32 * leaf], &t.usernames[32 * position], 32)
                        for c in range(n):
                            memcpy(&bals[32 * (n * leaf + c)], &t.balances[width * position + nb * c], nb)
        return self.users, self.bals, count

    def start(self, leaves, level1, top=None):
        """The hashes of the groups: their leaves, their level-1 nodes (None where h < 2) and
        their level-h nodes (the leaves where h = 0), one per group. Where h = 2, top may be
        None: climb() then pairs the level-1 nodes too, each pair checked against its group's
        level-2 record (stored, or the verified copy), in the same kernel call as the rest."""
        _need(top is not None or self.t.group_level == 2, "start: top needed where h < 2")
        self.leaves, self.level1 = leaves, level1
        self.ids, self.records = memoryview(self.group_ids).cast("Q")[:self.groups], top

    cdef object _level2(self):
        """Each group's level-2 record, as its level-1 pair must hash to: the unit root (k = 2),
        the cached copy, or the stored record (wide)."""
        cdef StoredPaths t = self.t
        cdef int rec = t.rec
        cdef const uint64_t[::1] ids = self.ids
        cdef int64_t a = ids.shape[0], i
        out_buf = bytearray(rec * a)
        cdef uint8_t[::1] out = out_buf
        with nogil:
            for i in range(a):
                t._best_copy(2, ids[i], &out[i * rec])
        return out_buf

    def climb(self):
        """Pair every level of every path at once, from level h up to where each path stops
        (its unit root, or a node the cache holds): (children records, parent count), with
        (None, 0) once done. Where start() got no top (h = 2), the first pairs are each group's
        two computed level-1 nodes, which must hash to its level-2 record (stored, cached, or
        the unit root), and the climb goes on from those level-2 records. A pair's children are the path's node (computed at level h, the
        stored record above) and its sibling (cached or stored); push(hashes) then checks each
        parent against what it must be: the stored record of the path's node one level up
        (the child of the next pair), or the verified copy where the path stops. Every
        parent equal means, level by level from the computed node at h, that the path hashes
        up to a verified node: the verdict of a climb one level at a time, with one kernel
        call for all the levels, not one call per level (a path of one proof would leave most
        of the kernel's lanes idle at every level)."""
        cdef StoredPaths t = self.t
        cdef int L = self.level, k = t.unit_depth, rec = t.rec, n = t.n_cur, nb = t.n_bytes
        cdef const uint64_t[::1] ids
        cdef const uint8_t[::1] records
        cdef int64_t a, i, p, failures = 0, total = 0
        cdef int64_t[::1] parent
        cdef uint8_t[::1] children, expect
        cdef uint64_t[::1] pid
        cdef uint64_t x
        cdef int side
        cdef bint checked
        if self.expected is not None:
            return None, 0
        self.expected = []
        checked = self.records is None     # level 2 checked by the level-1 pairs
        pairs = []
        if checked:
            self.records = self._level2()
            pairs.append(self.level1[:2 * rec * self.groups])
            self.expected.append(self.records)
            total = self.groups
        ids, records = self.ids, self.records
        while True:
            a = ids.shape[0]
            parent_buf = bytearray(8 * a)
            parent = memoryview(parent_buf).cast("q")
            for i in range(a):
                parent[i] = 0
                if L == self.level and not checked:   # computed nodes: checked here if they stop
                    if L == k:
                        failures += memcmp(&records[i * rec], t._upper(0, ids[i]), rec) != 0
                        parent[i] = -1
                    elif t._known(L, ids[i]):
                        failures += not _same_narrow(&records[i * rec],
                                                     t.cache + t._cached(L, ids[i]) * t.narrow, n, nb)
                        parent[i] = -1
                elif L == k or t._known(L, ids[i]):
                    parent[i] = -1           # stops: its pair one level down is checked against it
            self.level_ids.append(ids)
            self.level_parent.append(parent_buf)
            if L == k:
                break
            children_buf = bytearray(2 * rec * a)
            expected_buf = bytearray(rec * a)
            parent_ids = bytearray(8 * a)
            children, expect = children_buf, expected_buf
            pid = memoryview(parent_ids).cast("Q")
            p = 0
            with nogil:
                i = 0
                while i < a:
                    if parent[i] < 0:
                        i += 1
                        continue
                    x = ids[i]
                    pid[p] = x >> 1
                    side = <int>(x & 1)
                    memcpy(&children[(2 * p + side) * rec], &records[i * rec], rec)
                    parent[i] = p
                    if side == 0 and i + 1 < a and ids[i + 1] == x + 1 and parent[i + 1] >= 0:
                        memcpy(&children[(2 * p + 1) * rec], &records[(i + 1) * rec], rec)
                        parent[i + 1] = p
                        i += 2
                    else:
                        if t._known(L, x ^ 1):
                            _widen_one(t.cache + t._cached(L, x ^ 1) * t.narrow,
                                       &children[(2 * p + 1 - side) * rec], n, nb)
                        else:
                            _widen_one(t._stored(L, x ^ 1), &children[(2 * p + 1 - side) * rec], n, nb)
                        i += 1
                    t._best_copy(L + 1, x >> 1, &expect[p * rec])    # what the parent must hash to
                    p += 1
            if p == 0:
                break
            self.level_children.append(children_buf[:2 * rec * p])
            self.expected.append(expected_buf[:rec * p])
            total += p
            ids = memoryview(parent_ids).cast("Q")[:p]
            records = expected_buf
            L += 1
        self.ids = ids
        self.failures += failures
        if failures or total == 0:
            return None, 0
        return b"".join(pairs + self.level_children), total

    def push(self, records):
        """The hashes of every pair climb() gave: each must equal what its parent must be."""
        cdef const uint8_t[::1] got = records
        cdef const uint8_t[::1] want = b"".join(self.expected)
        cdef int64_t i, rec = self.t.rec, count = want.shape[0] // rec, failures = 0
        _need(got.shape[0] >= want.shape[0], "push: fewer hashes than pairs")
        for i in range(count):
            failures += memcmp(&got[i * rec], &want[i * rec], rec) != 0
        self.failures += failures

    def emit(self):
        """(siblings, entries): per proof, in index order, its depth sibling records (wide,
        leaf level first) and its entry (username word, then the wide balance words)."""
        cdef StoredPaths t = self.t
        cdef int h = t.group_level, k = t.unit_depth, D = t.depth, rec = t.rec, n = t.n_cur
        cdef int nb = t.n_bytes, L, j
        cdef int64_t m = self.count, i, leaf, size = <int64_t>1 << h, par, at
        cdef const uint64_t[::1] g = self.indices
        cdef const int64_t[::1] gof = memoryview(self.group_of).cast("q")
        siblings_buf = bytearray(rec * D * m)
        entries_buf = bytearray(32 * (1 + n) * m)
        cdef uint8_t[::1] out = siblings_buf, entries = entries_buf
        cdef const uint8_t[::1] users = self.users, bals = self.bals
        cdef const uint8_t[::1] leaves, level1, children
        cdef const int64_t[::1] parent
        pos_buf = bytearray(8 * m)
        cdef int64_t[::1] pos = memoryview(pos_buf).cast("q")
        if h >= 1:
            leaves = self.leaves
        if h >= 2:
            level1 = self.level1
        for i in range(m):
            leaf = gof[i] * size + <int64_t>(g[i] & <uint64_t>(size - 1))
            memcpy(&entries[32 * (1 + n) * i], &users[32 * leaf], 32)
            memcpy(&entries[32 * (1 + n) * i + 32], &bals[32 * n * leaf], 32 * n)
            if h >= 1:
                memcpy(&out[rec * (D * i)], &leaves[rec * (leaf ^ 1)], rec)
            if h >= 2:
                memcpy(&out[rec * (D * i + 1)], &level1[rec * ((leaf >> 1) ^ 1)], rec)
            pos[i] = gof[i]
        for L in range(h, k):
            j = L - h
            parent = memoryview(self.level_parent[j]).cast("q") if j < len(self.level_parent) else None
            children = self.level_children[j] if j < len(self.level_children) else None
            for i in range(m):
                at = rec * (D * i + L)
                if pos[i] >= 0 and parent is not None and parent[pos[i]] >= 0:
                    par = parent[pos[i]]
                    memcpy(&out[at], &children[rec * (2 * par + 1 - <int64_t>((g[i] >> L) & 1))], rec)
                    pos[i] = par
                else:                # this path stopped at a verified node: the rest is cached
                    pos[i] = -1
                    _need(t._known(L, (g[i] >> L) ^ 1), "emit: a stopped path's sibling is not cached")
                    _widen_one(t.cache + t._cached(L, (g[i] >> L) ^ 1) * t.narrow, &out[at], n, nb)
        for L in range(k, D):
            for i in range(m):
                memcpy(&out[rec * (D * i + L)], t._upper(L - k, (g[i] >> L) ^ 1), rec)
        return siblings_buf, entries_buf

    def remember(self):
        """Cache the verified nodes of this batch's paths (call only when failures == 0)."""
        cdef StoredPaths t = self.t
        if self.failures or t.per_unit == 0:
            return
        t._allocate()
        cdef int h = t.group_level, L, j
        cdef int64_t i, p
        cdef const uint64_t[::1] pid
        cdef const uint8_t[::1] children
        cdef uint64_t x
        for j in range(len(self.level_children)):
            L = h + j
            if L < t.cache_level:
                continue
            children = self.level_children[j]
            pid = self.level_ids[j + 1] if j + 1 < len(self.level_ids) else self.ids
            for p in range(pid.shape[0]):
                x = pid[p] << 1
                t._insert_pair(t._cached(L, x), &children[2 * p * t.rec], &children[(2 * p + 1) * t.rec])


# ---- proofs: JSON pieces ------------------------------------------------------------------

cdef const char *_HEX = b"0123456789abcdef"


cdef inline void _hex_word(const uint8_t *word, char *out) noexcept nogil:
    """A little-endian field word as the spec's JSON writes it: 0x + 64 hex digits (66 bytes)."""
    cdef int i
    out[0] = 48
    out[1] = 120
    for i in range(32):
        out[2 + 2 * i] = _HEX[word[31 - i] >> 4]
        out[3 + 2 * i] = _HEX[word[31 - i] & 15]


cdef int _decimal(const uint8_t *word, char *out) noexcept nogil:
    """A little-endian 256-bit word in decimal, no leading zeros; returns the length (<= 78)."""
    cdef uint32_t limbs[8]
    cdef char digits[80]
    cdef int i, top = 7, length = 0, j
    cdef uint64_t rest, value
    memcpy(limbs, word, 32)            # little-endian hosts only, as _load64
    while top >= 0 and limbs[top] == 0:
        top -= 1
    if top < 0:
        out[0] = 48
        return 1
    while top >= 0:
        rest = 0
        i = top
        while i >= 0:
            value = (rest << 32) | limbs[i]
            limbs[i] = <uint32_t>(value // 1000000000)
            rest = value % 1000000000
            i -= 1
        while top >= 0 and limbs[top] == 0:
            top -= 1
        for j in range(9):
            digits[length] = <char>(48 + rest % 10)
            rest //= 10
            length += 1
            if top < 0 and rest == 0:
                break
    for i in range(length):
        out[i] = digits[length - 1 - i]
    return length


def decimals(const uint8_t[::1] words, int64_t start, int count):
    """count little-endian words from words[start] -> their decimal strings."""
    _need(start >= 0 and count >= 0 and words.shape[0] >= start + 32 * count, "decimals: short buffer")
    cdef char buf[80]
    cdef int i, length
    out = []
    for i in range(count):
        length = _decimal(&words[start + 32 * i], buf)
        out.append(buf[:length].decode("ascii"))
    return out


def path_nodes(const uint8_t[::1] records, int64_t start, int count, int n_cur):
    """count wide records from records[start] -> [{"hash": "0x..", "balances": ["0x..", ...]}]."""
    cdef int64_t rec = 32 * (1 + n_cur), at
    _need(n_cur >= 1 and start >= 0 and count >= 0 and records.shape[0] >= start + rec * count,
          "path_nodes: short buffer")
    cdef char buf[66]
    cdef int i, c
    out = []
    for i in range(count):
        at = start + i * rec
        _hex_word(&records[at], buf)
        node_hash = buf[:66].decode("ascii")
        balances = []
        for c in range(n_cur):
            _hex_word(&records[at + 32 * (1 + c)], buf)
            balances.append(buf[:66].decode("ascii"))
        out.append({"hash": node_hash, "balances": balances})
    return out


def proof_lines(const uint8_t[::1] siblings, const uint8_t[::1] entries, indices, order,
                list usernames, int depth, int n_cur, bytes head, bytes tail):
    """The JSON lines (json.dumps(proof, separators=(",", ":")) + newline, byte for byte) of
    the proofs order[0], order[1], ... of a batch: `siblings` and `entries` as PathBatch.emit
    gives them, `indices` their global indices, `usernames` their JSON strings (bytes, quoted
    and escaped), head = b'{"layout":...,"n_currencies":N,"entry":{"username":' and
    tail = b'],"root":ROOT}' + newline."""
    cdef const uint64_t[::1] g = indices
    cdef const int64_t[::1] which = order
    cdef int64_t rec = 32 * (1 + n_cur), entry = 32 * (1 + n_cur), lines = which.shape[0], i, p
    cdef int64_t size = 0, at = 0, proofs = g.shape[0]
    _need(n_cur >= 1 and depth >= 0 and len(usernames) == proofs
          and siblings.shape[0] >= rec * depth * proofs and entries.shape[0] >= entry * proofs,
          "proof_lines: buffers do not match the proofs")
    for i in range(lines):
        _need(0 <= which[i] < proofs, "proof_lines: order out of range")
        size += len(<bytes>usernames[which[i]])
    size += lines * (len(head) + len(tail) + 64 + n_cur * 82 + depth * (30 + 69 * (1 + n_cur)))
    out_buf = bytearray(size)
    cdef char *out = out_buf
    cdef const char *piece
    cdef int L, c, length
    cdef int64_t base, node
    cdef uint64_t index
    cdef char number[24]
    for i in range(lines):
        p = which[i]
        index = g[p]
        memcpy(out + at, <const char *>head, len(head))
        at += len(head)
        piece = usernames[p]
        length = len(<bytes>usernames[p])
        memcpy(out + at, piece, length)
        at += length
        memcpy(out + at, b',"balances":[', 13)
        at += 13
        for c in range(n_cur):
            if c:
                out[at] = 44
                at += 1
            out[at] = 34
            at += 1
            at += _decimal(&entries[entry * p + 32 * (1 + c)], out + at)
            out[at] = 34
            at += 1
        memcpy(out + at, b']},"index":', 11)
        at += 11
        length = 0
        while True:
            number[length] = <char>(48 + index % 10)
            index //= 10
            length += 1
            if index == 0:
                break
        for c in range(length):
            out[at + c] = number[length - 1 - c]
        at += length
        memcpy(out + at, b',"path":[', 9)
        at += 9
        base = rec * depth * p
        for L in range(depth):
            node = base + rec * L
            if L:
                out[at] = 44
                at += 1
            memcpy(out + at, b'{"hash":"', 9)
            at += 9
            _hex_word(&siblings[node], out + at)
            at += 66
            memcpy(out + at, b'","balances":[', 14)
            at += 14
            for c in range(n_cur):
                if c:
                    out[at] = 44
                    at += 1
                out[at] = 34
                _hex_word(&siblings[node + 32 * (1 + c)], out + at + 1)
                out[at + 67] = 34
                at += 68
            memcpy(out + at, b']}', 2)
            at += 2
        memcpy(out + at, b'],"path_indices":[', 18)
        at += 18
        index = g[p]
        for L in range(depth):
            if L:
                out[at] = 44
                at += 1
            out[at] = <char>(48 + ((index >> L) & 1))
            at += 1
        memcpy(out + at, <const char *>tail, len(tail))
        at += len(tail)
    return bytes(out_buf[:at])


def find_positions(const uint64_t[::1] keys, const uint64_t[::1] positions,
                   const uint8_t[::1] usernames, const uint8_t[::1] words,
                   const uint64_t[::1] fingerprints, int64_t[::1] out):
    """The entry position of each username word, by the index (keys ascending, positions
    beside them) and confirmed against the stored username words: -1 when its fingerprint is
    not there, -2 when it names only entries (or positions) with another username."""
    cdef int64_t n = keys.shape[0], count = fingerprints.shape[0], entries = usernames.shape[0] // 32
    cdef int64_t i, low
    cdef uint64_t p, key
    _need(positions.shape[0] == n and words.shape[0] >= 32 * count and out.shape[0] >= count,
          "find_positions: buffer sizes do not match")
    with nogil:
        for i in range(count):
            key = fingerprints[i]
            low = _lower_bound(&keys[0], n, key) if n else 0
            out[i] = -1
            while low < n and keys[low] == key:
                p = positions[low]
                if p < <uint64_t>entries and memcmp(&usernames[32 * p], &words[32 * i], 32) == 0:
                    out[i] = <int64_t>p
                    break
                out[i] = -2
                low += 1
