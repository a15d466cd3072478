/* fp16.h: rounding a double to IEEE 754 binary16 ("half", float16) and to bfloat16 in plain
 * C99, which has neither type. The runner stores the results of 16-bit cases this way. */
#ifndef FP16_H
#define FP16_H

/* v rounded to the nearest binary16 number, ties to even, and widened back to double
 * (exactly): subnormal halves below 2^-14, +-INFINITY from 65520 up (the midpoint between
 * the largest half, 65504, and 2^16), NaN and the signs of zero and infinity kept. v is
 * rounded once, directly, never through float first (which could round twice). Assumes
 * the default rounding mode, round to nearest. */
double fp16_round(double v);

/* v rounded to the nearest bfloat16 number (8 significant bits, float32's exponent range),
 * ties to even, widened back to double: subnormals below 2^-126 with spacing 2^-133,
 * +-INFINITY from (2 - 2^-8) 2^127 up, NaN and signed zeros kept; rounded once, directly
 * (float64 -> float32 -> bfloat16 would round twice). */
double bf16_round(double v);

#endif /* FP16_H */
