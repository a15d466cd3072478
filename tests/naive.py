"""An independent, loop-only ECA written from the definition in docs/math.md.

It must not import npeca: it is the second implementation the reference is checked
against. NumPy is used only to move data in and out (moveaxis, reshape, tolist); every
arithmetic step is a Python loop over floats, every sum an exactly rounded math.fsum.
"""

from __future__ import annotations

import math

import numpy as np


def _ncs(arr, channel_axis):
    """arr (shaped like x) as nested lists [n][c][s] of Python floats, plus its geometry."""
    a = np.asarray(arr)
    if channel_axis == -1:
        a = np.moveaxis(a, -1, 1)
    n, c = a.shape[0], a.shape[1]
    return a.reshape(n, c, -1).astype(np.float64).tolist(), a.shape


def round_bfloat16(v):
    """The bfloat16 nearest to the float v, ties to even, as a float: v = f * 2**e with
    0.5 <= |f| < 1 has 8 significant bits in bfloat16, so its quantum is 2**(e - 8), and
    never below 2**-133 (the smallest subnormal). Python's round() is exact and ties to
    even; scaling by powers of two is exact."""
    if math.isnan(v) or math.isinf(v) or v == 0.0:
        return v
    if abs(v) >= 2.0 ** 128:
        return math.copysign(math.inf, v)
    _, e = math.frexp(v)
    quantum = max(e - 8, -133)
    r = math.ldexp(round(math.ldexp(v, -quantum)), quantum)
    largest = math.ldexp(255.0, 127 - 7)  # (2 - 2**-7) * 2**127
    return math.copysign(math.inf, v) if abs(r) > largest else (r if r != 0 else
                                                                 math.copysign(0.0, v))


def round_to(values, dtype):
    """float64 values (any shape) rounded once to dtype; bfloat16 by round_bfloat16."""
    wide = np.asarray(values, dtype=np.float64)
    if np.dtype(dtype).name == "bfloat16":
        flat = [round_bfloat16(v) for v in wide.reshape(-1).tolist()]
        return np.array(flat, dtype=np.float32).astype(dtype).reshape(wide.shape)
    return wide.astype(dtype)


def _back(lists, moved_shape, channel_axis, dtype):
    out = np.array(lists, dtype=np.float64).reshape(moved_shape)
    if channel_axis == -1:
        out = np.moveaxis(out, 1, -1)
    return round_to(out, dtype)


def _kernel(weight, channels):
    """A function (c, j) -> weight tap, and k, for every accepted weight shape."""
    w = np.asarray(weight, dtype=np.float64)
    k = w.shape[-1]
    if w.ndim == 1 or (w.ndim == 3 and w.shape[:2] == (1, 1)):
        flat = w.reshape(k).tolist()
        return (lambda c, j: flat[j]), k, False
    rows = w.reshape(channels, k).tolist()
    return (lambda c, j: rows[c][j]), k, True


def _sources(c, j, k, channels, groups, padding):
    """The channel that tap j of output channel c reads, or None for a zero pad."""
    size = channels // groups
    start = (c // size) * size
    src = (c - start) + j - (k - 1) // 2
    if padding == "circular":
        src %= size
    elif src < 0 or src >= size:
        return None
    return start + src


def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _gate(z, gate):
    if gate == "sigmoid":
        return _sigmoid(z)
    return min(max(z + 3.0, 0.0), 6.0) / 6.0


def _gate_grad(z, gate):
    if gate == "sigmoid":
        return _sigmoid(z) * _sigmoid(-z)
    return 1.0 / 6.0 if -3.0 < z < 3.0 else 0.0


def naive_forward(x, weight, bias=None, channel_axis=1, padding="zeros", groups=1,
                  gate="sigmoid"):
    """Return (y, m, z, a): y like x in x's dtype, m, z, a as (N, C) float64 arrays."""
    xs, moved = _ncs(x, channel_axis)
    n_, c_ = len(xs), len(xs[0])
    s_ = len(xs[0][0])
    tap, k, _ = _kernel(weight, c_)
    b = 0.0 if bias is None else float(np.asarray(bias).reshape(()))
    m = [[math.fsum(xs[n][c]) / s_ for c in range(c_)] for n in range(n_)]
    z = [[0.0] * c_ for _ in range(n_)]
    a = [[0.0] * c_ for _ in range(n_)]
    for n in range(n_):
        for c in range(c_):
            terms = [b]
            for j in range(k):
                src = _sources(c, j, k, c_, groups, padding)
                if src is not None:
                    terms.append(tap(c, j) * m[n][src])
            z[n][c] = math.fsum(terms)
            a[n][c] = _gate(z[n][c], gate)
    y = [[[a[n][c] * v for v in xs[n][c]] for c in range(c_)] for n in range(n_)]
    return (_back(y, moved, channel_axis, np.asarray(x).dtype), np.array(m), np.array(z),
            np.array(a))


def naive_backward(x, weight, grad_out, bias=None, channel_axis=1, padding="zeros",
                   groups=1, gate="sigmoid"):
    """Return (dx, dweight, dbias) by scattering every forward term's derivative."""
    _, m, z, a = naive_forward(x, weight, bias, channel_axis, padding, groups, gate)
    m, z, a = m.tolist(), z.tolist(), a.tolist()
    xs, moved = _ncs(x, channel_axis)
    gs, _ = _ncs(grad_out, channel_axis)
    n_, c_, s_ = len(xs), len(xs[0]), len(xs[0][0])
    tap, k, per_channel = _kernel(weight, c_)
    dw_terms = {}
    dm_terms = [[[] for _ in range(c_)] for _ in range(n_)]
    dz_all = []
    for n in range(n_):
        for c in range(c_):
            da = math.fsum(g * v for g, v in zip(gs[n][c], xs[n][c]))
            dz = da * _gate_grad(z[n][c], gate)
            dz_all.append(dz)
            for j in range(k):
                src = _sources(c, j, k, c_, groups, padding)
                if src is None:
                    continue
                key = (c if per_channel else 0, j)
                dw_terms.setdefault(key, []).append(dz * m[n][src])
                dm_terms[n][src].append(tap(c, j) * dz)
    dx = [[[gs[n][c][s] * a[n][c] + math.fsum(dm_terms[n][c]) / s_ for s in range(s_)]
           for c in range(c_)] for n in range(n_)]
    w = np.asarray(weight)
    rows = c_ if per_channel else 1
    dw = np.array([[math.fsum(dw_terms.get((r, j), [])) for j in range(k)]
                   for r in range(rows)]).reshape(w.shape)
    dw = round_to(dw, w.dtype)
    dbias = None
    if bias is not None:
        b = np.asarray(bias)
        dtype = b.dtype if isinstance(bias, (np.ndarray, np.generic)) else np.float64
        dbias = round_to(math.fsum(dz_all), dtype).reshape(b.shape)
    return _back(dx, moved, channel_axis, np.asarray(x).dtype), dw, dbias
