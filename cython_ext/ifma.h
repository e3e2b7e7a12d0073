/* Eight Poseidon states side by side on AVX-512 IFMA: one field element is five 52-bit limbs,
 * each limb a 64-bit lane of a zmm register, so every instruction works on 8 hashes.
 * Montgomery form with R = 2^260.  Because R is far above p, a product of two values below
 * 2^256 is already below 2p: sums need no reduction, only carry normalisation (limbs must be
 * below 2^52 before they are multiplied, as vpmadd52 reads 52 bits).
 * Only called after CPUID reported AVX512F and AVX512IFMA (see sk_init). */
#include <immintrin.h>

#define SK_IFMA __attribute__((target("avx512f,avx512ifma")))
#define SK_M52 0xfffffffffffffULL

typedef struct { __m512i l[5]; } fe8;
typedef struct { uint64_t l[5]; } fe52;   /* one constant, broadcast on use */

static const fe52 SK_P52 = {{0x1f593f0000001ULL, 0x4879b9709143eULL, 0x181585d2833e8ULL,
                             0xa029b85045b68ULL, 0x30644e72e131ULL}};
static const uint64_t SK_PINV52 = 0x1f593efffffffULL;           /* -p^-1 mod 2^52 */
static const fe52 SK_R2_52 = {{0xb852d16da6f5ULL, 0xc621620cddce3ULL, 0xaf1b95343ffb6ULL,
                               0xc3c15e103e7c2ULL, 0x281528fa122ULL}};   /* 2^520 mod p */

static fe52 s8_full_rc[2 * SK_FULL_HALF][2], s8_partial_rc[SK_PARTIAL], s8_mds[2][2];
static fe52 s8_m00, s8_m01m10, s8_m11, s8_m01, s8_m01_inv;

SK_IFMA static inline __m512i s8_bc(uint64_t x) { return _mm512_set1_epi64((long long)x); }

SK_IFMA static inline fe8 s8_const(const fe52 *c) {
    fe8 r;
    for (int i = 0; i < 5; i++) r.l[i] = s8_bc(c->l[i]);
    return r;
}

SK_IFMA static inline void s8_normalize(fe8 *r) {
    const __m512i mask = s8_bc(SK_M52);
    for (int i = 0; i < 4; i++) {
        r->l[i + 1] = _mm512_add_epi64(r->l[i + 1], _mm512_srli_epi64(r->l[i], 52));
        r->l[i] = _mm512_and_si512(r->l[i], mask);
    }
}

SK_IFMA static inline void s8_add(fe8 *r, const fe8 *a, const fe8 *b) {
    for (int i = 0; i < 5; i++) r->l[i] = _mm512_add_epi64(a->l[i], b->l[i]);
    s8_normalize(r);
}

#define MADLO(acc, x, y) acc = _mm512_madd52lo_epu64(acc, x, y)
#define MADHI(acc, x, y) acc = _mm512_madd52hi_epu64(acc, x, y)

/* r = a * b / 2^260 mod p, a and b normalised and below 2^256.8; r normalised, below 2p. */
SK_IFMA static inline void s8_mul(fe8 *r, const fe8 *a, const fe8 *b) {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i pinv = s8_bc(SK_PINV52);
    const __m512i p0 = s8_bc(SK_P52.l[0]), p1 = s8_bc(SK_P52.l[1]), p2 = s8_bc(SK_P52.l[2]),
                  p3 = s8_bc(SK_P52.l[3]), p4 = s8_bc(SK_P52.l[4]);
    __m512i t0 = zero, t1 = zero, t2 = zero, t3 = zero, t4 = zero, t5;
    for (int i = 0; i < 5; i++) {
        const __m512i bi = b->l[i];
        t5 = zero;
        MADLO(t0, a->l[0], bi); MADHI(t1, a->l[0], bi);
        MADLO(t1, a->l[1], bi); MADHI(t2, a->l[1], bi);
        MADLO(t2, a->l[2], bi); MADHI(t3, a->l[2], bi);
        MADLO(t3, a->l[3], bi); MADHI(t4, a->l[3], bi);
        MADLO(t4, a->l[4], bi); MADHI(t5, a->l[4], bi);
        const __m512i m = _mm512_madd52lo_epu64(zero, t0, pinv);
        MADLO(t0, m, p0); MADHI(t1, m, p0);
        MADLO(t1, m, p1); MADHI(t2, m, p1);
        MADLO(t2, m, p2); MADHI(t3, m, p2);
        MADLO(t3, m, p3); MADHI(t4, m, p3);
        MADLO(t4, m, p4); MADHI(t5, m, p4);
        /* t0 is now 0 mod 2^52: divide by 2^52, keeping its carry */
        t0 = _mm512_add_epi64(t1, _mm512_srli_epi64(t0, 52));
        t1 = t2; t2 = t3; t3 = t4; t4 = t5;
    }
    r->l[0] = t0; r->l[1] = t1; r->l[2] = t2; r->l[3] = t3; r->l[4] = t4;
    s8_normalize(r);
}

