"""Backends: the same ECA math behind one interface, chosen by name.

Every backend module has the same two functions::

    forward(problem, out=None) -> ECAForward
    backward(problem, grad_out, out=None) -> ECAGrads

taking a validated :class:`~npeca._validate.ECAProblem` (and a validated ``out``). Backends
are imported on first use, so ``import npeca`` never imports numba.

Names:

``"numpy"``
    The NumPy reference (:mod:`npeca.reference`): float64 inside, the specification.
``"numba"``
    Fused, parallel, deterministic CPU kernels (:mod:`npeca.backends.numba_cpu`).
``"cuda"``
    NVIDIA GPUs through numba-cuda (:mod:`npeca.backends.numba_cuda`); raises
    :class:`~npeca.errors.BackendUnavailableError` at the call when there is no GPU.
``"auto"``
    ``"cuda"`` for GPU arrays. For NumPy input ``"numba"`` once the kernels the call needs are
    compiled in this process; until then the NumPy reference answers while numba is imported
    and the kernels compile (or load from numba's cache) in a background thread, so that no
    call stalls for seconds on a fresh install, nor for numba's own start (a few tenths of a
    second) in a new process. Inputs of :data:`AUTO_WAIT_SIZE` elements or more wait for the
    kernels instead (the reference would take longer and needs float64 copies of x); inputs
    under :data:`AUTO_MIN_SIZE` elements never start a compile (nor import numba) and use numba
    only when its kernels are already compiled. If numba does not import, a warning says why,
    once, and the reference answers. The answers of the two backends agree to the documented
    error bound, not bit for bit: pass ``"numba"`` or ``"numpy"`` for bitwise reproducibility
    across calls.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
import warnings
from types import FrameType, ModuleType

from ..errors import BackendUnavailableError, ParameterError, describe
from . import _outputs

_outputs.limit()  # NPECA_OUTPUT_CACHE_MB checked now, not at some later large output

__all__ = ["BACKENDS", "AUTO_MIN_SIZE", "AUTO_WAIT_SIZE", "get_backend", "select_backend",
           "warmup", "release_memory"]

BACKENDS = ("auto", "numpy", "numba", "cuda")

#: Below this many elements of x, ``backend="auto"`` uses numba only when its kernels for the
#: call are already compiled in this process (after ``warmup()`` or a larger call); it never
#: imports numba or starts a compile for such a call, which the reference answers in well
#: under a millisecond.
AUTO_MIN_SIZE = 1 << 16

#: From this many elements of x on, ``backend="auto"`` waits for numba's kernels to compile
#: rather than answering from the NumPy reference meanwhile (which would take longer than
#: the compile and needs several float64 copies of x).
AUTO_WAIT_SIZE = 1 << 25

# The backends' modules, named from this package's own name: a copy of npeca imported under
# another name (benchmarks/ab.py times two commits in one process) runs its own kernels.
_MODULES = {"numpy": f"{__name__}.numpy_backend", "numba": f"{__name__}.numba_cpu",
            "cuda": f"{__name__}.numba_cuda"}
_lock = threading.Lock()
_numba_failure: str | None = None  # why numba did not import, once it has failed
_warned = False


_loaded: dict[str, ModuleType] = {}
_importer: threading.Thread | None = None  # imports numba for "auto", in the background


def _import(name: str) -> ModuleType:
    """The module of backend ``name``, imported now if it was not yet."""
    module = _loaded.get(name)
    if module is None:
        module = _loaded[name] = importlib.import_module(_MODULES[name])
    return module


def _check_name(name) -> str:
    """``name`` if it is a known backend name, else a ParameterError listing them."""
    if not isinstance(name, str) or name not in BACKENDS:
        listed = ", ".join(repr(b) for b in BACKENDS)
        raise ParameterError(f"backend must be one of {listed}; got {describe(name)}")
    return name


def _numba_or_none() -> ModuleType | None:
    """The numba backend, or None (remembering why) when it cannot be imported."""
    global _numba_failure
    if _numba_failure is not None:
        return None
    try:
        return _import("numba")
    except ImportError as exc:
        _numba_failure = f"{type(exc).__name__}: {exc}"
        return None


def _warn_fallback() -> None:
    """Say once per process that "auto" runs the NumPy reference because numba failed."""
    global _warned
    with _lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        f"npeca: backend='auto' is using the NumPy reference because numba could not be "
        f"imported ({_numba_failure}). Install numba (pip install numba) for the fast CPU "
        f"backend, or pass backend='numpy' to silence this warning.",
        RuntimeWarning,
        stacklevel=_caller_level(),
    )


def _caller_level() -> int:
    """The warnings stacklevel of the first frame outside npeca: the user's call."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("npeca"):
        frame, level = frame.f_back, level + 1
    return level


def get_backend(name: str = "auto") -> ModuleType:
    """The backend module called ``name``.

    Parameters
    ----------
    name : {"auto", "numpy", "numba", "cuda"}
        ``"auto"`` gives numba when it imports, else (with a one-time warning) numpy.

    Returns
    -------
    module
        With ``forward(problem, out=None)`` and ``backward(problem, grad_out, out=None)``.

    Raises
    ------
    ParameterError
        For an unknown name.
    BackendUnavailableError
        For ``"numba"`` or ``"cuda"`` when numba cannot be imported (the CUDA backend
        raises it on use when there is no GPU).

    Examples
    --------
    >>> from npeca.backends import get_backend
    >>> get_backend("numpy").__name__
    'npeca.backends.numpy_backend'
    """
    name = _check_name(name)
    if name == "numpy":
        return _import("numpy")
    if name == "cuda":
        try:
            return _import("cuda")
        except ImportError as exc:
            raise BackendUnavailableError(
                f"backend='cuda' needs numba with CUDA support, which could not be imported "
                f"({type(exc).__name__}: {exc})") from None
    module = _numba_or_none()
    if module is not None:
        return module
    if name == "numba":
        raise BackendUnavailableError(
            f"backend='numba' needs numba, which could not be imported ({_numba_failure}). "
            f"Install it with: pip install numba")
    _warn_fallback()
    return _import("numpy")


