# cython: boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True, language_level=3
"""The entry CSV reader's fast path, in C: bytes in, packed entries out, GIL released.

The caller (mst/csv_reader.py) reads the file and hands over buffers; this module does no I/O
and knows no error messages. It parses the lines it can be sure about and hands every other
line back:

- an entry line the C loop accepts: ``username,digits,...,digits`` with exactly the header's
  columns (Summa v1.1), or ``username;digits,...,digits`` with exactly the job's number of
  balances (Summa v1, ``v1=True``); the username well-formed UTF-8 without control characters
  (C0 or DEL), '"' or the separator that ends it (',' in v1.1, ';' in v1), 1..32 bytes under
  the ``bytes`` encoding (32 bytes only if their big-endian value is below the field modulus P),
  1..NAME_MAX_KECCAK bytes under ``keccak256``; each balance 1..80 ASCII digits whose value is
  below 2^(8 N_BYTES), ended by LF, CRLF or the end of the file. Its username goes out as a
  32-byte little-endian word: the UTF-8 bytes read big-endian (``bytes``), or their Keccak-256
  digest read big-endian and reduced mod P (``keccak256``, computed here, in C); its balances
  as N_BYTES bytes each, little-endian; with ``names=True`` its raw username bytes are kept too
  (concatenated, with their lengths as uint32 little-endian). Under ``keccak256`` the line loop
  only keeps the username's bytes (as for ``names``) and take() hashes the whole segment in one
  pass, GIL released: 8 usernames at a time with AVX-512F where the CPU has it
  (keccak_avx512.h), one at a time otherwise (keccak.h); set_keccak_backend() or the environment
  (SUMMA_KECCAK, SUMMA_KERNEL=portable) forces the portable code;
- SLOW: any other line without '"' or CR (but the CR of its CRLF): the caller decides it with
  the csv module (a longer username, a bad field, an error to name);
- SWITCH: a line with '"' or a lone CR, where the csv module's quoting and line rules apply:
  the caller reads the rest of the file with the csv module, from this line on;
- empty lines (LF or CRLF alone) are skipped; ``line`` counts every LF.

Nothing here creates a Python object per line.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset

import os

from .params import P


cdef extern from "keccak.h" nogil:
    void summa_keccak256(const uint8_t *data, size_t length, uint8_t *out)
    void summa_keccak256_lanes(const uint8_t *data, size_t length, uint64_t *d)
    void summa_keccak_emit(const uint64_t *d, const uint64_t *mp, uint8_t *out, int word)
    enum: SUMMA_KECCAK256_RATE

cdef extern from "keccak_avx512.h" nogil:
    int summa_keccak_avx512_available()
    void summa_keccak256_batch(const uint8_t *data, const uint8_t *limit, const uint8_t *lens,
                               const uint8_t *skip, int64_t n, uint8_t *out, int word,
                               const uint64_t *mp, int backend)
    void summa_keccak_reduce(const uint8_t *digests, int64_t n, uint8_t *out,
                             const uint64_t *mp, int backend)

cdef enum:
    _NEED_MORE = 0   # every complete line is consumed; pos is where the next one starts
    _FULL = 1        # the entry buffers hold `segment` entries
    _SLOW = 2        # the line [pos, ce) needs the caller; the next line starts at nx
    _SWITCH = 3      # the line at pos holds '"' or a lone CR
    _FOUND = 4       # line_of: the line at pos is the non-blank line asked for
    _NAMES_ROOM = 5  # internal: the names buffer needs `need` more bytes (scan() grows it)
    _NAME_MAX = 32   # username bytes the C loop takes (31 always fit; 32 if below P)
    # keccak256: any length is valid, but the csv module refuses a field longer than its
    # field_size_limit() (131,072 characters by default), so a longer username is the caller's
    _NAME_MAX_KECCAK = 131072
    _DIGITS_MAX = 80  # balance digits the C loop takes (longer fields go to the caller)

NEED_MORE = _NEED_MORE
FULL = _FULL
SLOW = _SLOW
SWITCH = _SWITCH
FOUND = _FOUND
NAME_MAX = _NAME_MAX
NAME_MAX_KECCAK = _NAME_MAX_KECCAK
DIGITS_MAX = _DIGITS_MAX

cdef uint8_t _CLASS[256]   # 1: username byte (printable ASCII but ',' and '"'); 2: byte >= 0x80
cdef uint8_t _CLASS_V1[256]   # the same for Summa v1 lines: ';' ends the username, ',' is in it
cdef int _b
for _b in range(256):
    _CLASS[_b] = 1 if 0x20 <= _b <= 0x7e and _b != 0x2c and _b != 0x22 else (2 if _b >= 0x80 else 0)
    _CLASS_V1[_b] = 1 if 0x20 <= _b <= 0x7e and _b != 0x3b and _b != 0x22 else (2 if _b >= 0x80 else 0)
cdef uint8_t _P_BE[32]     # the field modulus, big-endian (a username's bytes are read big-endian)
for _b, _byte in enumerate(P.to_bytes(32, "big")):
    _P_BE[_b] = _byte
cdef uint64_t _P_MULT[24]  # m P for m = 0..5 in 64-bit limbs, least significant first
for _b in range(24):
    _P_MULT[_b] = ((_b // 4) * P >> (64 * (_b % 4))) & 0xffffffffffffffff
if 6 * P <= 1 << 256 or 5 * P >= 1 << 256:
    raise ImportError("_csvscan: the digest reduction assumes 5 P < 2^256 <= 6 P")

# The Keccak batch's code: 1 the 8-way AVX-512F kernel, 0 the portable (scalar) one.
KECCAK_BACKENDS = ("portable", "avx512")
cdef bint _AVX512 = summa_keccak_avx512_available() != 0
cdef int _keccak_backend = 1 if _AVX512 else 0


def keccak_backend():
    """The code the scanner's Keccak batch runs: 'avx512' (8 usernames at a time) or 'portable'."""
    return KECCAK_BACKENDS[_keccak_backend]


