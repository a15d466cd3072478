/* fp16.c: double -> binary16 -> double, round to nearest even. See fp16.h. */
#include "fp16.h"

#include <math.h>

/* binary16: 1 sign bit, 5 exponent bits, 10 fraction bits. A finite half is
 * q * i for an integer 0 <= i <= 2047, where the spacing q = 2^(e - 10) for the
 * normal numbers in [2^e, 2^(e+1)), -14 <= e <= 15, and q = 2^-24 for the subnormals. */
#define FP16_MIN_EXP (-14)      /* exponent of the smallest normal half, 2^-14 */
#define FP16_FRACTION_BITS 10
#define FP16_MAX 65504.0        /* (2 - 2^-10) 2^15 */

double fp16_round(double v)
{
    int e;
    double q, r;

    if (isnan(v) || isinf(v) || v == 0.0)
        return v;
    (void)frexp(v, &e);         /* |v| = f 2^e with f in [1/2, 1): |v| in [2^(e-1), 2^e) */
    e = e - 1;                  /* now |v| in [2^e, 2^(e+1)) */
    if (e < FP16_MIN_EXP)
        e = FP16_MIN_EXP;       /* subnormal halves: the spacing stays 2^-24 */
    q = ldexp(1.0, e - FP16_FRACTION_BITS);
    /* v / q is exact (a power of two scales it); rint rounds to the nearest integer, ties
     * to the even one, which is the even last fraction bit of the half. */
    r = rint(v / q) * q;
    if (fabs(r) > FP16_MAX)
        return v > 0 ? INFINITY : -INFINITY;
    return r;
}
