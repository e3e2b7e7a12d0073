/* Keccak-256 (keccak.h's, Ethereum's) eight messages at a time on AVX-512F: the 8 states side by
 * side, lane (x, y) of all 8 in one zmm register (message k in its 64-bit element k), so every
 * instruction of Keccak-f[1600] works on 8 hashes: chi and theta's parities with vpternlogq, rho
 * with vprolq. Only single-block messages (0..135 bytes) go through it; longer ones, and every
 * message on a CPU without AVX-512F, take keccak.h's scalar function.
 *
 *   summa_keccak_avx512_available()       1 if this CPU (and OS) runs the 8-way code
 *   summa_keccak256_batch(..., backend)   keccak.h's batch contract (summa_keccak256_batch_portable):
 *                                         backend 1 the 8-way code (only if available), 0 portable
 *   summa_keccak_reduce(..., backend)     for tests: given digests to words mod P, by the same code
 *
 * In the 8-way code the lanes are gathered straight from the concatenated messages (masked, with
 * the padding put in by vector ops, so it reads up to 8 bytes past a message: the caller says how
 * far it may read), and the digests are byte-swapped, reduced mod P (k P subtracted, k from the
 * top limb, then one conditional P) and scattered to their entries' words 8 at a time too.
 *
 * The 8-way functions are compiled with __attribute__((target("avx512f"))), so the rest of the
 * extension stays baseline x86-64 and the choice is made at run time (as in poseidon_kernel.h).
 * No allocation, no global state: safe without the GIL and from any number of threads.
 */
#ifndef SUMMA_KECCAK_AVX512_H
#define SUMMA_KECCAK_AVX512_H

#include "keccak.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SUMMA_KECCAK_HAVE_AVX512 1
#include <immintrin.h>

#define SUMMA_KX8 __attribute__((target("avx512f")))

