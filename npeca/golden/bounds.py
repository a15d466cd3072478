"""Per-element error bounds for golden verdicts, derived from a rounding-error analysis.

The contract a backend is judged by (docs/golden.md, "The contract"): every tensor it
produces (m, z, a, y and the gradients, plus any intermediate such as da or a product
it stores) may be rounded to the case's dtype (unit roundoff ``rho``), and every
reduction is accumulated in the case's dtype, or in float32 for float16 and bfloat16
cases (unit roundoff ``u``), in any order. Under that contract this module bounds, element
by element, ``|computed - exact|`` for each output, carrying first-order terms exactly and the few
second-order ones that matter (``e_a ** 2``) explicitly:

    gamma(n)        = n u / (1 - n u)          (any summation order of n terms)
    round(v)        = rho v + eta              (one rounding of a value of size v)
    store(v, e)     = e + round(v + e)         (a result of size v with error e, rounded)
    reduce(T, n)    = 2 rho T + 2 n eta + gamma(n) (1 + 2 rho) T
                      (n terms of absolute sum T, each a product that may be rounded twice)

where ``eta`` is half the smallest subnormal of the case's dtype (for float64, which cannot
hold that, the smallest subnormal 2**-1074): the absolute error of a rounding that
underflows (an addition that underflows is exact, a product or a quotient is not). Suites
of schema version 2 were written with eta = 0 (a bound that could be too tight
near zero in float16 and bfloat16); :data:`BOUNDS` maps each schema version to its formula,
so that a suite is always checked against the bounds it was written with.

    e_m  = store(|m|, reduce(mean|x|, S + 1))
    e_z  = store(|z|, sum_j |w_j| e_m~ + reduce(|b| + sum_j |w_j| (|m~| + e_m~), k + 1))
    e_a  = store(|a|, max gate' over [z - e_z, z + e_z] * e_z + 4 rho)
    e_y  = store(|y|, |x| e_a + round(|x| (|a| + e_a)))
    e_da = store(|da|, reduce(sum_s |g x|, S))
    e_s  = (|1 - 2a| + 2 e_a) e_a + 4 round(s_max + 2 e_a)  (sigmoid'; hard: rho / 6 inside)
    e_dz = store(|dz|, s e_da + (|da| + e_da) e_s + round(|dz|))
    e_dw = store(|dw|, sum (e_dz |m~| + |dz| e_m~ + e_dz e_m~) + reduce(sum T, #terms))
    e_db = store(|db|, sum e_dz + gamma(NC) (1 + rho) sum (|dz| + e_dz))
    e_dm = store(sum |w||dz|, sum |w| e_dz + reduce(sum |w| (|dz| + e_dz), #terms))
    e_dx = store(|dx|, |g| e_a + e_dm / S + 2 round(|g| (|a| + e_a) + (|dm| + e_dm) / S))

The comparison is with the stored expected value E, itself the exact value rounded once:
``bound = (e + u_E |E| (1 + u_E) + tiny_E) * (1 + 2**-20)``, where ``u_E`` and ``tiny_E``
are the unit roundoff and half the smallest subnormal of E's dtype (from version 3 on at
least 2**-1074, as eta), and the last factor absorbs the rounding of this float64
arithmetic itself.

Everything here is computed from the stored arrays only (inputs and the stored m, z, a,
y, dx, dweight, dbias), with IEEE elementwise operations, :func:`math.fsum` for every sum
and :mod:`decimal` for the one exponential, so that the bounds are bit-identical on every
CPU and a verifier recomputes exactly what the generator stored.
"""

from __future__ import annotations

import decimal
import math
from typing import Mapping

import numpy as np

from .dtypes import fmt
from ..errors import ParameterError
from .schema import INTERMEDIATES, OUTPUTS, SCHEMA_VERSION

GATE_EVAL = 4  # roundings a gate evaluation may make (exp, add, divide, store)
# the bound formula of each schema version a suite may name (eta: the underflow term)
BOUNDS = {2: "no underflow term (eta = 0)",
          3: "eta = half the smallest subnormal of the dtype, at least 2**-1074"}
SAFETY = 1.0 + 2.0 ** -20
_SMALLEST_FLOAT64 = 2.0 ** -1074

_DEC = decimal.Context(prec=30, rounding=decimal.ROUND_HALF_EVEN)


def contract(dtype: str) -> tuple[float, float]:
    """(u, rho): unit roundoff of the accumulation and of the storage dtype of a case
    (float16 and bfloat16 are stored in 16 bits and accumulated in float32)."""
    storage = fmt(dtype).unit_roundoff
    accumulation = 2.0 ** -24 if dtype in ("float16", "bfloat16") else storage
    return accumulation, storage


