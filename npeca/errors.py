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
    "OutOfRangeError",
    "OutOfMemoryError",
    "describe",
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


class OutOfRangeError(NpecaError, IndexError):
    """An index past the end of a Tensor's axis (an ``IndexError``, so iteration stops)."""


class OutOfMemoryError(NpecaError, MemoryError):
    """A computation needs more memory than the machine has (the message says which)."""


class GradcheckError(NpecaError, AssertionError):
    """A gradient or value check in :mod:`npeca.testing` found a mismatch."""


def describe(value: object, limit: int = 80) -> str:
    """``repr(value)`` for an error message, safe for any object: an integer too long to
    print (Python refuses more than 4300 digits) is described by its size, a failing
    ``__repr__`` by the type, and a long text is cut to ``limit`` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        digits = int(value.bit_length() * 0.30103) + 1
        return f"{'-' if value < 0 else ''}an integer of about {digits} digits"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - describe() must never raise
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[:limit - 3] + "..."
