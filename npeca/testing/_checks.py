"""assert_close, gradcheck and check_vjp: value and gradient checks for any function (see
:mod:`npeca.testing`)."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import DTypeError, GradcheckError, ParameterError, ShapeError, describe

__all__ = ["DEFAULT_TOLERANCES", "assert_close", "gradcheck", "check_vjp"]

#: (rtol, atol) used by :func:`assert_close` for each dtype: a few units in the last place
#: of that dtype relative, and an absolute floor for values near zero.
DEFAULT_TOLERANCES: dict[np.dtype, tuple[float, float]] = {
    np.dtype(np.float16): (1e-3, 1e-5),
    np.dtype(np.float32): (1.3e-6, 1e-5),
    np.dtype(np.float64): (1e-7, 1e-7),
}


def _array(value: Any, label: str) -> np.ndarray:
    """``value`` (an array, a Tensor, nested lists) as an ndarray, or DTypeError."""
    if isinstance(value, np.ma.MaskedArray):
        raise DTypeError(f"{label} is a masked array (numpy.ma); its mask would be ignored: "
                         f"pass value.filled(...) or np.ma.getdata(value)")
    try:
        from ..autograd import Tensor

        return np.asarray(value.data if isinstance(value, Tensor) else value)
    except Exception as exc:  # noqa: BLE001 - ragged nested lists and the like
        raise DTypeError(f"{label} must be a rectangular array of real numbers; could not "
                         f"convert {type(value).__name__} ({str(exc)[:120]})") from None


def _nonnegative(value: Any, name: str) -> float:
    """A finite real number >= 0, or ParameterError naming ``name``."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, (numbers.Real, np.floating)) \
            and 0 <= float(value) < np.inf
    except OverflowError:  # an integer beyond float64
        ok = False
    if not ok:
        raise ParameterError(f"{name} must be a finite number >= 0; got {describe(value)}")
    return float(value)


def _tolerance(dtype: Any, rtol: float | None, atol: float | None) -> tuple[float, float]:
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(f"dtype must be a NumPy dtype; got {describe(dtype)}") from None
    if dt not in DEFAULT_TOLERANCES and (rtol is None or atol is None):
        raise ParameterError(f"no default tolerance for dtype {dt}; known: float16, float32, "
                             f"float64. Pass rtol= and atol=")
    r, a = DEFAULT_TOLERANCES.get(dt, (0.0, 0.0))
    return (r if rtol is None else _nonnegative(rtol, "rtol"),
            a if atol is None else _nonnegative(atol, "atol"))