def select_backend(name, problem=None, kind: str = "forward", grad_out=None,
                   device: bool = False) -> ModuleType:
    """The backend to run ``problem`` with: ``get_backend`` with the rules of ``"auto"``
    applied (GPU input goes to CUDA; NumPy input to numba once its kernels for this kind of
    call are compiled, see the module docstring). ``kind`` is "forward" or "backward";
    ``device``: the input is a GPU array, which only "cuda" computes with."""
    name = _check_name(name)
    if device:
        if name not in ("auto", "cuda"):
            raise ParameterError(
                f"x is a GPU array, but backend={describe(name)} computes on the CPU; use "
                f"backend='cuda' (or 'auto'), or copy x to the host first")
        return get_backend("cuda")
    if name != "auto":
        return get_backend(name)
    if problem is not None and problem.x.size < AUTO_MIN_SIZE:
        module = _loaded.get("numba")  # only if something else imported it already
        if module is not None and module.ready(problem, kind, grad_out, start=False):
            return module
        return _import("numpy")
    if (problem is not None and "numba" not in _loaded and _numba_failure is None
            and problem.x.size < AUTO_WAIT_SIZE and _background()):
        reference = _import("numpy")  # before the thread starts: no import runs beside it
        _import_in_background(problem, kind, grad_out)
        if "numba" not in _loaded:  # still importing: the reference answers
            return reference
    module = get_backend("auto")
    if module.__name__ != _MODULES["numba"] or problem is None:
        return module
    if problem.x.size >= AUTO_WAIT_SIZE or module.ready(problem, kind, grad_out):
        return module
    return _import("numpy")


def _background() -> bool:
    """Whether "auto" may answer from the reference while numba loads: the numba backend's
    switch once it is imported, else the environment's (NPECA_BACKGROUND_COMPILE=0: no)."""
    module = _loaded.get("numba")
    if module is not None:
        return bool(module._compile.BACKGROUND)
    return os.environ.get("NPECA_BACKGROUND_COMPILE", "1").strip() != "0"


def _import_in_background(problem, kind: str, grad_out) -> None:
    """Import the numba backend in a daemon thread (once), then start loading the kernels
    this kind of call needs (numba_cpu.ready). A failed import is remembered as usual: the
    next "auto" call warns and uses the reference."""
    global _importer
    with _lock:
        if _importer is not None:
            return
        # fork() runs its "before" handlers last registered first, and must wait for this
        # import (a child would inherit module locks held by a thread it does not have). The
        # import itself would import logging, whose handler takes logging's lock, which the
        # import needs: so logging is imported here, and the wait registered after it.
        import logging  # noqa: F401
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_join_importer)

        def run(args=(problem, kind, grad_out)):
            global _numba_failure
            try:
                module = _numba_or_none()
            except Exception as exc:  # noqa: BLE001 - a broken numba: "auto" warns, uses numpy
                _numba_failure = f"{type(exc).__name__}: {exc}"
                return
            if module is not None:
                try:
                    module.ready(*args)
                except Exception:  # noqa: BLE001 - numba works; the next "auto" call asks again
                    pass

        _importer = threading.Thread(target=run, name="npeca-import-numba", daemon=True)
        _importer.start()


def _join_importer(at_exit: bool = False) -> None:
    """Wait for the background import of numba, and then for the kernel loads it started
    (numba_cpu's own fork and exit handlers were registered too late to run for them):
    before fork(), whose child would inherit the module and compiler locks they hold, and at
    exit, where a daemon thread is cut off mid-import or mid-compile (saying so on stderr
    when that takes a while, as numba_cpu's exit handler does)."""
    job = _importer
    if job is None:
        return
    job.join()
    module = _loaded.get("numba")
    if module is not None:  # both wait only for what still runs
        if at_exit:
            module._compile._finish_at_exit()
        else:
            module._compile._before_fork()


atexit.register(_join_importer, at_exit=True)


def warmup(progress=None, done=None) -> list[tuple[str, float]]:
    """Compile every kernel of the numba backend now (or load it from numba's cache): float32
    and float64, channels-first and channels-last, forward and backward, serial and parallel.
    Afterwards ``backend="auto"`` uses numba from the first call. ``progress(what)`` and
    ``done(seconds)`` are called around each of the 8 steps (10 with ml_dtypes installed:
    the channels-first bfloat16 forward and backward too).

    Returns
    -------
    list of (str, float)
        What was compiled and how many seconds it took.

    Raises
    ------
    BackendUnavailableError
        When numba cannot be imported.
    """
    return get_backend("numba").warmup(progress=progress, done=done)


def release_memory() -> int:
    """Free the memory kept for recycling large outputs of the numba backend (blocks whose
    outputs are gone; see docs/backends.md, "Recycled output memory") and return its size in
    bytes. Outputs still in use are not touched. The environment variable
    ``NPECA_OUTPUT_CACHE_MB`` bounds that memory (``0``: no recycling)."""
    return _outputs.release()
