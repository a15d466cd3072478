"""The NumPy reference of ECA: docs/math.md written as code, float64 inside.

Every function here takes a validated :class:`~npeca._validate.ECAProblem`; the public
wrappers in :mod:`npeca.api` check user input first. Names follow the math:

    m[n, c]     = (1 / S) * sum_s x[n, c, s]
    z[n, c]     = bias + sum_j w[j] * m~[n, c + j - p]
    a[n, c]     = gate(z[n, c])
    y[n, c, s]  = a[n, c] * x[n, c, s]

and backward, with g = dL/dy,

    da[n, c]    = sum_s g[n, c, s] * x[n, c, s]
    dz[n, c]    = da[n, c] * gate'(z[n, c])
    dw[j]       = sum_{n, c} dz[n, c] * m~[n, c + j - p]
    dbias       = sum_{n, c} dz[n, c]
    dm[n, c']   = sum_j w[j] * dz~[n, c' - j + p]
    dx[n, c, s] = g[n, c, s] * a[n, c] + dm[n, c] / S
"""

from __future__ import annotations

import numpy as np

from ._bfloat16 import round_to
from ._validate import ECAProblem
from .results import ECAForward, ECAGrads

__all__ = ["forward", "backward", "sigmoid", "hard_sigmoid"]


# --- the gates ------------------------------------------------------------------------------

def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow and with full relative accuracy for z << 0."""
    e = np.exp(-np.abs(z))  # in (0, 1]: never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def hard_sigmoid(z: np.ndarray) -> np.ndarray:
    """relu6(z + 3) / 6, timm's and PyTorch's hard sigmoid."""
    return np.clip(z + 3.0, 0.0, 6.0) / 6.0


def _gate(z: np.ndarray, gate: str) -> np.ndarray:
    return sigmoid(z) if gate == "sigmoid" else hard_sigmoid(z)


def _gate_grad(z: np.ndarray, a: np.ndarray, gate: str) -> np.ndarray:
    """gate'(z). For the sigmoid a * (1 - a), with 1 - a taken as sigmoid(-z) so that it
    keeps its relative accuracy when a rounds towards 1. For the hard sigmoid 1/6 strictly
    inside (-3, 3) and 0 elsewhere, kinks included, as PyTorch's hardsigmoid_backward."""
    if gate == "sigmoid":
        return a * sigmoid(-z)
    return np.where((z > -3.0) & (z < 3.0), 1.0 / 6.0, 0.0)


# --- layout ---------------------------------------------------------------------------------

def _to_ncs(arr: np.ndarray, problem: ECAProblem) -> np.ndarray:
    """A C-contiguous float64 copy of ``arr`` (shaped like x) as (N, C, S).

    C order matters: NumPy sums a contiguous axis pairwise and a strided one differently,
    and the reference must give the same bits for every memory layout of x."""
    if problem.channels_last:
        arr = np.moveaxis(arr, -1, 1)
    return np.ascontiguousarray(arr.reshape(problem.n, problem.c, problem.s), dtype=np.float64)


def _from_ncs(arr3: np.ndarray, problem: ECAProblem) -> np.ndarray:
    """(N, C, S) float64 back to x's shape and dtype, C-contiguous, rounded once."""
    arr = arr3.reshape((problem.n, problem.c) + problem.spatial)
    if problem.channels_last:
        arr = np.moveaxis(arr, 1, -1)
    return np.ascontiguousarray(round_to(arr, problem.x.dtype))


# --- the cross-correlation over channels ----------------------------------------------------

def _taps(problem: ECAProblem) -> tuple[np.ndarray, np.ndarray]:
    """Source channel of every tap inside one group: ``src[c, j] = c + j - p``.

    Returns ``(src, valid)`` of shape (C/G, k). Circular padding wraps ``src`` modulo C/G
    (any number of times, so k may exceed C); zero padding marks out-of-range taps invalid.
    """
    cg, k = problem.c // problem.groups, problem.k
    p = (k - 1) // 2
    src = np.arange(cg)[:, None] + np.arange(k)[None, :] - p
    if problem.padding == "circular":
        return src % cg, np.ones(src.shape, dtype=bool)
    valid = (src >= 0) & (src < cg)
    return np.where(valid, src, 0), valid


