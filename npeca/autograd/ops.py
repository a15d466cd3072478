"""Primitives and their VJP rules (one rule per line), then composites built from them.

In every rule ``g`` is the gradient of the output, ``ans`` the output and the remaining
names the primitive's arguments, all Tensors; parameters arrive as keywords.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import reference
from ..errors import ParameterError, ShapeError, describe
from .tensor import _OPS, Tensor, as_tensor, defvjp, primitive

# --- primitives: NumPy in, NumPy out -----------------------------------------------------


@primitive
def add(a, b):
    """a + b with broadcasting."""
    return np.add(a, b)


@primitive
def sub(a, b):
    """a - b with broadcasting."""
    return np.subtract(a, b)


@primitive
def mul(a, b):
    """a * b with broadcasting."""
    return np.multiply(a, b)


@primitive
def div(a, b):
    """a / b with broadcasting."""
    return np.divide(a, b)


@primitive
def neg(a):
    """-a."""
    return np.negative(a)


@primitive
def exp(a):
    """exp(a)."""
    return np.exp(a)


@primitive
def log(a):
    """Natural logarithm."""
    return np.log(a)


@primitive
def power(a, *, exponent):
    """a ** exponent for a constant real exponent."""
    return np.power(a, exponent)


@primitive
def sigmoid(z):
    """1 / (1 + exp(-z)), evaluated without overflow."""
    return reference.sigmoid(np.asarray(z))


@primitive
def hard_sigmoid(z):
    """relu6(z + 3) / 6."""
    return reference.hard_sigmoid(np.asarray(z))


@primitive
def relu(a):
    """max(a, 0)."""
    return np.maximum(a, 0)


@primitive
def sum(a, *, axis=None, keepdims=False):  # noqa: A001 (mirrors numpy.sum)
    """Sum over ``axis`` (all axes by default)."""
    return np.sum(a, axis=axis, keepdims=keepdims)


@primitive
def broadcast_to(a, *, shape):
    """A copy of ``a`` broadcast to ``shape``."""
    return np.array(np.broadcast_to(a, shape))


@primitive
def reshape(a, *, shape):
    """``a`` with a new shape."""
    return np.reshape(a, shape)


@primitive
def transpose(a, *, axes=None):
    """Permute the axes (reverse them by default)."""
    return np.transpose(a, axes)


@primitive
def getitem(a, *, index):
    """``a[index]``: basic or advanced indexing."""
    return np.array(np.asarray(a)[index])


@primitive
def embed(a, *, index, shape):
    """A zero array of ``shape`` with ``a`` added at ``index`` (repeated indices add up)."""
    out = np.zeros(shape, dtype=np.result_type(a))
    np.add.at(out, index, a)
    return out


@primitive
def matmul2(a, b):
    """a @ b for arrays with at least two dimensions (batch axes broadcast)."""
    return np.matmul(a, b)


# --- helpers the rules use ----------------------------------------------------------------

def unbroadcast(g: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum ``g`` over the axes that broadcasting added or stretched, back to ``shape``."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    stretched = tuple(lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    g = sum(g, axis=tuple(range(lead)) + stretched, keepdims=True)
    return reshape(g, shape=tuple(shape))


def _swap_last(a: Tensor) -> Tensor:
    axes = list(range(a.ndim))
    axes[-2:] = axes[-1], axes[-2]
    return transpose(a, axes=tuple(axes))


def _mask(condition: np.ndarray, like: Tensor, value: float = 1.0) -> Tensor:
    """A constant Tensor: ``value`` where ``condition`` holds, 0 elsewhere, in like's dtype."""
    return Tensor(np.where(condition, value, 0.0).astype(like.dtype))


