/* The Poseidon permutation, instantiated once per field product (portable C, ADX asm).
 * Included by poseidon_kernel.h with SK_MUL and SK_NAME defined; no include guard on purpose.
 * Every loop body runs over `lanes` independent states so their products can overlap. */

static inline void SK_NAME(sk_pow5)(fe *r, const fe *a) {
    fe a2, a4;
    SK_MUL(&a2, a, a);
    SK_MUL(&a4, &a2, &a2);
    SK_MUL(r, &a4, a);
}

static inline void SK_NAME(sk_full_round)(fe s[][2], int lanes, const fe rc[2]) {
    for (int k = 0; k < lanes; k++) {
        fe a, b, x, y;
        fe_add(&a, &s[k][0], &rc[0]);
        fe_add(&b, &s[k][1], &rc[1]);
        SK_NAME(sk_pow5)(&a, &a);
        SK_NAME(sk_pow5)(&b, &b);
        SK_MUL(&x, &sk_mds[0][0], &a);
        SK_MUL(&y, &sk_mds[0][1], &b);
        fe_add(&s[k][0], &x, &y);
        SK_MUL(&x, &sk_mds[1][0], &a);
        SK_MUL(&y, &sk_mds[1][1], &b);
        fe_add(&s[k][1], &x, &y);
    }
}

/* Partial rounds run on (s0, w = m01 * s1): see params.kernel_schedule() for the algebra. */
static void SK_NAME(sk_permute)(fe s[][2], int lanes) {
    fe w[SK_SCALAR_LANES];
    for (int r = 0; r < SK_FULL_HALF; r++) SK_NAME(sk_full_round)(s, lanes, sk_full_rc[r]);
    for (int k = 0; k < lanes; k++) SK_MUL(&w[k], &sk_m01, &s[k][1]);
    for (int r = 0; r < SK_PARTIAL; r++) {
        for (int k = 0; k < lanes; k++) {
            fe a, x;
            fe_add(&a, &s[k][0], &sk_partial_rc[r]);
            SK_NAME(sk_pow5)(&a, &a);
            SK_MUL(&x, &sk_m00, &a);
            fe_add(&s[k][0], &x, &w[k]);
            SK_MUL(&x, &sk_m01m10, &a);
            SK_MUL(&w[k], &sk_m11, &w[k]);
            fe_add(&w[k], &w[k], &x);
        }
    }
    for (int k = 0; k < lanes; k++) SK_MUL(&s[k][1], &sk_m01_inv, &w[k]);
    for (int r = SK_FULL_HALF; r < 2 * SK_FULL_HALF; r++)
        SK_NAME(sk_full_round)(s, lanes, sk_full_rc[r]);
}
