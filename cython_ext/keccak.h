/* Keccak-256 as Ethereum uses it: Keccak-f[1600], rate 136 bytes (1088 bits), capacity 512,
 * 32-byte output, and the ORIGINAL Keccak padding (pad10*1: 0x01 after the message, 0x80 in the
 * last byte of the block). This is not FIPS 202 SHA3-256, which pads with 0x06 and gives other
 * digests (tests/test_keccak.py checks both facts against pycryptodome).
 *
 * Portable C99: lanes are loaded and stored byte by byte (little-endian, as the standard says),
 * so the result does not depend on the host's byte order or alignment. No allocation, no
 * global state: safe without the GIL and from any number of threads.
 *
 *   summa_keccak_f1600(state)             the permutation, 25 lanes, lane (x, y) at x + 5 y
 *   summa_keccak256(data, len, out)       out[0..31] = Keccak-256(data[0..len-1])
 *   summa_keccak256_lanes(data, len, d)   the same digest as its 4 lanes (bytes 8 i .. 8 i + 7 of
 *                                         the digest are lane d[i], little-endian)
 *   summa_keccak_emit(d, mp, out, word)   a digest's lanes -> 32 bytes: the digest itself (word 0)
 *                                         or the digest read big-endian, reduced mod P, as a
 *                                         little-endian word (word 1); mp[4 m .. 4 m + 3] = m P
 *                                         (m = 0..5) in 64-bit limbs, least significant first
 *   summa_keccak256_batch_portable(...)   n messages concatenated, one at a time (see below)
 *
 * keccak_avx512.h has the 8-way AVX-512 version of the batch, chosen at run time.
 */
#ifndef SUMMA_KECCAK_H
#define SUMMA_KECCAK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SUMMA_KECCAK256_RATE 136

/* The round constants of iota, from the LFSR x^8 + x^6 + x^5 + x^4 + 1 (Keccak reference). */
static const uint64_t summa_keccak_rc[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

/* n in 1..63 only (a shift by 64 would be undefined) */
#define SUMMA_ROTL64(v, n) (((v) << (n)) | ((v) >> (64 - (n))))

static inline void summa_keccak_f1600(uint64_t A[25])
{
    uint64_t B[25], C[5], D[5];
    int round, x, y;
    for (round = 0; round < 24; round++) {
        /* theta */
        for (x = 0; x < 5; x++)
            C[x] = A[x] ^ A[x + 5] ^ A[x + 10] ^ A[x + 15] ^ A[x + 20];
        for (x = 0; x < 5; x++)
            D[x] = C[(x + 4) % 5] ^ SUMMA_ROTL64(C[(x + 1) % 5], 1);
        for (y = 0; y < 25; y += 5)
            for (x = 0; x < 5; x++)
                A[y + x] ^= D[x];
        /* rho and pi: B[y, 2x + 3y] = rot(A[x, y], r[x, y]) */
        B[0] = A[0];
        B[10] = SUMMA_ROTL64(A[1], 1);
        B[20] = SUMMA_ROTL64(A[2], 62);
        B[5] = SUMMA_ROTL64(A[3], 28);
        B[15] = SUMMA_ROTL64(A[4], 27);
        B[16] = SUMMA_ROTL64(A[5], 36);
        B[1] = SUMMA_ROTL64(A[6], 44);
        B[11] = SUMMA_ROTL64(A[7], 6);
        B[21] = SUMMA_ROTL64(A[8], 55);
        B[6] = SUMMA_ROTL64(A[9], 20);
        B[7] = SUMMA_ROTL64(A[10], 3);
        B[17] = SUMMA_ROTL64(A[11], 10);
        B[2] = SUMMA_ROTL64(A[12], 43);
        B[12] = SUMMA_ROTL64(A[13], 25);
        B[22] = SUMMA_ROTL64(A[14], 39);
        B[23] = SUMMA_ROTL64(A[15], 41);
        B[8] = SUMMA_ROTL64(A[16], 45);
        B[18] = SUMMA_ROTL64(A[17], 15);
        B[3] = SUMMA_ROTL64(A[18], 21);
        B[13] = SUMMA_ROTL64(A[19], 8);
        B[14] = SUMMA_ROTL64(A[20], 18);
        B[24] = SUMMA_ROTL64(A[21], 2);
        B[9] = SUMMA_ROTL64(A[22], 61);
        B[19] = SUMMA_ROTL64(A[23], 56);
        B[4] = SUMMA_ROTL64(A[24], 14);
        /* chi */
        for (y = 0; y < 25; y += 5)
            for (x = 0; x < 5; x++)
                A[y + x] = B[y + x] ^ (~B[y + (x + 1) % 5] & B[y + (x + 2) % 5]);
        /* iota */
        A[0] ^= summa_keccak_rc[round];
    }
}

static inline uint64_t summa_keccak_load64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24
        | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

/* XOR one 136-byte block into the first 17 lanes, then permute. */
static inline void summa_keccak_absorb(uint64_t A[25], const uint8_t *block)
{
    int i;
    for (i = 0; i < SUMMA_KECCAK256_RATE / 8; i++)
        A[i] ^= summa_keccak_load64(block + 8 * i);
    summa_keccak_f1600(A);
}

static inline void summa_keccak_store_le(uint8_t *out, const uint64_t v[4])
{
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, v, 32);
#else
    int i, j;
    for (i = 0; i < 4; i++)
        for (j = 0; j < 8; j++)
            out[8 * i + j] = (uint8_t)(v[i] >> (8 * j));
#endif
}