def available_keccak_backends():
    """The Keccak backends this CPU runs, slowest first."""
    return KECCAK_BACKENDS if _AVX512 else KECCAK_BACKENDS[:1]


def set_keccak_backend(name):
    """Force the Keccak batch's code, for tests and benchmarks: 'auto' (the fastest this CPU
    runs), 'portable' or 'avx512' (ValueError where the CPU lacks AVX-512F). SUMMA_KECCAK does
    the same at import; without it SUMMA_KERNEL=portable (the Poseidon kernel's) means portable
    here too. Digests and words do not depend on it."""
    global _keccak_backend
    if name == "auto":
        _keccak_backend = 1 if _AVX512 else 0
    elif name == "portable":
        _keccak_backend = 0
    elif name == "avx512":
        if not _AVX512:
            raise ValueError("keccak backend 'avx512' is not available on this CPU")
        _keccak_backend = 1
    else:
        raise ValueError(f"unknown keccak backend {name!r} (expected auto, portable or avx512)")


if os.environ.get("SUMMA_KECCAK"):
    set_keccak_backend(os.environ["SUMMA_KECCAK"])
elif os.environ.get("SUMMA_KERNEL") == "portable":
    set_keccak_backend("portable")


cdef inline void _digest_word(const uint8_t *name, int64_t n, uint8_t *out) noexcept nogil:
    """out = the 32-byte little-endian word of Keccak-256(name) read big-endian, mod P."""
    cdef uint64_t d[4]
    summa_keccak256_lanes(name, <size_t>n, d)
    summa_keccak_emit(d, _P_MULT, out, 1)


def _hashed(data, bint word):
    """Keccak-256 of a bytes-like object: the digest, or (word) the scanner's word of it."""
    cdef const uint8_t[::1] view
    cdef uint8_t out[32]
    cdef uint8_t empty = 0
    cdef const uint8_t *ptr = &empty
    cdef Py_ssize_t n
    mv = memoryview(data)
    if not mv.c_contiguous:
        mv = memoryview(mv.tobytes())
    mv = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
    n = mv.nbytes
    if n:
        view = mv
        ptr = &view[0]
    with nogil:
        if word:
            _digest_word(ptr, n, out)
        else:
            summa_keccak256(ptr, <size_t>n, out)
    return bytes(out[:32])


