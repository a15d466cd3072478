"""ECA twice: one fused primitive whose VJP is the reference backward, and the same layer
composed from primitives, whose gradient the tape derives on its own."""

from __future__ import annotations

from typing import Any

from .. import reference
from .._validate import eca_problem
from ..errors import AutogradError
from . import ops
from .tensor import Node, Tensor, as_tensor, is_grad_enabled

__all__ = ["eca", "eca_composed"]


def _problem(x: Tensor, weight: Tensor, bias: Tensor | None, **kw: Any):
    return eca_problem(x.data, weight.data, bias=None if bias is None else bias.data, **kw)


def eca(x: Any, weight: Any, *, bias: Any = None, channel_axis: int = 1,
        padding: str = "zeros", groups: int = 1, gate: str = "sigmoid") -> Tensor:
    """ECA as one fused primitive: forward is :func:`npeca.eca`, VJP is
    :func:`npeca.eca_backward`.

    Takes the arguments of :func:`npeca.eca` as Tensors (or arrays). Its gradient is
    first-order only: with ``create_graph=True`` it raises, because the fused backward is
    NumPy code the tape cannot see. Use :func:`eca_composed` for higher-order gradients.

    Examples
    --------
    >>> import numpy as np
    >>> from npeca import autograd as ag
    >>> x = ag.Tensor(np.ones((1, 4, 3)), requires_grad=True)
    >>> w = ag.Tensor(np.zeros(3), requires_grad=True)
    >>> ag.eca(x, w).sum().backward()
    >>> x.grad.shape, w.grad.shape
    ((1, 4, 3), (3,))
    """
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    problem = _problem(x, weight, bias, channel_axis=channel_axis, padding=padding,
                       groups=groups, gate=gate)
    ans = Tensor(reference.forward(problem).y)
    parents = [x, weight] + ([bias] if bias is not None else [])
    if not (is_grad_enabled() and any(p.requires_grad for p in parents)):
        return ans
    cache: dict[int, Any] = {}

    def grads_for(g: Tensor):
        if is_grad_enabled():
            raise AutogradError(
                "autograd.eca is a fused primitive: its gradient is NumPy code and cannot be "
                "differentiated again (create_graph=True). Use autograd.eca_composed")
        if id(g) not in cache:  # the three rules share one reference backward
            cache.clear()
            cache[id(g)] = (g, reference.backward(problem, g.data))
        return cache[id(g)][1]

    rules = [lambda g: Tensor(grads_for(g).x), lambda g: Tensor(grads_for(g).weight),
             lambda g: Tensor(grads_for(g).bias)]
    ans.requires_grad = True
    ans._node = Node("eca", parents, [r if p.requires_grad else None
                                      for p, r in zip(parents, rules)])
    return ans


def eca_composed(x: Any, weight: Any, *, bias: Any = None, channel_axis: int = 1,
                 padding: str = "zeros", groups: int = 1, gate: str = "sigmoid") -> Tensor:
    """ECA built only from primitives; the tape derives its gradients of every order.

    Same arguments and validation as :func:`npeca.eca`. It computes in the dtype NumPy's
    promotion gives the inputs (float64 for float64 inputs), not always in float64 as the
    reference does.

    Notes
    -----
    The steps, each a primitive or a composite of them::

        m = mean(x, spatial)                       # (N, C)
        m~ = pad(m per group, p, zeros | circular) # (N, G * (C/G + 2p))
        z = correlate1d(m~, w, groups=G) + bias    # (N, C)
        a = gate(z)
        y = x * a

    Examples
    --------
    >>> import numpy as np
    >>> from npeca import autograd as ag
    >>> x = np.random.default_rng(0).standard_normal((2, 8, 5))
    >>> y1 = ag.eca_composed(x, np.array([0.2, 0.5, 0.3])).data
    >>> y2 = ag.eca(x, np.array([0.2, 0.5, 0.3])).data
    >>> bool(np.allclose(y1, y2, rtol=1e-14, atol=0))
    True
    """
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    pr = _problem(x, weight, bias, channel_axis=channel_axis, padding=padding, groups=groups,
                  gate=gate)
    n, c, s, k, g = pr.n, pr.c, pr.s, pr.k, pr.groups
    p = (k - 1) // 2
    xc = ops.moveaxis(x, -1, 1) if pr.channels_last else x  # (N, C, *spatial)
    x3 = ops.reshape(xc, shape=(n, c, s))  # (N, C, S)
    m = ops.mean(x3, axis=2)  # (N, C)
    m_pad = ops.pad(ops.reshape(m, shape=(n, g, c // g)), p, axis=-1, mode=padding)
    m_pad = ops.reshape(m_pad, shape=(n, g * (c // g + 2 * p)))  # groups side by side
    w = ops.reshape(weight, shape=(g, c // g, k) if pr.per_channel else (k,))
    z = ops.correlate1d(m_pad, w, axis=-1, groups=g)  # (N, C)
    if bias is not None:
        z = z + ops.reshape(bias, shape=())
    a = ops.sigmoid(z) if gate == "sigmoid" else ops.hard_sigmoid(z)  # (N, C)
    y = ops.reshape(x3 * ops.reshape(a, shape=(n, c, 1)), shape=xc.shape)
    return ops.moveaxis(y, 1, -1) if pr.channels_last else y


