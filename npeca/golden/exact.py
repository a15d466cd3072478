"""Expected values for golden vectors, exact up to one final rounding.

Every input is a binary float, hence an exact rational. The pooled mean, the logits, the
reductions of the backward pass and the products are computed exactly with
:class:`fractions.Fraction`; only the sigmoid is transcendental, and it is evaluated with
:mod:`decimal` at ``DIGITS`` significant digits (both a = sigmoid(z) and 1 - a = sigmoid(-z),
so each keeps its relative accuracy when the other rounds to 1). Each stored value is then
rounded once, to nearest with ties to even, directly to its dtype (no double rounding through
float64). The result is the correctly rounded exact value unless the exact value lies within
about 10**-DIGITS relative of a rounding midpoint.

Inputs with NaN or Inf are carried as Python floats beside the Fractions: any operation that
meets one follows IEEE 754 (inf - inf and 0 * inf are NaN, a finite value plus inf is inf),
and the sigmoid maps +inf to 1, -inf to 0 and NaN to NaN. Every finite value is still exact,
so every stored value is the same on every machine.
"""

from __future__ import annotations

import decimal
import math
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

from . import dtypes

DIGITS = 60

_DEC = decimal.Context(prec=DIGITS, rounding=decimal.ROUND_HALF_EVEN,
                       Emin=-10**6, Emax=10**6)


def _sigmoid_pair(z: Fraction | float) -> tuple[Fraction | float, Fraction | float]:
    """(sigmoid(z), sigmoid(-z)) to DIGITS significant digits, as exact Fractions (a
    non-finite z, a float, gives 1 and 0 for +inf, 0 and 1 for -inf, NaN for NaN)."""
    if isinstance(z, float):
        if z != z:
            return z, z
        return (Fraction(1), Fraction(0)) if z > 0 else (Fraction(0), Fraction(1))
    zd = _DEC.divide(decimal.Decimal(z.numerator), decimal.Decimal(z.denominator))
    e = _DEC.exp(-abs(zd))  # in (0, 1]
    one_plus = _DEC.add(1, e)
    big, small = _DEC.divide(1, one_plus), _DEC.divide(e, one_plus)
    a, b = (big, small) if zd >= 0 else (small, big)
    return Fraction(a), Fraction(b)


def round_to(q: Fraction | float, dtype: Any) -> float:
    """The value of format ``dtype`` (a name from :mod:`npeca.golden.dtypes`, or a NumPy
    dtype) nearest to the exact rational ``q`` (ties to even).

    Overflow rounds to infinity exactly as IEEE 754 does: a value at or beyond the midpoint
    between the largest finite number and the next power of two becomes inf. A float ``q``
    (NaN or an infinity, see the module docstring) is returned as it is.
    """
    if isinstance(q, float):
        return q
    f = dtypes.fmt(dtype)
    try:
        first = float(q)  # Fraction -> float64 is correctly rounded (integer true division)
    except OverflowError:
        first = float("inf") if q > 0 else float("-inf")
    if f.name == "float64":
        return first
    # float64 then the format may round twice; the exact answer is this or a neighbour
    # (positions beyond +-inf are NaN patterns: clamp to the infinities)
    at = int(dtypes.ordered(first, f.name))
    top = int(dtypes.ordered(math.inf, f.name))
    positions = [max(at - 1, -top), at, min(at + 1, top)]
    candidates = dtypes.from_ordered(positions, f.name).astype(np.float64)
    overflow_value = Fraction(2) ** f.maxexp  # what inf stands for in the comparison

    def value(v: float) -> Fraction:
        if math.isinf(v):
            return overflow_value if v > 0 else -overflow_value
        return Fraction(v)

    best = min(range(3), key=lambda i: (abs(value(float(candidates[i])) - q),
                                        positions[i] & 1))
    # position 0 is +0: a negative value that rounds to zero is -0, as in IEEE 754
    return math.copysign(float(candidates[best]), -1.0 if q < 0 else 1.0)


def round_array(values: Sequence[Fraction | float], shape: tuple[int, ...],
                dtype: Any) -> np.ndarray:
    """A list of exact values, rounded one by one, as an array of ``shape`` in the carrier
    dtype of format ``dtype``."""
    f = dtypes.fmt(dtype)
    return np.array([round_to(v, f.name) for v in values], dtype=np.float64).reshape(
        shape).astype(f.carrier)


def _fractions(a: np.ndarray) -> list:
    """Every element as an exact Fraction, or as a float when it is NaN or infinite."""
    return [Fraction(v) if math.isfinite(v) else v
            for v in np.asarray(a, dtype=np.float64).reshape(-1).tolist()]


