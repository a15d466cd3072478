"""The number formats of golden cases: float16, float32, float64 and bfloat16.

A bfloat16 case holds its arrays in memory as float32 arrays every value of which is a
bfloat16 (the *carrier*: exact, since every bfloat16 is a float32). A suite with bfloat16
cases is therefore generated, read, checked and exported without ml_dtypes; only handing
the inputs to a backend (:func:`to_backend`) makes real bfloat16 arrays, and a backend's
bfloat16 results come back through :func:`from_backend`. Everything that needs a format's
constants (unit roundoff, smallest subnormal, ulp) asks this module by the case's dtype
name, never the carrier array's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _bfloat16

__all__ = ["Format", "FORMATS", "DTYPES", "fmt", "carrier", "round_float64", "ordered",
           "from_ordered", "to_backend", "from_backend", "BFLOAT16"]

BFLOAT16 = "bfloat16"


@dataclass(frozen=True)
class Format:
    """One binary floating-point format: its name, the NumPy dtype that holds it in memory,
    machine epsilon (2**-(p-1)), the smallest subnormal and maxexp (inf stands for
    2**maxexp when distances to it are compared)."""

    name: str
    carrier: np.dtype
    eps: float
    smallest_subnormal: float
    maxexp: int

    @property
    def unit_roundoff(self) -> float:
        return self.eps / 2


FORMATS = {
    "float16": Format("float16", np.dtype(np.float16), 2.0 ** -10, 2.0 ** -24, 16),
    "float32": Format("float32", np.dtype(np.float32), 2.0 ** -23, 2.0 ** -149, 128),
    "float64": Format("float64", np.dtype(np.float64), 2.0 ** -52, 2.0 ** -1074, 1024),
    BFLOAT16: Format(BFLOAT16, np.dtype(np.float32), 2.0 ** -7, 2.0 ** -133, 128),
}
DTYPES = tuple(FORMATS)


def fmt(name: Any) -> Format:
    """The Format called ``name`` (a dtype name or a NumPy dtype of one of them)."""
    return FORMATS[name if isinstance(name, str) else np.dtype(name).name]


def carrier(name: str) -> np.dtype:
    """The NumPy dtype that holds arrays of format ``name`` in memory."""
    return FORMATS[name].carrier


def round_float64(values: Any, name: str) -> np.ndarray:
    """float64 values rounded once, to nearest with ties to even, to format ``name``, in
    its carrier dtype."""
    if name == BFLOAT16:
        return _bfloat16.bits_to_float32(_bfloat16.round_bits(values))
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype(FORMATS[name].carrier)


_INTS = {2: np.int16, 4: np.int32, 8: np.int64}


def ordered(values: Any, name: str) -> np.ndarray:
    """Each value's position on format ``name``'s number line (int64; +0 and -0 are both
    0; consecutive values differ by 1), after one rounding to the format."""
    with np.errstate(over="ignore", invalid="ignore"):
        c = round_float64(values, name)
    width = c.dtype.itemsize
    i = c.view(_INTS[width]).astype(np.int64)
    o = np.where(i < 0, -(i & ((1 << (8 * width - 1)) - 1)), i)
    return o >> 16 if name == BFLOAT16 else o  # bfloat16: the low 16 bits are zero


def from_ordered(positions: Any, name: str) -> np.ndarray:
    """The values at ``positions`` of :func:`ordered`, in the carrier dtype."""
    o = np.asarray(positions, dtype=np.int64)
    if name == BFLOAT16:
        o = o << 16
    width = FORMATS[name].carrier.itemsize
    mag = np.abs(o).astype(np.uint64)
    i = np.where(o < 0, mag | np.uint64(1 << (8 * width - 1)), mag)
    unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[width]
    return i.astype(unsigned).view(FORMATS[name].carrier)


def to_backend(arr: np.ndarray, name: str) -> np.ndarray:
    """A case array as a backend receives it: bfloat16 carriers become ml_dtypes bfloat16
    arrays (NotImplementedError, so the case is skipped with the reason, without
    ml_dtypes); other formats as they are."""
    if name != BFLOAT16:
        return arr
    if not _bfloat16.available():
        raise NotImplementedError(f"bfloat16 cases hand the backend ml_dtypes.bfloat16 "
                                  f"arrays; {_bfloat16.INSTALL_HINT}")
    bits = (np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32) >> 16)
    return bits.astype(np.uint16).view(_bfloat16.dtype())


def from_backend(arr: np.ndarray, name: str) -> np.ndarray | None:
    """A backend's result for a case of format ``name`` in the carrier dtype, or None when
    it is not of that format (bfloat16: only ml_dtypes bfloat16 arrays are)."""
    if name != BFLOAT16:
        return arr
    if not _bfloat16.is_bfloat16(arr.dtype):
        return None
    native = _bfloat16.native(arr)  # a byte-swapped result: its values, not its bytes
    return _bfloat16.bits_to_float32(np.ascontiguousarray(native).view(np.uint16))
