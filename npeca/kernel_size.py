"""The kernel-size rule psi(C) of ECA (Wang et al., CVPR 2020, Eq. 12)."""

from __future__ import annotations

import decimal
import math
import numbers
from fractions import Fraction

from .errors import ParameterError, describe

__all__ = ["kernel_size"]

# Digits first used for log2(C) when C is not a power of two. log2(C) is then irrational, so
# (log2 C + b) / gamma is never an integer and enough digits always decide its floor; 60
# decide it for every C, gamma and b seen in practice, and more are taken when they do not.
_LOG_DIGITS = 60


def _require_integer(value: object, name: str, minimum: int) -> int:
    """Return ``value`` as an int, or raise ParameterError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(
            f"{name} must be an integer >= {minimum}; got {describe(value)} "
            f"({type(value).__name__})"
        )
    value = int(value)
    if value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}; got {describe(value)}")
    return value


def _require_real(value: object, name: str) -> Fraction:
    """Return a finite real ``value`` as an exact Fraction, or raise ParameterError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(
            f"{name} must be a finite real number; got {describe(value)} ({type(value).__name__})"
        )
    if isinstance(value, numbers.Integral):
        return Fraction(int(value))  # always finite, however large
    value = float(value)  # numpy float scalars included; exact for float16/32/64
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite real number; got {describe(value)}")
    return Fraction(value)  # exact: every finite float is a dyadic rational


def _floor_rule(channels: int, gamma: Fraction, b: Fraction) -> int:
    """floor((log2(channels) + b) / gamma), computed exactly."""
    exponent = channels.bit_length() - 1
    if channels == 1 << exponent:  # a power of two: log2 is the integer `exponent`
        return math.floor((exponent + b) / gamma)
    # log2(C) is irrational: bracket it within 10**-digits (relative) and take the floor of
    # both ends in exact rational arithmetic; when they differ, ask for more digits.
    digits = _LOG_DIGITS
    while True:
        with decimal.localcontext() as ctx:
            ctx.prec = digits + 10
            log2_c = Fraction(decimal.Decimal(channels).ln() / decimal.Decimal(2).ln())
        err = (log2_c + 1) / 10 ** digits
        lo = math.floor((log2_c - err + b) / gamma)
        if lo == math.floor((log2_c + err + b) / gamma):
            return lo
        digits *= 2


def kernel_size(channels: int, gamma: float = 2, b: float = 1, *, min_size: int = 1) -> int:
    """Kernel size of ECA's 1-D convolution for a layer with ``channels`` channels.

    Parameters
    ----------
    channels : int
        Number of channels C, an integer >= 1.
    gamma, b : float, optional
        The constants of the rule (the paper uses gamma = 2, b = 1). gamma must be > 0;
        both must be finite.
    min_size : int, optional
        Lower bound on the result, an odd integer >= 1. ``min_size=1`` is the paper's rule;
        ``min_size=3`` reproduces timm's ``EcaModule``.

    Returns
    -------
    int
        The odd kernel size k.

    Raises
    ------
    ParameterError
        (a ``ValueError``) for a non-integer or non-positive ``channels``, a non-finite or
        non-positive ``gamma``, a non-finite ``b``, or an even or non-positive ``min_size``.

    Notes
    -----
    With $t = \\lfloor (\\log_2 C + b) / \\gamma \\rfloor$ (Eq. 12 of the paper),

    $$k = \\max(t \\text{ if } t \\text{ is odd else } t + 1,\\ \\text{min\\_size}).$$

    The floor is exact for every integer C: at powers of two log2 C is the integer
    ``C.bit_length() - 1``; elsewhere it is irrational and evaluated to 60 significant digits,
    and with more digits in the rare case 60 do not decide the floor. With the default
    constants t is even for C in 8..31, 128..511 and 2048..8191, where k = t + 1.

    Examples
    --------
    >>> [kernel_size(c) for c in (16, 64, 128, 256, 512, 2048)]
    [3, 3, 5, 5, 5, 7]
    >>> kernel_size(2), kernel_size(2, min_size=3)
    (1, 3)
    """
    channels = _require_integer(channels, "channels", 1)
    gamma_q = _require_real(gamma, "gamma")
    if gamma_q <= 0:
        raise ParameterError(f"gamma must be > 0; got {describe(gamma)}")
    b_q = _require_real(b, "b")
    min_size = _require_integer(min_size, "min_size", 1)
    if min_size % 2 == 0:
        raise ParameterError(
            f"min_size must be odd (ECA pads (k - 1) / 2 on each side); got "
            f"{describe(min_size)}. Use {describe(min_size + 1)}"
        )
    t = _floor_rule(channels, gamma_q, b_q)
    k = t if t % 2 == 1 else t + 1
    return max(k, min_size)
