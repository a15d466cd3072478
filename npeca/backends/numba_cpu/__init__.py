"""The Numba CPU backend: fused, parallel, deterministic ECA forward and backward.

This module imports numba at import time; :func:`npeca.backends.get_backend` imports it
lazily. It deliberately uses nothing of :mod:`npeca.reference` (see docs/backends.md): the two
are independent implementations of the same math, and the tests compare them. Kernels are
private and trust their inputs: :mod:`npeca.api` validates, this module's ``forward`` and
``backward`` allocate and choose a schedule, the kernels compute.

How the work is laid out (the pass model of docs/performance.md; docs/backends.md has the long
version):

* A C-contiguous float32/float64 ``x`` is viewed, without a copy, as (N, C, S) for
  channels-first or (N, S, C) for channels-last. Anything else (float16, other strides, a
  non-contiguous ``out``, a grad_out of another dtype) is staged a few samples at a time
  through reused float32/float64 buffers: bounded extra memory, one rounding to the output.
* Channels-first forward: one parallel loop whose items are a whole sample (small samples)
  or a range of a sample's channels (so that N = 1 uses every core too). An item pools its
  channels, convolves, gates and scales them while they are still in L2: x is read from
  memory once and y written once, the two passes of the copy floor. The few neighbouring
  channels its convolution reads are pooled again by the item (same arithmetic, same bits)
  instead of waiting for the item that owns them, so no thread ever waits for another.
* Channels-first backward: per item, channel after channel, sum x and g * x, and as soon as
  the neighbours are known, dz and dx = g * a + dm / S, while g is still in cache
  (:func:`_pipeline_cf`); x and g are read from memory once, dx written once.
* Channels-last: the same halo items over blocks of whole cache lines of channels
  (:func:`_items._forward_item_cl`, :func:`_items._backward_item_cl`): a block and the few
  neighbouring columns its convolution reads are adjacent in memory, so the halo is nearly
  free. In place with split blocks: waves of samples in parallel phases over blocks of
  channels (pooling) and of positions (scaling).
* Every kernel exists as a serial and a parallel twin (:mod:`._compile`): small inputs run
  the serial one on the calling thread; a large call whose parallel twin is not compiled yet
  runs the serial one while the parallel one compiles in the background. Item and wave sizes
  come from this machine's caches (:mod:`._machine`).
* Outputs of 32 MiB and more are written with streaming (non-temporal) stores, which skip
  reading the destination into cache first.
* Every sum over positions is accumulated in float64 over ``LANES`` interleaved lanes
  (position s into lane s mod LANES), the lanes combined by a fixed pairwise tree; the
  channels-first rows by an explicit SIMD loop written in LLVM IR (:func:`_lane_sum`), the
  channels-last columns by the same rule in plain loops, so both layouts give the same bits.
  No sum is split across threads, and no schedule changes an operation or its order:
  results are bitwise identical for any number of threads and on every call.
"""

from __future__ import annotations

import functools
import threading

import numba
import numpy as np

from ..._validate import ECAProblem
from ...results import ECAForward, ECAGrads
from ._kernels import (_PIPELINED_SAMPLES, _SAMPLES, _WAVES, _backward_cf, _backward_cl,
                       _forward_cf, _forward_cl, _parameter_grads)
from ._compile import (Twin, _background_jobs, deferring, mark_ready, quiet,
                       run_parallel_or_serial, wait_for_background)
from . import _compile
from ._machine import caches
from ._simd import LANES

__all__ = ["forward", "backward", "LANES"]