def _windows(v: np.ndarray, problem: ECAProblem) -> np.ndarray:
    """``v~[n, c + j - p]`` for every channel c and tap j: (N, C) -> (N, C, k).

    Groups are contiguous blocks of C/G channels and a window never crosses a block edge.
    Invalid taps are set to 0 with ``where`` (not multiplied by 0, which would turn a NaN
    from the tap's placeholder index into a NaN in a channel that never reads it).
    """
    src, valid = _taps(problem)
    vg = v.reshape(problem.n, problem.groups, problem.c // problem.groups)
    win = np.where(valid, vg[:, :, src], 0.0)  # (N, G, C/G, k)
    return win.reshape(problem.n, problem.c, problem.k)


def _weight_per_channel(problem: ECAProblem) -> np.ndarray:
    """The weight as (C, k) float64, shared kernels repeated."""
    w = problem.weight.astype(np.float64)
    return np.broadcast_to(w, (problem.c, problem.k))


def _transposed_weight(w: np.ndarray, problem: ECAProblem) -> np.ndarray:
    """``wt[c', j] = w[c' - j + p, j]`` (that channel's kernel tap j), 0 where out of range.

    The transposed correlation reads, for input channel c', the output channels c that
    read c' through tap j: c = c' - j + p. The taps of ``_taps`` reversed along j are exactly
    those channels, with the same padding rule.
    """
    src, valid = _taps(problem)
    src_t, valid_t = src[:, ::-1], valid[:, ::-1]  # c' + (k - 1 - j) - p = c' - j + p
    cg = problem.c // problem.groups
    wg = w.reshape(problem.groups, cg, problem.k)
    j = np.arange(problem.k)[None, :]
    wt = np.where(valid_t, wg[:, src_t, j], 0.0)  # (G, C/G, k)
    return wt.reshape(problem.c, problem.k)


# --- forward and backward -------------------------------------------------------------------

def _times(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b as a C-contiguous array. NumPy lays a product out like its inputs, and sums a
    contiguous axis pairwise but a strided one in order: a C-order product makes every sum
    below add in one order, so a shared kernel and the same kernel repeated per channel (a
    broadcast input or a real one) give the same bits."""
    return np.multiply(a, b, order="C")


# The two functions below are shown on docs/math.md (between the --8<-- markers), next to
# the formulas they compute.
# --8<-- [start:forward]
def _forward3(problem: ECAProblem) -> tuple[np.ndarray, ECAForward]:
    x = _to_ncs(problem.x, problem)  # (N, C, S) float64
    m = x.mean(axis=2)  # (N, C)
    m_win = _windows(m, problem)  # (N, C, k): m~[n, c + j - p]
    z = _times(m_win, _weight_per_channel(problem)).sum(axis=2)  # (N, C)
    if problem.bias is not None:
        z = z + problem.bias
    a = _gate(z, problem.gate)  # (N, C)
    y = a[:, :, None] * x  # (N, C, S)
    return x, ECAForward(y=y, m=m, z=z, a=a)
# --8<-- [end:forward]


def forward(problem: ECAProblem) -> ECAForward:
    """y and the intermediates m, z, a (float64, shape (N, C)) of a validated problem."""
    with np.errstate(invalid="ignore", over="ignore"):  # IEEE NaN and Inf, as documented
        _, out = _forward3(problem)
        return out._replace(y=_from_ncs(out.y, problem))


def backward(problem: ECAProblem, grad_out: np.ndarray) -> ECAGrads:
    """Gradients with respect to x, weight and bias for upstream gradient ``grad_out``."""
    with np.errstate(invalid="ignore", over="ignore"):  # IEEE NaN and Inf, as documented
        return _backward(problem, grad_out)


# --8<-- [start:backward]
def _backward(problem: ECAProblem, grad_out: np.ndarray) -> ECAGrads:
    x, fwd = _forward3(problem)
    m, z, a = fwd.m, fwd.z, fwd.a
    g = _to_ncs(grad_out, problem)  # (N, C, S) float64
    w = _weight_per_channel(problem)  # (C, k)

    da = _times(g, x).sum(axis=2)  # (N, C)
    dz = da * _gate_grad(z, a, problem.gate)  # (N, C)
    dw = _times(dz[:, :, None], _windows(m, problem))  # (N, C, k): dz[n, c] m~[n, c + j - p]
    dw = dw.sum(axis=0) if problem.per_channel else dw.sum(axis=(0, 1))  # (C, k) or (k,)
    dm = _times(_windows(dz, problem)[:, :, ::-1], _transposed_weight(w, problem)).sum(axis=2)
    dx = g * a[:, :, None] + (dm / problem.s)[:, :, None]  # (N, C, S)

    dbias = None
    if problem.bias is not None:
        dbias = round_to(dz.sum(), problem.bias_dtype).reshape(problem.bias_shape)
    return ECAGrads(
        x=_from_ncs(dx, problem),
        weight=round_to(dw, problem.weight_dtype).reshape(problem.weight_shape),
        bias=dbias,
    )
# --8<-- [end:backward]
