"""How a call is cut into work items and spread over threads, from this machine's caches
(:mod:`._machine`): the tap tables, :class:`_Call` (views, schedule, launches) and
:class:`_Stager` (inputs the kernels cannot read directly, a few samples at a time). Only how
the work is cut depends on these sizes, never a bit of any result."""

from __future__ import annotations

import functools
import threading
from typing import Any

import numba
import numpy as np

from ..._bfloat16 import is_bfloat16, round_to

from ..._validate import ECAProblem
from . import _compile
from ._compile import Twin, run_parallel_or_serial
from ._kernels import (_PHASES, _PIPELINED_SAMPLES, _SAMPLES, _WAVES, _backward_cf,
                       _backward_cf_pipelined, _backward_cl, _forward_cf, _forward_cf_waves,
                       _forward_cl, _parameter_grads, _transpose_samples)
from ._machine import caches
from ._simd import LANES

#: While not None, launches are recorded here as (kernel, args) instead of only run:
#: how the readiness code learns the argument types of a kind of call (see _ready.py).
_recording = threading.local()

# The schedule's sizes, derived from this machine's caches (_machine.py). Only how the work is
# cut into items and spread over threads depends on them, never a bit of any result.
_CACHES = caches()
_SERIAL_BYTES = 2 * _CACHES.l1d  # smaller inputs run on the calling thread (see _Call.threads)
_WAVE_BYTES_PER_THREAD = _CACHES.l2 // 2  # bytes of x per thread in a wave: half an L2
_ITEMS_PER_THREAD = 8  # work items per thread in a wave, for load balance
# Samples up to this size are one work item each (the channels-first forward, and the
# backward's _SAMPLES): one thread pools (sums) its sample, then scales it (writes its dx),
# reading it again from its own cache: L2, or its share of the last-level cache when the sample
# is larger than L2. Splitting a sample instead pools its halo channels twice and makes more
# items. Measured on a 2-core AMD EPYC (1 MiB L2, 32 MiB L3 for 2 CPUs) against items of 3/4
# of an L2 (`python benchmarks/schedule.py`; docs/performance.md): forward 0.85x to 1.02x the
# time on samples of 0.4 to 3.2 MB, backward 0.62x to 0.88x (16x256x56x56, which was
# pipelined, 0.62x). At most a quarter of the L3 share (room for the output and the other
# threads), and 4 L2s (the largest samples measured were 3.2 MB).
_PER_SAMPLE_BYTES = max(_CACHES.l2 // 4,
                        min(4 * _CACHES.l2, _CACHES.l3 // _CACHES.l3_cpus // 4))
_CHUNK_BYTES = 3 * _CACHES.l2 // 4  # channels-first forward of large samples: x per item
_SEGMENTS_PER_THREAD = 1  # channels-first backward of large samples: pipelined segments
# Channels-first backward rows shorter than this are not pipelined (_PHASES instead): the
# pipeline's bookkeeping per channel costs more than a second read of a short row from L2.
_PIPELINE_MIN_ROW = 8192
# Channels-last waves: most channels per pooling item, a multiple of 16 whose LANES float64
# sums per column take about 2/3 of the L1 data cache (256 for 48 KiB, 160 for 32 KiB).
# Blocks of columns were measured no faster than whole rows for a sample that one thread
# pools alone (Intel Xeon), and 1.0x to 1.4x slower on 32 samples of ResNet-50's shapes
# (AMD EPYC, blocks of 80 and 160 in a throwaway A/B, rows read in pieces).
_ACC_COLUMNS = max(16, (2 * _CACHES.l1d // 3) // (LANES * 8) // 16 * 16)
_MIN_BLOCK = 16  # channels-last waves: fewest channels per pooling item
_STAGE_BYTES = 4 << 20  # bytes of x staged at a time on the slow path
# Outputs larger than the last-level cache (at most 32 MiB of it: an L3 is shared with the
# other cores and processes) bypass the caches with streaming stores ...
_STREAM_BYTES = min(_CACHES.l3, 32 << 20)
_STREAM_MIN_ROW = 1024  # ... when their channels-first rows have at least this many elements
_STREAM_MIN_COLUMNS = 512  # ... or their channels-last rows (positions) this many channels
_PARAMETER_SERIAL = 1 << 15  # weight gradients of fewer N * C * k terms: one thread
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def tuning() -> tuple:
    """The sizes above that decide a forward's or a backward's schedule, as read now: part of
    the key of a remembered launch (_run._PLANS, _run._BACKWARD_PLANS), so that a changed
    size (the tests change them) is never served a launch planned with the old one."""
    return (_SERIAL_BYTES, _WAVE_BYTES_PER_THREAD, _ITEMS_PER_THREAD, _PER_SAMPLE_BYTES,
            _CHUNK_BYTES, _SEGMENTS_PER_THREAD, _PIPELINE_MIN_ROW, _ACC_COLUMNS, _MIN_BLOCK,
            _STREAM_BYTES, _STREAM_MIN_ROW, _STREAM_MIN_COLUMNS, _PARAMETER_SERIAL)

# --- the wrappers: choose views, the schedule and staging, then call the kernels ------------


def kernel_weight(problem: ECAProblem) -> np.ndarray:
    """The kernel(s) as float64, (C, k) per channel or (1, k) shared; always writeable,
    C-contiguous and aligned, so that every weight gives numba the same signature."""
    w = problem.weight
    flags = w.flags
    if w.dtype != np.float64 or not (flags.writeable and flags.c_contiguous and flags.aligned):
        w = np.array(w, dtype=np.float64)
    return w.reshape(-1, problem.k)


def _tap_tables(c_: int, k: int, cg: int, circular: bool):
    """(src, rd, span): src[c, j] is the channel that channel c reads through tap j and
    rd[c, j] the channel that reads c through tap j, -1 where the tap falls on a zero pad;
    span[c] = (min, max) of the valid src[c, :], then (min, max) of the valid rd[c, :]."""
    c = np.arange(c_, dtype=np.int64)[:, None]
    j = np.arange(k, dtype=np.int64)[None, :]
    p = (k - 1) // 2
    g0 = (c // cg) * cg  # the first channel of c's group
    fwd = c - g0 + j - p  # c + j - p inside the group
    bwd = c - g0 - j + p  # c - j + p: the transposed correlation
    if circular:
        fwd, bwd = fwd % cg, bwd % cg  # non-negative, wraps any number of times (k > C)
    src = np.where((fwd >= 0) & (fwd < cg), g0 + fwd, -1)
    rd = np.where((bwd >= 0) & (bwd < cg), g0 + bwd, -1)
    span = np.empty((c_, 4), dtype=np.int64)  # tap p is c itself: every row has a valid tap
    span[:, 0] = np.where(src >= 0, src, c_).min(axis=1)
    span[:, 1] = src.max(axis=1)
    span[:, 2] = np.where(rd >= 0, rd, c_).min(axis=1)
    span[:, 3] = rd.max(axis=1)
    return np.ascontiguousarray(src), np.ascontiguousarray(rd), span


@functools.lru_cache(maxsize=64)
def _taps(c: int, k: int, cg: int, circular: bool):
    """_tap_tables, remembered: they depend on the geometry only (read-only arrays)."""
    tables = _tap_tables(c, k, cg, circular)
    for t in tables:
        t.flags.writeable = False
    return tables


def _num_threads() -> int:
    """numba.get_num_threads(), without the two locks (one of them a multiprocessing lock)
    that it takes on every call to see whether the thread pool is started: 1.9 us of a
    call of about 10 us on small inputs. Once the pool is started, numba's own per-thread
    count is read directly (the value get_num_threads returns, set_num_threads included)."""
    if getattr(_parallel, "_is_initialized", False):
        read = getattr(_parallel, "_get_num_threads", None)  # set when the pool starts
        if read is not None:
            count = read()
            if count > 0:
                return count
    return numba.get_num_threads()


_parallel: Any = None  # the module behind numba.get_num_threads (numba 0.49 and later)
try:
    from numba.np.ufunc import parallel as _parallel
except ImportError:  # pragma: no cover - another layout: numba.get_num_threads() always
    pass


def _ceil(a: int, b: int) -> int:
    """ceil(a / b) for positive integers."""
    return -(-a // b)


class _Call:
    """One validated call: geometry, kernel arguments, and the schedule (never arithmetic)."""

    def __init__(self, problem: ECAProblem):
        x = problem.x
        self.problem = problem
        self.n, self.c = problem.n, problem.c
        self.s = x.size // (self.n * self.c)
        self.channels_last = problem.channels_last
        self.w = kernel_weight(problem)
        self.cg = self.c // problem.groups  # channels per group
        self.src, self.rd, self.span = _taps(self.c, problem.k, self.cg,
                                             problem.padding == "circular")
        self.bias = 0.0 if problem.bias is None else float(problem.bias)
        self.has_bias = problem.bias is not None
        self.hard = problem.gate == "hard_sigmoid"
        self.threads = self.use_threads(x.size * x.dtype.itemsize)

    @staticmethod
    def use_threads(nbytes: int) -> int:
        """How many threads a pass over ``nbytes`` of input gets: all of numba's (its
        ``get_num_threads()``, which NUMBA_NUM_THREADS and ``numba.set_num_threads`` set), or
        only the calling thread when the input fits twice in one core's L1 data cache: it is
        done in microseconds, less than waking the other threads costs. One also in a child
        made by fork() after the parent started numba's threads (_compile.SERIAL_ONLY)."""
        if nbytes <= _SERIAL_BYTES or _compile.SERIAL_ONLY:
            return 1
        return _num_threads()

    def launch(self, kernel: Twin, *args, serial: bool = False) -> None:
        """Run the serial or the parallel twin of ``kernel``, as ``self.threads`` (or
        ``serial``) says; the serial one also while the parallel one still compiles in the
        background."""
        calls = getattr(_recording, "calls", None)
        if calls is not None:  # _prepare: which kernels, with which argument types
            calls.append((kernel, args))
        if serial or self.threads == 1:
            kernel.serial(*args)
        else:
            run_parallel_or_serial(kernel, args)

    def view3(self, arr: np.ndarray) -> np.ndarray:
        """A C-contiguous array shaped like x (or a run of its samples) as (n, C, S) or
        (n, S, C), without a copy."""
        if self.channels_last:
            return arr.reshape(arr.shape[0], self.s, self.c)
        return arr.reshape(arr.shape[0], self.c, self.s)

    def balanced(self, n: int) -> bool:
        """Whether n samples, one work item each, keep every thread about equally busy: they
        divide among the threads, or there are at least 4 per thread (always with one)."""
        threads = self.threads
        return n % threads == 0 or n >= 4 * threads

    def schedule(self, n: int, itemsize: int, pipelined: bool = False
                 ) -> tuple[int, int, int, int]:
        """(mode, wave, chunk, sb) for n samples of this channels-first geometry (the
        in-place forward and the backward; channels-last: channels_last_plan).

        _SAMPLES when samples are small (they stay in cache between the sweeps) and there
        are enough of them to keep every thread busy. For a ``pipelined`` kernel (the
        channels-first backward): _PHASES when rows are shorter than _PIPELINE_MIN_ROW bytes
        (waves as below, each summed, then dz, then dx, every thread on every phase);
        _PIPELINED_SAMPLES when samples are large but their number divides among the
        threads. Otherwise _WAVES of about _WAVE_BYTES_PER_THREAD per thread, split into
        about _ITEMS_PER_THREAD items per thread of `chunk` channels or `sb` positions
        (pipelined: _SEGMENTS_PER_THREAD long segments per thread)."""
        threads = self.threads
        c, s = self.c, self.s
        sample = c * s * itemsize
        balanced = self.balanced(n)
        wave = min(n, max(1, (_WAVE_BYTES_PER_THREAD * threads) // sample))
        target = _ITEMS_PER_THREAD * threads
        if sample <= _PER_SAMPLE_BYTES and balanced:
            mode = _SAMPLES
        elif pipelined and s * itemsize < _PIPELINE_MIN_ROW:
            mode, pipelined = _PHASES, False
        elif pipelined and n % threads == 0:
            mode = _PIPELINED_SAMPLES
        else:
            mode = _WAVES
        if pipelined:
            chunk = _ceil(c, _SEGMENTS_PER_THREAD * threads)
        else:
            chunk = min(c, _ceil(wave * c, target))
        return mode, wave, chunk, min(s, _ceil(wave * s, target))

    def forward_chunk(self, n: int, itemsize: int) -> int:
        """Channels per item of the channels-first forward: whole samples when they are
        small and numerous enough to keep every thread busy; else every sample split into
        a multiple of the thread count of items of at most about _CHUNK_BYTES (so an item
        is still in L2 when it is scaled) with as few halo channels as that allows."""
        threads = self.threads
        sample = self.c * self.s * itemsize
        if sample <= _PER_SAMPLE_BYTES and self.balanced(n):
            return self.c
        per = threads * _ceil(sample, threads * _CHUNK_BYTES)
        return _ceil(self.c, min(per, self.c))

    def channels_last_plan(self, n: int, itemsize: int) -> tuple[int, int, int, int]:
        """(mode, wave, chunk, sb) of a channels-last forward or backward.

        _SAMPLES with whole samples (chunk = C) whenever the samples divide among the
        threads (or there are at least 4 per thread): each is pooled, then scaled, by one
        thread, reading rows of whole positions, and is safe in place. Otherwise (N = 1, or
        a few samples that leave a thread idle) _WAVES: every sample of a wave pooled by
        blocks of up to _ACC_COLUMNS channels, as many for each thread (wide rows, no
        halo), then scaled by blocks of ``sb`` positions. Items of part of a sample with
        their own halo columns (chunk < C in _SAMPLES, before) read short, misaligned rows;
        they measured up to 1.9x slower on ResNet-50's shapes and 3.4x to 4.6x on large
        maps (docs/performance.md)."""
        threads = self.threads
        if self.balanced(n):
            return _SAMPLES, 0, self.c, 0
        c, s = self.c, self.s
        wave = min(n, max(1, (_WAVE_BYTES_PER_THREAD * threads) // (c * s * itemsize)))
        # each thread the same number of blocks, of at most _ACC_COLUMNS channels (a multiple
        # of 16): 512 channels in blocks of 160 left one of 2 threads 320 of them. Rounding
        # up to 16 can leave a count that the threads do not divide (2048 channels in 14
        # blocks are 13 of 160): then more, smaller blocks (16 of 128), down to _MIN_BLOCK
        blocks = threads * _ceil(_ceil(c, threads), _ACC_COLUMNS)
        chunk = min(c, max(_MIN_BLOCK, _ceil(_ceil(c, blocks), 16) * 16))
        while _MIN_BLOCK < chunk < c and _ceil(c, chunk) % threads:
            blocks += threads
            chunk = min(c, max(_MIN_BLOCK, _ceil(_ceil(c, blocks), 16) * 16))
        return _WAVES, wave, chunk, min(s, _ceil(wave * s, _ITEMS_PER_THREAD * threads))

    def forward(self, x, y, m, z, a) -> None:
        """The forward kernel on C-contiguous x and y of one dtype."""
        if self.channels_last:
            mode, wave, chunk, sb = self.channels_last_plan(x.shape[0], x.dtype.itemsize)
            self.launch(_forward_cl, self.view3(x), self.w, self.src, self.cg, self.bias,
                        self.has_bias, self.hard, mode, wave, chunk, sb, self.stream(y),
                        self.view3(y), m, z, a)
        else:
            # in place (out is x) with samples split into items: each wave of samples pooled
            # before it is scaled (_forward_cf_waves)
            chunk = self.forward_chunk(x.shape[0], x.dtype.itemsize)
            waves = chunk < self.c and np.may_share_memory(x, y)
            wave = self.schedule(x.shape[0], x.dtype.itemsize)[1] if waves else 0
            self.launch(_forward_cf_waves if waves else _forward_cf, self.view3(x), self.w,
                        self.src, self.cg, self.span, self.bias, self.has_bias, self.hard,
                        chunk, wave, self.stream(y), self.view3(y), m, z, a)

    def backward(self, x, g, dx, m, dz) -> None:
        """The backward kernel on C-contiguous x, g and dx of one dtype."""
        if self.channels_last:
            mode, wave, chunk, sb = self.channels_last_plan(x.shape[0], x.dtype.itemsize)
            self.launch(_backward_cl, self.view3(x), self.view3(g), self.w, self.src, self.rd,
                        self.cg, self.bias, self.has_bias, self.hard, mode, wave, chunk, sb,
                        self.stream(dx), self.view3(dx), m, dz)
        else:
            mode, wave, chunk, _ = self.schedule(x.shape[0], x.dtype.itemsize, pipelined=True)
            kernel = _backward_cf if mode in (_SAMPLES, _PHASES) else _backward_cf_pipelined
            self.launch(kernel, self.view3(x), self.view3(g), self.w, self.src, self.rd,
                        self.cg, self.span, self.bias, self.has_bias, self.hard, mode, wave, chunk,
                        self.stream(dx), self.view3(dx), m, dz)

    def parameter_grads(self, m, dz, dw, db) -> None:
        """dw and db from the backward's m and dz: one thread for small problems."""
        small = self.parameter_grads_serial(self.n, self.c, self.w.shape[1])
        chunk = self.c if small else _ceil(self.c, _ITEMS_PER_THREAD * self.threads)
        self.launch(_parameter_grads, m, dz, self.w, self.src, self.cg, self.problem.per_channel,
                    chunk,
                    dw, db, serial=small)

    @staticmethod
    def parameter_grads_serial(n: int, c: int, k: int) -> bool:
        """Whether the weight gradients of N x C logits and k taps run on one thread: fewer
        than _PARAMETER_SERIAL terms take less time than waking the other threads."""
        return n * c * k < _PARAMETER_SERIAL

    def stream(self, out: np.ndarray) -> bool:
        """Whether to write ``out`` with streaming stores: when the whole output of the call
        is too large to stay in cache (reading it back for ownership would only cost
        bandwidth) and its rows are long enough to pay for the alignment and the fence
        (channels-first: rows of S positions; channels-last: rows of C channels, each
        element with its own channel's factor)."""
        if self.channels_last:
            return self.problem.x.nbytes >= _STREAM_BYTES and self.c >= _STREAM_MIN_COLUMNS
        return self.problem.x.nbytes >= _STREAM_BYTES and self.s >= _STREAM_MIN_ROW

    def stager(self, *dtypes: np.dtype) -> "_Stager":
        """Staging buffers: float32 when every staged input is float32, else float64 (exact
        widening of float16 and float32). The kernels then only ever see float32 or float64
        throughout, which keeps their compiled versions to two per kernel."""
        f32 = np.dtype(np.float32)
        return _Stager(self, f32 if all(d == f32 for d in dtypes) else np.dtype(np.float64))


def _direct(a: np.ndarray, dtype: np.dtype) -> bool:
    """True when the kernels can use ``a`` as it is: C-contiguous, of ``dtype``, and aligned
    to its element size (vector loads and streaming stores assume it; a memmap at an odd
    offset is not)."""
    flags = a.flags
    return flags.c_contiguous and flags.aligned and a.dtype == dtype


def _fast(x: np.ndarray, *others: np.ndarray) -> bool:
    """True when every array can go to the kernels without staging (_direct, one dtype)."""
    dtype = x.dtype
    if dtype not in _FAST_DTYPES or not _direct(x, dtype):
        return False
    for a in others:
        if not _direct(a, dtype):
            return False
    return True


def _bfloat16_bits(channels_last: bool, *arrays: np.ndarray) -> tuple | None:
    """The arrays as uint16 views of their bfloat16 patterns, which the channels-first
    kernels read and write directly (2 bytes per element; see _simd), when every one is
    bfloat16, C-contiguous and aligned and the layout is channels-first; else None (the
    stager widens them to float64 instead)."""
    if channels_last:
        return None
    for a in arrays:
        if not (is_bfloat16(a.dtype) and a.flags.c_contiguous and a.flags.aligned):
            return None
    return tuple(a.view(np.uint16) for a in arrays)


class _Stager:
    """Copies a few samples at a time into reused C-contiguous buffers of the compute dtype
    (bounded extra memory: about _STAGE_BYTES per staged array). An array whose memory is
    in the other layout's order (a channels-first x that is channels-last in memory, as a
    PyTorch ``channels_last`` tensor's ``.numpy()`` is, or the reverse) is copied by the
    tiled _transpose_samples kernel, on numba's threads: NumPy's copy of such a view reads
    it element by element across rows (the forward of 32x256x56x56 float32 staged that way
    took 2.6x the time, `python benchmarks/swapped.py`, docs/performance.md)."""

    def __init__(self, call: _Call, dtype: np.dtype):
        self.call = call
        self.dtype = dtype
        self.step = max(1, _STAGE_BYTES // (call.c * call.s * dtype.itemsize))
        self.n = call.n
        self.shape = (min(self.step, call.n),) + call.problem.x.shape[1:]
        self._buffers: dict[str, np.ndarray] = {}

    def ranges(self):
        """(n0, n1) sample ranges of ``step`` samples, the last one shorter."""
        for n0 in range(0, self.n, self.step):
            yield n0, min(self.n, n0 + self.step)

    def load(self, name: str, arr: np.ndarray, n0: int, n1: int) -> np.ndarray:
        """arr[n0:n1] as a C-contiguous array of the compute dtype (a view when it is one)."""
        part = arr[n0:n1]
        if _direct(part, self.dtype):
            return part
        buf = self._buffer(name, self.dtype)[:n1 - n0]
        swapped = self.swapped(part)
        if swapped is not None:  # part is float32 or float64; buf the same, or float64
            self._transpose(swapped, self.call.view3(buf))  # (float32 widens exactly)
        else:
            np.copyto(buf, part)  # float16 -> float32 and float32 -> float64 are exact
        return buf

    def result(self, out: np.ndarray, n0: int, n1: int) -> tuple[np.ndarray, bool]:
        """Where the kernel writes out[n0:n1]: out itself when it can, else a buffer of the
        compute dtype (out is then rounded once, in store); and whether the buffer must be
        copied to out afterwards."""
        part = out[n0:n1]
        if _direct(part, self.dtype):
            return part, False
        return self._buffer("out", self.dtype)[:n1 - n0], True

    def store(self, out: np.ndarray, n0: int, n1: int, buf: np.ndarray) -> None:
        """out[n0:n1] = buf, the only rounding to out's dtype (bfloat16 by round_to: one
        rounding from float64, not two through float32); a part of out of buf's dtype whose
        memory is in the other layout's order by _transpose_samples (no rounding)."""
        part = out[n0:n1]
        if part.dtype == buf.dtype:
            swapped = self.swapped(part)
            if swapped is not None:
                self._transpose(self.call.view3(buf), swapped)
                return
        part[...] = round_to(buf, out.dtype) if is_bfloat16(out.dtype) else buf

    def swapped(self, part: np.ndarray) -> np.ndarray | None:
        """``part`` (samples of x's shape) as a C-contiguous, aligned (n, S, C) view when the
        call is channels-first and part is channels-last in memory, or as an (n, C, S) view
        when the call is channels-last and part is channels-first in memory; float32 or
        float64 only. Else None."""
        if part.dtype not in _FAST_DTYPES:
            return None
        n = part.shape[0]
        if self.call.channels_last:
            view = np.moveaxis(part, -1, 1)
            shape = (n, self.call.c, self.call.s)
        else:
            view = np.moveaxis(part, 1, -1)
            shape = (n, self.call.s, self.call.c)
        if not (view.flags.c_contiguous and view.flags.aligned):
            return None
        return view.reshape(shape)

    def _transpose(self, src: np.ndarray, dst: np.ndarray) -> None:
        """_transpose_samples(src, dst), which trusts its shapes (it writes dst[n, b, a]
        for every element of src): a mismatch here would write outside dst."""
        n, a, b = src.shape
        if dst.shape != (n, b, a):
            raise RuntimeError(f"npeca internal error: transposing {src.shape} into "
                               f"{dst.shape}")
        self.call.launch(_transpose_samples, src, dst)

    def _buffer(self, name: str, dtype: np.dtype) -> np.ndarray:
        """The reused buffer ``name`` of one stage of samples."""
        if name not in self._buffers:
            self._buffers[name] = np.empty(self.shape, dtype)
        return self._buffers[name]
