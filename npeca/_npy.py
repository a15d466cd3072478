"""Reading a ``.npy`` header without reading (or allocating) the array behind it."""

from __future__ import annotations

from typing import Any

import numpy as np

_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}


def npy_header(stream: Any) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header at the start of ``stream``; ValueError for a version
    NumPy's reader does not know or a malformed header."""
    version = np.lib.format.read_magic(stream)
    read = _READERS.get(version)
    if read is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _fortran, dtype = read(stream)
    return tuple(int(d) for d in shape), dtype
