"""backend="auto" and ``npeca warmup``: whether the kernels a kind of call needs are
compiled, compiling them in a background thread when not, and compiling everything."""

from __future__ import annotations

import threading

import numpy as np

from ... import _bfloat16 as bfloat16
from ..._validate import ECAProblem
from . import _compile
from ._compile import _background_jobs, mark_ready, quiet, wait_for_background
from ._run import backward, forward
from ._kernels import _transpose_samples, family
from ._schedule import _FAST_DTYPES, _bfloat16_bits, _direct, _recording


_prepared: set = set()
_preparing: dict = {}
_prepare_lock = threading.Lock()


def _auto_key(problem: ECAProblem, kind: str, grad_out=None) -> tuple:
    """What decides which compiled kernels a call needs: forward or backward, the layout,
    the dtype the kernels compute in, and whether they read x (and g) read-only."""
    x = problem.x
    flags = x.flags
    if flags.c_contiguous and x.dtype in _FAST_DTYPES:  # the common cases first, cheaply
        if grad_out is None:
            return (kind, problem.channels_last, x.dtype.char, (flags.writeable,))
        g_flags = grad_out.flags
        if g_flags.c_contiguous and grad_out.dtype == x.dtype:
            return (kind, problem.channels_last, x.dtype.char,
                    (flags.writeable, g_flags.writeable))
    arrays = (problem.x,) if grad_out is None else (problem.x, grad_out)
    if _bfloat16_bits(problem.channels_last, *arrays) is not None:  # 16-bit kernels
        return (kind, False, "H", tuple(a.flags.writeable for a in arrays))
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
    """The serial kernels of one kind of call (run on a tiny problem), the serial kernels of
    the same family (the other schedules' loops, _kernels.FAMILIES), then the parallel
    twins of all of them for the same argument types; quietly. Marks the kind of call
    ready for "auto"."""
    try:
        with quiet():
            _run_dummy(kind, channels_last, dtype, writeable, record=True)
            launches = _recording.calls
            _recording.calls = None
            if dtype in _FAST_DTYPES:  # inputs in the other layout's memory order: staged
                launches += _transposes(dtype)  # by _transpose_samples
            launches = [(k, args) for kernel, args in launches for k in family(kernel)]
            for kernel, args in launches:
                signature = _compile.signature(args)
                kernel.serial.compile(signature)  # compiled already for the one that ran
                kernel.parallel.compile(signature)
                mark_ready(kernel.parallel, args)
    finally:
        _recording.calls = None
    _prepared.add((kind, channels_last, dtype.char, writeable))


def _transposes(dtype: np.dtype) -> list:
    """Run the serial _transpose_samples as the stager runs it for buffers of ``dtype``
    (copied into one from a writeable or a read-only input of ``dtype``, or of float32 for
    a float64 buffer; one copied into a writeable ``out``), and return those launches as
    (kernel, args)."""
    launches = []
    sources = [dtype] if dtype == np.float32 else [dtype, np.dtype(np.float32)]
    for source in sources:
        for writeable in (True, False):
            src = np.zeros((1, 2, 3), source)
            src.flags.writeable = writeable
            args = (src, np.zeros((1, 3, 2), dtype))
            _transpose_samples.serial(*args)
            launches.append((_transpose_samples, args))
    return launches


def _run_dummy(kind: str, channels_last: bool, dtype: np.dtype, writeable: tuple,
               record: bool = False) -> None:
    """forward or backward on a tiny problem whose kernel arguments have the given types."""
    from ..._validate import eca_problem
    shape = (1, 3, 8) if channels_last else (1, 8, 3)
    if dtype == np.uint16:  # the bfloat16 kernels (they see the 16-bit patterns)
        dtype = bfloat16.dtype("compiling the bfloat16 kernels")
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
    layouts, forward and backward, serial and parallel, and the channels-first bfloat16
    kernels when ml_dtypes is installed, in the foreground: for container images and before
    timing. ``progress(text)`` is called before each step. Returns (what, seconds) per
    step. Read-only inputs compile their own variant on first use."""
    import time
    kinds: list[tuple[str, bool, np.dtype]] = [
        (kind, channels_last, dtype) for kind in ("forward", "backward")
        for channels_last in (False, True)
        for dtype in (np.dtype(np.float32), np.dtype(np.float64))]
    if bfloat16.available():  # channels-last bfloat16 is staged: the float64 kernels
        kinds += [(kind, False, np.dtype(np.uint16)) for kind in ("forward", "backward")]
    steps = []
    for kind, channels_last, dtype in kinds:
        what = (f"{kind} {'channels-last' if channels_last else 'channels-first'} "
                f"{'bfloat16' if dtype == np.uint16 else dtype.name}")
        if progress is not None:
            progress(what)
        start = time.perf_counter()
        _compile_all(kind, channels_last, dtype, (True,) * (1 if kind == "forward" else 2))
        steps.append((what, time.perf_counter() - start))
        if done is not None:
            done(steps[-1][1])
    return steps
