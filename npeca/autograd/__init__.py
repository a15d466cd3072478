"""A small reverse-mode autograd on NumPy arrays, with ECA fused and composed.

A :class:`Tensor` records every primitive applied to it; :meth:`Tensor.backward` runs the
VJP rules of :mod:`npeca.autograd.ops` in reverse topological order. The rules are
themselves recorded operations, so ``create_graph=True`` gives gradients that can be
differentiated again (Hessian-vector products).

>>> import numpy as np
>>> from npeca import autograd as ag
>>> x = ag.Tensor(np.array([0.0, 1.0, 2.0]), requires_grad=True)
>>> y = ag.sigmoid(x).sum()
>>> (gx,) = ag.gradients(y, [x], create_graph=True)
>>> (hx,) = ag.gradients(gx.sum(), [x])          # d/dx of sigmoid'(x) = s'(x) (1 - 2 s(x))
>>> bool(np.allclose(hx.data, gx.data * (1 - 2 * ag.sigmoid(x).data)))
True
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import DTypeError, ParameterError, describe
from .eca import eca, eca_composed
from .ops import (
    add, broadcast_to, correlate1d, div, embed, exp, getitem, hard_sigmoid, log, matmul,
    mean, moveaxis, mul, neg, pad, power, relu, reshape, sigmoid, sub, sum, transpose,
)
from .tensor import (
    Tensor, as_tensor, backprop, defvjp, enable_grad, is_grad_enabled, no_grad, primitive,
)

__all__ = [
    "Tensor", "as_tensor", "no_grad", "enable_grad", "is_grad_enabled", "primitive", "defvjp",
    "gradients", "grad", "vjp", "eca", "eca_composed",
    "add", "sub", "mul", "div", "neg", "exp", "log", "power", "sigmoid", "hard_sigmoid",
    "relu", "sum", "mean", "broadcast_to", "reshape", "transpose", "moveaxis", "getitem",
    "embed", "pad", "correlate1d", "matmul",
]


def gradients(output: Tensor, inputs: Sequence[Tensor], grad_output: Any = None, *,
              create_graph: bool = False, retain_graph: bool | None = None) -> tuple[Tensor, ...]:
    """d output / d input for each of ``inputs`` (like ``torch.autograd.grad``).

    Leaves' ``.grad`` are left untouched. An input the output does not depend on gets a
    zero gradient. ``create_graph=True`` records the computation for higher derivatives.

    Examples
    --------
    >>> import numpy as np
    >>> from npeca import autograd as ag
    >>> x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    >>> (g,) = ag.gradients(ag.sum(x * x), [x])
    >>> g.data.tolist()
    [2.0, 4.0]
    """
    if isinstance(inputs, Tensor):  # one input (iterating it would give its rows)
        inputs = [inputs]
    elif not isinstance(inputs, Iterable) or isinstance(inputs, (str, bytes)):
        raise DTypeError(f"gradients: inputs must be a Tensor or a sequence of Tensors; got "
                         f"{type(inputs).__name__}")
    inputs = list(inputs)  # once: a generator would be used up by the first pass
    bad = [type(t).__name__ for t in inputs if not isinstance(t, Tensor)]
    if bad:
        raise DTypeError(f"gradients: every input must be a Tensor; got a {bad[0]}")
    found = dict((id(t), g) for t, g in backprop(
        output, grad_output, retain_graph=create_graph if retain_graph is None else retain_graph,
        create_graph=create_graph, wanted=inputs))
    return tuple(found.get(id(t), Tensor(np.zeros(t.shape, dtype=t.dtype))) for t in inputs)


def _entry(values: Sequence[Any], argnums: Sequence[int]) -> tuple[list, list[Tensor]]:
    """Fresh differentiable copies of the chosen arguments, linked to Tensors that require
    grad so that nested calls (grad of grad) see through them."""
    args, wrt = list(values), []
    for i in argnums:
        v = as_tensor(args[i])
        t = (v * 1.0 if v.requires_grad and is_grad_enabled()
             else Tensor(v.data, requires_grad=True))
        args[i] = t
        wrt.append(t)
    return args, wrt


def _argnums(argnums: Any) -> tuple[int, ...]:
    """argnums as a tuple of ints (an integer, NumPy's included, or a sequence of them)."""
    if isinstance(argnums, numbers.Integral) and not isinstance(argnums, bool):
        return (int(argnums),)
    if isinstance(argnums, (list, tuple)) and all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in argnums):
        return tuple(int(i) for i in argnums)
    raise ParameterError(f"argnums must be an integer or a sequence of integers; got "
                         f"{describe(argnums)}")


def vjp(fun: Callable[..., Tensor], *args: Any, argnums: int | Sequence[int] | None = None):
    """Run ``fun(*args)`` and return ``(output, vjp_fn)``; ``vjp_fn(g)`` gives the gradients
    of ``<g, output>`` with respect to the arguments in ``argnums`` (default: all).

    Examples
    --------
    >>> import numpy as np
    >>> from npeca import autograd as ag
    >>> out, back = ag.vjp(lambda a, b: a * b, np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    >>> [t.data.tolist() for t in back(np.ones(2))]
    [[3.0, 4.0], [1.0, 2.0]]
    """
    nums = tuple(range(len(args))) if argnums is None else _argnums(argnums)
    if not all(isinstance(i, int) and -len(args) <= i < len(args) for i in nums):
        raise ParameterError(f"argnums must index the {len(args)} arguments; got "
                             f"{describe(argnums)}")
    nested = any(isinstance(a, Tensor) and a.requires_grad for a in args) and is_grad_enabled()
    call_args, wrt = _entry(args, nums)
    out = fun(*call_args)

    def vjp_fn(g: Any) -> tuple[Tensor, ...]:
        return gradients(out, wrt, g, create_graph=nested, retain_graph=True)

    return out, vjp_fn


def grad(fun: Callable[..., Tensor], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """The gradient of a scalar function: ``grad(f)(*args)`` is d f / d args[argnums].

    Returns Tensors (one, or a tuple for a sequence of ``argnums``). Called on arguments
    that themselves require grad, the result stays on the tape, so ``grad(grad(f))`` works.

    Examples
    --------
    >>> from npeca import autograd as ag
    >>> f = lambda x: (x * x * x).sum()
    >>> float(ag.grad(f)(2.0).data), float(ag.grad(ag.grad(f))(2.0).data)
    (12.0, 12.0)
    """
    nums = _argnums(argnums)
    single = isinstance(argnums, numbers.Integral)

    def gradient(*args: Any) -> Any:
        out, back = vjp(fun, *args, argnums=nums)
        result = back(None)
        return result[0] if single else result

    return gradient
