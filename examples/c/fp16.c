/* fp16.c: double -> binary16 -> double, round to nearest even. See fp16.h. */
#include "fp16.h"

#include <math.h>

/* binary16: 1 sign bit, 5 exponent bits, 10 fraction bits. A finite half is
 * q * i for an integer 0 <= i <= 2047, where the spacing q = 2^(e - 10) for the
 * normal numbers in [2^e, 2^(e+1)), -14 <= e <= 15, and q = 2^-24 for the subnormals. */
#define FP16_MIN_EXP (-14)      /* exponent of the smallest normal half, 2^-14 */
#define FP16_FRACTION_BITS 10
#define FP16_MAX 65504.0        /* (2 - 2^-10) 2^15 */

/* v rounded to a binary format with `fraction_bits` fraction bits, smallest normal
 * exponent `min_exp` and largest finite value `max`. */
static double round_binary(double v, int fraction_bits, int min_exp, double max)
{
    int e;
    double q, r;

    if (isnan(v) || isinf(v) || v == 0.0)
        return v;
    (void)frexp(v, &e);         /* |v| = f 2^e with f in [1/2, 1): |v| in [2^(e-1), 2^e) */
    e = e - 1;                  /* now |v| in [2^e, 2^(e+1)) */
    if (e < min_exp)
        e = min_exp;            /* subnormals: the spacing stays 2^(min_exp - fraction_bits) */
    q = ldexp(1.0, e - fraction_bits);
    /* v / q is exact (a power of two scales it); rint rounds to the nearest integer, ties
     * to the even one, which is the even last fraction bit of the result. */
    r = rint(v / q) * q;
    if (fabs(r) > max)
        return v > 0 ? INFINITY : -INFINITY;
    return r;
}

double fp16_round(double v)
{
    return round_binary(v, FP16_FRACTION_BITS, FP16_MIN_EXP, FP16_MAX);
}

/* bfloat16: 1 sign bit, 8 exponent bits (float32's), 7 fraction bits. */
double bf16_round(double v)
{
    return round_binary(v, 7, -126, ldexp(255.0, 120));  /* max (2 - 2^-7) 2^127 */
}
