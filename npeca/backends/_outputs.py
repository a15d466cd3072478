"""Recycled memory for the large outputs of the CPU kernels (y of the forward, dL/dx of the
backward).

Why: a new output array of a few MiB and more is fresh memory. The C library maps it from the
operating system on every call (glibc does so for blocks above its mmap threshold, and
returns freed memory at the top of its heap), and the kernel then zeroes each 4 KiB page on
its first write. For ``y = npeca.eca(x, w)`` on a 100 MB tensor that page-fault cost was more
than the ECA itself, and two outputs alive at once (a forward and a backward) paid it from
1 MiB on (docs/performance.md has the measurements).

What: :func:`empty` hands out arrays over blocks that earlier outputs used, once the user
holds no reference to those outputs any more. The array it returns does not own its memory:
its ``base`` chain ends at a small lease object, whose death (when the last array or view over
the block is gone) puts the block back on the free list. Nothing inspects reference counts,
and no block is handed out while any Python object can still reach it. (A raw address taken
with ``ctypes`` and kept past the array's life is as invalid here as it is for any freed
array.) The contents of a recycled block are whatever the last output left there: the
kernels write every element of their output before returning it.

Bounds: only outputs of :data:`MIN_BYTES` or more; free blocks are kept up to a total of
:func:`limit` bytes (1/16 of the physical memory, at most 4 GiB; the environment variable
``NPECA_OUTPUT_CACHE_MB`` sets it, ``0`` turns recycling off), the oldest dropped first.
:func:`release` returns every free block to the C library now.

Thread safety: blocks come back from the lease's weak-reference callback, which may run in
any thread and at any moment (also inside this module): it only appends to a deque. Blocks
are taken, and returned blocks filed, under a lock.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import weakref

import numpy as np

__all__ = ["MIN_BYTES", "empty", "limit", "release", "held"]

#: Outputs smaller than this come from ``np.empty`` as before. Measured here (2-core Intel
#: Xeon, glibc; benchmarks/outputs.py): a forward and backward with new arrays of 401 KB and
#: 802 KB paid no page faults with np.empty, and the lease cost 8 to 13 us per call in a
#: loop (more than in isolation: its Python code runs with cold caches); with 3.2 MB arrays
#: np.empty cost 1.9 ms of page faults per forward and backward.
MIN_BYTES = 1 << 20

_PAGE = 4096
_MAX_LIMIT = 4 << 30


class _Lease:
    """The base object of a recycled output: numpy reads the address, shape and type from
    ``__array_interface__`` and keeps the lease alive for as long as the array or any view of
    it lives."""

    __slots__ = ("block", "__array_interface__", "__weakref__")

    def __init__(self, block: np.ndarray, interface: dict):
        self.block = block
        self.__array_interface__ = interface

    def __repr__(self) -> str:
        return f"<npeca recycled output block of {self.block.size} bytes>"


_lock = threading.Lock()
_free: list[tuple[int, np.ndarray, int]] = []  # (bytes, block, address), oldest first
_free_bytes = 0
_returned: collections.deque = collections.deque()  # blocks whose lease has died
_live: dict = {}  # weak reference to a live lease -> its block's entry (keeps the reference,
# and with it the callback, alive)
_limit: int | None = None


def limit() -> int:
    """How many bytes of free blocks are kept: ``NPECA_OUTPUT_CACHE_MB`` (MiB, 0 = none) when
    set to an integer, else 1/16 of the physical memory, at most 4 GiB."""
    global _limit
    if _limit is None:
        text = os.environ.get("NPECA_OUTPUT_CACHE_MB", "").strip()
        if text:
            try:
                mib = int(text)
            except ValueError:
                mib = -1
            if mib < 0:
                from ..errors import ParameterError
                raise ParameterError(
                    f"the environment variable NPECA_OUTPUT_CACHE_MB must be a whole number "
                    f"of MiB, 0 or more (0 turns recycling off); got {text!r}")
            _limit = mib << 20
        else:
            try:
                memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                memory = 4 << 30
            _limit = min(_MAX_LIMIT, max(0, memory) // 16)
    return _limit


def held() -> int:
    """Bytes in free blocks kept for reuse now (blocks of live outputs are not counted)."""
    with _lock:
        _file_returned()
        return _free_bytes


def release() -> int:
    """Drop every free block (the C library gets the memory back); returns the bytes freed.
    Outputs still in use are not touched: their blocks are freed with them afterwards."""
    global _free_bytes
    with _lock:
        freed = _free_bytes
        while True:
            try:
                freed += _returned.popleft()[0]
            except IndexError:
                break
        _free.clear()
        _free_bytes = 0
    return freed


def empty(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """An uninitialized C-contiguous array, over a recycled block when it is large enough."""
    if not isinstance(dtype, np.dtype):
        dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES or (_limit if _limit is not None else limit()) == 0:
        return np.empty(shape, dtype=dtype)
    size = -(-nbytes // _PAGE) * _PAGE
    global _free_bytes
    entry = None
    with _lock:
        if _returned:
            _file_returned()
        for i in range(len(_free) - 1, -1, -1):  # the newest first: most likely in cache
            if _free[i][0] == size:
                entry = _free.pop(i)
                _free_bytes -= size
                break
    if entry is None:
        try:
            block = np.empty(size, dtype=np.uint8)
        except MemoryError:
            release()
            block = np.empty(size, dtype=np.uint8)
        entry = (size, block, block.ctypes.data)
    raw = dtype.kind == "V"  # no type string for bfloat16 & co: bytes, then a view
    lease = _Lease(entry[1], {"data": (entry[2], False), "version": 3,
                              "shape": (size,) if raw else tuple(shape),
                              "typestr": "|u1" if raw else dtype.str})
    _live[weakref.ref(lease, _give_back)] = entry
    if raw:
        return np.asarray(lease)[:nbytes].view(dtype).reshape(shape)
    return np.asarray(lease)


def _give_back(ref) -> None:
    """The callback of a lease's weak reference: hand its block back (no lock taken)."""
    _returned.append(_live.pop(ref))


def _file_returned() -> None:
    """Move blocks whose outputs have died onto the free list, dropping the oldest free
    blocks beyond the limit (under the lock)."""
    global _free_bytes
    cap = limit()
    while True:
        try:
            entry = _returned.popleft()
        except IndexError:
            break
        if entry[0] > cap:
            continue
        _free.append(entry)
        _free_bytes += entry[0]
    while _free_bytes > cap and _free:
        _free_bytes -= _free.pop(0)[0]


def _after_fork_in_child() -> None:
    """A fork while another thread held the lock leaves it held in the child: a new one."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
