"""Comparison helpers with tolerances derived from how the results are computed.

The reference and the naive loops both compute in float64 (or exactly) and round once to
the output dtype. Two such results can differ by one unit in the last place (ulp) of the
output dtype where the float64 values straddle a rounding boundary, plus the float64
difference itself, which is bounded by a small multiple of 2**-52 times the magnitude of
the terms summed (``scale``).
"""

from __future__ import annotations

import numpy as np

_INT = {np.dtype(np.float16): np.int16, np.dtype(np.float32): np.int32,
        np.dtype(np.float64): np.int64}


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of representable values between a and b (same float dtype), 0 for equal NaNs."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    ints = np.int16 if a.dtype.name == "bfloat16" else _INT[a.dtype]
    bits = 8 * a.dtype.itemsize

    def ordered(v):
        i = v.view(ints).astype(np.int64)
        return np.where(i < 0, -(i & ((1 << (bits - 1)) - 1)), i)  # sign-magnitude -> ordered

    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(a64) & np.isnan(b64)
    dist = np.abs(ordered(a) - ordered(b))
    return np.where(both_nan, 0, np.where(np.isnan(a64) | np.isnan(b64), np.iinfo(np.int64).max,
                                          dist))


def assert_rounded_close(actual, expected, *, scale, rel64=1e-12, max_ulp=1, what="value"):
    """actual and expected agree to ``max_ulp`` ulp of their dtype or to ``rel64 * scale``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (what, actual.dtype, expected.dtype)
    ulps = ulp_distance(actual, expected)
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    ok = (ulps <= max_ulp) | (diff <= rel64 * scale)
    if not ok.all():
        i = np.unravel_index(np.argmax(np.where(ok, 0, ulps)), ok.shape)
        raise AssertionError(
            f"{what}: {np.count_nonzero(~ok)} of {ok.size} elements differ by more than "
            f"{max_ulp} ulp and {rel64 * scale:.3g}; worst at {i}: actual {actual[i]!r}, "
            f"expected {expected[i]!r} ({ulps[i]} ulp)")
