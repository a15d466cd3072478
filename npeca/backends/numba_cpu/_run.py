"""forward and backward of the numba backend: allocate, stage when needed, launch."""

from __future__ import annotations

import numpy as np

from ..._bfloat16 import round_to

from ..._validate import ECAProblem
from ...results import ECAForward, ECAGrads
from ._compile import deferring
from ._schedule import _bfloat16_bits, _Call, _fast


def forward(problem: ECAProblem, out: np.ndarray | None = None, *,
            intermediates: bool = True) -> ECAForward:
    """y and the float64 intermediates m, z, a (N, C) of a validated problem.

    Parameters
    ----------
    problem : ECAProblem
        From :func:`npeca._validate.eca_problem`.
    out : numpy.ndarray, optional
        A validated output array (shape and dtype of x, any strides; may be x itself).
    intermediates : bool
        Ignored: m, z and a are computed anyway (the CUDA backend may leave them out).

    Returns
    -------
    ECAForward
        ``y`` is ``out`` when given, else a new C-contiguous array.
    """
    call = _Call(problem)
    if call.threads == 1:  # serial kernels only: nothing to compile in the background
        return _forward(call, out)
    with deferring():
        return _forward(call, out)


def backward(problem: ECAProblem, grad_out: np.ndarray,
             out: np.ndarray | None = None) -> ECAGrads:
    """Gradients with respect to x, weight and bias for upstream gradient ``grad_out``.

    Parameters
    ----------
    problem : ECAProblem
        From :func:`npeca._validate.eca_problem`.
    grad_out : numpy.ndarray
        Validated dL/dy, shaped like x, any float dtype and strides.
    out : numpy.ndarray, optional
        A validated array for dL/dx (shape and dtype of x; may be x or grad_out itself).

    Returns
    -------
    ECAGrads
        ``x`` is ``out`` when given; the weight and bias gradients in their own shapes and
        dtypes.
    """
    call = _Call(problem)
    if call.threads == 1:
        return _backward(call, grad_out, out)
    with deferring():
        return _backward(call, grad_out, out)


def _forward(call: _Call, out: np.ndarray | None) -> ECAForward:
    """forward, for its _Call."""
    x = call.problem.x
    y = np.empty(x.shape, dtype=x.dtype) if out is None else out
    mza = np.empty((3, call.n, call.c))  # one allocation, three C-contiguous views
    m, z, a = mza[0], mza[1], mza[2]
    if _fast(x, y):
        call.forward(x, y, m, z, a)
    elif (bits := _bfloat16_bits(call.problem.channels_last, x, y)) is not None:
        call.forward(bits[0], bits[1], m, z, a)
    else:  # a few samples at a time through contiguous buffers: bounded extra memory
        stager = call.stager(x.dtype)
        for n0, n1 in stager.ranges():
            ys, copy = stager.result(y, n0, n1)
            call.forward(stager.load("x", x, n0, n1), ys, m[n0:n1], z[n0:n1], a[n0:n1])
            if copy:
                stager.store(y, n0, n1, ys)  # the only rounding to y's dtype
    return ECAForward(y, m, z, a)


def _backward(call: _Call, grad_out: np.ndarray, out: np.ndarray | None) -> ECAGrads:
    """backward, for its _Call."""
    problem = call.problem
    x, g = problem.x, grad_out
    dx = np.empty(x.shape, dtype=x.dtype) if out is None else out
    mdz = np.empty((2, call.n, call.c))
    m, dz = mdz[0], mdz[1]
    if _fast(x, g, dx):
        call.backward(x, g, dx, m, dz)
    elif (bits := _bfloat16_bits(problem.channels_last, x, g, dx)) is not None:
        call.backward(bits[0], bits[1], bits[2], m, dz)
    else:
        stager = call.stager(x.dtype, g.dtype)
        for n0, n1 in stager.ranges():
            # dx may be x or g itself: the kernels read every element before writing it
            dxs, copy = stager.result(dx, n0, n1)
            call.backward(stager.load("x", x, n0, n1), stager.load("g", g, n0, n1), dxs,
                          m[n0:n1], dz[n0:n1])
            if copy:
                stager.store(dx, n0, n1, dxs)

    per_channel = problem.per_channel
    dw = np.empty((call.c, problem.k) if per_channel else (1, problem.k))
    db = np.empty(1)
    call.parameter_grads(m, dz, dw, db)
    dbias = None
    if problem.bias is not None:
        dbias = round_to(db[0], problem.bias_dtype).reshape(problem.bias_shape)
    return ECAGrads(x=dx, weight=round_to(dw, problem.weight_dtype).reshape(problem.weight_shape),
                    bias=dbias)


