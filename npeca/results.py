"""The named tuples npeca's ECA functions return."""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

__all__ = ["ECAForward", "ECAGrads"]


class ECAForward(NamedTuple):
    """Output and intermediates of one ECA forward pass.

    ``y`` has the shape and dtype of ``x``. ``m``, ``z`` and ``a`` have shape (N, C), in the
    precision the backend computed them in (float64 for the NumPy reference).
    """

    y: np.ndarray  # a * x, shaped like x
    m: np.ndarray  # (N, C) global average pool
    z: np.ndarray  # (N, C) logits: bias + cross-correlation of m with the weight
    a: np.ndarray  # (N, C) attention: gate(z)


class ECAGrads(NamedTuple):
    """Gradients of a scalar loss with respect to each input of ECA.

    ``x`` has the shape and dtype of the input ``x``; ``weight`` the shape and dtype of the
    weight as passed (``(1, 1, k)`` in gives ``(1, 1, k)`` out); ``bias`` is None when the call
    had no bias, else an array of the bias's shape (``()`` or ``(1,)``).
    """

    x: np.ndarray
    weight: np.ndarray
    bias: Optional[np.ndarray]