def keccak256(data):
    """The Keccak-256 digest (Ethereum's: original Keccak padding, not SHA3-256) of a bytes-like
    object, as 32 bytes."""
    return _hashed(data, False)


def keccak256_word(data):
    """Keccak-256 of the bytes, read big-endian and reduced mod P, as a 32-byte LE word (what
    the scanner writes for a username under the keccak256 encoding)."""
    return _hashed(data, True)


def keccak256_batch(data, lengths, bint word=False, int slack=8):
    """Keccak-256 of many messages at once, through the scanner's batch code (keccak_backend()):
    data, the messages' bytes concatenated (bytes-like); lengths, their byte lengths. Returns 32
    bytes for each, concatenated: the digests, or with word=True the words keccak256_word gives.
    slack (0..8, for tests): readable bytes after the data; the 8-way code reads up to 8 bytes
    past a message and leaves the messages nearer the end than that to the scalar code."""
    cdef int64_t count, total = 0, n
    if not 0 <= slack <= 8:
        raise ValueError("keccak256_batch: slack is 0..8")
    sizes = [int(n) for n in lengths]
    count = len(sizes)
    for n in sizes:
        if n < 0 or n >= (<int64_t>1 << 32):
            raise ValueError("keccak256_batch: a length out of range")
        total += n
    mv = memoryview(data).cast("B")
    if total != mv.nbytes:
        raise ValueError("keccak256_batch: the lengths do not add up to the data's size")
    buf = bytearray(total + 8)
    buf[:total] = mv
    lens = bytearray(4 * count + 1)
    for i, n in enumerate(sizes):
        lens[4 * i:4 * i + 4] = n.to_bytes(4, "little")
    out = bytearray(32 * count + 1)
    cdef uint8_t[::1] b = buf
    cdef uint8_t[::1] ln = lens
    cdef uint8_t[::1] o = out
    with nogil:
        summa_keccak256_batch(&b[0], &b[0] + total + slack, &ln[0], NULL, count, &o[0], word,
                              _P_MULT, _keccak_backend)
    return bytes(out[:32 * count])


def reduce_digests(const uint8_t[::1] digests):
    """For tests: 32-byte digests (concatenated) to their words (read big-endian, mod P, 32 bytes
    little-endian), by the batch's reduction on keccak_backend() (any 256-bit values, not only
    real digests, so that the edges can be chosen)."""
    cdef int64_t n = digests.shape[0] // 32
    if digests.shape[0] % 32:
        raise ValueError("reduce_digests: not a whole number of 32-byte digests")
    out = bytearray(32 * n + 1)
    cdef uint8_t[::1] o = out
    if n:
        with nogil:
            summa_keccak_reduce(&digests[0], n, &o[0], _P_MULT, _keccak_backend)
    return bytes(out[:32 * n])


cdef struct Scan:
    int ncur, nb
    int64_t row_bytes     # ncur * nb
    int64_t count, cap    # entries in the buffers, their room
    int64_t line          # number (1-based) of the line at pos
    int64_t pos, ce, nx
    int64_t nonblank      # line_of: non-blank lines passed (the header is the first)
    uint8_t *users
    uint8_t *bals
    const uint8_t *cls    # _CLASS (v1.1) or _CLASS_V1
    uint8_t sep           # the byte after the username: ',' (v1.1) or ';' (v1)
    bint keccak           # usernames are Keccak-256 digests mod P
    int64_t name_max      # the longest username the C loop takes
    bint want_names       # hand the raw usernames out (names, lens)
    bint keep_names       # keep them: want_names, or keccak (take() hashes them)
    uint8_t *names        # names_len bytes of usernames, concatenated, names_cap room (+ 8)
    uint8_t *lens         # count lengths, uint32 little-endian
    uint8_t *hashed       # keccak: 1 where the entry's word is in users already (0 elsewhere)
    int64_t names_len, names_cap, need


