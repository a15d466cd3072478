"""bfloat16: the dtype (from the optional ml_dtypes package) and correct rounding to it.

bfloat16 is the top half of a float32: 1 sign bit, float32's 8 exponent bits and 7 fraction
bits (8 significant bits, unit roundoff 2**-8, the exponent range of float32). NumPy has no
bfloat16; ml_dtypes (the dtype extension JAX and TensorFlow use) adds one, and npeca uses it
for arrays that users hand in and get back. Nothing here imports ml_dtypes unless a
bfloat16 array is asked for, so ``import npeca`` stays as fast as before.

Rounding float64 to bfloat16 must be *one* rounding, to nearest with ties to even. The easy
route, float64 -> float32 -> bfloat16 (what ``astype`` does in ml_dtypes 0.6), rounds twice
and is wrong whenever the first rounding lands exactly on a bfloat16 tie: 1 + 2**-8 + 2**-30
goes to 1 + 2**-8 in float32, then to 1.0 (ties to even); the nearest bfloat16 is 1 + 2**-7.
:func:`round_bits` rounds to float32 *to odd* first (truncate, and set the last bit when
anything was cut off), which keeps the information a second rounding needs: rounding to odd
with at least two extra bits (float32 has 16 more than bfloat16) and then to nearest is
a single correct rounding to nearest (Boldo and Melquiond, "Emulation of FMA and correctly
rounded sums: proved algorithms using rounding to odd", IEEE Trans. Computers 57(4), 2008).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DTypeError

__all__ = ["NAME", "INSTALL_HINT", "is_bfloat16", "native", "is_torch_bfloat16", "dtype",
           "available", "round_bits", "bits_to_float32", "round_to", "from_torch"]

NAME = "bfloat16"
INSTALL_HINT = "bfloat16 needs the ml_dtypes package: pip install 'npeca[bfloat16]'"

_cached: list = []  # [np.dtype] once ml_dtypes imported, [None] when it is missing


def _lookup() -> np.dtype | None:
    if not _cached:
        try:
            import ml_dtypes
            _cached.append(np.dtype(ml_dtypes.bfloat16))
        except ImportError:
            _cached.append(None)
    return _cached[0]


def available() -> bool:
    """True when ml_dtypes is installed (bfloat16 arrays can be made)."""
    return _lookup() is not None


def dtype(what: str = "bfloat16") -> np.dtype:
    """ml_dtypes' bfloat16 as a NumPy dtype, or DTypeError with the install hint."""
    dt = _lookup()
    if dt is None:
        raise DTypeError(f"{what}: {INSTALL_HINT}")
    return dt


def is_bfloat16(dt: Any) -> bool:
    """True for ml_dtypes' bfloat16 dtype, in either byte order (checked by name: no import
    needed)."""
    return isinstance(dt, np.dtype) and dt.kind == "V" and dt.itemsize == 2 and \
        dt.name == NAME  # kind and itemsize first: dtype.name is slow to compute


def native(arr: np.ndarray) -> np.ndarray:
    """A bfloat16 array in native byte order (byte-swapped data: the same values, swapped
    into a new array; NumPy's dtype.kind is "V" for it, so the float checks miss it)."""
    if is_bfloat16(arr.dtype) and not arr.dtype.isnative:  # swapped as uint16: NumPy 1.x
        return arr.view(np.uint16).byteswap().view(arr.dtype.newbyteorder("="))  # skips V2
    return arr


def is_torch_bfloat16(value: Any) -> bool:
    """True for a torch.bfloat16 tensor (subclasses too), without importing torch."""
    import sys
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor) and \
        value.dtype == torch.bfloat16


def round_bits(values: Any) -> np.ndarray:
    """The bfloat16 nearest to each float64 value (ties to even), as uint16 bit patterns.

    One rounding: float32 rounded to odd, then to nearest even on the 16 dropped bits.
    Overflow gives +-inf, underflow +-0 or a subnormal, NaN a quiet NaN of the same sign."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        f = v.astype(np.float32)  # to nearest; inf past float32's range
        back = f.astype(np.float64)
    bits = f.view(np.uint32).astype(np.uint64)
    finite = np.isfinite(v)
    inexact = finite & (back != v)
    # round to odd: step back towards zero where nearest went away from zero (the bits are
    # sign and magnitude, so one less is one float32 closer to zero), then set the last bit
    bits = bits - (inexact & (np.abs(back) > np.abs(v))).astype(np.uint64)
    bits = bits | inexact.astype(np.uint64)
    # to nearest even on the 16 bits that bfloat16 drops
    rounded = (bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))) \
        >> np.uint64(16)
    sign = (bits >> np.uint64(16)) & np.uint64(0x8000)
    out = np.where(np.isnan(v), sign | np.uint64(0x7FC0), rounded)
    return out.astype(np.uint16)


def bits_to_float32(bits: Any) -> np.ndarray:
    """uint16 bfloat16 patterns as the float32 values they are (exact: a shift)."""
    b = np.asarray(bits, dtype=np.uint16)
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_to(values: Any, dt: Any) -> np.ndarray:
    """float64 values rounded once to ``dt`` (float16/32/64 by NumPy's cast, which rounds
    float64 directly; bfloat16 by :func:`round_bits`)."""
    if is_bfloat16(dt):
        return round_bits(values).view(dt)
    return np.asarray(values, dtype=np.float64).astype(dt)


def from_torch(tensor: Any, name: str) -> np.ndarray:
    """A CPU torch.bfloat16 tensor as a NumPy bfloat16 array, sharing its memory (the 16-bit
    patterns are reinterpreted, never rounded); DTypeError for what is not a plain CPU
    tensor (on a GPU or the meta device, sparse, quantized)."""
    dt = dtype(f"{name} is a torch.bfloat16 tensor")
    t = tensor.detach()
    if t.device.type != "cpu":
        raise DTypeError(f"{name} is a torch.bfloat16 tensor on {t.device}; npeca takes CPU "
                         f"tensors with data: pass {name}.cpu()")
    import torch
    if t.layout != torch.strided:
        raise DTypeError(f"{name} is a {t.layout} torch.bfloat16 tensor; pass a dense one "
                         f"({name}.to_dense())")
    try:
        return t.view(torch.int16).numpy().view(np.uint16).view(dt)
    except (TypeError, RuntimeError, NotImplementedError) as exc:
        raise DTypeError(f"{name}: cannot read this torch.bfloat16 tensor's memory "
                         f"({exc})") from None