def _fsum(row: list) -> float:
    try:
        return math.fsum(row)
    except OverflowError:  # terms near the float64 limit: the sum is beyond it
        return math.inf if math.fsum(math.copysign(1.0, v) for v in row) >= 0 else -math.inf


def _rowsum(a: np.ndarray) -> np.ndarray:
    """Correctly rounded sums over the last axis (the same bits on every CPU)."""
    flat = a.reshape(-1, a.shape[-1])
    return np.array([_fsum(r) for r in flat.tolist()], dtype=np.float64).reshape(
        a.shape[:-1])


def _sigmoid_slope(t: np.ndarray) -> np.ndarray:
    """sigmoid'(t) = e / (1 + e)**2 with e = exp(-|t|), rounded from 30 digits."""
    out = np.empty(t.shape)
    flat = out.reshape(-1)
    for i, v in enumerate(np.abs(t).reshape(-1).tolist()):
        e = _DEC.exp(-decimal.Decimal(v))
        flat[i] = float(_DEC.divide(e, _DEC.power(_DEC.add(1, e), 2)))
    return out


def _finite_abs(a: np.ndarray) -> np.ndarray:
    """|a| in float64 with NaN and Inf as 0: a non-finite term makes its output non-finite,
    and non-finite expected values are compared exactly, not within a bound."""
    f = np.abs(np.asarray(a, dtype=np.float64))
    return np.where(np.isfinite(f), f, 0.0)


