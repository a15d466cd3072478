"""Tools for testing any ECA implementation (or any differentiable function) against npeca.

- :func:`assert_close`: compare arrays with a per-dtype default tolerance and a readable
  report of the worst element.
- :func:`gradcheck`: compare a function's analytical derivatives with central finite
  differences, either through :mod:`npeca.autograd` or through a VJP you supply, so that a
  PyTorch, C or CUDA backward wrapped in a Python function can be checked the same way.
- :func:`check_vjp`: the same for an opaque (forward, vjp) pair.
- :func:`golden_cases`: the cases of a golden suite as pytest parameters, one test per case.
- :mod:`npeca.testing.strategies` and :func:`check_backend`: Hypothesis property tests of
  any ECA backend against the reference (need the ``hypothesis`` package).
"""

from __future__ import annotations

from ._checks import DEFAULT_TOLERANCES, assert_close, check_vjp, gradcheck
from ._golden import GoldenCase, golden_cases, resolve_backend

__all__ = ["DEFAULT_TOLERANCES", "assert_close", "gradcheck", "check_vjp", "golden_cases",
           "GoldenCase", "resolve_backend", "check_backend", "BackendMismatch"]


def __getattr__(name: str):
    # check_backend needs hypothesis, an optional dependency: imported on first use
    if name in ("check_backend", "BackendMismatch"):
        from . import backend_check
        return getattr(backend_check, name)
    raise AttributeError(f"module 'npeca.testing' has no attribute {name!r}")