# long: the forward and backward formulas of docs/math.md in exact arithmetic, one line per
# formula, in the page's order
def exact_eca(x: np.ndarray, weight: np.ndarray, grad_out: np.ndarray, *, bias: Any,
              channel_axis: int, padding: str, groups: int, gate: str,
              progress: Callable[[], None] | None = None, dtype: Any = None
              ) -> dict[str, np.ndarray]:
    """Correctly rounded y, m, z, a, dx, dweight (and dbias); NaN and Inf as IEEE makes them.

    ``weight`` is (k,) shared or (C, k) per channel (the caller reshapes other forms).
    y, dx, dweight and dbias are rounded to the format ``dtype`` (default: x's dtype; a
    bfloat16 case passes "bfloat16" with float32 carriers, see :mod:`.dtypes`), and m, z,
    a to float64.
    """
    name = dtypes.fmt(x.dtype if dtype is None else dtype).name
    xc = np.moveaxis(x, -1, 1) if channel_axis == -1 else x
    gc = np.moveaxis(grad_out, -1, 1) if channel_axis == -1 else grad_out
    n, c = xc.shape[:2]
    s = int(np.prod(xc.shape[2:]))
    k = weight.shape[-1]
    p = (k - 1) // 2
    cg = c // groups
    xs = _fractions(xc.reshape(n, c, s))  # flat (n, c, s)
    gs = _fractions(gc.reshape(n, c, s))
    per_channel = weight.ndim == 2
    wf = _fractions(weight)
    b = Fraction(0) if bias is None else _fractions(np.asarray(bias))[0]

    def w(ch: int, j: int) -> Fraction:
        return wf[ch * k + j] if per_channel else wf[j]

    def src(ch: int, j: int) -> int | None:
        """The channel that tap j of output channel ch reads, or None (a zero pad)."""
        start = (ch // cg) * cg
        t = ch - start + j - p
        if padding == "circular":
            t %= cg
        elif not 0 <= t < cg:
            return None
        return start + t

    def row(values: list, i: int, j: int) -> list:
        return values[(i * c + j) * s:(i * c + j + 1) * s]

    m = [[sum(row(xs, i, ch), Fraction(0)) / s for ch in range(c)] for i in range(n)]
    z = [[b + sum((w(ch, j) * m[i][t] for j in range(k) if (t := src(ch, j)) is not None),
                  Fraction(0)) for ch in range(c)] for i in range(n)]
    if gate == "sigmoid":
        pairs = [[_sigmoid_pair(v) for v in zi] for zi in z]
        a = [[pa for pa, _ in pi] for pi in pairs]
        slope = [[pa * pb for pa, pb in pi] for pi in pairs]  # a (1 - a)
    else:
        a = [[min(max(v + 3, Fraction(0)), Fraction(6)) / 6 for v in zi] for zi in z]
        # a NaN logit is neither inside nor outside: its slope is 0, like the reference's
        slope = [[Fraction(1, 6) if -3 < v < 3 else Fraction(0) for v in zi] for zi in z]
    if progress:
        progress()

    y = [a[i][ch] * v for i in range(n) for ch in range(c) for v in row(xs, i, ch)]
    da = [[sum((gv * xv for gv, xv in zip(row(gs, i, ch), row(xs, i, ch))), Fraction(0))
           for ch in range(c)] for i in range(n)]
    dz = [[da[i][ch] * slope[i][ch] for ch in range(c)] for i in range(n)]
    dw_rows = c if per_channel else 1
    dw: list[list[Fraction | float]] = [[Fraction(0)] * k for _ in range(dw_rows)]
    dm: list[list[Fraction | float]] = [[Fraction(0)] * c for _ in range(n)]
    for i in range(n):
        for ch in range(c):
            for j in range(k):
                t = src(ch, j)
                if t is None:
                    continue
                dw[ch if per_channel else 0][j] += dz[i][ch] * m[i][t]
                dm[i][t] += w(ch, j) * dz[i][ch]
    dx = [gv * a[i][ch] + dm[i][ch] / s
          for i in range(n) for ch in range(c) for gv in row(gs, i, ch)]
    if progress:
        progress()

    def back(flat: list, dtype: Any) -> np.ndarray:
        arr = round_array(flat, (n, c) + xc.shape[2:], dtype)
        return np.ascontiguousarray(np.moveaxis(arr, 1, -1)) if channel_axis == -1 else arr

    out = {
        "y": back(y, name),
        "m": round_array([v for r in m for v in r], (n, c), np.float64),
        "z": round_array([v for r in z for v in r], (n, c), np.float64),
        "a": round_array([v for r in a for v in r], (n, c), np.float64),
        "dx": back(dx, name),
        "dweight": round_array([v for r in dw for v in r], weight.shape, name),
    }
    if bias is not None:
        out["dbias"] = round_array([sum((v for r in dz for v in r), Fraction(0))], (1,),
                                   name)
    return out