def _inverse(axes: tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    return tuple(np.argsort(axes if axes is not None else tuple(reversed(range(ndim)))))


def _kept_shape(shape, axis, keepdims):
    """The shape a sum's result has with keepdims=True."""
    if keepdims:
        return None
    if not shape:  # a 0-d tensor: nothing was reduced
        return tuple(shape)
    axes = range(len(shape)) if axis is None else np.atleast_1d(axis) % len(shape)
    return tuple(1 if i in set(int(a) for a in axes) else d for i, d in enumerate(shape))


# --- the VJP table: one rule per line -----------------------------------------------------

defvjp(add, lambda g, ans, a, b: unbroadcast(g, a.shape),
            lambda g, ans, a, b: unbroadcast(g, b.shape))
defvjp(sub, lambda g, ans, a, b: unbroadcast(g, a.shape),
            lambda g, ans, a, b: unbroadcast(-g, b.shape))
defvjp(mul, lambda g, ans, a, b: unbroadcast(g * b, a.shape),
            lambda g, ans, a, b: unbroadcast(g * a, b.shape))
defvjp(div, lambda g, ans, a, b: unbroadcast(g / b, a.shape),
            lambda g, ans, a, b: unbroadcast(-g * ans / b, b.shape))
defvjp(neg, lambda g, ans, a: -g)
defvjp(exp, lambda g, ans, a: g * ans)
defvjp(log, lambda g, ans, a: g / a)
defvjp(power, lambda g, ans, a, exponent: g * exponent * power(a, exponent=exponent - 1))
defvjp(sigmoid, lambda g, ans, z: g * ans * sigmoid(-z))  # 1 - a as sigmoid(-z): accurate
defvjp(hard_sigmoid, lambda g, ans, z: g * _mask((z.data > -3) & (z.data < 3), z, 1 / 6))
defvjp(relu, lambda g, ans, a: g * _mask(a.data > 0, a))
defvjp(sum, lambda g, ans, a, axis=None, keepdims=False: broadcast_to(
    g if keepdims else reshape(g, shape=_kept_shape(a.shape, axis, keepdims)), shape=a.shape))
defvjp(broadcast_to, lambda g, ans, a, shape: unbroadcast(g, a.shape))
defvjp(reshape, lambda g, ans, a, shape: reshape(g, shape=a.shape))
defvjp(transpose, lambda g, ans, a, axes=None: transpose(g, axes=_inverse(axes, a.ndim)))
defvjp(getitem, lambda g, ans, a, index: embed(g, index=index, shape=a.shape))
defvjp(embed, lambda g, ans, a, index, shape: getitem(g, index=index))
defvjp(matmul2, lambda g, ans, a, b: unbroadcast(matmul2(g, _swap_last(b)), a.shape),
                lambda g, ans, a, b: unbroadcast(matmul2(_swap_last(a), g), b.shape))


# --- composites: built from the primitives, differentiated through them -----------------

def mean(a: Any, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis``: ``sum`` divided by the number of elements summed."""
    a = as_tensor(a)
    total = sum(a, axis=axis, keepdims=keepdims)
    return total / (a.size // max(total.size, 1) if a.size else 1)


def _axis(axis: Any, ndim: int, what: str) -> int:
    """``axis`` as an int that exists in a tensor of ``ndim`` dimensions, or an npeca error."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ParameterError(f"{what} must be an integer axis; got {describe(axis)}")
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{what} {describe(axis)} does not exist in a tensor of {ndim} "
                         f"dimensions")
    return int(axis)


def moveaxis(a: Any, source: int, destination: int) -> Tensor:
    """Move one axis to a new position (a ``transpose``)."""
    a = as_tensor(a)
    source = _axis(source, a.ndim, "moveaxis: source")
    destination = _axis(destination, a.ndim, "moveaxis: destination")
    order = [i for i in range(a.ndim) if i != source % a.ndim]
    order.insert(destination % a.ndim, source % a.ndim)
    return transpose(a, axes=tuple(order))


def _axis_index(ndim: int, axis: int, index: Any) -> tuple:
    return (slice(None),) * (axis % ndim) + (index,)


def pad(a: Any, width: int, axis: int = -1, mode: str = "zeros") -> Tensor:
    """Pad ``width`` elements on both sides of ``axis``, with zeros or wrapped around.

    Zero padding is an ``embed`` into a larger zero array; circular padding is a
    ``getitem`` with the indices ``arange(-width, L + width) % L``, which wraps any number
    of times (``width`` may exceed ``L``).
    """
    a = as_tensor(a)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 0:
        raise ParameterError(f"width must be an integer >= 0; got {describe(width)}")
    axis = _axis(axis, a.ndim, "pad: axis")
    length = a.shape[axis]
    if (length + 2 * width) * max(a.size // max(length, 1), 1) > 1 << 31:
        raise ShapeError(f"pad: width {describe(width)} would make more than 2**31 elements")
    if mode == "zeros":
        shape = list(a.shape)
        shape[axis] = length + 2 * width
        return embed(a, index=_axis_index(a.ndim, axis, slice(width, width + length)),
                     shape=tuple(shape))
    if mode == "circular":
        if length == 0:
            raise ShapeError("pad: an empty axis cannot be wrapped around")
        wrap = np.arange(-width, length + width) % length
        return getitem(a, index=_axis_index(a.ndim, axis, wrap))
    raise ParameterError(f"mode must be 'zeros' or 'circular'; got {describe(mode)}")


def correlate1d(x: Any, w: Any, axis: int = -1, groups: int = 1) -> Tensor:
    """Valid-mode cross-correlation along ``axis``: ``out[i] = sum_j w[j] * x[i + j]``.

    ``axis`` of length L is split into ``groups`` contiguous segments correlated separately
    (each gives L/groups - k + 1 outputs). ``w`` is a shared kernel of shape (k,) or one
    kernel per output position, broadcastable to (..., groups, L/groups - k + 1, k) once
    ``axis`` is last. Built from ``getitem`` (the windows), ``mul`` and ``sum``.
    """
    x, w = as_tensor(x), as_tensor(w)
    if w.ndim == 0:
        raise ShapeError("correlate1d: the kernel w must have at least one dimension (k,)")
    k = w.shape[-1]
    xl = moveaxis(x, axis, -1)
    length = xl.shape[-1]
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ParameterError(f"groups must be an integer >= 1; got {describe(groups)}")
    if length % groups:
        raise ShapeError(f"groups = {groups} must divide the correlated axis' length {length}")
    seg = length // groups
    if seg < k:
        raise ShapeError(f"each segment has {seg} elements, fewer than the kernel's {k}: "
                         f"pad first")
    xg = reshape(xl, shape=xl.shape[:-1] + (groups, seg))
    taps = np.arange(seg - k + 1)[:, None] + np.arange(k)[None, :]  # (L_out, k): i + j
    windows = getitem(xg, index=(Ellipsis, taps))  # (..., G, L_out, k)
    out = sum(windows * w, axis=-1)  # (..., G, L_out)
    out = reshape(out, shape=xl.shape[:-1] + (groups * (seg - k + 1),))
    return moveaxis(out, -1, axis)


def matmul(a: Any, b: Any) -> Tensor:
    """Matrix product with NumPy's rules for 1-D operands (promoted, then squeezed)."""
    a, b = as_tensor(a), as_tensor(b)
    a2 = reshape(a, shape=(1,) + a.shape) if a.ndim == 1 else a
    b2 = reshape(b, shape=b.shape + (1,)) if b.ndim == 1 else b
    out = matmul2(a2, b2)
    if a.ndim == 1:
        out = reshape(out, shape=out.shape[:-2] + out.shape[-1:])
    if b.ndim == 1:
        out = reshape(out, shape=out.shape[:-1])
    return out


# Tensor's operators and methods call these primitives through tensor.py's table.
_OPS.update(add=add, sub=sub, mul=mul, div=div, matmul=matmul, neg=neg, power=power,
            getitem=getitem, sum=sum, mean=mean, reshape=reshape, transpose=transpose,
            exp=exp, log=log, sigmoid=sigmoid, relu=relu)

__all__ = [
    "add", "sub", "mul", "div", "neg", "exp", "log", "power", "sigmoid", "hard_sigmoid",
    "relu", "sum", "mean", "broadcast_to", "reshape", "transpose", "moveaxis", "getitem",
    "embed", "pad", "correlate1d", "matmul", "matmul2", "unbroadcast",
]
