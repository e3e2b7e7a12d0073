/* BN254 scalar field in Montgomery form and the Poseidon t=2 kernel, with three backends.
 *
 * Everything a tree build needs runs here, without the GIL and without Python objects:
 * field words come in and go out as canonical little-endian 32-byte words, and are held in
 * Montgomery form only inside a hash.  Hashes are computed SK_LANES messages at a time: a
 * single Poseidon permutation is one long dependency chain, and the independent hashes of a
 * tree level are what lets the machine overlap work.
 *
 * Backends, chosen once from CPUID in sk_init() and switchable for tests:
 *   ifma      AVX-512 IFMA, 8 states per instruction, 5 x 52-bit limbs (ifma.h)
 *   adx       4 x 64-bit limbs, mulx/adcx/adox assembly product (mul_adx.h)
 *   portable  4 x 64-bit limbs, C with unsigned __int128, for every other machine
 * The rounds of the scalar backends come from poseidon_rounds.h, instantiated per product.
 *
 * Poseidon parameters are not in this file: the Python side generates them with the Grain
 * LFSR, folds them into the optimised schedule, and hands them over with sk_init().
 */
#ifndef SUMMA_POSEIDON_KERNEL_H
#define SUMMA_POSEIDON_KERNEL_H

#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;
typedef struct { uint64_t l[4]; } fe;

#define SK_LANES 8          /* messages hashed side by side (the IFMA width) */
#define SK_SCALAR_LANES 4   /* states interleaved by the scalar backends */
#define SK_MAX_CURRENCIES 64
#define SK_MAX_ELEMENTS (2 * SK_MAX_CURRENCIES + 2)
#define SK_FULL_HALF 4
#define SK_PARTIAL 56

enum { SK_OK = 0, SK_CANCELLED = 1, SK_OVERFLOW = 2, SK_NOT_IN_FIELD = 3, SK_BAD_ARGS = 4 };
enum { SK_INTERLEAVED = 0, SK_SUM_FIRST = 1 };

typedef struct {
    volatile int cancel;      /* set by any thread; polled before every SK_LANES nodes */
    volatile int64_t done;    /* nodes hashed so far, for progress reports */
} sk_control;

static const fe SK_P = {{0x43e1f593f0000001ULL, 0x2833e84879b97091ULL,
                         0xb85045b68181585dULL, 0x30644e72e131a029ULL}};
static const uint64_t SK_PINV = 0xc2e1f593efffffffULL;   /* -p^-1 mod 2^64 */
static const fe SK_R2 = {{0x1bb8e645ae216da7ULL, 0x53fe3ab1e35c59e3ULL,
                          0x8c49833d53bb8085ULL, 0x0216d0b17f4e44a5ULL}};  /* 2^512 mod p */

/* Schedule, in Montgomery form; filled once by sk_init(). */
static fe sk_full_rc[2 * SK_FULL_HALF][2];  /* round constants of the 8 full rounds */
static fe sk_partial_rc[SK_PARTIAL];        /* one constant per partial round, on s0 */
static fe sk_mds[2][2];
static fe sk_m00, sk_m01m10, sk_m11;        /* partial rounds on (s0, w = m01 * s1) */
static fe sk_m01, sk_m01_inv;
static int sk_ready = 0;

/* ---- field arithmetic ------------------------------------------------------------ */

static inline int fe_geq_p(const fe *a) {
    for (int i = 3; i >= 0; i--) {
        if (a->l[i] != SK_P.l[i]) return a->l[i] > SK_P.l[i];
    }
    return 1;
}

static const fe SK_2P = {{0x87c3eb27e0000002ULL, 0x5067d090f372e122ULL,
                          0x70a08b6d0302b0baULL, 0x60c89ce5c2634053ULL}};

/* r -= m when r >= m, without a branch (the data decides nothing about timing). */
static inline void fe_sub_if_geq(fe *r, const fe *m) {
    uint64_t d[4];
    u128 t = (u128)r->l[0] - m->l[0];
    d[0] = (uint64_t)t;
    uint64_t borrow = (uint64_t)(t >> 64) & 1;
    for (int i = 1; i < 4; i++) {
        t = (u128)r->l[i] - m->l[i] - borrow;
        d[i] = (uint64_t)t;
        borrow = (uint64_t)(t >> 64) & 1;
    }
    uint64_t keep = -borrow;  /* all ones when r < m: keep r */
    for (int i = 0; i < 4; i++) r->l[i] = (r->l[i] & keep) | (d[i] & ~keep);
}

