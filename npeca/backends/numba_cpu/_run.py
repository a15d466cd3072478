"""forward and backward of the numba backend: allocate, stage when needed, launch."""

from __future__ import annotations

import numpy as np

from ..._bfloat16 import round_to

from ..._validate import ECAProblem
from .. import _outputs
from ...results import ECAForward, ECAGrads
from ._compile import compiled, deferring
from ._schedule import _bfloat16_bits, _Call, _fast, _recording, kernel_weight, tuning

#: Remembered launches of the forward (see _planned): key -> (dispatcher, the shape the
#: kernel views x and y in, the arguments between the weight and the bias, whether there is
#: a bias, the arguments between that and y). At most _MAX_PLANS, then forgotten all at once.
_PLANS: dict = {}
_MAX_PLANS = 256
#: The same for the backward (see _planned_backward): key -> (dispatcher, view shape, the
#: arguments between the weight and the bias, whether there is a bias, the arguments between
#: that and dx, the weight-gradient dispatcher, its arguments between the weight and dw).
_BACKWARD_PLANS: dict = {}


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
    done = _planned(problem, out)
    return forward_full(problem, out) if done is None else done


def _plan_key(problem: ECAProblem, out: np.ndarray | None) -> tuple | None:
    """What decides a forward's launch apart from the values of x, y, weight and bias: the
    geometry, x's dtype and read-only flag, in place or not, the thread count and the
    schedule's sizes. None when the launch is not a single kernel on x and y as they are
    (another dtype, strides, a bfloat16 or unaligned array: those are staged)."""
    x = problem.x
    if not (_fast(x) if out is None else _fast(x, out)):
        return None
    in_place = out is not None and (out is x or np.may_share_memory(x, out))
    return _key(problem, (x.flags.writeable, in_place))


def _planned(problem: ECAProblem, out: np.ndarray | None) -> ECAForward | None:
    """The forward through a remembered launch, or None (the caller then takes the full
    path). A call of a kind seen before skips building the schedule and asking whether the
    parallel kernel is compiled: only the per-call arrays and the weight are prepared, the
    same way as in _Call, and the same kernel runs with the same arguments, so the bits are
    those of the full path. The first call of a kind takes the full path, records its launch
    (_Call.launch) and remembers it once its kernel is compiled."""
    if getattr(_recording, "calls", None) is not None:  # someone records launches: full path
        return None
    key = _plan_key(problem, out)
    if key is None:
        return None
    plan = _PLANS.get(key)
    x = problem.x
    if plan is None:
        result, calls = _recorded(forward_full, problem, out)
        if len(calls) == 1:
            _remember(key, calls[0])
        return result
    dispatcher, shape, before, has_bias, after = plan
    y = _outputs.empty(x.shape, x.dtype) if out is None else out
    m, z, a = np.empty((3, problem.n, problem.c))
    dispatcher(x.reshape(shape), kernel_weight(problem), *before,
               0.0 if problem.bias is None else float(problem.bias), has_bias, *after,
               y.reshape(shape), m, z, a)
    return tuple.__new__(ECAForward, (y, m, z, a))  # ECAForward(y, m, z, a), 0.4 us sooner


def _recorded(full, *args) -> tuple:
    """(full(*args), the launches it made as (kernel, args) pairs): the first call of a kind
    takes the full path while _Call.launch records."""
    _recording.calls = []
    try:
        result = full(*args)
        return result, _recording.calls
    finally:
        _recording.calls = None


def _key(problem: ECAProblem, flags: tuple) -> tuple:
    """The key of a remembered launch: the thread count first (key[_THREADS], which
    _remember and _remember_backward read), then the geometry, x's dtype, the call's
    ``flags`` (whether the inputs are writeable; in place or not), every keyword and the
    schedule's sizes."""
    x = problem.x
    return (_Call.use_threads(x.nbytes), x.shape, x.dtype.char, flags,
            problem.channels_last, problem.k, problem.groups, problem.padding, problem.gate,
            problem.per_channel, problem.bias is None, tuning())


_THREADS = 0  # where _key puts the thread count


def _bias_at(args: tuple) -> int | None:
    """Where the bias is in a recorded launch of a forward or backward kernel (the only
    float among its arguments), or None for a launch of another form."""
    floats = [i for i, arg in enumerate(args) if type(arg) is float]
    return floats[0] if len(floats) == 1 else None


def _remember(key: tuple, launch: tuple) -> None:
    """Keep a recorded forward launch (kernel, args) for _planned, once the dispatcher to
    call is compiled for these argument types. The forward kernels take (x, w, tables...,
    bias, has_bias, settings..., y, m, z, a) with the bias the only float; a launch of
    another form is not remembered."""
    kernel, args = launch
    threads = key[_THREADS]
    if threads > 1 and not compiled(kernel, args):
        return  # its parallel twin still compiles in the background: ask again next time
    at = _bias_at(args)
    if at is None or len(args) < at + 6:
        return
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = (kernel.parallel if threads > 1 else kernel.serial, args[0].shape,
                   args[2:at], args[at + 1], args[at + 2:-4])