static int summa_keccak_avx512_available(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

#define SUMMA_X3(a, b, c) _mm512_ternarylogic_epi64((a), (b), (c), 0x96)    /* a ^ b ^ c */
#define SUMMA_CHI(a, b, c) _mm512_ternarylogic_epi64((a), (b), (c), 0xd2)   /* a ^ (~b & c) */
#define SUMMA_ROL(v, n) _mm512_rol_epi64((v), (n))

/* Keccak-f[1600] on 8 states; A[x + 5 y] holds lane (x, y) of each. */
SUMMA_KX8 static inline void summa_keccak_f1600_x8(__m512i A[25])
{
    __m512i a00 = A[0], a01 = A[1], a02 = A[2], a03 = A[3], a04 = A[4];
    __m512i a05 = A[5], a06 = A[6], a07 = A[7], a08 = A[8], a09 = A[9];
    __m512i a10 = A[10], a11 = A[11], a12 = A[12], a13 = A[13], a14 = A[14];
    __m512i a15 = A[15], a16 = A[16], a17 = A[17], a18 = A[18], a19 = A[19];
    __m512i a20 = A[20], a21 = A[21], a22 = A[22], a23 = A[23], a24 = A[24];
    __m512i c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;
    __m512i b00, b01, b02, b03, b04, b05, b06, b07, b08, b09, b10, b11, b12;
    __m512i b13, b14, b15, b16, b17, b18, b19, b20, b21, b22, b23, b24;
    int round;
    for (round = 0; round < 24; round++) {
        /* theta: the column parities, then a ^= c[x - 1] ^ rot(c[x + 1], 1) */
        c0 = SUMMA_X3(SUMMA_X3(a00, a05, a10), a15, a20);
        c1 = SUMMA_X3(SUMMA_X3(a01, a06, a11), a16, a21);
        c2 = SUMMA_X3(SUMMA_X3(a02, a07, a12), a17, a22);
        c3 = SUMMA_X3(SUMMA_X3(a03, a08, a13), a18, a23);
        c4 = SUMMA_X3(SUMMA_X3(a04, a09, a14), a19, a24);
        d0 = SUMMA_ROL(c1, 1);
        d1 = SUMMA_ROL(c2, 1);
        d2 = SUMMA_ROL(c3, 1);
        d3 = SUMMA_ROL(c4, 1);
        d4 = SUMMA_ROL(c0, 1);
        /* theta applied, then rho and pi: b[y, 2 x + 3 y] = rot(a[x, y], r[x, y]) */
        b00 = SUMMA_X3(a00, c4, d0);
        b10 = SUMMA_ROL(SUMMA_X3(a01, c0, d1), 1);
        b20 = SUMMA_ROL(SUMMA_X3(a02, c1, d2), 62);
        b05 = SUMMA_ROL(SUMMA_X3(a03, c2, d3), 28);
        b15 = SUMMA_ROL(SUMMA_X3(a04, c3, d4), 27);
        b16 = SUMMA_ROL(SUMMA_X3(a05, c4, d0), 36);
        b01 = SUMMA_ROL(SUMMA_X3(a06, c0, d1), 44);
        b11 = SUMMA_ROL(SUMMA_X3(a07, c1, d2), 6);
        b21 = SUMMA_ROL(SUMMA_X3(a08, c2, d3), 55);
        b06 = SUMMA_ROL(SUMMA_X3(a09, c3, d4), 20);
        b07 = SUMMA_ROL(SUMMA_X3(a10, c4, d0), 3);
        b17 = SUMMA_ROL(SUMMA_X3(a11, c0, d1), 10);
        b02 = SUMMA_ROL(SUMMA_X3(a12, c1, d2), 43);
        b12 = SUMMA_ROL(SUMMA_X3(a13, c2, d3), 25);
        b22 = SUMMA_ROL(SUMMA_X3(a14, c3, d4), 39);
        b23 = SUMMA_ROL(SUMMA_X3(a15, c4, d0), 41);
        b08 = SUMMA_ROL(SUMMA_X3(a16, c0, d1), 45);
        b18 = SUMMA_ROL(SUMMA_X3(a17, c1, d2), 15);
        b03 = SUMMA_ROL(SUMMA_X3(a18, c2, d3), 21);
        b13 = SUMMA_ROL(SUMMA_X3(a19, c3, d4), 8);
        b14 = SUMMA_ROL(SUMMA_X3(a20, c4, d0), 18);
        b24 = SUMMA_ROL(SUMMA_X3(a21, c0, d1), 2);
        b09 = SUMMA_ROL(SUMMA_X3(a22, c1, d2), 61);
        b19 = SUMMA_ROL(SUMMA_X3(a23, c2, d3), 56);
        b04 = SUMMA_ROL(SUMMA_X3(a24, c3, d4), 14);
        /* chi, and iota on lane (0, 0) */
        a00 = _mm512_xor_si512(SUMMA_CHI(b00, b01, b02),
                               _mm512_set1_epi64((long long)summa_keccak_rc[round]));
        a01 = SUMMA_CHI(b01, b02, b03);
        a02 = SUMMA_CHI(b02, b03, b04);
        a03 = SUMMA_CHI(b03, b04, b00);
        a04 = SUMMA_CHI(b04, b00, b01);
        a05 = SUMMA_CHI(b05, b06, b07);
        a06 = SUMMA_CHI(b06, b07, b08);
        a07 = SUMMA_CHI(b07, b08, b09);
        a08 = SUMMA_CHI(b08, b09, b05);
        a09 = SUMMA_CHI(b09, b05, b06);
        a10 = SUMMA_CHI(b10, b11, b12);
        a11 = SUMMA_CHI(b11, b12, b13);
        a12 = SUMMA_CHI(b12, b13, b14);
        a13 = SUMMA_CHI(b13, b14, b10);
        a14 = SUMMA_CHI(b14, b10, b11);
        a15 = SUMMA_CHI(b15, b16, b17);
        a16 = SUMMA_CHI(b16, b17, b18);
        a17 = SUMMA_CHI(b17, b18, b19);
        a18 = SUMMA_CHI(b18, b19, b15);
        a19 = SUMMA_CHI(b19, b15, b16);
        a20 = SUMMA_CHI(b20, b21, b22);
        a21 = SUMMA_CHI(b21, b22, b23);
        a22 = SUMMA_CHI(b22, b23, b24);
        a23 = SUMMA_CHI(b23, b24, b20);
        a24 = SUMMA_CHI(b24, b20, b21);
    }
    A[0] = a00; A[1] = a01; A[2] = a02; A[3] = a03; A[4] = a04;
    A[5] = a05; A[6] = a06; A[7] = a07; A[8] = a08; A[9] = a09;
    A[10] = a10; A[11] = a11; A[12] = a12; A[13] = a13; A[14] = a14;
    A[15] = a15; A[16] = a16; A[17] = a17; A[18] = a18; A[19] = a19;
    A[20] = a20; A[21] = a21; A[22] = a22; A[23] = a23; A[24] = a24;
}

/* The constants of the digest -> word reduction (summa_keccak_emit's), as vectors. */
typedef struct {
    __m512i mp[4];    /* element m of mp[i]: limb i of m P (m = 0..5; 6, 7 unused) */
    __m512i top[5];   /* the top limb of m P, m = 1..5, broadcast */
    __m512i p[4];     /* the limbs of P, broadcast */
} summa_kx8_mod;

SUMMA_KX8 static void summa_kx8_mod_init(summa_kx8_mod *c, const uint64_t *mp)
{
    uint64_t t[8] = {0};
    int i, m;
    for (i = 0; i < 4; i++) {
        for (m = 0; m < 6; m++)
            t[m] = mp[4 * m + i];
        c->mp[i] = _mm512_loadu_si512((const void *)t);
        c->p[i] = _mm512_set1_epi64((long long)mp[4 + i]);
    }
    for (m = 1; m <= 5; m++)
        c->top[m - 1] = _mm512_set1_epi64((long long)mp[4 * m + 3]);
}

/* Byte-reverse every 64-bit element (AVX-512F has no vpshufb: dwords, words, then bytes). */
SUMMA_KX8 static inline __m512i summa_kx8_bswap(__m512i x)
{
    x = _mm512_rol_epi64(x, 32);
    x = _mm512_rol_epi32(x, 16);
    /* bytes: (x >> 8) where the mask 0x00ff... is set, (x << 8) elsewhere */
    return _mm512_ternarylogic_epi64(_mm512_slli_epi64(x, 8), _mm512_srli_epi64(x, 8),
                                     _mm512_set1_epi64(0x00ff00ff00ff00ffLL), 0xd8);
}

/* r = v - s over 4 limbs (8 numbers at once); returns the borrow out, one bit per number. */
SUMMA_KX8 static inline __mmask8 summa_kx8_sub256(__m512i r[4], const __m512i v[4], const __m512i s[4])
{
    const __m512i one = _mm512_set1_epi64(1), zero = _mm512_setzero_si512();
    __mmask8 borrow = _mm512_cmplt_epu64_mask(v[0], s[0]), lt;
    __m512i t;
    int i;
    r[0] = _mm512_sub_epi64(v[0], s[0]);
    for (i = 1; i < 4; i++) {   /* r may be v */
        t = _mm512_sub_epi64(v[i], s[i]);
        lt = _mm512_cmplt_epu64_mask(v[i], s[i]);
        r[i] = _mm512_mask_sub_epi64(t, borrow, t, one);
        /* t - 1 borrows only where t is 0; where v[i] < s[i], t is at least 1 */
        borrow = lt | (borrow & _mm512_cmpeq_epi64_mask(t, zero));
    }
    return borrow;
}

/* Keccak-256 of the 8 messages base + off[k], len[k] bytes each (0..135; 8 bytes past each
 * message readable), lanes = max len / 8 + 1; D[i] = lane i of the 8 digests. */
SUMMA_KX8 static void summa_keccak256_x8(const uint8_t *base, const int64_t off[8],
                                         const int64_t len[8], int lanes, __m512i D[4])
{
    const __m512i vo = _mm512_loadu_si512((const void *)off);
    const __m512i vl = _mm512_loadu_si512((const void *)len);
    const __m512i ones = _mm512_set1_epi64(-1), one = _mm512_set1_epi64(1);
    const __m512i zero = _mm512_setzero_si512();
    __m512i A[25], r, sh, v;
    __mmask8 live;
    int i;
    for (i = 0; i < lanes; i++) {
        /* r: the message's bytes from this lane on; the lane is loaded where r >= 0, its
         * bytes from r on cleared and Keccak's 0x01 put at byte r where r < 8 (sllv gives 0 for
         * a shift of 64 or more, and a negative r is one) */
        r = _mm512_sub_epi64(vl, _mm512_set1_epi64(8 * i));
        live = _mm512_cmpge_epi64_mask(r, zero);
        v = _mm512_mask_i64gather_epi64(zero, live, _mm512_add_epi64(vo, _mm512_set1_epi64(8 * i)),
                                        (const void *)base, 1);
        sh = _mm512_slli_epi64(r, 3);
        /* (v & ~(ones << 8 r)) | (1 << 8 r) */
        A[i] = _mm512_ternarylogic_epi64(v, _mm512_sllv_epi64(ones, sh), _mm512_sllv_epi64(one, sh),
                                         0xba);
    }
    for (; i < 25; i++)
        A[i] = zero;
    A[16] = _mm512_xor_si512(A[16], _mm512_set1_epi64((long long)0x8000000000000000ULL));
    summa_keccak_f1600_x8(A);
    for (i = 0; i < 4; i++)
        D[i] = A[i];
}

/* The 8 digests D (their lanes) to out + 32 at[k] for the k in mask: the digests themselves
 * (word 0) or their words mod P (word 1, as summa_keccak_emit). */
SUMMA_KX8 static void summa_kx8_emit(const __m512i D[4], const int64_t at[8], __mmask8 mask,
                                     uint8_t *out, int word, const summa_kx8_mod *c)
{
    const __m512i one = _mm512_set1_epi64(1);
    __m512i v[4], s[4], w[4], k = _mm512_setzero_si512();
    __m512i where = _mm512_slli_epi64(_mm512_loadu_si512((const void *)at), 5);
    __mmask8 borrow;
    int i, m;
    if (!word) {
        for (i = 0; i < 4; i++)
            _mm512_mask_i64scatter_epi64((void *)out, mask,
                                         _mm512_add_epi64(where, _mm512_set1_epi64(8 * i)), D[i], 1);
        return;
    }
    for (i = 0; i < 4; i++)   /* the digest read big-endian: limb 3 from lane 0 */
        v[3 - i] = summa_kx8_bswap(D[i]);
    for (m = 0; m < 5; m++)   /* k = #{m : top limb of v > top limb of m P}: v - k P < 2 P */
        k = _mm512_mask_add_epi64(k, _mm512_cmpgt_epu64_mask(v[3], c->top[m]), k, one);
    for (i = 0; i < 4; i++)
        s[i] = _mm512_permutexvar_epi64(k, c->mp[i]);
    summa_kx8_sub256(v, v, s);
    borrow = summa_kx8_sub256(w, v, c->p);   /* no borrow: v >= P, take v - P */
    for (i = 0; i < 4; i++) {
        v[i] = _mm512_mask_blend_epi64((__mmask8)~borrow, v[i], w[i]);
        _mm512_mask_i64scatter_epi64((void *)out, mask,
                                     _mm512_add_epi64(where, _mm512_set1_epi64(8 * i)), v[i], 1);
    }
}

SUMMA_KX8 static void summa_keccak256_batch_avx512(const uint8_t *data, const uint8_t *limit,
                                                   const uint8_t *lens, const uint8_t *skip,
                                                   int64_t n, uint8_t *out, int word,
                                                   const uint64_t *mp)
{
    const uint8_t *base = data;
    int64_t off[8] __attribute__((aligned(64)));
    int64_t len[8] __attribute__((aligned(64)));
    int64_t at[8] __attribute__((aligned(64)));
    int64_t i;
    uint64_t one[4];
    uint32_t m, maxlen = 0;
    summa_kx8_mod c;
    __m512i D[4];
    int g = 0, k;
    summa_kx8_mod_init(&c, mp);
    for (i = 0; i < n; i++) {
        m = summa_keccak_le32(lens + 4 * i);
        if (!skip || !skip[i]) {
            if (m >= SUMMA_KECCAK256_RATE || limit - data < (ptrdiff_t)m + 8) {
                /* more than one block, or too near the end to read 8 bytes past it */
                summa_keccak256_lanes(data, m, one);
                summa_keccak_emit(one, mp, out + 32 * i, word);
            } else {
                off[g] = data - base;
                len[g] = m;
                at[g] = i;
                if (m > maxlen)
                    maxlen = m;
                if (++g == 8) {
                    summa_keccak256_x8(base, off, len, (int)(maxlen / 8) + 1, D);
                    summa_kx8_emit(D, at, 0xff, out, word, &c);
                    g = 0;
                    maxlen = 0;
                }
            }
        }
        data += m;
    }
    if (g) {   /* the last 1..7: copies of the first fill the other slots, their digests unused */
        for (k = g; k < 8; k++) {
            off[k] = off[0];
            len[k] = len[0];
            at[k] = at[0];
        }
        summa_keccak256_x8(base, off, len, (int)(maxlen / 8) + 1, D);
        summa_kx8_emit(D, at, (__mmask8)((1u << g) - 1), out, word, &c);
    }
}

/* For tests: n digests (32 bytes each) to their words mod P, 8 at a time (summa_kx8_emit). */
SUMMA_KX8 static void summa_keccak_reduce_avx512(const uint8_t *digests, int64_t n, uint8_t *out,
                                                 const uint64_t *mp)
{
    uint64_t lane[4][8] __attribute__((aligned(64)));
    int64_t at[8] __attribute__((aligned(64)));
    summa_kx8_mod c;
    __m512i D[4];
    int64_t i;
    int k, j, g;
    summa_kx8_mod_init(&c, mp);
    for (i = 0; i < n; i += 8) {
        g = n - i < 8 ? (int)(n - i) : 8;
        for (k = 0; k < 8; k++) {
            at[k] = i + (k < g ? k : 0);
            for (j = 0; j < 4; j++)
                lane[j][k] = summa_keccak_load64(digests + 32 * at[k] + 8 * j);
        }
        for (j = 0; j < 4; j++)
            D[j] = _mm512_load_si512((const void *)lane[j]);
        summa_kx8_emit(D, at, (__mmask8)((1u << g) - 1), out, 1, &c);
    }
}

#else   /* not x86 with GCC or Clang: the portable code only */
#define SUMMA_KECCAK_HAVE_AVX512 0

static int summa_keccak_avx512_available(void) { return 0; }

static void summa_keccak256_batch_avx512(const uint8_t *data, const uint8_t *limit,
                                         const uint8_t *lens, const uint8_t *skip, int64_t n,
                                         uint8_t *out, int word, const uint64_t *mp)
{
    summa_keccak256_batch_portable(data, limit, lens, skip, n, out, word, mp);
}
#endif

/* For tests: n digests (32 bytes each) to their words mod P on backend 1 or 0. */
static void summa_keccak_reduce(const uint8_t *digests, int64_t n, uint8_t *out,
                                const uint64_t *mp, int backend)
{
    uint64_t d[4];
    int64_t i;
    int j;
#if SUMMA_KECCAK_HAVE_AVX512
    if (backend == 1) {
        summa_keccak_reduce_avx512(digests, n, out, mp);
        return;
    }
#endif
    (void)backend;
    for (i = 0; i < n; i++) {
        for (j = 0; j < 4; j++)
            d[j] = summa_keccak_load64(digests + 32 * i + 8 * j);
        summa_keccak_emit(d, mp, out + 32 * i, 1);
    }
}

/* The batch (keccak.h's contract) on backend 1 (8-way AVX-512; the caller checked that it is
 * available) or 0 (portable). */
static void summa_keccak256_batch(const uint8_t *data, const uint8_t *limit, const uint8_t *lens,
                                  const uint8_t *skip, int64_t n, uint8_t *out, int word,
                                  const uint64_t *mp, int backend)
{
    if (backend == 1 && SUMMA_KECCAK_HAVE_AVX512)
        summa_keccak256_batch_avx512(data, limit, lens, skip, n, out, word, mp);
    else
        summa_keccak256_batch_portable(data, limit, lens, skip, n, out, word, mp);
}

#endif /* SUMMA_KECCAK_AVX512_H */
