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

/* out[0..31] = Keccak-256(data[0..len-1]); data may be NULL when len is 0. */
static inline void summa_keccak256(const uint8_t *data, size_t len, uint8_t out[32])
{
    uint64_t A[25];
    uint8_t last[SUMMA_KECCAK256_RATE];
    size_t rest;
    int i, j;
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
    for (i = 0; i < 4; i++)
        for (j = 0; j < 8; j++)
            out[8 * i + j] = (uint8_t)(A[i] >> (8 * j));
}

#endif /* SUMMA_KECCAK_H */