cdef inline bint _utf8_ok(const uint8_t *s, int64_t n) noexcept nogil:
    """Well-formed UTF-8 (Unicode table 3-7), as Python's decoder takes it."""
    cdef int64_t i = 0
    cdef uint8_t c, c1, lo, hi
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xc2 or c > 0xf4:
            return False
        lo, hi = 0x80, 0xbf
        if c == 0xe0:
            lo = 0xa0
        elif c == 0xed:
            hi = 0x9f
        elif c == 0xf0:
            lo = 0x90
        elif c == 0xf4:
            hi = 0x8f
        if c < 0xe0:
            if i + 1 >= n or (s[i + 1] & 0xc0) != 0x80:
                return False
            i += 2
        elif c < 0xf0:
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if c1 < lo or c1 > hi or (s[i + 2] & 0xc0) != 0x80:
                return False
            i += 3
        else:
            if i + 3 >= n:
                return False
            c1 = s[i + 1]
            if c1 < lo or c1 > hi or (s[i + 2] & 0xc0) != 0x80 or (s[i + 3] & 0xc0) != 0x80:
                return False
            i += 4
    return True


cdef inline bint _put_number(const uint8_t *d, int64_t nd, uint8_t *out, int nb) noexcept nogil:
    """Decimal digits d[0:nd] (1..80 of them) -> nb bytes little-endian; False if >= 2^(8 nb)."""
    cdef uint64_t v = 0, mul, chunk, t, carry
    cdef uint32_t limbs[9]
    cdef int64_t i, k, j
    cdef int l, bi
    cdef uint8_t byte
    while nd > 1 and d[0] == 0x30:
        d += 1
        nd -= 1
    if nd <= 19:
        for i in range(nd):
            v = v * 10 + (d[i] - 0x30)
        if nb < 8 and (v >> (8 * nb)) != 0:
            return False
        for l in range(nb if nb < 8 else 8):
            out[l] = <uint8_t>(v >> (8 * l))
        if nb > 8:
            memset(out + 8, 0, nb - 8)
        return True
    memset(limbs, 0, sizeof(limbs))
    i = 0
    while i < nd:
        k = nd - i if nd - i < 9 else 9
        chunk = 0
        mul = 1
        for j in range(k):
            chunk = chunk * 10 + (d[i + j] - 0x30)
            mul *= 10
        carry = chunk
        for l in range(9):
            t = <uint64_t>limbs[l] * mul + carry
            limbs[l] = <uint32_t>t
            carry = t >> 32
        i += k
    for bi in range(36):
        byte = <uint8_t>(limbs[bi >> 2] >> (8 * (bi & 3)))
        if bi < nb:
            out[bi] = byte
        elif byte:
            return False
    return True


cdef inline int64_t _entry(Scan *s, const uint8_t *buf, int64_t p, int64_t end, bint final) noexcept nogil:
    """Parse the entry line at p into slot s.count; the next line's start, -1 if not taken, or -2
    if the names buffer needs s.need more bytes of room first."""
    cdef int64_t q = p, d, nx = -1, ulen, i
    cdef int hi = 0, j, k
    cdef bint long_name, keep
    cdef uint8_t *u
    cdef uint8_t *b
    cdef uint8_t *ln
    cdef const uint8_t *cls = s.cls
    while q < end:
        k = cls[buf[q]]
        if k == 0:
            break
        hi |= k
        q += 1
    ulen = q - p
    if q >= end or buf[q] != s.sep or ulen == 0 or ulen > s.name_max:
        return -1
    if not s.keccak and ulen == 32 and memcmp(buf + p, _P_BE, 32) >= 0:
        return -1
    if (hi & 2) and not _utf8_ok(buf + p, ulen):
        return -1
    # keccak: names of one block wait for take()'s batch (their bytes kept); a longer one is
    # hashed here, and kept only for want_names (so the buffer never holds more than
    # segment * 135 bytes for the hashing)
    long_name = s.keccak and ulen >= SUMMA_KECCAK256_RATE
    keep = s.keep_names and (s.want_names or not long_name)
    if keep and s.names_len + ulen > s.names_cap:
        s.need = ulen
        return -2
    q += 1
    b = s.bals + s.row_bytes * s.count
    for j in range(s.ncur):
        d = q
        while q < end and <uint8_t>(buf[q] - 0x30) < 10:
            q += 1
        if q == d or q - d > _DIGITS_MAX:
            return -1
        if j + 1 < s.ncur:
            if q >= end or buf[q] != 0x2c:
                return -1
            nx = q + 1
        elif q >= end:
            if not final:
                return -1
            nx = q
        elif buf[q] == 0x0a:
            nx = q + 1
        elif buf[q] == 0x0d and q + 1 < end and buf[q + 1] == 0x0a:
            nx = q + 2
        else:
            return -1
        if not _put_number(buf + d, q - d, b + s.nb * j, s.nb):
            return -1
        q = nx
    u = s.users + 32 * s.count
    if s.keccak:
        if long_name:
            _digest_word(buf + p, ulen, u)
            s.hashed[s.count] = 1
    else:
        for i in range(ulen):
            u[i] = buf[p + ulen - 1 - i]
        memset(u + ulen, 0, 32 - ulen)
    if s.keep_names:
        if not keep:
            ulen = 0   # hashed already, and not wanted: no bytes kept
        memcpy(s.names + s.names_len, buf + p, ulen)
        s.names_len += ulen
        ln = s.lens + 4 * s.count
        ln[0] = <uint8_t>ulen
        ln[1] = <uint8_t>(ulen >> 8)
        ln[2] = <uint8_t>(ulen >> 16)
        ln[3] = <uint8_t>(ulen >> 24)
    return nx