# The schedule's sizes, derived from this machine's caches (_machine.py). Only how the work is
# cut into items and spread over threads depends on them, never a bit of any result.
_CACHES = caches()
_SERIAL_BYTES = 2 * _CACHES.l1d  # smaller inputs run on the calling thread (see _Call.threads)
_WAVE_BYTES_PER_THREAD = _CACHES.l2 // 2  # bytes of x per thread in a wave: half an L2
_ITEMS_PER_THREAD = 8  # work items per thread in a wave, for load balance
_PER_SAMPLE_BYTES = _CACHES.l2 // 4  # samples up to this size are one work item each
_CHUNK_BYTES = 3 * _CACHES.l2 // 4  # channels-first forward of large samples: x per item
_CL_CHUNK_BYTES = _CACHES.l2  # channels-last items: a block fits one core's L2 (wider blocks,
# fewer halo columns; measured best between 0.5 and 4 L2 on the benchmark machine)
_SEGMENTS_PER_THREAD = 1  # channels-first backward of large samples: pipelined segments
_MAX_BLOCK = 256  # channels-last: most channels per pooling item (16 lanes x 256 x 8 B)
_MIN_BLOCK = 16  # channels-last: fewest channels per pooling item
_STAGE_BYTES = 4 << 20  # bytes of x staged at a time on the slow path
# Outputs larger than the last-level cache (at most 32 MiB of it: an L3 is shared with the
# other cores and processes) bypass the caches with streaming stores ...
_STREAM_BYTES = min(_CACHES.l3, 32 << 20)
_STREAM_MIN_ROW = 1024  # ... when their channels-first rows have at least this many elements
_PARAMETER_SERIAL = 1 << 15  # weight gradients of fewer N * C * k terms: one thread
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# --- the wrappers: choose views, the schedule and staging, then call the kernels ------------


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
        # the kernel(s) as float64, (C, k) per channel or (1, k) shared; always writeable,
        # C-contiguous and aligned, so that every weight gives numba the same signature
        w = problem.weight
        flags = w.flags
        if w.dtype != np.float64 or not (flags.writeable and flags.c_contiguous
                                         and flags.aligned):
            w = np.array(w, dtype=np.float64)
        self.w = w.reshape(-1, problem.k)
        self.src, self.rd, self.span = _taps(self.c, problem.k, self.c // problem.groups,
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
        done in microseconds, less than waking the other threads costs."""
        return 1 if nbytes <= _SERIAL_BYTES else numba.get_num_threads()

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

    def schedule(self, n: int, itemsize: int, pipelined: bool = False
                 ) -> tuple[int, int, int, int]:
        """(mode, wave, chunk, sb) for n samples of this geometry.

        _SAMPLES when samples are small (they stay in cache between the sweeps) and there
        are enough of them to keep every thread busy. For a ``pipelined`` kernel (the
        channels-first backward), _PIPELINED_SAMPLES when samples are large but their
        number divides among the threads. Otherwise _WAVES of about _WAVE_BYTES_PER_THREAD
        per thread, split into about _ITEMS_PER_THREAD items per thread of `chunk` channels
        or `sb` positions (pipelined: _SEGMENTS_PER_THREAD long segments per thread)."""
        threads = self.threads
        c, s = self.c, self.s
        sample = c * s * itemsize
        balanced = n % threads == 0 or n >= 4 * threads
        wave = min(n, max(1, (_WAVE_BYTES_PER_THREAD * threads) // sample))
        target = _ITEMS_PER_THREAD * threads
        if sample <= _PER_SAMPLE_BYTES and balanced:
            mode = _SAMPLES
        elif pipelined and n % threads == 0:
            mode = _PIPELINED_SAMPLES
        else:
            mode = _WAVES
        if self.channels_last:  # channel blocks of whole cache lines, 16 lanes x chunk x 8 B
            chunk = _ceil(_ceil(wave * c, target), 16) * 16
            chunk = min(c, _MAX_BLOCK if mode == _SAMPLES else
                        max(_MIN_BLOCK, min(_MAX_BLOCK, chunk)))
        elif pipelined:
            chunk = _ceil(c, _SEGMENTS_PER_THREAD * threads)
        else:
            chunk = min(c, _ceil(wave * c, target))
        return mode, wave, chunk, min(s, _ceil(wave * s, target))

    def forward_chunk(self, n: int, itemsize: int) -> int:
        """Channels per item of the forward (either layout): whole samples when they are
        small and numerous enough to keep every thread busy; else every sample split into
        a multiple of the thread count of items of at most about _CHUNK_BYTES (so an item
        is still in L2 when it is scaled) with as few halo channels as that allows."""
        threads = self.threads
        sample = self.c * self.s * itemsize
        if sample <= _PER_SAMPLE_BYTES and (n % threads == 0 or n >= 4 * threads):
            return self.c
        item = _CL_CHUNK_BYTES if self.channels_last else _CHUNK_BYTES
        per = threads * _ceil(sample, threads * item)
        chunk = _ceil(self.c, min(per, self.c))
        if self.channels_last:  # blocks of whole 64-byte lines of a position's channels
            chunk = min(self.c, _ceil(chunk, 16) * 16)
        return chunk

    def forward(self, x, y, m, z, a) -> None:
        """The forward kernel on C-contiguous x and y of one dtype."""
        common = (self.w, self.src, self.bias, self.has_bias, self.hard)
        if self.channels_last:
            n, size = x.shape[0], x.dtype.itemsize
            mode, wave, chunk, sb = _SAMPLES, 0, self.forward_chunk(n, size), 0
            if chunk < self.c and np.may_share_memory(x, y):  # in place: pool, then scale
                mode, wave, chunk, sb = self.schedule(n, size)
                mode = _WAVES
            self.launch(_forward_cl, self.view3(x), self.w, self.src, self.span, self.bias,
                        self.has_bias, self.hard, mode, wave, chunk, sb, self.view3(y), m,
                        z, a)
        else:
            # in place (out is x): wave > 0 asks for pooling before scaling (see the kernel)
            wave = self.schedule(x.shape[0], x.dtype.itemsize)[1] if \
                np.may_share_memory(x, y) else 0
            self.launch(_forward_cf, self.view3(x), *common,
                        self.forward_chunk(x.shape[0], x.dtype.itemsize), wave,
                        self.stream(y), self.view3(y), m, z, a)

    def backward(self, x, g, dx, m, dz) -> None:
        """The backward kernel on C-contiguous x, g and dx of one dtype."""
        if self.channels_last:
            n, size = x.shape[0], 2 * x.dtype.itemsize  # x and g per element
            mode, wave, chunk, sb = _SAMPLES, 0, self.forward_chunk(n, size), 0
            if chunk < self.c and (np.may_share_memory(dx, x) or np.may_share_memory(dx, g)):
                mode, wave, chunk, sb = self.schedule(n, x.dtype.itemsize)
                mode = _WAVES  # in place: every sum of a wave before any dx
            self.launch(_backward_cl, self.view3(x), self.view3(g), self.w, self.src, self.rd,
                        self.span, self.bias, self.has_bias, self.hard, mode, wave, chunk, sb,
                        self.view3(dx), m, dz)
        else:
            mode, wave, chunk, _ = self.schedule(x.shape[0], x.dtype.itemsize, pipelined=True)
            self.launch(_backward_cf, self.view3(x), self.view3(g), self.w, self.src, self.rd,
                        self.span, self.bias, self.has_bias, self.hard, mode, wave, chunk,
                        self.stream(dx), self.view3(dx), m, dz)

    def parameter_grads(self, m, dz, dw, db) -> None:
        """dw and db from the backward's m and dz: one thread for small problems."""
        small = self.n * self.c * self.w.shape[1] < _PARAMETER_SERIAL
        self.launch(_parameter_grads, m, dz, self.w, self.src, self.problem.per_channel, dw,
                    db, serial=small)

    def stream(self, out: np.ndarray) -> bool:
        """Whether to write ``out`` with streaming stores: when the whole output of the call
        is too large to stay in cache (reading it back for ownership would only cost
        bandwidth) and its rows are long enough to pay for the alignment and the fence."""
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


class _Stager:
    """Copies a few samples at a time into reused C-contiguous buffers of the compute dtype
    (bounded extra memory: about _STAGE_BYTES per staged array)."""

    def __init__(self, call: _Call, dtype: np.dtype):
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
        np.copyto(buf, part)  # float16 -> float32 and float32 -> float64 are exact
        return buf

    def result(self, out: np.ndarray, n0: int, n1: int) -> tuple[np.ndarray, bool]:
        """Where the kernel writes out[n0:n1]: out itself when it can, else a buffer of the
        compute dtype (float64 whenever out's dtype differs, so out is rounded once); and
        whether the buffer must be copied to out afterwards."""
        part = out[n0:n1]
        if _direct(part, self.dtype):
            return part, False
        return self._buffer("out", self.dtype)[:n1 - n0], True

    def _buffer(self, name: str, dtype: np.dtype) -> np.ndarray:
        """The reused buffer ``name`` of one stage of samples."""
        if name not in self._buffers:
            self._buffers[name] = np.empty(self.shape, dtype)
        return self._buffers[name]


def forward(problem: ECAProblem, out: np.ndarray | None = None) -> ECAForward:
    """y and the float64 intermediates m, z, a (N, C) of a validated problem.

    Parameters
    ----------
    problem : ECAProblem
        From :func:`npeca._validate.eca_problem`.
    out : numpy.ndarray, optional
        A validated output array (shape and dtype of x, any strides; may be x itself).

    Returns
    -------
    ECAForward
        ``y`` is ``out`` when given, else a new C-contiguous array.
    """
    call = _Call(problem)
    if call.threads == 1:  # serial kernels only: nothing to compile in the background
        return _forward(call, out)
    with deferring():
        return _forward(call, out)


def backward(problem: ECAProblem, grad_out: np.ndarray,
             out: np.ndarray | None = None) -> ECAGrads:
    """Gradients with respect to x, weight and bias for upstream gradient ``grad_out``.

    Parameters
    ----------
    problem : ECAProblem
        From :func:`npeca._validate.eca_problem`.
    grad_out : numpy.ndarray
        Validated dL/dy, shaped like x, any float dtype and strides.
    out : numpy.ndarray, optional
        A validated array for dL/dx (shape and dtype of x; may be x or grad_out itself).

    Returns
    -------
    ECAGrads
        ``x`` is ``out`` when given; the weight and bias gradients in their own shapes and
        dtypes.
    """
    call = _Call(problem)
    if call.threads == 1:
        return _backward(call, grad_out, out)
    with deferring():
        return _backward(call, grad_out, out)


def _forward(call: _Call, out: np.ndarray | None) -> ECAForward:
    """forward, for its _Call."""
    x = call.problem.x
    y = np.empty(x.shape, dtype=x.dtype) if out is None else out
    mza = np.empty((3, call.n, call.c))  # one allocation, three C-contiguous views
    m, z, a = mza[0], mza[1], mza[2]
    if _fast(x, y):
        call.forward(x, y, m, z, a)
    else:  # a few samples at a time through contiguous buffers: bounded extra memory
        stager = call.stager(x.dtype)
        for n0, n1 in stager.ranges():
            ys, copy = stager.result(y, n0, n1)
            call.forward(stager.load("x", x, n0, n1), ys, m[n0:n1], z[n0:n1], a[n0:n1])
            if copy:
                y[n0:n1] = ys  # the only rounding to y's dtype
    return ECAForward(y, m, z, a)


def _backward(call: _Call, grad_out: np.ndarray, out: np.ndarray | None) -> ECAGrads:
    """backward, for its _Call."""
    problem = call.problem
    x, g = problem.x, grad_out
    dx = np.empty(x.shape, dtype=x.dtype) if out is None else out
    mdz = np.empty((2, call.n, call.c))
    m, dz = mdz[0], mdz[1]
    if _fast(x, g, dx):
        call.backward(x, g, dx, m, dz)
    else:
        stager = call.stager(x.dtype, g.dtype)
        for n0, n1 in stager.ranges():
            # dx may be x or g itself: the kernels read every element before writing it
            dxs, copy = stager.result(dx, n0, n1)
            call.backward(stager.load("x", x, n0, n1), stager.load("g", g, n0, n1), dxs,
                          m[n0:n1], dz[n0:n1])
            if copy:
                dx[n0:n1] = dxs

    per_channel = problem.per_channel
    dw = np.empty((call.c, problem.k) if per_channel else (1, problem.k))
    db = np.empty(1)
    call.parameter_grads(m, dz, dw, db)
    dbias = None
    if problem.bias is not None:
        dbias = np.asarray(db[0], dtype=problem.bias_dtype).reshape(problem.bias_shape)
    return ECAGrads(x=dx, weight=dw.astype(problem.weight_dtype).reshape(problem.weight_shape),
                    bias=dbias)


# --- backend="auto": use the kernels once they are compiled, compile them in the background ----

_prepared: set = set()
_preparing: dict = {}
_prepare_lock = threading.Lock()
_recording = threading.local()


def _auto_key(problem: ECAProblem, kind: str, grad_out=None) -> tuple:
    """What decides which compiled kernels a call needs: forward or backward, the layout,
    the dtype the kernels compute in, and whether they read x (and g) read-only."""
    x = problem.x
    if grad_out is None:  # the common case first, cheaply
        flags = x.flags
        if flags.c_contiguous and x.dtype in _FAST_DTYPES:
            return (kind, problem.channels_last, x.dtype.char, (flags.writeable,))
    arrays = (problem.x,) if grad_out is None else (problem.x, grad_out)
    direct = all(a.dtype in _FAST_DTYPES and a.flags.c_contiguous and a.dtype == arrays[0].dtype
                 for a in arrays)
    if direct:
        return (kind, problem.channels_last, arrays[0].dtype.char,
                tuple(a.flags.writeable for a in arrays))
    f32 = np.dtype(np.float32)
    dtype = f32 if all(a.dtype == f32 for a in arrays) else np.dtype(np.float64)
    # the stager passes an array of the compute dtype through as it is (read-only or not)
    return (kind, problem.channels_last, dtype.char,
            tuple(a.flags.writeable or not _direct(a, dtype) for a in arrays))


def ready(problem: ECAProblem, kind: str, grad_out=None, start: bool = True) -> bool:
    """True when the kernels a ``kind`` ("forward" or "backward") call on this problem needs
    are compiled in this process; else False, and (with ``start``) they start compiling in a
    background thread (once per kind of call), after which this says True."""
    key = _auto_key(problem, kind, grad_out)
    if not _compile.BACKGROUND:  # compile in the foreground, when the call runs
        return start or key in _prepared
    if key in _prepared:
        return True
    if not start:
        return False
    with _prepare_lock:
        if key not in _preparing and key not in _prepared:
            job = threading.Thread(target=_prepare, args=(key,), name="npeca-compile",
                                   daemon=True)
            _preparing[key] = job
            _background_jobs.append(job)
            job.start()
    return False


def wait_until_ready(timeout: float | None = None) -> bool:
    """Wait for every background compile; True when none is left."""
    with _prepare_lock:
        jobs = list(_preparing.values())
    for job in jobs:
        job.join(timeout)
    return wait_for_background(timeout) and not _preparing


def _prepare(key: tuple) -> None:
    """Compile (or load from the cache) what calls of ``key`` need: run the serial kernels on
    a tiny problem of the same layout, dtype and read-only flags, then compile the parallel
    twins for the same argument types. Quietly: nobody waits for this."""
    kind, channels_last, dtype_char, writeable = key
    try:
        _compile_all(kind, channels_last, np.dtype(dtype_char), writeable)
    except Exception:  # noqa: BLE001 - the foreground call will compile, and show the error if any
        pass
    finally:
        with _prepare_lock:
            _preparing.pop(key, None)


def _forget_jobs_in_child() -> None:
    """After fork(): the parent's compile threads do not exist in the child."""
    _preparing.clear()


_compile.at_fork_child.append(_forget_jobs_in_child)


def _compile_all(kind: str, channels_last: bool, dtype: np.dtype, writeable: tuple) -> None:
    """The serial kernels of one kind of call (run on a tiny problem), then their parallel
    twins for the same argument types; quietly. Marks the kind of call ready for "auto"."""
    try:
        with quiet():
            _run_dummy(kind, channels_last, dtype, writeable, record=True)
            for kernel, args in _recording.calls:
                kernel.parallel.compile(_compile.signature(args))
                mark_ready(kernel.parallel, args)
    finally:
        _recording.calls = None
    _prepared.add((kind, channels_last, dtype.char, writeable))


def _run_dummy(kind: str, channels_last: bool, dtype: np.dtype, writeable: tuple,
               record: bool = False) -> None:
    """forward or backward on a tiny problem whose kernel arguments have the given types."""
    from ..._validate import eca_problem
    shape = (1, 3, 8) if channels_last else (1, 8, 3)
    x = np.linspace(-1.0, 1.0, 24).reshape(shape).astype(dtype)
    x.flags.writeable = writeable[0]
    problem = eca_problem(x, np.array([0.25, 0.5, 0.25]), bias=0.1,
                          channel_axis=-1 if channels_last else 1)
    _recording.calls = [] if record else None
    if kind == "forward":
        forward(problem)
    else:
        g = np.ones(shape, dtype)
        g.flags.writeable = writeable[1]
        backward(problem, g)


def warmup(progress=None, done=None) -> list[tuple[str, float]]:
    """Compile (or load from numba's cache) every kernel for float32 and float64, both
    layouts, forward and backward, serial and parallel, in the foreground: for container
    images and before timing. ``progress(text)`` is called before each step. Returns
    (what, seconds) per step. Read-only inputs compile their own variant on first use."""
    import time
    steps = []
    for kind in ("forward", "backward"):
        for channels_last in (False, True):
            for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
                what = (f"{kind} {'channels-last' if channels_last else 'channels-first'} "
                        f"{dtype.name}")
                if progress is not None:
                    progress(what)
                start = time.perf_counter()
                _compile_all(kind, channels_last, dtype, (True,) * (1 if kind == "forward" else 2))
                steps.append((what, time.perf_counter() - start))
                if done is not None:
                    done(steps[-1][1])
    return steps
