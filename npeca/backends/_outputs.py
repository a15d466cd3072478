"""Recycled memory for the large outputs of the CPU kernels (y of the forward, dL/dx of the
backward).

Why: a new output array of a few MiB and more is fresh memory. The C library maps it from the
operating system on every call (glibc does so for blocks above its mmap threshold, and
returns freed memory at the top of its heap), and the kernel then zeroes each 4 KiB page on
its first write. For ``y = npeca.eca(x, w)`` on a 100 MB tensor that page-fault cost was more
than the ECA itself, and two outputs alive at once (a forward and a backward) paid it from
a few MiB on (docs/performance.md has the measurements).

What: :func:`empty` hands out arrays over blocks that earlier outputs used, once the user
holds no reference to those outputs any more. The array it returns does not own its memory:
its chain of bases ends at a ctypes array over the block (the holder), whose death (when the
last array, view or buffer over the block is gone) puts the block back on the free list.
Nothing inspects reference counts. The holder exports a writeable buffer, so the array
behaves like any array over foreign memory (its WRITEABLE flag can be cleared and set
again); copying or pickling the holder copies the bytes. A raw address taken with ``ctypes``
and kept past the array's life is as invalid here as it is for any freed array. The contents
of a recycled block are whatever the last output left there: the kernels write every element
of their output before returning it.

Bounds: only outputs of :data:`MIN_BYTES` or more; free blocks are kept up to :data:`MAX_FREE`
blocks and :func:`limit` bytes (1/32 of the memory this process may use, at most 1 GiB; the
environment variable ``NPECA_OUTPUT_CACHE_MB`` sets it, ``0`` turns recycling off), the oldest
dropped first. :func:`release` returns every free block to the C library now.

Thread safety: blocks come back from the holder's weak-reference callback, which may run in
any thread and at any moment, also while this module holds its lock in the same thread: the
callback appends to a deque, then files the deque (applying the bounds) only if it gets the
lock without waiting. Every function that takes the lock files the deque too. The byte count
is never kept apart from the list it counts (an interrupt between two updates would leave
them disagreeing).
"""

from __future__ import annotations

import collections
import ctypes
import math
import os
import re
import threading
import weakref

import numpy as np

__all__ = ["MIN_BYTES", "MAX_FREE", "empty", "limit", "release", "held"]

#: Outputs smaller than this come from ``np.empty`` as before. Measured here (2-core Intel
#: Xeon, glibc; benchmarks/outputs.py): a forward and backward with new arrays of 401 KB and
#: 802 KB paid no page faults with np.empty, and the recycling cost 8 to 13 us per call in a
#: loop (more than in isolation: its Python code runs with cold caches); with 3.2 MB arrays
#: np.empty cost 1.9 ms of page faults per forward and backward.
MIN_BYTES = 1 << 20

#: At most this many free blocks are kept (the oldest dropped first): blocks of sizes that
#: never come again (a changing batch size) do not pile up to the byte limit.
MAX_FREE = 8

_PAGE = 4096
_MAX_LIMIT = 1 << 30
_FRACTION = 32

_lock = threading.Lock()
_free: list[tuple[int, np.ndarray, int]] = []  # (bytes, block, address), oldest first
_returned: collections.deque = collections.deque()  # blocks whose holder has died
_live: dict = {}  # id(weak reference to a live holder) -> (that reference, its block's entry)
_limit: int | None = None


def limit() -> int:
    """How many bytes of free blocks are kept: ``NPECA_OUTPUT_CACHE_MB`` (a whole number of
    MiB, 0 = none) when set, else 1/32 of the memory this process may use (the physical
    memory, or a smaller cgroup limit), at most 1 GiB."""
    global _limit
    if _limit is None:
        text = os.environ.get("NPECA_OUTPUT_CACHE_MB", "").strip()
        if text:
            if not re.fullmatch(r"[0-9]{1,9}", text):
                from ..errors import ParameterError
                raise ParameterError(
                    f"the environment variable NPECA_OUTPUT_CACHE_MB must be a whole number "
                    f"of MiB from 0 to 999999999, in ASCII digits (0 turns recycling of "
                    f"outputs off); got {text!r}")
            _limit = int(text) << 20
        else:
            _limit = min(_MAX_LIMIT, _usable_memory() // _FRACTION)
    return _limit


def _usable_memory() -> int:
    """The physical memory, or the cgroup (v2, then v1) memory limit when that is smaller;
    4 GiB when neither can be read."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = 4 << 30
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < memory:
            memory = int(text)
    return max(0, memory)


def held() -> int:
    """Bytes in free blocks kept for reuse now (blocks of live outputs are not counted)."""
    with _lock:
        _file_returned()
        return sum(entry[0] for entry in _free)


def release() -> int:
    """Drop every free block (the C library gets the memory back); returns the bytes freed.
    Outputs still in use are not touched: their blocks are freed with them afterwards."""
    freed = 0
    with _lock:
        while _returned:
            freed += _returned.popleft()[0]
        while _free:
            freed += _free.pop()[0]
    return freed


def empty(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """An uninitialized C-contiguous array, over a recycled block when it is large enough."""
    if not isinstance(dtype, np.dtype):
        dtype = np.dtype(dtype)
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes < MIN_BYTES or limit() == 0:
        return np.empty(shape, dtype=dtype)
    size = -(-nbytes // _PAGE) * _PAGE
    entry = None
    with _lock:
        if _returned:
            _file_returned()
        if _free and _free[-1][0] == size:  # the newest first: most likely in cache
            entry = _free.pop()
        else:
            for i in range(len(_free) - 2, -1, -1):
                if _free[i][0] == size:
                    entry = _free.pop(i)
                    break
    if entry is None:
        try:
            block = np.empty(size, dtype=np.uint8)
        except MemoryError:
            release()
            block = np.empty(size, dtype=np.uint8)
        entry = (size, block, block.ctypes.data)
    holder = (ctypes.c_char * size).from_address(entry[2])  # the block stays alive in _live
    ref = weakref.ref(holder, _give_back)
    _live[id(ref)] = (ref, entry)
    return np.ndarray(shape, dtype, buffer=holder)  # its base: the holder


def _give_back(ref) -> None:
    """The callback of a holder's weak reference: hand its block back; file it now unless
    the lock is taken (by another thread, or by this one inside this module)."""
    _returned.append(_live.pop(id(ref))[1])
    if _lock.acquire(blocking=False):
        try:
            _file_returned()
        finally:
            _lock.release()


def _file_returned() -> None:
    """Move blocks whose outputs have died onto the free list, then drop the oldest free
    blocks beyond MAX_FREE blocks and limit() bytes (under the lock)."""
    cap = limit()
    while _returned:
        entry = _returned.popleft()
        if entry[0] <= cap:  # a block larger than the limit alone is not kept
            _free.append(entry)
    if len(_free) == 1 and MAX_FREE >= 1 and _free[0][0] <= cap:  # the usual case: nothing
        return  # to drop, no sum
    total = sum(entry[0] for entry in _free)
    while _free and (total > cap or len(_free) > MAX_FREE):
        total -= _free.pop(0)[0]


def _after_fork_in_child() -> None:
    """A fork while another thread held the lock leaves it held in the child: a new one."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