cdef inline int _line_end(Scan *s, const uint8_t *buf, int64_t p, int64_t end, bint final) noexcept nogil:
    """The non-blank line at p: _SLOW with its content end (ce) and the next start (nx), _SWITCH if
    it holds '"' or a lone CR, _NEED_MORE if it is not complete yet."""
    cdef const uint8_t *e = <const uint8_t *>memchr(buf + p, 0x0a, end - p)
    cdef int64_t le, nx
    s.pos = p
    if e == NULL:
        if not final:
            return _NEED_MORE
        le = nx = end
    else:
        le = e - buf
        nx = le + 1
        if le > p and buf[le - 1] == 0x0d:
            le -= 1
    if memchr(buf + p, 0x22, le - p) != NULL or memchr(buf + p, 0x0d, le - p) != NULL:
        return _SWITCH
    s.ce, s.nx = le, nx
    return _SLOW


cdef inline int64_t _blank(const uint8_t *buf, int64_t p, int64_t end) noexcept nogil:
    """Length of the empty line (LF or CRLF) at p, or 0."""
    if buf[p] == 0x0a:
        return 1
    if buf[p] == 0x0d and p + 1 < end and buf[p + 1] == 0x0a:
        return 2
    return 0


cdef int _scan(Scan *s, const uint8_t *buf, int64_t p, int64_t end, bint final) noexcept nogil:
    cdef int64_t nx, n
    while True:
        if p >= end:
            s.pos = p
            return _NEED_MORE
        n = _blank(buf, p, end)
        if n:
            s.line += 1
            p += n
            continue
        if s.count == s.cap:
            s.pos = p
            return _FULL
        nx = _entry(s, buf, p, end, final)
        if nx >= 0:
            s.count += 1
            s.line += 1
            p = nx
            continue
        if nx == -2:
            s.pos = p
            return _NAMES_ROOM
        return _line_end(s, buf, p, end, final)


cdef int _first_line(Scan *s, const uint8_t *buf, int64_t p, int64_t end, bint final) noexcept nogil:
    cdef int64_t n
    while True:
        if p >= end:
            s.pos = p
            return _NEED_MORE
        n = _blank(buf, p, end)
        if not n:
            return _line_end(s, buf, p, end, final)
        s.line += 1
        p += n


cdef int _line_of(Scan *s, const uint8_t *buf, int64_t p, int64_t end, bint final,
                  int64_t target) noexcept nogil:
    cdef int64_t n
    cdef int st
    while True:
        if p >= end:
            s.pos = p
            return _NEED_MORE
        n = _blank(buf, p, end)
        if n:
            s.line += 1
            p += n
            continue
        st = _line_end(s, buf, p, end, final)
        if st != _SLOW:
            return st
        if s.nonblank == target:
            return _FOUND
        s.nonblank += 1
        s.line += 1
        p = s.nx


