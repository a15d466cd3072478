"""The npeca exception family.

Every error npeca raises on bad input derives from :class:`NpecaError` and also from
the built-in exception a Python user would expect (``ValueError``, ``TypeError`` or
``ImportError``), so ``except ValueError`` keeps working in code that does not know npeca.
"""

from __future__ import annotations

__all__ = [
    "NpecaError",
    "ShapeError",
    "ParameterError",
    "DTypeError",
    "BackendUnavailableError",
    "AutogradError",
    "GradcheckError",
]


class NpecaError(Exception):
    """Base class of every exception npeca raises on purpose."""


class ShapeError(NpecaError, ValueError):
    """An array has the wrong number of dimensions, a wrong or empty axis, or shapes disagree."""


class ParameterError(NpecaError, ValueError):
    """A keyword or scalar argument has a value outside what is allowed."""


class DTypeError(NpecaError, TypeError):
    """An array has a dtype npeca does not compute with, or an argument has the wrong type."""


class BackendUnavailableError(NpecaError, ImportError):
    """A requested backend or optional dependency cannot be used on this machine."""


class AutogradError(NpecaError, RuntimeError):
    """The autograd cannot do what was asked: backward through a freed graph, an implicit
    gradient for a non-scalar output, a higher-order gradient through a fused primitive."""


class GradcheckError(NpecaError, AssertionError):
    """A gradient or value check in :mod:`npeca.testing` found a mismatch."""
