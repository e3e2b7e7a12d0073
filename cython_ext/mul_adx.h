/* r = a * b / 2^256 mod p for a, b < 2p, result < 2p (no final subtraction): the CIOS
 * "no-carry" Montgomery product on mulx / adcx / adox, two independent carry chains.
 * Only called after CPUID reported BMI2 and ADX (see sk_init). */
static inline void fe_mul_adx(fe *r, const fe *a, const fe *b) {
    uint64_t t0, t1, t2, t3, A, tmp, hi;
    __asm__(
        /* i = 0 */
        "movq %[b0], %%rdx\n\t"
        "xorl %k[tmp], %k[tmp]\n\t"
        "mulxq %[a0], %[t0], %[t1]\n\t"
        "mulxq %[a1], %[tmp], %[t2]\n\t"
        "adoxq %[tmp], %[t1]\n\t"
        "mulxq %[a2], %[tmp], %[t3]\n\t"
        "adoxq %[tmp], %[t2]\n\t"
        "mulxq %[a3], %[tmp], %[A]\n\t"
        "adoxq %[tmp], %[t3]\n\t"
        "movl $0, %k[tmp]\n\t"
        "adoxq %[tmp], %[A]\n\t"
#define REDUCE \
        "movq %[t0], %%rdx\n\t" \
        "imulq %[pinv], %%rdx\n\t" \
        "xorl %k[tmp], %k[tmp]\n\t" \
        "mulxq %[p0], %[tmp], %[hi]\n\t" \
        "adcxq %[t0], %[tmp]\n\t" \
        "movq %[hi], %[t0]\n\t" \
        "adcxq %[t1], %[t0]\n\t" \
        "mulxq %[p1], %[tmp], %[t1]\n\t" \
        "adoxq %[tmp], %[t0]\n\t" \
        "adcxq %[t2], %[t1]\n\t" \
        "mulxq %[p2], %[tmp], %[t2]\n\t" \
        "adoxq %[tmp], %[t1]\n\t" \
        "adcxq %[t3], %[t2]\n\t" \
        "mulxq %[p3], %[tmp], %[t3]\n\t" \
        "adoxq %[tmp], %[t2]\n\t" \
        "movl $0, %k[tmp]\n\t" \
        "adcxq %[tmp], %[t3]\n\t" \
        "adoxq %[A], %[t3]\n\t"
        REDUCE
#define ROW(OFF) \
        "movq " OFF ", %%rdx\n\t" \
        "xorl %k[tmp], %k[tmp]\n\t" \
        "mulxq %[a0], %[tmp], %[A]\n\t" \
        "adoxq %[tmp], %[t0]\n\t" \
        "adcxq %[A], %[t1]\n\t" \
        "mulxq %[a1], %[tmp], %[A]\n\t" \
        "adoxq %[tmp], %[t1]\n\t" \
        "adcxq %[A], %[t2]\n\t" \
        "mulxq %[a2], %[tmp], %[A]\n\t" \
        "adoxq %[tmp], %[t2]\n\t" \
        "adcxq %[A], %[t3]\n\t" \
        "mulxq %[a3], %[tmp], %[A]\n\t" \
        "adoxq %[tmp], %[t3]\n\t" \
        "movl $0, %k[tmp]\n\t" \
        "adcxq %[tmp], %[A]\n\t" \
        "adoxq %[tmp], %[A]\n\t"
        ROW("%[b1]") REDUCE
        ROW("%[b2]") REDUCE
        ROW("%[b3]") REDUCE
#undef ROW
#undef REDUCE
        : [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [A] "=&r"(A),
          [tmp] "=&r"(tmp), [hi] "=&r"(hi)
        : [a0] "m"(a->l[0]), [a1] "m"(a->l[1]), [a2] "m"(a->l[2]), [a3] "m"(a->l[3]),
          [b0] "m"(b->l[0]), [b1] "m"(b->l[1]), [b2] "m"(b->l[2]), [b3] "m"(b->l[3]), [pinv] "m"(SK_PINV),
          [p0] "m"(SK_P.l[0]), [p1] "m"(SK_P.l[1]), [p2] "m"(SK_P.l[2]), [p3] "m"(SK_P.l[3])
        : "rdx", "cc");
    r->l[0] = t0; r->l[1] = t1; r->l[2] = t2; r->l[3] = t3;
}