def taps(c: int, k: int, groups: int, padding: str) -> np.ndarray:
    """src[c, j]: the channel tap j of output channel c reads, or -1 for a zero pad."""
    cg, p = c // groups, (k - 1) // 2
    ch = np.arange(c)[:, None]
    start = (ch // cg) * cg
    t = ch - start + np.arange(k)[None, :] - p
    if padding == "circular":
        return start + t % cg
    return np.where((t >= 0) & (t < cg), start + t, -1)


def error_bounds(arrays: Mapping[str, np.ndarray], params: Mapping, dtype: str, *,
                 roundoffs: tuple[float, float] | None = None,
                 schema_version: int = SCHEMA_VERSION) -> dict[str, np.ndarray]:
    """Per-element bounds on |actual - expected| for every output present in ``arrays``.

    ``arrays`` holds a case's inputs (x, weight, grad_out, bias when used) and its stored
    expected values; ``params`` is the case's manifest ``params``. ``roundoffs`` = (u, rho)
    replaces the contract of ``dtype`` (what-if analyses, such as docs/numerics.md's on
    float8; the stored expected values are still taken to be of ``dtype``, and so is eta).
    ``schema_version`` picks the formula of :data:`BOUNDS` (a suite's manifest names it).
    """
    if type(schema_version) is not int or schema_version not in BOUNDS:
        raise ParameterError(f"schema_version must be one of {sorted(BOUNDS)} (the bound "
                             f"formulas this npeca knows); got {schema_version!r:.40}")
    # version 3: eta, and tiny_E of the comparison, at least the smallest float64 subnormal
    # (half of it, float64's own eta, is not a float64: it would round to 0)
    floor = _SMALLEST_FLOAT64 if schema_version >= 3 else 0.0
    eta = max(fmt(dtype).smallest_subnormal / 2, floor) if schema_version >= 3 else 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # inf bounds for absurd magnitudes
        return _error_bounds(arrays, params, dtype, roundoffs, eta, floor)


# long: the bound table of docs/golden.md, one row per output in order, each row using the ones
# above
def _error_bounds(arrays: Mapping[str, np.ndarray], params: Mapping, dtype: str,
                  roundoffs: tuple[float, float] | None, eta: float, floor: float
                  ) -> dict[str, np.ndarray]:
    u, rho = contract(dtype) if roundoffs is None else roundoffs

    def gamma(n: int) -> float:
        return n * u / (1 - n * u)

    def rnd(v):  # one rounding of a value of size v (eta: when it underflows)
        return rho * v + eta

    def store(v: np.ndarray, e: np.ndarray) -> np.ndarray:
        return e + rnd(v + e)

    def reduce(t: np.ndarray, n: int) -> np.ndarray:
        return 2 * rho * t + 2 * n * eta + gamma(n) * (1 + 2 * rho) * t

    axis = params["channel_axis"]

    def ncs(a: np.ndarray) -> np.ndarray:
        a = np.moveaxis(np.asarray(a), axis, 1)
        return a.reshape(a.shape[0], a.shape[1], -1)

    x, g = ncs(arrays["x"]), ncs(arrays["grad_out"])
    n, c, s = x.shape
    k, groups = params["k"], params["groups"]
    X, G = _finite_abs(x), _finite_abs(g)
    W = _finite_abs(arrays["weight"]).reshape(-1, k)
    W = np.broadcast_to(W, (c, k))
    B = float(_finite_abs(arrays["bias"]).max()) if "bias" in arrays else 0.0
    src = taps(c, k, groups, params["padding"])
    valid = src >= 0
    M, Z = _finite_abs(arrays["m"]), np.asarray(arrays["z"], dtype=np.float64)
    A = _finite_abs(arrays["a"])
    Zabs = _finite_abs(Z)

    def window(v: np.ndarray) -> np.ndarray:  # (N, C) -> (N, C, k): v~ at every tap
        return np.where(valid[None], v[:, np.where(valid, src, 0)], 0.0)

    e_m = store(M, reduce(_rowsum(X) / s, s + 1))
    Mt, Emt = window(M), window(e_m)
    conv_terms = B + sum(W[None, :, j] * (Mt[:, :, j] + Emt[:, :, j]) for j in range(k))
    e_z = sum(W[None, :, j] * Emt[:, :, j] for j in range(k))
    e_z = store(Zabs, e_z + reduce(conv_terms, k + 1))

    if params["gate"] == "sigmoid":
        slope = _sigmoid_slope(Zabs)
        slope_max = _sigmoid_slope(np.maximum(Zabs - e_z, 0.0))
        e_a = store(A, slope_max * e_z + GATE_EVAL * rho)
        e_s = (np.abs(1 - 2 * A) + 2 * e_a) * e_a + (GATE_EVAL * rho * (slope_max + 2 * e_a)
                                                         + GATE_EVAL * eta)
    else:
        inside, outside = Zabs + e_z < 3.0, Zabs - e_z > 3.0
        slope = np.where(inside, 1.0 / 6.0, 0.0)
        e_a = np.where(outside, 0.0, store(A, e_z / 6.0 + GATE_EVAL * rho))
        # On an interval that holds a kink the derivative may be 1/6 or 0: unknowable.
        e_s = np.where(inside, rho / 6.0, np.where(outside, 0.0, 1.0 / 6.0))

    exp_abs = {name: _finite_abs(arrays[name]) for name in OUTPUTS if name in arrays}
    e: dict[str, np.ndarray] = {"m": e_m, "z": e_z, "a": e_a}
    if "y" in arrays:
        # round() written out here and in e_s and dx: version 2's order of operations,
        # so that its bounds keep their bits with eta = 0
        e["y"] = store(ncs(exp_abs["y"]), X * e_a[:, :, None]
                       + (rho * X * (A + e_a)[:, :, None] + eta))

    gx = np.where(np.isfinite(g * x), g * x, 0.0)
    P = _rowsum(G * X)  # sum_s |g x|, (N, C)
    DA = np.abs(_rowsum(gx)) + 2.0 ** -50 * P  # |da|, a hair above for float64 products
    e_da = store(DA, reduce(P, s))
    DZ = DA * slope
    e_dz = store(DZ, slope * e_da + (DA + e_da) * e_s + rnd(DZ))

    if "dbias" in arrays:
        terms = _rowsum((DZ + e_dz).reshape(1, -1))[0]
        e["dbias"] = store(exp_abs["dbias"], np.full(
            1, _rowsum(e_dz.reshape(1, -1))[0] + gamma(n * c) * (1 + rho) * terms))
    if "dweight" in arrays:
        prod = (DZ + e_dz)[:, :, None] * (Mt + Emt)  # (N, C, k)
        prop = e_dz[:, :, None] * Mt + DZ[:, :, None] * Emt + e_dz[:, :, None] * Emt
        per_channel = arrays["weight"].size != k
        if per_channel:  # dw[c, j] sums over the batch
            t, pr = _rowsum(np.moveaxis(prod, 0, -1)), _rowsum(np.moveaxis(prop, 0, -1))
            count = n
        else:  # dw[j] sums over the batch and the channels
            t = _rowsum(np.moveaxis(prod, 2, 0).reshape(k, -1))
            pr = _rowsum(np.moveaxis(prop, 2, 0).reshape(k, -1))
            count = n * c
        dw_abs = exp_abs["dweight"].reshape(t.shape)
        e["dweight"] = store(dw_abs, pr + reduce(t, count)).reshape(arrays["dweight"].shape)
    if "dx" in arrays:
        dm_terms = np.zeros((n, c))
        dm_prop = np.zeros((n, c))
        count = np.zeros(c, dtype=np.int64)
        for j in range(k):  # dm[n, src[c, j]] += w[c, j] dz[n, c]; src is one-to-one per j
            cols = np.nonzero(valid[:, j])[0]
            dst = src[cols, j]
            dm_terms[:, dst] += W[cols, j] * (DZ + e_dz)[:, cols]
            dm_prop[:, dst] += W[cols, j] * e_dz[:, cols]
            count[dst] += 1
        e_dm = store(dm_terms, dm_prop + reduce(dm_terms, int(count.max(initial=1))))
        ga = G * (A + e_a)[:, :, None]
        dm_s = ((dm_terms + e_dm) / s)[:, :, None]
        e["dx"] = store(ncs(exp_abs["dx"]), G * e_a[:, :, None] + (e_dm / s)[:, :, None]
                        + (2 * rho * (ga + dm_s) + 2 * eta))

    bounds = {}
    for name, err in e.items():
        if name not in arrays:
            continue
        expected = np.asarray(arrays[name])
        if name in ("y", "dx"):  # (N, C, S) back to x's layout (also when S == C makes
            # the two shapes equal, channels-last with one spatial axis)
            shape: list[int] = list(np.moveaxis(np.empty(expected.shape, dtype=bool), axis,
                                                1).shape)
            err = np.moveaxis(err.reshape(shape), 1, axis)
        info = fmt("float64" if name in INTERMEDIATES else dtype)  # E's format
        u_e = info.unit_roundoff
        tiny = max(info.smallest_subnormal / 2, floor)
        bound = (err + u_e * exp_abs[name] * (1 + u_e) + tiny) * SAFETY
        bounds[name] = np.ascontiguousarray(bound, dtype=np.float64)
    return bounds


def nonfinite_reach(arrays: Mapping[str, np.ndarray], params: Mapping
                    ) -> dict[str, np.ndarray]:
    """For every output, the elements that depend on a NaN or infinite input.

    Their expected values follow IEEE rules through one formulation of the math; another
    correct formulation may meet 0 x inf or inf / inf on the way (the sigmoid's derivative
    written as exp(-z) / (1 + exp(-z))**2 at z = -inf, say) and give NaN there. A verdict
    therefore accepts NaN, besides the expected value, on these elements, and on no others:
    NaN that spreads beyond the kernel's reach is a failure.
    """
    axis, k = params["channel_axis"], params["k"]

    def ncs(a: np.ndarray) -> np.ndarray:
        a = np.moveaxis(np.asarray(a), axis, 1)
        return a.reshape(a.shape[0], a.shape[1], -1)

    x, g = ncs(arrays["x"]), ncs(arrays["grad_out"])
    n, c, s = x.shape
    bad_x: np.ndarray = ~np.isfinite(x)
    bad_g: np.ndarray = ~np.isfinite(g)
    bad_w = not np.isfinite(arrays["weight"]).all() or (
        "bias" in arrays and not np.isfinite(arrays["bias"]).all())
    src = taps(c, k, params["groups"], params["padding"])
    valid = src >= 0

    def window(v: np.ndarray) -> np.ndarray:  # (N, C) bool -> (N, C, k)
        return valid[None] & v[:, np.where(valid, src, 0)]

    m = np.asarray(bad_x.any(axis=2) | bad_w)
    z = np.asarray(window(m).any(axis=2) | bad_w)
    dz = np.asarray((bad_x | bad_g).any(axis=2) | z)
    dm = np.zeros((n, c), dtype=bool)
    for j in range(k):
        cols = np.nonzero(valid[:, j])[0]
        dm[:, src[cols, j]] |= dz[:, cols]
    dw_terms = dz[:, :, None] | window(m)  # (N, C, k)
    per_channel = arrays["weight"].size != k
    dw = dw_terms.any(axis=0) if per_channel else dw_terms.any(axis=(0, 1))

    def layout(v: np.ndarray) -> np.ndarray:
        shape = np.moveaxis(np.empty(arrays["x"].shape, dtype=bool), axis, 1).shape
        return np.moveaxis(v.reshape(shape), 1, axis)

    reach = {"m": m, "z": z, "a": z, "y": layout(z[:, :, None] | bad_x),
             "dx": layout(bad_g | z[:, :, None] | dm[:, :, None]),
             "dweight": dw.reshape(np.shape(arrays["weight"])),
             "dbias": np.full(1, bool(dz.any()))}
    return {name: mask for name, mask in reach.items() if name in arrays}


def checkable(expected: np.ndarray, bound: np.ndarray) -> bool:
    """Whether a bound can reject anything: some finite element is larger than its bound
    (so zero fails there), or some expected value is NaN or infinite (compared exactly)."""
    e = np.asarray(expected, dtype=np.float64)
    finite = np.isfinite(e)
    return bool((~finite).any() or (np.abs(e[finite]) > bound[finite]).any())


__all__ = ["OUTPUTS", "INTERMEDIATES", "contract", "error_bounds", "checkable", "taps",
           "nonfinite_reach"]