SK_IFMA static inline void s8_mulc(fe8 *r, const fe8 *a, const fe52 *c) {
    fe8 k = s8_const(c);
    s8_mul(r, a, &k);
}

SK_IFMA static inline void s8_pow5(fe8 *r, const fe8 *a) {
    fe8 a2, a4;
    s8_mul(&a2, a, a);
    s8_mul(&a4, &a2, &a2);
    s8_mul(r, &a4, a);
}

SK_IFMA static inline void s8_addc(fe8 *r, const fe8 *a, const fe52 *c) {
    fe8 k = s8_const(c);
    s8_add(r, a, &k);
}

SK_IFMA static void s8_full_round(fe8 *s0, fe8 *s1, const fe52 rc[2]) {
    fe8 a, b, x, y;
    s8_addc(&a, s0, &rc[0]);
    s8_addc(&b, s1, &rc[1]);
    s8_pow5(&a, &a);
    s8_pow5(&b, &b);
    s8_mulc(&x, &a, &s8_mds[0][0]);
    s8_mulc(&y, &b, &s8_mds[0][1]);
    s8_add(s0, &x, &y);
    s8_mulc(&x, &a, &s8_mds[1][0]);
    s8_mulc(&y, &b, &s8_mds[1][1]);
    s8_add(s1, &x, &y);
}

SK_IFMA static void s8_permute(fe8 *s0, fe8 *s1) {
    for (int r = 0; r < SK_FULL_HALF; r++) s8_full_round(s0, s1, s8_full_rc[r]);
    fe8 w, a, x;
    s8_mulc(&w, s1, &s8_m01);
    for (int r = 0; r < SK_PARTIAL; r++) {
        s8_addc(&a, s0, &s8_partial_rc[r]);
        s8_pow5(&a, &a);
        s8_mulc(&x, &a, &s8_m00);
        s8_add(s0, &x, &w);
        s8_mulc(&x, &a, &s8_m01m10);
        s8_mulc(&w, &w, &s8_m11);
        s8_add(&w, &w, &x);
    }
    s8_mulc(s1, &w, &s8_m01_inv);
    for (int r = SK_FULL_HALF; r < 2 * SK_FULL_HALF; r++) s8_full_round(s0, s1, s8_full_rc[r]);
}

/* Canonical little-endian words (one per lane; NULL = a zero lane) in, Montgomery form out. */
SK_IFMA static inline void s8_from_words(fe8 *r, const uint8_t *const words[8]) {
    uint64_t limbs[5][8] __attribute__((aligned(64)));
    for (int k = 0; k < 8; k++) {
        uint64_t w[4] = {0, 0, 0, 0};
        if (words[k]) memcpy(w, words[k], 32);
        limbs[0][k] = w[0] & SK_M52;
        limbs[1][k] = (w[0] >> 52 | w[1] << 12) & SK_M52;
        limbs[2][k] = (w[1] >> 40 | w[2] << 24) & SK_M52;
        limbs[3][k] = (w[2] >> 28 | w[3] << 36) & SK_M52;
        limbs[4][k] = w[3] >> 16;
    }
    fe8 x;
    for (int i = 0; i < 5; i++) x.l[i] = _mm512_load_si512((const void *)limbs[i]);
    fe8 r2 = s8_const(&SK_R2_52);
    s8_mul(r, &x, &r2);
}

/* Montgomery form in, canonical fully reduced words out (lanes [0, lanes) only). */
SK_IFMA static inline void s8_to_words(uint8_t *const out[8], const fe8 *a, int lanes) {
    fe8 one = {{s8_bc(1), _mm512_setzero_si512(), _mm512_setzero_si512(),
                _mm512_setzero_si512(), _mm512_setzero_si512()}};
    fe8 x;
    s8_mul(&x, a, &one);
    uint64_t limbs[5][8] __attribute__((aligned(64)));
    for (int i = 0; i < 5; i++) _mm512_store_si512((void *)limbs[i], x.l[i]);
    for (int k = 0; k < lanes; k++) {
        fe w = {{limbs[0][k] | limbs[1][k] << 52, limbs[1][k] >> 12 | limbs[2][k] << 40,
                 limbs[2][k] >> 24 | limbs[3][k] << 28, limbs[3][k] >> 36 | limbs[4][k] << 16}};
        fe_sub_if_geq(&w, &SK_P);
        memcpy(out[k], w.l, 32);
    }
}


/* A schedule constant in Montgomery form: the vector product with 2^520, lane 0 kept. */
SK_IFMA static void s8_const_from_word(fe52 *r, const uint8_t *word) {
    const uint8_t *words[8] = {word, 0, 0, 0, 0, 0, 0, 0};
    fe8 x;
    s8_from_words(&x, words);
    uint64_t lane[8] __attribute__((aligned(64)));
    for (int i = 0; i < 5; i++) {
        _mm512_store_si512((void *)lane, x.l[i]);
        r->l[i] = lane[0];
    }
}
