"""The NumPy backend: the reference of :mod:`npeca.reference` behind the backend interface."""

from __future__ import annotations

import numpy as np

from .. import reference
from .._validate import ECAProblem
from ..results import ECAForward, ECAGrads

__all__ = ["forward", "backward"]


def forward(problem: ECAProblem, out: np.ndarray | None = None, *,
            intermediates: bool = True) -> ECAForward:
    """The reference forward; y is copied into ``out`` when given (x may be ``out``:
    the reference has finished reading x before the copy). m, z and a are returned
    whatever ``intermediates`` says (they cost nothing extra here)."""
    result = reference.forward(problem)
    if out is None:
        return result
    np.copyto(out, result.y)
    return result._replace(y=out)


def backward(problem: ECAProblem, grad_out: np.ndarray,
             out: np.ndarray | None = None) -> ECAGrads:
    """The reference backward; dx is copied into ``out`` when given."""
    grads = reference.backward(problem, grad_out)
    if out is None:
        return grads
    np.copyto(out, grads.x)
    return grads._replace(x=out)