cdef class Scanner:
    """State of one file: the line count, and buffers of up to `segment` parsed entries.

    scan(buf, pos, end, final) parses buf[pos:end] (final: nothing follows it in the file) and
    returns a status; `pos` then says where it stopped (the line it hands back, or the next one),
    `line` that line's number, `ce`/`nx` a SLOW line's content end and the next line's start.

    keccak: usernames go out as Keccak-256 digests mod P (any length up to NAME_MAX_KECCAK bytes
    is taken); v1: lines are Summa v1 rows ``username;b0,b1,...``; names: keep every entry's raw
    username bytes too (take() hands them out)."""
    cdef Scan s
    cdef bytearray _users, _bals, _names, _lens, _hashed
    cdef readonly int64_t segment

    def __init__(self, int n_currencies, int n_bytes, int64_t segment, int64_t line=1,
                 int64_t initial=4096, bint keccak=False, bint v1=False, bint names=False):
        if not (1 <= n_currencies <= 1024 and 1 <= n_bytes <= 32 and segment >= 1 and line >= 1):
            raise ValueError("Scanner: bad arguments")
        self.s.ncur, self.s.nb = n_currencies, n_bytes
        self.s.row_bytes = <int64_t>n_currencies * n_bytes
        self.s.line = line
        if v1:
            self.s.cls = &_CLASS_V1[0]
        else:
            self.s.cls = &_CLASS[0]
        self.s.sep = 0x3b if v1 else 0x2c
        self.s.keccak = keccak
        self.s.name_max = _NAME_MAX_KECCAK if keccak else _NAME_MAX
        self.s.want_names = names
        self.s.keep_names = names or keccak
        self.segment = segment
        self._users = bytearray()
        self._bals = bytearray()
        self._lens = bytearray()
        self._names = bytearray()
        self._hashed = bytearray()
        self._resize(min(segment, max(initial, 1)))
        self._grow_names(16 * self.s.cap if self.s.keep_names else 0)

    cdef _resize(self, int64_t cap):
        users = bytearray(32 * cap)
        bals = bytearray(self.s.row_bytes * cap + 1)   # + 1: never empty
        lens = bytearray(4 * cap if self.s.keep_names else 1)
        hashed = bytearray(cap if self.s.keccak else 1)
        users[:32 * self.s.count] = self._users[:32 * self.s.count]
        bals[:self.s.row_bytes * self.s.count] = self._bals[:self.s.row_bytes * self.s.count]
        if self.s.keep_names:
            lens[:4 * self.s.count] = self._lens[:4 * self.s.count]
        if self.s.keccak:
            hashed[:self.s.count] = self._hashed[:self.s.count]
        self._users, self._bals, self._lens, self._hashed = users, bals, lens, hashed
        cdef uint8_t[::1] mu = users
        cdef uint8_t[::1] mb = bals
        cdef uint8_t[::1] ml = lens
        cdef uint8_t[::1] mh = hashed
        self.s.users, self.s.bals, self.s.lens, self.s.cap = &mu[0], &mb[0], &ml[0], cap
        self.s.hashed = &mh[0]

    cdef _grow_names(self, int64_t need):
        """Room for `need` more name bytes (at least doubling), and 8 bytes more: the Keccak
        batch may read a little past a name's end, never past the buffer's."""
        cdef int64_t cap = max(2 * self.s.names_cap, self.s.names_len + need, 1)
        names = bytearray(cap + 8)
        names[:self.s.names_len] = self._names[:self.s.names_len]
        self._names = names
        cdef uint8_t[::1] mn = names
        self.s.names, self.s.names_cap = &mn[0], cap

    def scan(self, const uint8_t[::1] buf, int64_t pos, int64_t end, bint final):
        """Parse entries; returns NEED_MORE, FULL (`segment` entries are waiting), SLOW or SWITCH."""
        cdef int st
        if not (0 <= pos <= end <= buf.shape[0]):
            raise ValueError("scan: bad range")
        if pos == end:
            self.s.pos = pos
            return _NEED_MORE
        while True:
            with nogil:
                st = _scan(&self.s, &buf[0], pos, end, final)
            pos = self.s.pos
            if st == _NAMES_ROOM:
                self._grow_names(self.s.need)
                continue
            if st != _FULL or self.s.cap >= self.segment:
                return st
            self._resize(min(self.segment, 2 * self.s.cap))

    def first_line(self, const uint8_t[::1] buf, int64_t pos, int64_t end, bint final):
        """Skip empty lines; SLOW: the line [pos, ce) is the first non-blank one (or SWITCH, NEED_MORE)."""
        if not (0 <= pos <= end <= buf.shape[0]):
            raise ValueError("first_line: bad range")
        if pos == end:
            self.s.pos = pos
            return _NEED_MORE
        with nogil:
            st = _first_line(&self.s, &buf[0], pos, end, final)
        return st

    def line_of(self, const uint8_t[::1] buf, int64_t pos, int64_t end, bint final, int64_t target):
        """Count lines until the target-th non-blank one (0: the header): FOUND, SWITCH or NEED_MORE;
        `nonblank` counts the non-blank lines passed."""
        if not (0 <= pos <= end <= buf.shape[0]):
            raise ValueError("line_of: bad range")
        if pos == end:
            self.s.pos = pos
            return _NEED_MORE
        with nogil:
            st = _line_of(&self.s, &buf[0], pos, end, final, target)
        return st

    def add(self, const uint8_t[::1] word, const uint8_t[::1] balances, name=None):
        """Append one entry parsed elsewhere (a 32-byte word, row_bytes of narrow balances, and
        with names=True its raw username bytes); returns True when `segment` entries are waiting.
        Under keccak the word is taken as given: take() does not hash the entry again (so its
        name is needed only with names=True, and kept only then)."""
        cdef const uint8_t[::1] raw
        cdef int64_t n = 0
        cdef int i
        if word.shape[0] != 32 or balances.shape[0] != self.s.row_bytes:
            raise ValueError("add: wrong sizes")
        if self.s.want_names:
            if name is None:
                raise ValueError("add: the username's bytes are needed (names=True)")
            raw = name
            n = raw.shape[0]
            if n >= (<int64_t>1 << 32):
                raise ValueError("add: username too long")
        if self.s.count >= self.segment:
            raise ValueError("add: the buffers are full")
        if self.s.count == self.s.cap:
            self._resize(min(self.segment, 2 * self.s.cap))
        memcpy(self.s.users + 32 * self.s.count, &word[0], 32)
        if self.s.row_bytes:
            memcpy(self.s.bals + self.s.row_bytes * self.s.count, &balances[0], self.s.row_bytes)
        if self.s.keep_names:
            if self.s.names_len + n > self.s.names_cap:
                self._grow_names(n)
            if n:
                memcpy(self.s.names + self.s.names_len, &raw[0], n)
            self.s.names_len += n
            for i in range(4):
                self.s.lens[4 * self.s.count + i] = <uint8_t>(n >> (8 * i))
        if self.s.keccak:
            self.s.hashed[self.s.count] = 1
        self.s.count += 1
        return self.s.count == self.segment

    def take(self):
        """(usernames, balances, count, names, lengths) of the waiting entries as memoryviews of
        the buffers, valid until the next call (names and lengths empty without names=True); the
        buffers are then empty. Under keccak the waiting entries' words are computed here, in one
        pass with the GIL released (keccak_backend())."""
        cdef int64_t n = self.s.count, nl = self.s.names_len
        cdef int backend = _keccak_backend
        if self.s.keccak and n:
            with nogil:
                summa_keccak256_batch(self.s.names, self.s.names + self.s.names_cap + 8,
                                      self.s.lens, self.s.hashed, n, self.s.users, 1, _P_MULT,
                                      backend)
            memset(self.s.hashed, 0, n)
        self.s.count = 0
        self.s.names_len = 0
        if self.s.want_names:
            names, lens = memoryview(self._names)[:nl], memoryview(self._lens)[:4 * n]
        else:
            names = lens = memoryview(self._lens)[:0]
        return (memoryview(self._users)[:32 * n], memoryview(self._bals)[:self.s.row_bytes * n], n,
                names, lens)

    @property
    def count(self):
        return self.s.count

    @property
    def pos(self):
        return self.s.pos

    @property
    def ce(self):
        return self.s.ce

    @property
    def nx(self):
        return self.s.nx

    @property
    def nonblank(self):
        return self.s.nonblank

    @nonblank.setter
    def nonblank(self, int64_t value):
        self.s.nonblank = value

    @property
    def line(self):
        return self.s.line

    @line.setter
    def line(self, int64_t value):
        self.s.line = value