/* Lazy reduction: inside a hash every value lives in [0, 2p), not [0, p).  4p < 2^256, so
 * a sum of two such values never carries out, and a Montgomery product of two of them is
 * again below 2p without the final subtraction.  Words leave the kernel fully reduced. */
static inline void fe_add(fe *r, const fe *a, const fe *b) {
    u128 t = 0;
    for (int i = 0; i < 4; i++) {
        t = (u128)a->l[i] + b->l[i] + (uint64_t)(t >> 64);
        r->l[i] = (uint64_t)t;
    }
    fe_sub_if_geq(r, &SK_2P);
}

/* CIOS Montgomery product, "no-carry" variant: valid because p's top limb < 2^63 - 1 and
 * every intermediate (< 3p) fits in four limbs.  Portable C; the ADX path is below. */
static inline void fe_mul_portable(fe *r, const fe *a, const fe *b) {
    uint64_t t[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        u128 x = (u128)a->l[0] * b->l[i] + t[0];
        uint64_t A = (uint64_t)(x >> 64);
        uint64_t lo = (uint64_t)x;
        uint64_t m = lo * SK_PINV;
        x = (u128)m * SK_P.l[0] + lo;
        uint64_t C = (uint64_t)(x >> 64);
        for (int j = 1; j < 4; j++) {
            x = (u128)a->l[j] * b->l[i] + t[j] + A;
            A = (uint64_t)(x >> 64);
            x = (u128)m * SK_P.l[j] + (uint64_t)x + C;
            C = (uint64_t)(x >> 64);
            t[j - 1] = (uint64_t)x;
        }
        t[3] = C + A;
    }
    memcpy(r->l, t, sizeof t);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SK_HAVE_X86 1
#include "mul_adx.h"
#else
#define SK_HAVE_X86 0
#endif

static inline void fe_from_words(fe *r, const uint8_t *word) {   /* canonical LE -> Montgomery */
    fe x;
    memcpy(x.l, word, 32);
    fe_mul_portable(r, &x, &SK_R2);   /* outside the hot loop: portable is enough */
}

static inline void fe_to_words(uint8_t *word, const fe *a) {     /* Montgomery -> canonical LE */
    static const fe one = {{1, 0, 0, 0}};
    fe x;
    fe_mul_portable(&x, a, &one);
    fe_sub_if_geq(&x, &SK_P);
    memcpy(word, x.l, 32);
}

static inline int word_in_field(const uint8_t *word) {
    fe x;
    memcpy(x.l, word, 32);
    return !fe_geq_p(&x);
}

/* ---- Poseidon permutation and sponge, one instance per backend ----------------------- */

#undef SK_MUL
#define SK_MUL fe_mul_portable
#define SK_NAME(x) x##_portable
#include "poseidon_rounds.h"
#undef SK_MUL
#undef SK_NAME
#if SK_HAVE_X86
#define SK_MUL fe_mul_adx
#define SK_NAME(x) x##_adx
#include "poseidon_rounds.h"
#undef SK_MUL
#undef SK_NAME
#include "ifma.h"
#endif

enum { SK_BACKEND_PORTABLE = 0, SK_BACKEND_ADX = 1, SK_BACKEND_IFMA = 2 };
static int sk_backend = SK_BACKEND_PORTABLE;   /* chosen once in sk_init(), from CPUID */

/* A message is the list of pointers to its n canonical words; SK_LANES messages of one
 * length are hashed together.  Scalar backends take them SK_SCALAR_LANES at a time. */
typedef const uint8_t *sk_msg[SK_MAX_ELEMENTS];

static void sk_sponge_scalar(const sk_msg *msgs, int lanes, int n, uint8_t *const out[]) {
    for (int base = 0; base < lanes; base += SK_SCALAR_LANES) {
        int group = lanes - base < SK_SCALAR_LANES ? lanes - base : SK_SCALAR_LANES;
        fe s[SK_SCALAR_LANES][2], cap;
        uint8_t word[32] = {0};
        uint64_t length = (uint64_t)n;           /* capacity = n * 2^64 */
        memcpy(word + 8, &length, 8);
        fe_from_words(&cap, word);
        for (int k = 0; k < group; k++) {
            memset(&s[k][0], 0, sizeof(fe));
            s[k][1] = cap;
        }
        for (int j = 0; j < n; j++) {
            for (int k = 0; k < group; k++) {
                fe m;
                fe_from_words(&m, msgs[base + k][j]);
                fe_add(&s[k][0], &s[k][0], &m);
            }
#if SK_HAVE_X86
            if (sk_backend == SK_BACKEND_ADX) sk_permute_adx(s, group);
            else
#endif
                sk_permute_portable(s, group);
        }
        for (int k = 0; k < group; k++) fe_to_words(out[base + k], &s[k][0]);
    }
}

#if SK_HAVE_X86
SK_IFMA static void sk_sponge_ifma(const sk_msg *msgs, int lanes, int n, uint8_t *const out[]) {
    uint8_t capacity[32] = {0};
    uint64_t length = (uint64_t)n;
    memcpy(capacity + 8, &length, 8);
    const uint8_t *words[8];
    fe8 s0, s1, m;
    for (int k = 0; k < 8; k++) words[k] = capacity;
    s8_from_words(&s1, words);
    memset(&s0, 0, sizeof s0);
    for (int j = 0; j < n; j++) {
        for (int k = 0; k < 8; k++) words[k] = k < lanes ? msgs[k][j] : NULL;
        s8_from_words(&m, words);
        s8_add(&s0, &s0, &m);
        s8_permute(&s0, &s1);
    }
    s8_to_words(out, &s0, lanes);
}
#endif

static int sk_adx_available = 0;   /* set in sk_init() */

static void sk_sponge(const sk_msg *msgs, int lanes, int n, uint8_t *const out[]) {
#if SK_HAVE_X86
    if (sk_backend == SK_BACKEND_IFMA) {
        /* a vector permutation costs as much as eight scalar ones, so a lone message (a proof
         * check, a padding root) goes through the scalar ADX product instead */
        if (lanes > 1 || !sk_adx_available) { sk_sponge_ifma(msgs, lanes, n, out); return; }
        sk_backend = SK_BACKEND_ADX;
        sk_sponge_scalar(msgs, lanes, n, out);
        sk_backend = SK_BACKEND_IFMA;
        return;
    }
#endif
    sk_sponge_scalar(msgs, lanes, n, out);
}

/* ---- balances: exact 256-bit sums, refused when they leave the field ------------------- */

static inline int sum_words(uint8_t *dst, const uint8_t *a, const uint8_t *b) {
    uint64_t x[4], y[4];
    memcpy(x, a, 32);
    memcpy(y, b, 32);
    u128 t = 0;
    for (int i = 0; i < 4; i++) {
        t = (u128)x[i] + y[i] + (uint64_t)(t >> 64);
        x[i] = (uint64_t)t;
    }
    memcpy(dst, x, 32);
    return (t >> 64) == 0 && word_in_field(dst);
}

/* Exact column sums of `count` entries of n_cur balance words each: out gets n_cur sums of
 * five 64-bit limbs (little-endian), so no total of up to 2^64 entries can overflow. */
static void sk_sum_columns(const uint8_t *balances, int64_t count, int n_cur, uint64_t *out) {
    memset(out, 0, sizeof(uint64_t) * 5 * (size_t)n_cur);
    for (int64_t i = 0; i < count; i++) {
        for (int c = 0; c < n_cur; c++) {
            uint64_t w[4], *acc = out + 5 * c;
            memcpy(w, balances + 32 * ((int64_t)n_cur * i + c), 32);
            u128 t = 0;
            for (int k = 0; k < 4; k++) {
                t = (u128)acc[k] + w[k] + (uint64_t)(t >> 64);
                acc[k] = (uint64_t)t;
            }
            acc[4] += (uint64_t)(t >> 64);
        }
    }
}

/* ---- tree kernels --------------------------------------------------------------------- */

/* Leaves: record i = H(username_i, balances_i...) followed by the balances.
 * usernames: n words; balances: n * n_cur words; out: n records of (1 + n_cur) words. */
static int sk_hash_leaves(const uint8_t *usernames, const uint8_t *balances, int64_t n,
                          int n_cur, uint8_t *out, sk_control *ctl) {
    if (!sk_ready || n_cur < 1 || n_cur > SK_MAX_CURRENCIES) return SK_BAD_ARGS;
    const int64_t rec = 32 * (int64_t)(n_cur + 1);
    sk_msg msgs[SK_LANES];
    uint8_t *hashes[SK_LANES];
    for (int64_t base = 0; base < n; base += SK_LANES) {
        if (ctl && ctl->cancel) return SK_CANCELLED;
        int lanes = (int)((n - base) < SK_LANES ? (n - base) : SK_LANES);
        for (int k = 0; k < lanes; k++) {
            int64_t i = base + k;
            const uint8_t *b = balances + 32 * (int64_t)n_cur * i;
            msgs[k][0] = usernames + 32 * i;
            for (int c = 0; c < n_cur; c++) msgs[k][1 + c] = b + 32 * c;
            for (int j = 0; j <= n_cur; j++)
                if (!word_in_field(msgs[k][j])) return SK_NOT_IN_FIELD;
            hashes[k] = out + rec * i;
            memcpy(out + rec * i + 32, b, 32 * (size_t)n_cur);
        }
        sk_sponge(msgs, lanes, n_cur + 1, hashes);
        if (ctl) ctl->done += lanes;
    }
    return SK_OK;
}

/* One level up: parent i from children 2i and 2i+1 (records of 1 + n_cur words). */
static int sk_hash_level(const uint8_t *children, int64_t n_parents, int n_cur, int layout,
                         uint8_t *parents, sk_control *ctl) {
    if (!sk_ready || n_cur < 1 || n_cur > SK_MAX_CURRENCIES) return SK_BAD_ARGS;
    if (layout != SK_INTERLEAVED && layout != SK_SUM_FIRST) return SK_BAD_ARGS;
    const int64_t rec = 32 * (int64_t)(n_cur + 1);
    const int n_el = layout == SK_INTERLEAVED ? 2 * n_cur + 2 : n_cur + 2;
    sk_msg msgs[SK_LANES];
    uint8_t *hashes[SK_LANES];
    for (int64_t base = 0; base < n_parents; base += SK_LANES) {
        if (ctl && ctl->cancel) return SK_CANCELLED;
        int lanes = (int)((n_parents - base) < SK_LANES ? (n_parents - base) : SK_LANES);
        for (int k = 0; k < lanes; k++) {
            int64_t i = base + k;
            const uint8_t *left = children + rec * 2 * i;
            const uint8_t *right = left + rec;
            uint8_t *parent = parents + rec * i;
            if (!word_in_field(left) || !word_in_field(right)) return SK_NOT_IN_FIELD;
            for (int c = 1; c <= n_cur; c++) {
                if (!sum_words(parent + 32 * c, left + 32 * c, right + 32 * c)) return SK_OVERFLOW;
            }
            if (layout == SK_INTERLEAVED) {           /* left record, then right record */
                for (int j = 0; j < n_el; j++) msgs[k][j] = left + 32 * j;
            } else {                                   /* the sums, then both hashes */
                for (int c = 0; c < n_cur; c++) msgs[k][c] = parent + 32 * (c + 1);
                msgs[k][n_cur] = left;
                msgs[k][n_cur + 1] = right;
            }
            hashes[k] = parent;
        }
        sk_sponge(msgs, lanes, n_el, hashes);
        if (ctl) ctl->done += lanes;
    }
    return SK_OK;
}

/* Hash of `count` messages of n_el words each, words in, words out. For proofs and tests. */
static int sk_hash_words(const uint8_t *msgs_in, int64_t count, int n_el, uint8_t *out) {
    if (!sk_ready || n_el < 1 || n_el > SK_MAX_ELEMENTS) return SK_BAD_ARGS;
    sk_msg msgs[SK_LANES];
    uint8_t *hashes[SK_LANES];
    for (int64_t base = 0; base < count; base += SK_LANES) {
        int lanes = (int)((count - base) < SK_LANES ? (count - base) : SK_LANES);
        for (int k = 0; k < lanes; k++) {
            const uint8_t *m = msgs_in + 32 * (int64_t)n_el * (base + k);
            for (int j = 0; j < n_el; j++) {
                if (!word_in_field(m + 32 * j)) return SK_NOT_IN_FIELD;
                msgs[k][j] = m + 32 * j;
            }
            hashes[k] = out + 32 * (base + k);
        }
        sk_sponge(msgs, lanes, n_el, hashes);
    }
    return SK_OK;
}

/* Raw permutations, for benchmarks and tests: `count` states of two canonical words, in place.
 * Scalar backends take `lanes` states at a time (1 measures one permutation's latency). */
static void sk_permute_words(uint8_t *states, int64_t count, int lanes_wanted) {
#if SK_HAVE_X86
    if (sk_backend == SK_BACKEND_IFMA) {
        for (int64_t base = 0; base < count; base += 8) {
            int lanes = (int)((count - base) < 8 ? (count - base) : 8);
            const uint8_t *w0[8], *w1[8];
            uint8_t *o0[8], *o1[8];
            for (int k = 0; k < 8; k++) {
                w0[k] = k < lanes ? states + 64 * (base + k) : NULL;
                w1[k] = k < lanes ? states + 64 * (base + k) + 32 : NULL;
                o0[k] = (uint8_t *)w0[k];
                o1[k] = (uint8_t *)w1[k];
            }
            fe8 s0, s1;
            s8_from_words(&s0, w0);
            s8_from_words(&s1, w1);
            s8_permute(&s0, &s1);
            s8_to_words(o0, &s0, lanes);
            s8_to_words(o1, &s1, lanes);
        }
        return;
    }
#endif
    fe s[SK_SCALAR_LANES][2];
    int step = lanes_wanted < 1 ? 1 : (lanes_wanted > SK_SCALAR_LANES ? SK_SCALAR_LANES : lanes_wanted);
    for (int64_t base = 0; base < count; base += step) {
        int lanes = (int)((count - base) < step ? (count - base) : step);
        for (int k = 0; k < lanes; k++) {
            fe_from_words(&s[k][0], states + 64 * (base + k));
            fe_from_words(&s[k][1], states + 64 * (base + k) + 32);
        }
#if SK_HAVE_X86
        if (sk_backend == SK_BACKEND_ADX) sk_permute_adx(s, lanes);
        else
#endif
            sk_permute_portable(s, lanes);
        for (int k = 0; k < lanes; k++) {
            fe_to_words(states + 64 * (base + k), &s[k][0]);
            fe_to_words(states + 64 * (base + k) + 32, &s[k][1]);
        }
    }
}

static int sk_backend_available(int backend) {
#if SK_HAVE_X86
    __builtin_cpu_init();
    if (backend == SK_BACKEND_ADX)
        return __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("adx");
    if (backend == SK_BACKEND_IFMA)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512ifma");
#endif
    return backend == SK_BACKEND_PORTABLE;
}

/* Schedule from canonical words: 8 full rounds x 2, 56 partial, MDS (4), then
 * m00, m01*m10, m11, m01, 1/m01 -- all derived in params.kernel_schedule().
 * The layout lives here once; LOAD(dst, word) converts one constant for a backend. */
#define SK_LOAD_SCHEDULE(LOAD, P)                                                            \
    do {                                                                                     \
        for (int r = 0; r < 2 * SK_FULL_HALF; r++)                                           \
            for (int i = 0; i < 2; i++) LOAD(&P##full_rc[r][i], full_rc + 32 * (2 * r + i)); \
        for (int r = 0; r < SK_PARTIAL; r++) LOAD(&P##partial_rc[r], partial_rc + 32 * r);  \
        for (int i = 0; i < 2; i++)                                                          \
            for (int j = 0; j < 2; j++) LOAD(&P##mds[i][j], mds + 32 * (2 * i + j));         \
        LOAD(&P##m00, partial_matrix);                                                       \
        LOAD(&P##m01m10, partial_matrix + 32);                                               \
        LOAD(&P##m11, partial_matrix + 64);                                                  \
        LOAD(&P##m01, partial_matrix + 96);                                                  \
        LOAD(&P##m01_inv, partial_matrix + 128);                                             \
    } while (0)

static void sk_init(const uint8_t *full_rc, const uint8_t *partial_rc, const uint8_t *mds,
                    const uint8_t *partial_matrix) {
    SK_LOAD_SCHEDULE(fe_from_words, sk_);
    sk_backend = SK_BACKEND_PORTABLE;
    sk_adx_available = sk_backend_available(SK_BACKEND_ADX);
#if SK_HAVE_X86
    if (sk_backend_available(SK_BACKEND_IFMA)) {
        SK_LOAD_SCHEDULE(s8_const_from_word, s8_);
        sk_backend = SK_BACKEND_IFMA;
    } else if (sk_backend_available(SK_BACKEND_ADX)) {
        sk_backend = SK_BACKEND_ADX;
    }
#endif
    sk_ready = 1;
}

/* 0 portable, 1 adx, 2 ifma; returns 0 when that backend cannot run here. */
static int sk_set_backend(int backend) {
    if (!sk_backend_available(backend)) return 0;
#if SK_HAVE_X86
    if (backend == SK_BACKEND_IFMA && sk_backend != SK_BACKEND_IFMA) {
        /* constants are prepared in sk_init() only when IFMA was seen there */
        if (!sk_backend_available(SK_BACKEND_IFMA)) return 0;
    }
#endif
    sk_backend = backend;
    return 1;
}

static int sk_get_backend(void) { return sk_backend; }

#endif
