"""The engine: a Tensor, the tape that records operations on it, and the reverse pass.

Every differentiable operation is a *primitive*: a NumPy function plus one VJP rule per
argument (the table lives in :mod:`npeca.autograd.ops`). Calling a primitive on Tensors
records a :class:`Node` on the output; ``backward`` walks those nodes in reverse
topological order and sums each rule's contribution into the parents. The rules are
themselves written with primitives, so running them while recording (``create_graph=True``)
builds the graph of the gradient, which can be differentiated again.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import threading
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import (AutogradError, DTypeError, OutOfMemoryError, OutOfRangeError,
                      ParameterError, ShapeError, describe)

_state = threading.local()

#: The primitives behind Tensor's operators and methods, by name; filled by ops.py when the
#: package is imported (tensor.py defines the Tensor that ops.py builds on).
_OPS: dict[str, Callable[..., "Tensor"]] = {}


def is_grad_enabled() -> bool:
    """Whether primitives record themselves on the tape (True unless inside no_grad)."""
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def _grad_mode(enabled: bool) -> Iterator[None]:
    previous = is_grad_enabled()
    _state.enabled = enabled
    try:
        yield
    finally:
        _state.enabled = previous


def no_grad() -> contextlib.AbstractContextManager:
    """Context manager: operations inside it are not recorded.

    >>> from npeca.autograd import Tensor, no_grad
    >>> w = Tensor([1.0, 2.0], requires_grad=True)
    >>> with no_grad():
    ...     y = w * 3
    >>> y.requires_grad
    False
    """
    return _grad_mode(False)


def enable_grad() -> contextlib.AbstractContextManager:
    """Context manager: record operations even inside an enclosing ``no_grad``."""
    return _grad_mode(True)


def _as_array(value: Any, what: str = "Tensor data") -> np.ndarray:
    """A float ndarray from a number, array or nested list; DTypeError for anything else."""
    if isinstance(value, np.ma.MaskedArray):
        raise DTypeError(f"{what} must not be a masked array (numpy.ma): the autograd does not "
                         f"interpret masks; pass value.filled(...) or np.ma.getdata(value)")
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value
    if isinstance(value, (numbers.Real, np.ndarray, list, tuple, np.generic)) and not isinstance(
            value, (str, bytes)):
        try:
            arr = np.asarray(value)
        except ValueError as exc:  # ragged nested lists
            raise DTypeError(f"{what} must be a rectangular array of real numbers ({exc})") \
                from None
        if arr.dtype.kind in "biuf":
            return arr.astype(np.float64) if arr.dtype.kind != "f" else arr
    raise DTypeError(
        f"{what} must be a Tensor, a real number or a real-valued array; got "
        f"{type(value).__name__}" + (f" with dtype {np.asarray(value).dtype}"
                                      if isinstance(value, np.ndarray) else ""))


class Node:
    """One recorded operation: its name, its parents and one VJP closure per parent."""

    __slots__ = ("name", "parents", "vjps", "freed")

    def __init__(self, name: str, parents: Sequence["Tensor"],
                 vjps: Sequence[Callable[["Tensor"], "Tensor"] | None]) -> None:
        self.name, self.parents, self.vjps, self.freed = name, tuple(parents), list(vjps), False


class Tensor:
    """An ndarray that remembers how it was computed.

    Parameters
    ----------
    data : array_like
        Real numbers; integers and bools are converted to float64.
    requires_grad : bool
        Whether gradients with respect to this tensor are wanted. Leaves with
        ``requires_grad=True`` receive ``.grad`` from :meth:`backward`.

    Examples
    --------
    >>> from npeca.autograd import Tensor
    >>> x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> y = (x * x).sum()
    >>> y.backward()
    >>> x.grad.data.tolist()
    [2.0, 4.0, 6.0]
    """

    __array_ufunc__ = None  # make ndarray + Tensor defer to Tensor.__radd__
    _scalar: float | None = None  # set by as_tensor for Python numbers

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self.data: np.ndarray = _as_array(data.data if isinstance(data, Tensor) else data)
        if not isinstance(requires_grad, (bool, np.bool_)):
            raise DTypeError(f"requires_grad must be True or False; got "
                             f"{describe(requires_grad)}")
        self.requires_grad: bool = bool(requires_grad)
        self.grad: Tensor | None = None
        self._node: Node | None = None

    # -- introspection ----------------------------------------------------------------------
    shape = property(lambda self: self.data.shape, doc="Shape of ``data``.")
    dtype = property(lambda self: self.data.dtype, doc="dtype of ``data``.")
    ndim = property(lambda self: self.data.ndim, doc="Number of dimensions of ``data``.")
    size = property(lambda self: self.data.size, doc="Number of elements of ``data``.")
    is_leaf = property(lambda self: self._node is None,
                       doc="True for tensors not produced by a recorded operation.")

    def __repr__(self) -> str:
        grad = f", grad_fn={self._node.name}" if self._node else (
            ", requires_grad=True" if self.requires_grad else "")
        body = np.array2string(self.data, separator=", ", prefix="Tensor(")
        return f"Tensor({body}{grad})"

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise DTypeError("len() of a 0-d Tensor: it holds one number (use .item())")
        return len(self.data)

    def __iter__(self) -> Iterator["Tensor"]:
        """The sub-tensors along the first axis, each recorded like ``t[i]``."""
        for i in range(len(self)):
            yield self[i]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The data for NumPy (``np.asarray(t)``, ``np.testing`` functions); no graph."""
        if copy:
            return np.array(self.data, dtype=dtype, copy=True)
        return self.data if dtype is None else self.data.astype(dtype, copy=False)

    def _value(self) -> Any:
        """What a primitive computes with: the data, or the Python number it came from."""
        return self.data if self._scalar is None else self._scalar

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        if self.data.size != 1:
            raise ShapeError(f"item() needs a Tensor with one element; this one has shape "
                             f"{self.data.shape}")
        return float(self.data.reshape(()))

    def numpy(self) -> np.ndarray:
        """The data (not a copy)."""
        return self.data

    def detach(self) -> "Tensor":
        """A new leaf sharing the data, cut from the graph."""
        return Tensor(self.data)

    # -- the reverse pass -------------------------------------------------------------------
    def backward(self, grad: Any = None, *, retain_graph: bool = False,
                 create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        Parameters
        ----------
        grad : array_like or Tensor, optional
            The upstream gradient, shaped like ``self`` with its dtype. May be omitted only
            when ``self`` has one element (it is then 1).
        retain_graph : bool
            Keep the recorded graph so that backward can run through it again.
        create_graph : bool
            Record the gradient computation, so gradients can be differentiated again
            (implies ``retain_graph``).
        """
        for leaf, g in backprop(self, grad, retain_graph=retain_graph or create_graph,
                                create_graph=create_graph, wanted=None):
            leaf.grad = g if leaf.grad is None else leaf.grad + g

    def zero_grad(self) -> None:
        """Forget the accumulated gradient."""
        self.grad = None

    # -- operators: the primitives of ops.py, looked up in the table ops.py fills (so that
    #    this module imports nothing of ops.py) ------------------------------------------
    def __add__(self, other: Any) -> Tensor: return _OPS["add"](self, other)
    def __radd__(self, other: Any) -> Tensor: return _OPS["add"](other, self)
    def __sub__(self, other: Any) -> Tensor: return _OPS["sub"](self, other)
    def __rsub__(self, other: Any) -> Tensor: return _OPS["sub"](other, self)
    def __mul__(self, other: Any) -> Tensor: return _OPS["mul"](self, other)
    def __rmul__(self, other: Any) -> Tensor: return _OPS["mul"](other, self)
    def __truediv__(self, other: Any) -> Tensor: return _OPS["div"](self, other)
    def __rtruediv__(self, other: Any) -> Tensor: return _OPS["div"](other, self)
    def __matmul__(self, other: Any) -> Tensor: return _OPS["matmul"](self, other)
    def __rmatmul__(self, other: Any) -> Tensor: return _OPS["matmul"](other, self)
    def __neg__(self) -> Tensor: return _OPS["neg"](self)
    def __pow__(self, exponent: Any) -> Tensor:
        if isinstance(exponent, Tensor) and exponent.size == 1 and not exponent.requires_grad:
            exponent = exponent.item()
        if isinstance(exponent, bool) or not isinstance(exponent, numbers.Real):
            raise DTypeError(f"the exponent of ** must be a real number (a constant); got "
                             f"{type(exponent).__name__}")
        try:
            exponent = float(exponent)
        except OverflowError:
            raise ParameterError(f"the exponent of ** must fit in a float64; got "
                                 f"{describe(exponent)}") from None
        return _OPS["power"](self, exponent=exponent)

    def __getitem__(self, index: Any) -> Tensor:
        try:
            self.data[index]  # NumPy decides what is a valid index (a view: no copy)
        except (IndexError, OverflowError) as exc:
            raise OutOfRangeError(f"Tensor index out of range: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise DTypeError(f"invalid Tensor index {describe(index)}: {exc}") from None
        return _OPS["getitem"](self, index=index)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _OPS["sum"](self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _OPS["mean"](self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        return _OPS["reshape"](self, shape=shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes: Any) -> Tensor:
        return _OPS["transpose"](self, axes=axes[0] if len(axes) == 1 else (axes or None))

    def exp(self) -> Tensor: return _OPS["exp"](self)
    def log(self) -> Tensor: return _OPS["log"](self)
    def sigmoid(self) -> Tensor: return _OPS["sigmoid"](self)
    def relu(self) -> Tensor: return _OPS["relu"](self)

    @property
    def T(self) -> Tensor:  # noqa: N802 - NumPy's name
        """The transpose (axes reversed)."""
        return _OPS["transpose"](self)



def _apply_rule(rule: Callable[..., Any], ans: Tensor, parents: Sequence[Tensor],
                params: dict, g: Any) -> Any:
    """One VJP rule applied to the cotangent ``g`` of ``ans``."""
    return rule(g, ans, *parents, **params)


def as_tensor(value: Any) -> Tensor:
    """``value`` itself if it is a Tensor, else a constant leaf holding it."""
    if isinstance(value, Tensor):
        return value
    t = Tensor(_as_array(value, "operand"))
    if isinstance(value, numbers.Real) and not isinstance(value, np.generic):
        t._scalar = float(value)  # a Python number stays "weak": 2.0 * float32 is float32
    return t


_RULES: dict[str, tuple[Callable[..., "Tensor"], ...]] = {}


def defvjp(op: Callable[..., "Tensor"], *rules: Callable[..., "Tensor"]) -> None:
    """Register one VJP rule per positional argument of primitive ``op``.

    A rule is called as ``rule(g, ans, *args, **params)`` with the upstream gradient ``g``,
    the primitive's output ``ans`` and its Tensor arguments, and returns that argument's
    gradient, computed with primitives so that it can itself be recorded.
    """
    _RULES[op.__name__] = rules


def primitive(fn: Callable[..., np.ndarray]) -> Callable[..., "Tensor"]:
    """Turn NumPy function ``fn(*arrays, **params)`` into a recorded operation on Tensors.

    Positional arguments are the differentiable inputs (numbers and arrays become
    constants); keyword arguments are parameters (axes, shapes, indices) that are not
    differentiated. Overflow, division by zero and invalid operations give IEEE inf and NaN
    without NumPy's warnings.
    """
    name = fn.__name__

    def op(*args: Any, **params: Any) -> "Tensor":
        parents = [as_tensor(a) for a in args]
        try:
            # IEEE arithmetic: overflow to inf, 0/0 and inf - inf to NaN, silently (as the
            # ECA functions and PyTorch do); NaN and Inf propagate through the gradients
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                value = fn(*(p._value() for p in parents), **params)
        except MemoryError:
            shapes = ", ".join(str(p.shape) for p in parents)
            raise OutOfMemoryError(f"{name} on operands of shapes {shapes} with "
                                   f"{describe(params) if params else 'no parameters'} needs "
                                   f"more memory than this machine has") from None
        except (ValueError, IndexError, ZeroDivisionError, OverflowError) as exc:
            shapes = ", ".join(str(p.shape) for p in parents)  # shapes that do not fit
            raise ShapeError(f"{name} cannot combine operands of shapes {shapes} with "
                             f"{describe(params) if params else 'no parameters'}: "
                             f"{describe(str(exc), 200)}") from None
        except TypeError as exc:  # a parameter of the wrong kind (an axis that is a string)
            raise DTypeError(f"{name}: invalid parameters {describe(params)}: "
                             f"{describe(str(exc), 200)}") from None
        ans = Tensor(value)
        if is_grad_enabled() and any(p.requires_grad for p in parents):
            rules = _RULES[name]
            ans.requires_grad = True
            ans._node = Node(name, parents, [
                functools.partial(_apply_rule, rule, ans, parents, params) if p.requires_grad
                else None for p, rule in zip(parents, rules)])
        return ans

    op.__name__ = op.__qualname__ = name
    op.__doc__ = fn.__doc__
    return op


def _topological(root: Tensor) -> list[Tensor]:
    """Tensors reachable from ``root`` through recorded nodes, parents before children."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:  # iterative DFS: deep graphs must not hit the recursion limit
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t._node is not None:
            stack.extend((p, False) for p in t._node.parents if p.requires_grad)
    return order


def _initial_grad(root: Tensor, grad: Any) -> Tensor:
    if grad is None:
        if root.size != 1:
            raise AutogradError(
                f"backward() without a gradient needs a one-element output; this output has "
                f"shape {root.shape}. Pass grad=, e.g. np.ones({root.shape})")
        return Tensor(np.ones(root.shape, dtype=root.dtype))
    g = as_tensor(grad)
    if g.shape != root.shape:
        raise ShapeError(f"grad must have the output's shape {root.shape}; got {g.shape}")
    if g.dtype != root.dtype:
        raise DTypeError(f"grad must have the output's dtype {root.dtype}; got {g.dtype}")
    return g


def backprop(root: Tensor, grad: Any, *, retain_graph: bool, create_graph: bool,
             wanted: Sequence[Tensor] | None) -> list[tuple[Tensor, Tensor]]:
    """The reverse pass from ``root``: (tensor, d root / d tensor) for the leaves reached,
    or for the tensors in ``wanted`` when given."""
    if not isinstance(root, Tensor):
        raise AutogradError(f"can only differentiate a Tensor; the function returned "
                            f"{type(root).__name__}. Build it from npeca.autograd operations")
    if wanted is not None and not all(isinstance(t, Tensor) for t in wanted):
        raise DTypeError("inputs must be Tensors (those the output was computed from)")
    if not root.requires_grad:
        raise AutogradError("this tensor does not require grad: no recorded operation on a "
                            "tensor with requires_grad=True produced it")
    order = _topological(root)
    wanted_ids = None if wanted is None else {id(t) for t in wanted}
    grads: dict[int, Tensor] = {id(root): _initial_grad(root, grad)}
    results: list[tuple[Tensor, Tensor]] = []
    with _grad_mode(create_graph):
        for t in reversed(order):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if (wanted_ids is None and t.is_leaf) or (wanted_ids and id(t) in wanted_ids):
                results.append((t, g))
            node = t._node
            if node is None:
                continue
            if node.freed:
                raise AutogradError(
                    f"backward through a graph that was already freed (at {node.name}): a "
                    f"second backward needs retain_graph=True on the first")
            for parent, vjp in zip(node.parents, node.vjps):
                if vjp is None:
                    continue
                contribution = vjp(g)
                previous = grads.get(id(parent))
                grads[id(parent)] = contribution if previous is None else previous + contribution
    if not retain_graph:
        for t in order:
            if t._node is not None:
                t._node.freed, t._node.vjps = True, [None] * len(t._node.vjps)
    return results

