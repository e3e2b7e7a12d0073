# cython: boundscheck=False, wraparound=False, cdivision=True, language_level=3
"""Sorting entries by username bytes, in C: the in-memory sort of a batch of entries and the
k-way merge of sorted runs. No I/O, no object per entry: the caller (mst/sort.py) moves the
run bytes between files and these buffers.

A record, in a batch and in a run alike:

    u32 name length | u64 input position | 32-byte username word | W balance bytes | name

all little-endian. The order is the names' bytes (memcmp over the common length, then the
shorter first), then the input position, so no two records ever compare equal and every
merge of the same records gives the same sequence.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset
from cpython.bytearray cimport PyByteArray_AS_STRING

cdef extern from *:
    uint64_t __builtin_bswap64(uint64_t) nogil

DONE, NEED, FULL = 0, 1, 2          # what Merger.run says
COLUMNS, RECORDS, NOTHING = 0, 1, 2  # what a Merger outputs

cdef enum:
    _DONE = 0
    _NEED = 1
    _FULL = 2
    _GROW = 3         # an output buffer is too small for one record: grown with the GIL held
    _CORRUPT = 4
    _NOMEM = 5
    _HEAD = 12
    _FIXED = 44       # _HEAD + the word
    RADIX_MIN = 96    # below this a merge sort beats eight histogram passes
    MAX_LEVEL = 32    # 8-byte key levels before a long shared prefix falls back to comparisons
    SMALL = 12        # insertion sort below this
    IN_CACHE = 1 << 15   # pairs (512 KiB) that the lower-byte passes sort within the L2 cache
    _COLUMNS = 0      # COLUMNS..NOTHING, for the nogil loop
    _RECORDS = 1
    _NOTHING = 2


class SortError(ValueError):
    """Buffers that do not hold what the counts say, or a run that is not whole."""


cdef size_t MAX_BATCH = 0xFFFFFFFF   # pairs index entries with a u32


cdef inline uint8_t *_bytes_of(bytearray buf):
    return <uint8_t *>PyByteArray_AS_STRING(buf)


ctypedef struct Pair:
    uint64_t key       # 8 bytes of the name from the current level's offset, big-endian
    uint32_t idx       # entry index in the batch: input order, so the tie-break
    uint32_t len


cdef inline uint32_t _load32(const uint8_t *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t _load64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint64_t _key(const uint8_t *name, uint32_t length, size_t start) noexcept nogil:
    """Bytes start..start+8 of the name as a big-endian integer, zero-padded: ordering by it
    agrees with the name order whenever the keys differ (see _cmp)."""
    cdef uint64_t v = 0
    cdef size_t rest
    if length <= start:
        return 0
    rest = length - start
    memcpy(&v, name + start, 8 if rest >= 8 else rest)
    return __builtin_bswap64(v)


cdef inline int _names_cmp(const uint8_t *a, uint32_t la, const uint8_t *b, uint32_t lb,
                           size_t start) noexcept nogil:
    """Name order, for names known to agree on their first `start` bytes (where both have them)."""
    cdef size_t common = la if la < lb else lb
    cdef int c
    if common > start:
        c = memcmp(a + start, b + start, common - start)
        if c:
            return c
    if la != lb:
        return -1 if la < lb else 1
    return 0


# ---- the in-memory sort --------------------------------------------------------------------

cdef struct Ctx:
    const uint8_t *arena
    const uint64_t *offsets
    size_t name_at       # a record's name offset: _FIXED + W


cdef inline const uint8_t *_name(const Ctx *c, uint32_t idx) noexcept nogil:
    return c.arena + c.offsets[idx] + c.name_at


cdef inline int _cmp(const Ctx *c, const Pair *a, const Pair *b, size_t level) noexcept nogil:
    # both keys hold bytes 8*level.. of names that agree before: beyond them, compare the rest
    cdef int r
    if a.key != b.key:
        return -1 if a.key < b.key else 1
    r = _names_cmp(_name(c, a.idx), a.len, _name(c, b.idx), b.len, 8 * (level + 1))
    if r:
        return r
    return -1 if a.idx < b.idx else (1 if a.idx > b.idx else 0)


cdef void _merge_sort(const Ctx *c, Pair *a, Pair *t, size_t n, size_t level) noexcept nogil:
    """Stable, by the full order; t: n pairs of scratch."""
    cdef size_t i, j, k, half
    cdef Pair x
    if n <= SMALL:
        for i in range(1, n):
            x = a[i]
            j = i
            while j > 0 and _cmp(c, &x, &a[j - 1], level) < 0:
                a[j] = a[j - 1]
                j -= 1
            a[j] = x
        return
    half = n // 2
    _merge_sort(c, a, t, half, level)
    _merge_sort(c, a + half, t + half, n - half, level)
    if _cmp(c, &a[half - 1], &a[half], level) <= 0:
        return
    memcpy(t, a, n * sizeof(Pair))
    i, j, k = 0, half, 0
    while i < half and j < n:
        if _cmp(c, &t[j], &t[i], level) < 0:
            a[k] = t[j]
            j += 1
        else:
            a[k] = t[i]
            i += 1
        k += 1
    while i < half:
        a[k] = t[i]
        i += 1
        k += 1
    while j < n:
        a[k] = t[j]
        j += 1
        k += 1


cdef void _radix(Pair *a, Pair *t, size_t n) noexcept nogil:
    """Stable radix sort by key; a byte that is the same in every key costs no pass (most of
    the high bytes of usernames with a common prefix). Large inputs get one pass on their
    highest varying byte first, so that the passes on the lower bytes run in cache."""
    cdef size_t counts[8][256]
    cdef size_t pos[256]
    cdef size_t i, total, s
    cdef int b, d, high = -1
    cdef uint64_t key
    cdef Pair *src = a
    cdef Pair *dst = t
    cdef Pair *swap
    memset(counts, 0, sizeof(counts))
    for i in range(n):
        key = a[i].key
        for b in range(8):
            counts[b][(key >> (8 * b)) & 255] += 1
    for b in range(7, -1, -1):
        if counts[b][(a[0].key >> (8 * b)) & 255] != n:
            high = b
            break
    if high < 0:
        return
    if n > IN_CACHE and high > 0:
        total = 0
        for d in range(256):
            pos[d] = total
            total += counts[high][d]
        for i in range(n):
            d = <int>((a[i].key >> (8 * high)) & 255)
            t[pos[d]] = a[i]
            pos[d] += 1
        memcpy(a, t, n * sizeof(Pair))
        total = 0
        for d in range(256):
            s = counts[high][d]
            if s > 1:
                _radix(a + total, t + total, s)
            total += s
        return
    for b in range(high + 1):
        if counts[b][(a[0].key >> (8 * b)) & 255] == n:
            continue
        total = 0
        for d in range(256):
            s = counts[b][d]
            pos[d] = total
            total += s
        for i in range(n):
            d = <int>((src[i].key >> (8 * b)) & 255)
            dst[pos[d]] = src[i]
            pos[d] += 1
        swap = src
        src = dst
        dst = swap
    if src != a:
        memcpy(a, src, n * sizeof(Pair))


cdef void _sort_group(const Ctx *c, Pair *a, Pair *t, size_t n, size_t level) noexcept nogil:
    """Sort pairs whose names agree on their first 8*level bytes (zero-padded), keys loaded for
    this level, idx ascending: by key, then each run of equal keys one level deeper."""
    cdef size_t i, j, m, start
    cdef uint32_t longest
    cdef bint same_len
    if n < 2:
        return
    if n < RADIX_MIN or level >= MAX_LEVEL:
        _merge_sort(c, a, t, n, level)
        return
    _radix(a, t, n)
    start = 8 * (level + 1)
    i = 0
    while i < n:
        j = i + 1
        longest = a[i].len
        same_len = True
        while j < n and a[j].key == a[i].key:
            if a[j].len != a[i].len:
                same_len = False
            if a[j].len > longest:
                longest = a[j].len
            j += 1
        if j - i > 1:
            if longest <= start:
                # the padded names are equal: only a trailing NUL can tell them apart
                if not same_len:
                    _merge_sort(c, a + i, t + i, j - i, level)
            else:
                for m in range(i, j):
                    a[m].key = _key(_name(c, a[m].idx), a[m].len, start)
                _sort_group(c, a + i, t + i, j - i, level + 1)
        i = j


cdef bint _grow(void **p, size_t size) noexcept:
    cdef void *grown = realloc(p[0], size)
    if grown == NULL:
        return False
    p[0] = grown
    return True


cdef class Batch:
    """Entries in input order, sorted once full into one run.

    budget: the bytes it may hold: the records plus 40 bytes an entry for the sort (the
    pairs, their scratch and the record offsets). The arena is reserved at that size and its
    pages are touched only as records come."""
    cdef uint8_t *arena
    cdef size_t used, cap, n, budget, width
    cdef uint64_t *offsets
    cdef Pair *pairs
    cdef Pair *scratch
    cdef size_t sort_cap           # entries the three arrays above have room for
    cdef bint is_sorted
    cdef size_t cursor, partial
    cdef public uint64_t origin      # input position of the next entry added
    cdef public size_t consumed      # name bytes of the entries the last add took

    def __cinit__(self, size_t width, size_t budget, uint64_t origin=0):
        self.width, self.budget, self.origin = width, budget, origin

    def __dealloc__(self):
        self.release()

    @property
    def count(self):
        return self.n

    @property
    def size(self):
        """Bytes held (records and their share of the sort)."""
        return self.used + 40 * self.n

    def release(self):
        """Free everything; the batch can still take entries afterwards."""
        free(self.arena)
        free(self.offsets)
        free(self.pairs)
        free(self.scratch)
        self.arena, self.offsets, self.pairs, self.scratch = NULL, NULL, NULL, NULL
        self.cap = self.sort_cap = 0
        self.reset()

    def reset(self):
        """Empty it (its run has been written), keeping its memory: fresh pages cost more to
        fault in than the sort takes to use them."""
        self.used = self.n = self.cursor = self.partial = 0
        self.is_sorted = False

    def add(self, const uint8_t[::1] words, const uint8_t[::1] balances, const uint8_t[::1] names,
            const uint8_t[::1] lengths, int64_t count):
        """Take entries until the budget is full: returns how many (consumed: their name
        bytes). Always takes one entry when empty, whatever its size."""
        if count < 0 or words.shape[0] < 32 * count or balances.shape[0] < <int64_t>self.width * count \
                or lengths.shape[0] < 4 * count:
            raise SortError("add: buffer sizes do not match the count")
        if self.is_sorted:
            raise SortError("add: the batch is sorted already")
        cdef int64_t i, taken = 0
        cdef size_t pos = 0, total_names = names.shape[0], rec, want
        cdef uint32_t length
        cdef uint8_t *grown
        cdef int error = 0
        cdef const uint8_t *w = &words[0] if words.shape[0] else NULL
        cdef const uint8_t *bal = &balances[0] if balances.shape[0] else NULL
        cdef const uint8_t *nm = &names[0] if total_names else NULL
        cdef const uint8_t *ln = &lengths[0] if lengths.shape[0] else NULL
        with nogil:
            for i in range(count):
                length = _load32(ln + 4 * i)
                if length > total_names - pos:
                    error = 1
                    break
                rec = _FIXED + self.width + length
                if self.n and (self.used + rec + 40 * (self.n + 1) > self.budget
                               or self.n >= MAX_BATCH):
                    break
                if self.used + rec > self.cap:
                    want = self.budget if self.budget > self.used + rec else self.used + rec
                    grown = <uint8_t *>realloc(self.arena, want)
                    if grown == NULL:
                        error = 2
                        break
                    self.arena, self.cap = grown, want
                memcpy(self.arena + self.used, &length, 4)
                memcpy(self.arena + self.used + 4, &self.origin, 8)
                memcpy(self.arena + self.used + _HEAD, w + 32 * i, 32)
                memcpy(self.arena + self.used + _FIXED, bal + self.width * i, self.width)
                memcpy(self.arena + self.used + _FIXED + self.width, nm + pos, length)
                self.used += rec
                self.n += 1
                self.origin += 1
                pos += length
                taken += 1
        if error == 1:
            raise SortError("add: the names are shorter than their lengths say")
        if error == 2:
            raise MemoryError()
        self.consumed = pos
        return taken

    def sort(self):
        """Sort the entries (once); serialize then writes them in order."""
        if self.is_sorted:
            return
        cdef size_t n = self.n, i, off = 0
        cdef Ctx c
        if n > self.sort_cap or self.pairs == NULL:
            if not (_grow(<void **>&self.offsets, 8 * (n + 1))
                    and _grow(<void **>&self.pairs, sizeof(Pair) * (n + 1))
                    and _grow(<void **>&self.scratch, sizeof(Pair) * (n + 1))):
                raise MemoryError()
            self.sort_cap = n
        c.arena, c.offsets, c.name_at = self.arena, self.offsets, _FIXED + self.width
        with nogil:
            for i in range(n):
                self.offsets[i] = off
                self.pairs[i].idx = <uint32_t>i
                self.pairs[i].len = _load32(self.arena + off)
                self.pairs[i].key = _key(self.arena + off + c.name_at, self.pairs[i].len, 0)
                off += _FIXED + self.width + self.pairs[i].len
            _sort_group(&c, self.pairs, self.scratch, n, 0)
        self.is_sorted = True
        self.cursor = self.partial = 0

    def serialize(self, uint8_t[::1] out):
        """The sorted records, continuing where the last call stopped: fills `out` (records
        may straddle calls) and returns the bytes written, 0 once all are."""
        if not self.is_sorted:
            raise SortError("serialize: sort first")
        cdef size_t room = out.shape[0], written = 0, rec, take, off
        cdef uint8_t *dst = &out[0] if room else NULL
        with nogil:
            while self.cursor < self.n and written < room:
                off = self.offsets[self.pairs[self.cursor].idx]
                rec = _FIXED + self.width + self.pairs[self.cursor].len
                take = rec - self.partial
                if take > room - written:
                    take = room - written
                memcpy(dst + written, self.arena + off + self.partial, take)
                written += take
                self.partial += take
                if self.partial == rec:
                    self.partial = 0
                    self.cursor += 1
        return written


# ---- the merge -------------------------------------------------------------------------------

cdef class Merger:
    """The k-way merge of sorted runs (a binary heap of their heads), each read through its own
    buffer: run() stops with NEED when run `need` has no whole record left (the caller fills
    fill_view(need) and calls filled), with FULL when the output is full, DONE at the end.

    output: COLUMNS (segments of at most `segment` entries, see segment()), RECORDS (chunks of
    records, see chunk(), for an intermediate pass) or NOTHING (a duplicate check alone).
    duplicate: (first, later, name) of equal adjacent names with the smallest later input
    position, once run() said DONE (with check_duplicates)."""
    cdef int k, heap_n, init, pending
    cdef public int need
    cdef size_t width, name_at
    cdef list inputs
    cdef uint8_t **data
    cdef size_t *cap
    cdef size_t *start
    cdef size_t *end
    cdef char *eof
    cdef uint64_t *key
    cdef uint32_t *length
    cdef uint64_t *origin
    cdef int *heap
    cdef int output
    cdef bint check, emitted
    # COLUMNS
    cdef size_t seg_max, out_n, names_used, names_cap
    cdef object words_out, balances_out, names_out, lengths_out, origins_out
    cdef uint8_t *words_p
    cdef uint8_t *balances_p
    cdef uint8_t *names_p
    cdef uint8_t *lengths_p
    cdef uint8_t *origins_p
    # RECORDS
    cdef size_t chunk_used, chunk_cap
    cdef object chunk_out
    cdef uint8_t *chunk_p
    cdef size_t grow_to
    # duplicates
    cdef uint8_t *prev
    cdef size_t prev_cap
    cdef uint32_t prev_len
    cdef bint has_prev
    cdef uint64_t group_first, group_size
    cdef int64_t best_first, best_later
    cdef uint8_t *best_name
    cdef uint32_t best_len

    def __cinit__(self, int k, size_t width, int output=COLUMNS, size_t segment=65536,
                  size_t read_bytes=1 << 20, size_t chunk_bytes=1 << 20, bint check_duplicates=True):
        if k < 1 or output not in (COLUMNS, RECORDS, NOTHING) or (output == COLUMNS and segment < 1):
            raise SortError("merger: bad arguments")
        cdef int r
        self.k, self.width, self.name_at, self.output = k, width, _FIXED + width, output
        self.check, self.seg_max = check_duplicates, segment
        read_bytes = max(read_bytes, 4096)
        self.inputs = [bytearray(read_bytes) for r in range(k)]
        self.data = <uint8_t **>malloc(k * sizeof(uint8_t *))
        self.cap = <size_t *>malloc(k * sizeof(size_t))
        self.start = <size_t *>malloc(k * sizeof(size_t))
        self.end = <size_t *>malloc(k * sizeof(size_t))
        self.eof = <char *>malloc(k)
        self.key = <uint64_t *>malloc(k * sizeof(uint64_t))
        self.length = <uint32_t *>malloc(k * sizeof(uint32_t))
        self.origin = <uint64_t *>malloc(k * sizeof(uint64_t))
        self.heap = <int *>malloc(k * sizeof(int))
        if (self.data == NULL or self.cap == NULL or self.start == NULL or self.end == NULL
                or self.eof == NULL or self.key == NULL or self.length == NULL
                or self.origin == NULL or self.heap == NULL):
            raise MemoryError()
        for r in range(k):
            self._set_input(r, self.inputs[r])
            self.start[r] = self.end[r] = 0
            self.eof[r] = 0
        self.heap_n, self.init, self.pending, self.need = 0, 0, -1, -1
        self.best_first = self.best_later = -1
        if output == COLUMNS:
            self.words_out = bytearray(32 * segment)
            self.balances_out = bytearray(width * segment + 1)
            self.lengths_out = bytearray(4 * segment)
            self.origins_out = bytearray(8 * segment)
            self.words_p = _bytes_of(self.words_out)
            self.balances_p = _bytes_of(self.balances_out)
            self.lengths_p = _bytes_of(self.lengths_out)
            self.origins_p = _bytes_of(self.origins_out)
            self._set_names(bytearray(max(16 * segment, 4096)), 0)
        elif output == RECORDS:
            self._set_chunk(bytearray(max(chunk_bytes, 4096)), 0)

    def __dealloc__(self):
        free(self.data)
        free(self.cap)
        free(self.start)
        free(self.end)
        free(self.eof)
        free(self.key)
        free(self.length)
        free(self.origin)
        free(self.heap)
        free(self.prev)
        free(self.best_name)

    cdef _set_input(self, int r, bytearray buf):
        self.inputs[r] = buf
        self.data[r] = _bytes_of(buf)
        self.cap[r] = len(buf)

    cdef _set_names(self, bytearray buf, size_t keep):
        if keep:
            buf[:keep] = self.names_out[:keep]
        self.names_out, self.names_p, self.names_cap = buf, _bytes_of(buf), len(buf)

    cdef _set_chunk(self, bytearray buf, size_t keep):
        if keep:
            buf[:keep] = self.chunk_out[:keep]
        self.chunk_out, self.chunk_p, self.chunk_cap = buf, _bytes_of(buf), len(buf)

    # ---- input ----

    def fill_view(self, int r):
        """Where the next bytes of run r go (its unread bytes moved to the front first)."""
        if not 0 <= r < self.k:
            raise SortError("fill_view: no such run")
        cdef size_t have = self.end[r] - self.start[r], want = _HEAD
        if self.start[r]:
            memmove(self.data[r], self.data[r] + self.start[r], have)
            self.start[r], self.end[r] = 0, have
        if have >= _HEAD:
            want = self.name_at + _load32(self.data[r])
        if want > self.cap[r] or have == self.cap[r]:
            grown = bytearray(max(want, 2 * self.cap[r]))
            grown[:have] = self.inputs[r][:have]
            self._set_input(r, grown)
        return memoryview(self.inputs[r])[self.end[r]:]

    def filled(self, int r, size_t n):
        """n bytes were written at fill_view(r); 0: run r has no more."""
        if not 0 <= r < self.k or n > self.cap[r] - self.end[r]:
            raise SortError("filled: bad run or count")
        if n == 0:
            self.eof[r] = 1
        self.end[r] += n

    cdef inline bint _ready(self, int r) noexcept nogil:
        """Whether run r's next record is whole in its buffer (then its head is cached)."""
        cdef size_t have = self.end[r] - self.start[r]
        cdef const uint8_t *p = self.data[r] + self.start[r]
        cdef uint32_t n
        if have < _HEAD:
            return False
        n = _load32(p)
        if have < self.name_at + n:
            return False
        self.length[r] = n
        self.origin[r] = _load64(p + 4)
        self.key[r] = _key(p + self.name_at, n, 0)
        return True

    cdef inline bint _less(self, int a, int b) noexcept nogil:
        cdef int c
        if self.key[a] != self.key[b]:
            return self.key[a] < self.key[b]
        c = _names_cmp(self.data[a] + self.start[a] + self.name_at, self.length[a],
                       self.data[b] + self.start[b] + self.name_at, self.length[b], 8)
        if c:
            return c < 0
        return self.origin[a] < self.origin[b]

    cdef void _sift_up(self, int i) noexcept nogil:
        cdef int parent, x = self.heap[i]
        while i > 0:
            parent = (i - 1) >> 1
            if not self._less(x, self.heap[parent]):
                break
            self.heap[i] = self.heap[parent]
            i = parent
        self.heap[i] = x

    cdef void _sift_down(self, int i) noexcept nogil:
        cdef int child, x = self.heap[i], n = self.heap_n
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and self._less(self.heap[child + 1], self.heap[child]):
                child += 1
            if not self._less(self.heap[child], x):
                break
            self.heap[i] = self.heap[child]
            i = child
        self.heap[i] = x

    cdef int _settle(self, int r) noexcept nogil:
        """Run r just lost its head (it is heap[0], or not in the heap yet): put it back with
        its next record, drop it at its end, or ask for more of it."""
        if self._ready(r):
            if self.pending < 0:      # a new run
                self.heap[self.heap_n] = r
                self.heap_n += 1
                self._sift_up(self.heap_n - 1)
            else:
                self._sift_down(0)
            return _DONE
        if not self.eof[r]:
            self.need = r
            return _NEED
        if self.end[r] != self.start[r]:
            self.need = r
            return _CORRUPT
        if self.pending >= 0:
            self.heap_n -= 1
            if self.heap_n:
                self.heap[0] = self.heap[self.heap_n]
                self._sift_down(0)
        return _DONE

    # ---- the loop ----

    cdef int _run(self) noexcept nogil:
        cdef int r, status
        cdef uint32_t n
        cdef uint64_t o
        cdef size_t rec
        cdef const uint8_t *p
        cdef const uint8_t *name
        cdef uint8_t *grown
        while self.init < self.k:
            status = self._settle(self.init)
            if status != _DONE:
                return status
            self.init += 1
        if self.pending >= 0:
            status = self._settle(self.pending)
            if status != _DONE:
                return status
            self.pending = -1
        while self.heap_n:
            r = self.heap[0]
            n, o = self.length[r], self.origin[r]
            p = self.data[r] + self.start[r]
            name = p + self.name_at
            rec = self.name_at + n
            if self.output == _COLUMNS:
                if self.out_n == self.seg_max:
                    return _FULL
                if self.names_used + n > self.names_cap:
                    self.grow_to = self.names_used + n
                    return _GROW
            elif self.output == _RECORDS and self.chunk_used + rec > self.chunk_cap:
                if self.chunk_used:
                    return _FULL
                self.grow_to = rec
                return _GROW
            if self.check:
                if self.has_prev and n == self.prev_len and memcmp(name, self.prev, n) == 0:
                    self.group_size += 1
                    if self.group_size == 2 and (self.best_later < 0 or <int64_t>o < self.best_later):
                        grown = <uint8_t *>realloc(self.best_name, n + 1)
                        if grown == NULL:
                            return _NOMEM
                        memcpy(grown, name, n)
                        self.best_name, self.best_len = grown, n
                        self.best_first, self.best_later = <int64_t>self.group_first, <int64_t>o
                else:
                    if n > self.prev_cap:
                        grown = <uint8_t *>realloc(self.prev, n)
                        if grown == NULL:
                            return _NOMEM
                        self.prev, self.prev_cap = grown, n
                    memcpy(self.prev, name, n)
                    self.prev_len, self.has_prev = n, True
                    self.group_first, self.group_size = o, 1
            if self.output == _COLUMNS:
                memcpy(self.words_p + 32 * self.out_n, p + _HEAD, 32)
                memcpy(self.balances_p + self.width * self.out_n, p + _FIXED, self.width)
                memcpy(self.names_p + self.names_used, name, n)
                memcpy(self.lengths_p + 4 * self.out_n, &n, 4)
                memcpy(self.origins_p + 8 * self.out_n, &o, 8)
                self.names_used += n
                self.out_n += 1
            elif self.output == _RECORDS:
                memcpy(self.chunk_p + self.chunk_used, p, rec)
                self.chunk_used += rec
            self.start[r] += rec
            self.pending = r
            status = self._settle(r)
            if status != _DONE:
                return status
            self.pending = -1
        return _DONE

    def run(self):
        """Merge until NEED, FULL or DONE (the output is then the last, maybe empty, one)."""
        cdef int status
        if self.emitted:
            self.out_n = self.names_used = self.chunk_used = 0
            self.emitted = False
        while True:
            with nogil:
                status = self._run()
            if status == _GROW:
                if self.output == COLUMNS:
                    self._set_names(bytearray(max(self.grow_to, 2 * self.names_cap)), self.names_used)
                else:
                    self._set_chunk(bytearray(max(self.grow_to, 2 * self.chunk_cap)), 0)
                continue
            if status == _CORRUPT:
                raise SortError(f"run {self.need} ends inside a record")
            if status == _NOMEM:
                raise MemoryError()
            if status != _NEED:
                self.emitted = True
            return status

    def segment(self):
        """(usernames, balances, count, names, lengths, origins) of the output so far: views
        that hold until the next run()."""
        n = self.out_n
        return (memoryview(self.words_out)[:32 * n], memoryview(self.balances_out)[:self.width * n],
                n, memoryview(self.names_out)[:self.names_used], memoryview(self.lengths_out)[:4 * n],
                memoryview(self.origins_out)[:8 * n])

    def chunk(self):
        """The records output so far: a view that holds until the next run()."""
        return memoryview(self.chunk_out)[:self.chunk_used]

    @property
    def duplicate(self):
        if self.best_later < 0:
            return None
        return self.best_first, self.best_later, self.best_name[:self.best_len]
