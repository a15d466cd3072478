"""Finite differences in float64, written for the tests (independent of npeca's code)."""

from __future__ import annotations

import numpy as np


def directional(f, h: float = 1e-4) -> float:
    """d/dt f(t) at t = 0 by the fourth-order central stencil; f maps a float to a float."""
    return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)


def jacobian(f, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Jacobian of the array function f at x, shape (f(x).size, x.size)."""
    x = np.asarray(x, dtype=np.float64)
    cols = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = 1.0
        e = e.reshape(x.shape)
        cols.append(np.asarray([
            (-f(x + 2 * h * e) + 8 * f(x + h * e) - 8 * f(x - h * e) + f(x - 2 * h * e))
            / (12 * h)]).reshape(-1))
    return np.stack(cols, axis=1)