def forward_full(problem: ECAProblem, out: np.ndarray | None = None) -> ECAForward:
    """forward without the remembered launches (the tests compare the two)."""
    call = _Call(problem)
    if call.threads == 1:
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
    done = _planned_backward(problem, grad_out, out)
    return backward_full(problem, grad_out, out) if done is None else done


def backward_full(problem: ECAProblem, grad_out: np.ndarray,
                  out: np.ndarray | None = None) -> ECAGrads:
    """backward without the remembered launches (the tests compare the two)."""
    call = _Call(problem)
    if call.threads == 1:
        return _backward(call, grad_out, out)
    with deferring():
        return _backward(call, grad_out, out)


def _planned_backward(problem: ECAProblem, g: np.ndarray,
                      out: np.ndarray | None) -> ECAGrads | None:
    """The backward through a remembered launch, or None: as _planned for the forward, with
    the backward kernel and then the weight-gradient kernel, both as the full path ran them
    (in place or not, the launches are the same: the kernels read every element of x and g
    before they write it to dx)."""
    if getattr(_recording, "calls", None) is not None:  # someone records launches: full path
        return None
    x = problem.x
    if not (_fast(x, g) if out is None else _fast(x, g, out)):
        return None
    key = _key(problem, (x.flags.writeable, g.flags.writeable))
    plan = _BACKWARD_PLANS.get(key)
    if plan is None:
        result, calls = _recorded(backward_full, problem, g, out)
        _remember_backward(key, calls)
        return result
    kernel, shape, before, has_bias, after, grads, fixed = plan
    dx = _outputs.empty(x.shape, x.dtype) if out is None else out
    m, dz = np.empty((2, problem.n, problem.c))
    w = kernel_weight(problem)
    kernel(x.reshape(shape), g.reshape(shape), w, *before,
           0.0 if problem.bias is None else float(problem.bias), has_bias, *after,
           dx.reshape(shape), m, dz)
    dw = np.empty((problem.c, problem.k) if problem.per_channel else (1, problem.k))
    db = np.empty(1)
    grads(m, dz, w, *fixed, dw, db)
    return _gradients(problem, dx, dw, db)


def _remember_backward(key: tuple, calls: list) -> None:
    """Keep the two recorded launches of a backward (kernel, then weight gradients) once
    the dispatchers to call are compiled. The backward kernels take (x, g, w, tables...,
    bias, has_bias, settings..., dx, m, dz) and the weight-gradient kernel (m, dz, w,
    tables and settings..., dw, db); launches of another form are not remembered."""
    if len(calls) != 2:
        return
    (kernel, args), (grads, grad_args) = calls
    threads = key[_THREADS]
    if threads > 1 and not compiled(kernel, args):
        return  # its parallel twin still compiles in the background: ask again next time
    n, c = grad_args[1].shape  # dz, then the weight (rows, k)
    serial_grads = threads == 1 or _Call.parameter_grads_serial(n, c, grad_args[2].shape[1])
    if not serial_grads and not compiled(grads, grad_args):
        return
    at = _bias_at(args)
    if at is None or len(args) < at + 5 or _bias_at(grad_args) is not None:
        return
    if len(_BACKWARD_PLANS) >= _MAX_PLANS:
        _BACKWARD_PLANS.clear()
    _BACKWARD_PLANS[key] = (kernel.parallel if threads > 1 else kernel.serial, args[0].shape,
                            args[3:at], args[at + 1], args[at + 2:-3],
                            grads.serial if serial_grads else grads.parallel, grad_args[3:-2])


def _forward(call: _Call, out: np.ndarray | None) -> ECAForward:
    """forward, for its _Call."""
    x = call.problem.x
    y = _outputs.empty(x.shape, x.dtype) if out is None else out
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
    dx = _outputs.empty(x.shape, x.dtype) if out is None else out
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

    dw = np.empty((call.c, problem.k) if problem.per_channel else (1, problem.k))
    db = np.empty(1)
    call.parameter_grads(m, dz, dw, db)
    return _gradients(problem, dx, dw, db)


def _gradients(problem: ECAProblem, dx: np.ndarray, dw: np.ndarray, db: np.ndarray
               ) -> ECAGrads:
    """The gradients in the caller's shapes and dtypes, from the kernels' float64 dw, db."""
    dbias = None
    if problem.bias is not None:
        dbias = round_to(db[0], problem.bias_dtype).reshape(problem.bias_shape)
    return ECAGrads(x=dx, weight=round_to(dw, problem.weight_dtype).reshape(problem.weight_shape),
                    bias=dbias)