def assert_close(actual: Any, expected: Any, *, dtype: Any = None, rtol: float | None = None,
                 atol: float | None = None, equal_nan: bool = True, name: str = "value") -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` element by element.

    Parameters
    ----------
    actual, expected : array_like
        Arrays of the same shape.
    dtype : dtype, optional
        Which row of :data:`DEFAULT_TOLERANCES` to use. Default: the less precise of the two
        arrays' dtypes (float64 for non-float input).
    rtol, atol : float, optional
        Override the table.
    equal_nan : bool
        NaN in both at the same place counts as equal (default True).
    name : str
        What is compared, for the message.

    Raises
    ------
    GradcheckError
        (an ``AssertionError``) naming the worst element's index, both values, the absolute
        and relative errors and how many elements failed.

    Examples
    --------
    >>> import numpy as np
    >>> from npeca.testing import assert_close
    >>> assert_close(np.float32([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7]))
    >>> assert_close(np.array([1.0, 2.0]), np.array([1.0, 2.1]), name="y")
    Traceback (most recent call last):
    ...
    npeca.errors.GradcheckError: y: 1 of 2 elements differ (rtol 1e-07, atol 1e-07); worst at
    index (1,): actual 2.0, expected 2.1, ...
    """
    if not isinstance(name, str):
        raise ParameterError(f"name must be a string; got {describe(name)}")
    if not isinstance(equal_nan, (bool, np.bool_)):
        raise ParameterError(f"equal_nan must be True or False; got {describe(equal_nan)}")
    a, e = _array(actual, f"{name}: actual"), _array(expected, f"{name}: expected")
    for label, arr in (("actual", a), ("expected", e)):
        if arr.dtype.kind not in "biuf":
            raise DTypeError(f"{name}: {label} must be real numbers; got dtype {arr.dtype}")
    if a.shape != e.shape:
        raise ShapeError(f"{name}: actual has shape {a.shape}, expected {e.shape}")
    if dtype is None:
        floats = [d for d in (a.dtype, e.dtype) if d.kind == "f"]
        dtype = min(floats, key=lambda d: d.itemsize) if floats else np.float64
    r, t = _tolerance(dtype, rtol, atol)
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a64 - e64)
        ok = np.isfinite(e64) & (diff <= t + r * np.abs(e64))
        ok |= (a64 == e64)  # infinities must match exactly
        if equal_nan:
            ok |= np.isnan(a64) & np.isnan(e64)
        if ok.all():
            return
        bad = ~ok
        excess = np.where(bad, np.nan_to_num(diff - (t + r * np.abs(e64)), nan=np.inf), -np.inf)
        i = np.unravel_index(int(np.argmax(excess)), a.shape)
        rel = diff[i] / abs(e64[i]) if e64[i] != 0 else np.inf
    raise GradcheckError(
        f"{name}: {int(bad.sum())} of {a.size} elements differ (rtol {r:g}, atol {t:g}); "
        f"worst at index {tuple(int(v) for v in i)}: actual {float(a64[i])!r}, expected "
        f"{float(e64[i])!r}, abs err {diff[i]:.3g}, rel err {rel:.3g}")


# --- gradient checking --------------------------------------------------------------------

def _named(inputs: Sequence[Any] | Mapping[str, Any]) -> tuple[list[str], list[np.ndarray]]:
    if isinstance(inputs, Mapping):
        names, values = list(inputs), list(inputs.values())
    else:
        values = list(inputs)
        names = [f"input {i}" for i in range(len(values))]
    arrays = []
    for n, v in zip(names, values):
        arr = _array(v, f"gradcheck: {n}")
        if arr.dtype.kind != "f":
            raise ParameterError(f"gradcheck: {n} must be a float array; got dtype {arr.dtype}")
        if arr.dtype != np.float64:
            raise ParameterError(
                f"gradcheck: {n} has dtype {arr.dtype}; finite differences need float64 "
                f"inputs (cast with .astype(np.float64))")
        arrays.append(arr.copy())
    return names, arrays


def _narrow_outputs(fn: Callable[..., Any], arrays: Sequence[np.ndarray]) -> str:
    """A hint for a failure when fn returns float16/float32: finite differences of a
    low-precision function are only as accurate as its rounding allows."""
    out = fn(*arrays)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    narrow = sorted({str(np.asarray(getattr(o, "data", o)).dtype) for o in outs} &
                    {"float16", "float32"})
    return (f" (fn returns {narrow[0]}: its finite differences carry that precision's "
            f"rounding; compute fn in float64 for the check, or loosen rtol/atol)"
            if narrow else "")


def _outputs(fn: Callable[..., Any], arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = fn(*arrays)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    result = []
    for i, o in enumerate(outs):
        arr = _array(o, f"gradcheck: fn's output {i}")
        if arr.dtype.kind not in "biuf":
            raise DTypeError(f"gradcheck: fn's output {i} must be real numbers; got dtype "
                             f"{arr.dtype} (from a {type(o).__name__})")
        result.append(arr.astype(np.float64))
    return result


def _autograd_vjp(fn: Callable[..., Any]) -> Callable[..., tuple[np.ndarray, ...]]:
    """A VJP for ``fn`` computed by npeca.autograd (fn must accept and return Tensors)."""
    from .. import autograd

    def vjp(cotangents: Sequence[np.ndarray], *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        leaves = [autograd.Tensor(a, requires_grad=True) for a in arrays]
        try:
            out = fn(*leaves)
        except TypeError as exc:
            if "ufunc" not in str(exc) and "Tensor" not in str(exc):
                raise
            raise DTypeError(f"gradcheck without vjp= calls fn with npeca.autograd Tensors, "
                             f"and fn failed on them ({exc}); NumPy functions such as np.sin "
                             f"do not take Tensors: use npeca.autograd operations, or pass "
                             f"vjp=") from None
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        total: Any = None
        for o, v in zip(outs, cotangents):
            if not isinstance(o, autograd.Tensor):
                raise ParameterError("gradcheck without vjp= needs fn to return npeca.autograd "
                                     f"Tensors; got {type(o).__name__}. Pass vjp= instead")
            term = autograd.sum(o * v)
            total = term if total is None else total + term
        grads = autograd.gradients(total, leaves)
        return tuple(g.data for g in grads)

    return vjp


def _call_vjp(vjp: Callable[..., Any], cotangents: list[np.ndarray], arrays: list[np.ndarray],
              names: list[str]) -> list[np.ndarray]:
    grads = vjp(cotangents, *[a.copy() for a in arrays])
    grads = list(grads) if isinstance(grads, (tuple, list)) else [grads]
    if len(grads) != len(arrays):
        raise ParameterError(f"vjp returned {len(grads)} gradients for {len(arrays)} inputs")
    out = []
    for n, g, a in zip(names, grads, arrays):
        if g is not None:
            g = _array(g, f"vjp's gradient for {n}")
            if g.dtype.kind not in "biuf":
                raise DTypeError(f"vjp's gradient for {n} is not an array of real numbers "
                                 f"(dtype {g.dtype})")
        g = np.zeros_like(a) if g is None else g.astype(np.float64)
        if g.shape != a.shape:
            raise ShapeError(f"vjp's gradient for {n} has shape {g.shape}; expected {a.shape}")
        out.append(g)
    return out


def _side_by_side(analytic: np.ndarray, numeric: np.ndarray) -> str:
    """Two small Jacobian blocks next to each other, rows aligned."""
    fmt: Any = {"float_kind": lambda v: f"{v: 11.4g}"}  # NumPy's formatter mapping
    left = np.array2string(analytic, formatter=fmt, max_line_width=10**6).splitlines()
    right = np.array2string(numeric, formatter=fmt, max_line_width=10**6).splitlines()
    width = max(len("analytical"), *(len(line) for line in left))
    lines = [f"  {'analytical':<{width}}   numerical"]
    lines += [f"  {a:<{width}}   {b}" for a, b in zip(left, right)]
    return "\n".join(lines)


# long: argument checks, then the two modes (autograd and a given vjp) sharing one loop over
# inputs
def gradcheck(fn: Callable[..., Any], inputs: Sequence[Any] | Mapping[str, Any], *,
              vjp: Callable[..., Any] | None = None, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, mode: str = "full", n_projections: int = 3, seed: int = 0,
              max_print: int = 64) -> bool:
    """Check the derivatives of ``fn`` at ``inputs`` against central finite differences.

    Parameters
    ----------
    fn : callable
        ``fn(*arrays)`` returning an array or a tuple of arrays (npeca.autograd Tensors are
        accepted too). Without ``vjp`` it is called with Tensors and differentiated by
        :mod:`npeca.autograd`.
    inputs : sequence or mapping of float64 arrays
        Where to check; a mapping gives the inputs names for the messages.
    vjp : callable, optional
        ``vjp(cotangents, *arrays)`` returning one gradient per input: the gradients of
        ``sum_i <cotangents[i], outputs[i]>``. Use this for an opaque backward (PyTorch, C,
        CUDA) wrapped in Python.
    eps : float
        Finite-difference step.
    atol, rtol : float
        Pass when ``|analytical - numerical| <= atol + rtol * |numerical|`` everywhere.
    mode : {"full", "fast"}
        "full" builds every Jacobian block (one VJP per output element, two evaluations per
        input element); "fast" compares ``n_projections`` random projections
        ``<v, J u>`` per (output, input) pair, for problems too large for the full Jacobian.
    seed : int
        Seed of the random projections.
    max_print : int
        Blocks with at most this many entries are printed side by side on failure.

    Returns
    -------
    bool
        True (failures raise).

    Raises
    ------
    GradcheckError
        Naming the output and input, the worst element (or projection), the numerical and
        analytical values and, for small blocks, both Jacobians side by side.

    Notes
    -----
    The numerical Jacobian column for input element i is
    $(f(x + \\epsilon e_i) - f(x - \\epsilon e_i)) / 2\\epsilon$, with error
    $O(\\epsilon^2)$ plus rounding $O(u / \\epsilon)$, u = 2**-53 times the size
    of f: with eps = 1e-6 about 1e-10 relative for smooth functions in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from npeca import autograd as ag
    >>> from npeca.testing import gradcheck
    >>> x = np.random.default_rng(0).standard_normal((2, 4, 3))
    >>> w = np.array([0.3, -0.2, 0.5])
    >>> gradcheck(lambda x, w: ag.eca_composed(x, w), {"x": x, "weight": w})
    True
    """
    if not isinstance(mode, str) or mode not in ("full", "fast"):
        raise ParameterError(f"mode must be 'full' or 'fast'; got {describe(mode)}")
    if _nonnegative(eps, "eps") == 0:
        raise ParameterError(f"eps must be a finite number > 0; got {describe(eps)}")
    eps = float(eps)
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or \
            not 1 <= n_projections <= 10**6:
        raise ParameterError(f"n_projections must be an integer in [1, 1000000]; got "
                             f"{describe(n_projections)}")
    if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.random.Generator)) \
            or (isinstance(seed, numbers.Integral) and seed < 0):
        raise ParameterError(f"seed must be an integer >= 0 or a numpy.random.Generator; got "
                             f"{describe(seed)}")
    atol, rtol = _nonnegative(atol, "atol"), _nonnegative(rtol, "rtol")
    if isinstance(max_print, bool) or not isinstance(max_print, numbers.Integral):
        raise ParameterError(f"max_print must be an integer; got {describe(max_print)}")
    if not isinstance(inputs, (Mapping, Sequence)) or isinstance(inputs, (str, bytes)):
        raise DTypeError(f"gradcheck: inputs must be a sequence or a mapping of float64 "
                         f"arrays; got {type(inputs).__name__}")
    for label, f in (("fn", fn), ("vjp", vjp)):
        if f is not None and not callable(f):
            raise DTypeError(f"gradcheck: {label} must be callable; got {type(f).__name__}")
    names, arrays = _named(inputs)
    if not arrays:
        raise ParameterError("gradcheck: inputs must hold at least one array")
    # IEEE overflow and NaN at perturbed points show up as a failed comparison, not as
    # NumPy warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        vjp = vjp if vjp is not None else _autograd_vjp(fn)

        def call(*arrays_: np.ndarray) -> list[np.ndarray]:
            return _outputs(fn, arrays_)

        outs = call(*arrays)
        hint = _narrow_outputs(fn, arrays)
        rng = np.random.default_rng(seed)

        def perturbed(i: int, direction: np.ndarray, o: int) -> np.ndarray:
            plus = [a if j != i else a + eps * direction for j, a in enumerate(arrays)]
            minus = [a if j != i else a - eps * direction for j, a in enumerate(arrays)]
            return (call(*plus)[o] - call(*minus)[o]) / (2 * eps)

        for o, out in enumerate(outs):
            oname = f"output {o}" if len(outs) > 1 else "output"
            if mode == "full":
                rows = []
                for r in range(out.size):
                    cot = [np.zeros(y.shape) for y in outs]
                    cot[o].flat[r] = 1.0  # C order, whatever the output's memory layout
                    rows.append([g.reshape(-1) for g in _call_vjp(vjp, cot, arrays, names)])
                for i, (iname, a) in enumerate(zip(names, arrays)):
                    analytic = np.array([row[i] for row in rows]).reshape(out.size, a.size)
                    numeric = np.empty((out.size, a.size))
                    for col in range(a.size):
                        e = np.zeros(a.size)
                        e[col] = 1.0
                        numeric[:, col] = perturbed(i, e.reshape(a.shape), o).reshape(-1)
                    _compare(analytic, numeric, atol, rtol, oname, iname, max_print, hint=hint)
            else:
                for i, (iname, a) in enumerate(zip(names, arrays)):
                    for _ in range(n_projections):
                        u = rng.standard_normal(a.shape)
                        v = rng.standard_normal(out.shape)
                        cot = [np.zeros(y.shape) for y in outs]
                        cot[o] = v
                        analytic = np.vdot(_call_vjp(vjp, cot, arrays, names)[i], u)
                        numeric = np.vdot(v, perturbed(i, u, o))
                        _compare(np.array([[analytic]]), np.array([[numeric]]), atol, rtol, oname,
                                 iname, 0, projection=True)
    return True


def _compare(analytic, numeric, atol, rtol, oname, iname, max_print, projection=False,
             hint=""):
    err = np.abs(analytic - numeric)
    bad = ~(err <= atol + rtol * np.abs(numeric))
    if not bad.any():
        return
    worst = np.unravel_index(int(np.argmax(np.where(bad, err, -1))), err.shape)
    where = ("random projection <v, J u>" if projection else
             f"d {oname}[flat {worst[0]}] / d {iname}[flat {worst[1]}]")
    msg = (f"gradient check failed for {oname} with respect to {iname}: {int(bad.sum())} of "
           f"{bad.size} entries exceed atol {atol:g} + rtol {rtol:g}; worst at {where}: "
           f"analytical {float(analytic[worst])!r}, numerical {float(numeric[worst])!r}, "
           f"abs err {err[worst]:.3g}{hint}")
    if not projection and analytic.size <= max_print:
        msg += "\n" + _side_by_side(analytic, numeric)
    raise GradcheckError(msg)


def check_vjp(forward: Callable[..., Any], vjp: Callable[..., Any],
              inputs: Sequence[Any] | Mapping[str, Any], **kwargs: Any) -> bool:
    """Check an opaque backward: ``vjp(cotangents, *inputs)`` against differences of
    ``forward(*inputs)``. Keywords as :func:`gradcheck`.

    Examples
    --------
    A planted bug (the derivative of x**2 written as x) is caught:

    >>> import numpy as np
    >>> from npeca.testing import check_vjp
    >>> check_vjp(lambda x: x**2, lambda cot, x: (2 * x * cot[0],), [np.array([1.0, 3.0])])
    True
    >>> check_vjp(lambda x: x**2, lambda cot, x: (x * cot[0],), {"x": np.array([1.0, 3.0])})
    Traceback (most recent call last):
    ...
    npeca.errors.GradcheckError: gradient check failed for output with respect to x: 2 of 4
    entries exceed atol 1e-05 + rtol 0.001; worst at d output[flat 1] / d x[flat 1]: ...
      analytical          numerical
      [[ 1  0]            [[ 2  0]
       [ 0  3]]            [ 0  6]]
    """
    return gradcheck(forward, inputs, vjp=vjp, **kwargs)