/* d[0..3] = the first 4 lanes of the state after absorbing data[0..len-1] with Keccak's padding:
 * the digest, lane by lane. data may be NULL when len is 0. */
static inline void summa_keccak256_lanes(const uint8_t *data, size_t len, uint64_t d[4])
{
    uint64_t A[25];
    uint8_t last[SUMMA_KECCAK256_RATE];
    size_t rest;
    memset(A, 0, sizeof(A));
    while (len >= SUMMA_KECCAK256_RATE) {
        summa_keccak_absorb(A, data);
        data += SUMMA_KECCAK256_RATE;
        len -= SUMMA_KECCAK256_RATE;
    }
    rest = len;   /* 0..135 bytes left: the last block, padded */
    memset(last, 0, sizeof(last));
    if (rest)
        memcpy(last, data, rest);
    last[rest] ^= 0x01;                          /* Keccak's padding (SHA3 would put 0x06) */
    last[SUMMA_KECCAK256_RATE - 1] ^= 0x80;      /* both in one byte when rest is 135: 0x81 */
    summa_keccak_absorb(A, last);
    d[0] = A[0];
    d[1] = A[1];
    d[2] = A[2];
    d[3] = A[3];
}

/* out[0..31] = Keccak-256(data[0..len-1]); data may be NULL when len is 0. */
static inline void summa_keccak256(const uint8_t *data, size_t len, uint8_t out[32])
{
    uint64_t d[4];
    summa_keccak256_lanes(data, len, d);
    summa_keccak_store_le(out, d);
}

static inline uint64_t summa_keccak_bswap64(uint64_t v)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_bswap64(v);
#else
    v = ((v & 0x00ff00ff00ff00ffULL) << 8) | ((v >> 8) & 0x00ff00ff00ff00ffULL);
    v = ((v & 0x0000ffff0000ffffULL) << 16) | ((v >> 16) & 0x0000ffff0000ffffULL);
    return (v << 32) | (v >> 32);
#endif
}

/* r = a - b over 4 limbs; returns the borrow out (0 or 1). */
static inline uint64_t summa_keccak_sub256(uint64_t r[4], const uint64_t a[4], const uint64_t b[4])
{
    uint64_t borrow = 0, ai, bi, carry;
    int i;
    for (i = 0; i < 4; i++) {           /* r may be a */
        ai = a[i];
        bi = b[i] + borrow;
        carry = bi < borrow;            /* b[i] = 2^64 - 1 and a borrow in */
        r[i] = ai - bi;
        borrow = carry | (ai < bi);
    }
    return borrow;
}

/* A digest (its 4 lanes) to 32 bytes at out: word 0, the digest itself; word 1, the digest read
 * big-endian reduced mod P, little-endian. mp: m P for m = 0..5 (24 limbs). P > 2^253, so the
 * digest v is below 6 P; k = #{m in 1..5 : top limb of v > top limb of m P} is at most v / P and at
 * least v / P - 1, so v - k P is below 2 P: one more conditional subtraction, no loop. */
static inline void summa_keccak_emit(const uint64_t d[4], const uint64_t *mp, uint8_t *out, int word)
{
    uint64_t v[4], w[4], mask;
    int i, k;
    if (!word) {
        summa_keccak_store_le(out, d);
        return;
    }
    v[3] = summa_keccak_bswap64(d[0]);   /* the digest's first byte is the most significant */
    v[2] = summa_keccak_bswap64(d[1]);
    v[1] = summa_keccak_bswap64(d[2]);
    v[0] = summa_keccak_bswap64(d[3]);
    k = 0;
    for (i = 1; i <= 5; i++)
        k += v[3] > mp[4 * i + 3];
    summa_keccak_sub256(v, v, mp + 4 * k);
    mask = summa_keccak_sub256(w, v, mp + 4) - 1;   /* all ones when v >= P */
    for (i = 0; i < 4; i++)
        v[i] = (w[i] & mask) | (v[i] & ~mask);
    summa_keccak_store_le(out, v);
}

static inline uint32_t summa_keccak_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The batch: n messages concatenated at data (their lengths lens[0..n-1], uint32 little-endian, 4
 * bytes each), 32 bytes out for each at out + 32 i (see summa_keccak_emit); entries with skip[i]
 * set are left alone (their bytes, lens[i] of them, still follow in data); skip may be NULL.
 * limit: the end of the readable memory at data (the 8-way version may read up to 7 bytes past a
 * message, never past limit; here unused). */
static inline void summa_keccak256_batch_portable(const uint8_t *data, const uint8_t *limit,
                                                  const uint8_t *lens, const uint8_t *skip,
                                                  int64_t n, uint8_t *out, int word,
                                                  const uint64_t *mp)
{
    uint64_t d[4];
    uint32_t len;
    int64_t i;
    (void)limit;
    for (i = 0; i < n; i++) {
        len = summa_keccak_le32(lens + 4 * i);
        if (!skip || !skip[i]) {
            summa_keccak256_lanes(data, len, d);
            summa_keccak_emit(d, mp, out + 32 * i, word);
        }
        data += len;
    }
}

#endif /* SUMMA_KECCAK_H */
