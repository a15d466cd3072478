"""Compiling the kernels: cached on disk where a cache location is writable, serial and
parallel twins from one source, and one line on stderr when a call has to compile.

Numba compiles a kernel the first time it sees a combination of argument types (float32 or
float64, channels-first or channels-last, ...) and stores the machine code in its cache, so
later processes only load it (a fraction of a second). The first compile takes seconds; a
parallel (``prange``) kernel several times longer than its serial twin. So that nobody
wonders why a call hangs, the first compile in a process says on stderr what is compiled,
why, and where the cache is; ``npeca warmup`` fills the cache ahead of time.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numba import njit
from numba.core import event

__all__ = ["jit", "twin", "Twin", "cache_location", "run_parallel_or_serial", "start_compile",
           "wait_for_background", "quiet", "deferring"]

_cache_warned = False


#: The files whose code the kernels compile (the others only call them).
CODE_FILES = ("_simd.py", "_items.py", "_kernels.py")


def _fingerprint() -> str:
    """SHA-256 of the package's files of compiled code: part of each cache key (_keyed)."""
    digest = hashlib.sha256()
    try:
        for name in CODE_FILES:
            path = Path(__file__).parent / name
            digest.update(name.encode() + b"\0" + path.read_bytes())
    except OSError:  # sources not readable: numba's own key (and this module's) decide
        digest.update(b"unreadable sources")
    return digest.hexdigest()


_FINGERPRINT = _fingerprint()


def _keyed(dispatcher):
    """Make ``dispatcher``'s on-disk cache entries depend on every file of this package.

    numba keys a cached function by its own source file only, but a kernel here inlines code
    from the package's other files (helpers, SIMD intrinsics): a changed helper with an
    unchanged kernel file would load stale machine code. The fingerprint of CODE_FILES joins
    the key, so any change to any of them compiles afresh (old entries are never loaded)."""
    cache = getattr(dispatcher, "_cache", None)
    index_key = getattr(cache, "_index_key", None)
    if index_key is not None:
        cache._index_key = lambda sig, codegen: (index_key(sig, codegen), _FINGERPRINT)
    return dispatcher


def jit(parallel: bool = False, inline: bool = False):
    """``njit(cache=True, nogil=True, error_model="numpy")``, or without the cache where
    numba finds no writable cache location (a read-only install with no writable HOME): then
    kernels compile in every process, and one warning per process says how to give them a
    cache. ``error_model="numpy"``: a division has no zero test that raises (no divisor in
    the kernels can be zero; validation refuses empty axes), so loops with a division, such
    as the gates', vectorize.

    ``inline``: numba inlines the function's code into each caller before typing it
    (``inline="always"``) instead of compiling it as a function of its own. For the work of
    one item, called from a kernel or two: each function numba compiles on its own is
    optimized and turned into machine code once for itself and again inside every function
    that calls it, so a chain kernel -> item -> scaling compiled the scaling three times.
    Not for the small helpers called from many places: inlining retypes the code at every
    call site (docs/performance.md, "Where a first compile's time goes")."""
    options = {"inline": "always"} if inline else {}

    def decorate(fn):
        global _cache_warned
        try:
            return _keyed(njit(parallel=parallel, cache=True, nogil=True,
                               error_model="numpy", **options)(fn))
        except RuntimeError as exc:
            if "cannot cache" not in str(exc):
                raise
            global BACKGROUND
            BACKGROUND = False  # without a cache a background compile would be thrown away
            if not _cache_warned:
                _cache_warned = True
                warnings.warn(
                    "npeca: numba cannot cache compiled kernels here (no writable location "
                    "beside the installed package nor in the user's cache directory); they "
                    "compile again in every process. Set NUMBA_CACHE_DIR to a writable "
                    "directory to cache them.", RuntimeWarning, stacklevel=2)
            return njit(parallel=parallel, nogil=True, error_model="numpy", **options)(fn)
    return decorate


class Twin(NamedTuple):
    """One kernel compiled twice from the same Python source."""

    parallel: Any  # numba ``prange`` spreads the items over numba's threads
    serial: Any  # ``prange`` is ``range``: the calling thread does every item


def twin(fn) -> Twin:
    """The parallel and the serial dispatcher of ``fn``. The serial copy gets its own
    qualified name, so the two never share an entry of numba's on-disk cache."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + "_serial"
    copy.__doc__, copy.__module__ = fn.__doc__, fn.__module__
    return Twin(jit(parallel=True)(fn), jit()(copy))


def cache_location(dispatcher) -> str:
    """Where numba keeps ``dispatcher``'s compiled code, as best numba lets us know."""
    path = getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)
    if path:
        return str(path)
    return os.environ.get("NUMBA_CACHE_DIR") or "numba's cache directory"


# --- one line on stderr when a call compiles ---------------------------------------------------

_told: set[str] = set()
_told_lock = threading.Lock()
_local = threading.local()


def _is_ours(dispatcher) -> bool:
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
    return module.startswith(__name__.rsplit(".", 1)[0])


def _say(text: str) -> None:
    """One line on stderr, if there is a stderr (None under pythonw or with 2>&-)."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):  # closed or broken: the message is not worth an error
        pass


def _what(dispatcher) -> str:
    """'channels-first forward, one thread' for _forward_cf_serial, and so on."""
    name = dispatcher.py_func.__name__.strip("_")
    serial = name.endswith("_serial")
    name = name.removesuffix("_serial")
    words = {"forward_cf": "channels-first forward",
             "forward_cf_waves": "channels-first forward in place",
             "forward_cl": "channels-last forward",
             "backward_cf": "channels-first backward",
             "backward_cf_pipelined": "channels-first backward, pipelined",
             "backward_cl": "channels-last backward",
             "parameter_grads": "weight gradient"}.get(name, name.replace("_", " "))
    return f"{words} ({'one thread' if serial else 'parallel'})"


class _Notice(event.Listener):
    """Announces the compile of a top-level npeca kernel (not of the helpers it calls)."""

    def on_start(self, ev):
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        dispatcher = ev.data.get("dispatcher")
        if depth or not _is_ours(dispatcher) or getattr(_local, "quiet", False):
            return
        dtypes = sorted({"bfloat16" if str(a.dtype) == "uint16" else str(a.dtype)
                         for a in ev.data.get("args", ()) if hasattr(a, "dtype")
                         and (str(a.dtype).startswith("float") or str(a.dtype) == "uint16")})
        key = f"{_what(dispatcher)} {dtypes}"
        with _told_lock:
            if key in _told:
                return
            _told.add(key)
        what = f"{_what(dispatcher)} for {'/'.join(dtypes) or 'these types'}"
        if getattr(dispatcher, "_cache", None) is None or not getattr(
                dispatcher, "_can_compile", True) or _cache_warned:
            _say(f"npeca: compiling the numba kernel {what} (first use in this process; "
                 f"seconds). numba cannot cache it here: set NUMBA_CACHE_DIR to a writable "
                 f"directory so that later processes load it instead")
            return
        _say(f"npeca: compiling the numba kernel {what} (first use of these argument types "
             f"with this install; seconds, once): later processes load it from "
             f"{cache_location(dispatcher)}. `npeca warmup` compiles every kernel ahead of "
             f"time")

    def on_end(self, ev):
        _local.depth = max(0, getattr(_local, "depth", 1) - 1)


event.register("numba:compile", _Notice())


class quiet:
    """Within this block the calling thread compiles without the stderr line (warmup, which
    prints its own progress)."""

    def __enter__(self):
        _local.quiet = True

    def __exit__(self, *exc):
        _local.quiet = False


# --- compiling in the background ----------------------------------------------------------------
#
# A kernel's parallel twin takes several times longer to compile than its serial one. The
# first large call therefore runs the serial twin (same bits, one thread) while a background
# thread compiles the parallel one for the same argument types; later calls use it. Keys are
# the argument types as numba sees them (dtype, dimensions, contiguity, writeability).

#: False (environment NPECA_BACKGROUND_COMPILE=0): every compile happens in the calling thread,
#: the parallel twins included, and backend="auto" never answers from the reference while
#: kernels compile. The tests run this way, so that every schedule runs the kernel it names.
BACKGROUND = os.environ.get("NPECA_BACKGROUND_COMPILE", "1").strip() != "0"

_ready: set = set()
_pending: dict = {}
_failed: dict = {}
_jobs_lock = threading.Lock()


def _key(dispatcher, args) -> tuple:
    """What decides numba's compiled signature for ``args``, cheaply (it is built on every
    parallel launch: one flags object per array, no generator)."""
    key: list = [id(dispatcher)]
    for a in args:
        if isinstance(a, np.ndarray):
            flags = a.flags
            key.append((a.dtype.char, a.ndim, flags.c_contiguous, flags.writeable))
        else:
            key.append(type(a))
    return tuple(key)


def run_parallel_or_serial(kernel: Twin, args: tuple) -> None:
    """Run the parallel twin when it is compiled for these argument types; else run the
    serial twin (compiling it now if need be), then start compiling the parallel one in a
    background thread (after the serial one: numba compiles one function at a time)."""
    if not BACKGROUND:
        kernel.parallel(*args)
        return
    key = _key(kernel.parallel, args)
    if key in _ready or key in _failed:  # failed: compile here, so that the error shows
        kernel.parallel(*args)
        return
    if key not in _pending and _in_disk_cache(kernel.parallel, args):  # milliseconds: now
        kernel.parallel(*args)
        _ready.add(key)
        return
    kernel.serial(*args)
    deferred = getattr(_local, "deferred", None)
    if deferred is None:
        start_compile(kernel.parallel, args, key)
    else:
        deferred.append((kernel.parallel, args, key))


def compiled(kernel: Twin, args: tuple) -> bool:
    """True when ``kernel.parallel`` is compiled in this process for the types of ``args``
    (a call to it then runs at once, without compiling): always after it ran in the calling
    thread, as without the background compile."""
    return not BACKGROUND or _key(kernel.parallel, args) in _ready


class deferring:
    """Within this block, background compiles start only at its end: a call that runs several
    kernels (backward: the gradients of x, then of the weight) compiles each serial one
    without waiting for a parallel one that holds numba's compiler lock."""

    def __enter__(self):
        self.outer = getattr(_local, "deferred", None)
        if self.outer is None:
            _local.deferred = []
        return self

    def __exit__(self, *exc):
        if self.outer is None:
            jobs, _local.deferred = _local.deferred, None
            for dispatcher, args, key in jobs:
                start_compile(dispatcher, args, key)


def signature(args) -> tuple:
    """The argument types numba compiles ``args`` for."""
    from numba import typeof
    return tuple(typeof(a) for a in args)


def _in_disk_cache(dispatcher, args) -> bool:
    """True when numba's on-disk cache holds ``dispatcher`` for the types of ``args`` (numba
    has no public API for this; any surprise counts as "no")."""
    try:
        cache = dispatcher._cache
        key = cache._index_key(signature(args), dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - any failure: fall back to compiling in the foreground
        return False


def mark_ready(dispatcher, args) -> None:
    """Record that ``dispatcher`` has run with these argument types."""
    _ready.add(_key(dispatcher, args))


def start_compile(dispatcher, args, key=None) -> threading.Thread | None:
    """Compile ``dispatcher`` for the types of ``args`` in a daemon thread (once per key)."""
    key = _key(dispatcher, args) if key is None else key
    with _jobs_lock:
        if key in _ready or key in _pending:
            return _pending.get(key)
        job = threading.Thread(target=_compile_job, args=(dispatcher, signature(args), key),
                               name="npeca-compile", daemon=True)
        _pending[key] = job
    job.start()
    return job


def _compile_job(dispatcher, signature, key) -> None:
    try:
        with quiet():
            dispatcher.compile(signature)
        _ready.add(key)
    except Exception as exc:  # noqa: BLE001 - the foreground call then compiles and raises it
        _failed[key] = exc
    finally:
        with _jobs_lock:
            _pending.pop(key, None)


def wait_for_background(timeout: float | None = None) -> bool:
    """Wait until no background compile runs; True when none is left."""
    with _jobs_lock:
        jobs = list(_pending.values())
    for job in jobs:
        job.join(timeout)
    with _jobs_lock:
        return not _pending


def _alive_jobs() -> list:
    with _jobs_lock:
        jobs = [job for job in _pending.values() if job.is_alive()]
    return jobs + [job for job in _background_jobs if job.is_alive()]


def _finish_at_exit() -> None:
    """Let a background compile finish before the interpreter shuts down (a compile cut off
    in the middle of LLVM could crash the exit). It is quick when the kernels are cached; on
    an empty cache it can take seconds, and then says so. Ctrl-C ends the wait: the process
    then leaves at once (os._exit, after flushing), without the shutdown that could crash."""
    jobs = _alive_jobs()
    for job in jobs:
        job.join(0.5)
    jobs = [job for job in jobs if job.is_alive()]
    if not jobs:
        return
    _say("npeca: waiting for a background compile of numba kernels to finish before exit "
         "(`npeca warmup` compiles them ahead of time)")
    try:
        for job in jobs:
            while job.is_alive():
                job.join(0.2)
    except KeyboardInterrupt:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)


def _before_fork() -> None:
    """Wait for background compiles before fork(): a child would inherit numba's compiler
    lock held by a thread that does not exist there, and hang on its first compile."""
    for job in _alive_jobs():
        job.join()


at_fork_child: list = []  # callbacks of the package (its own job lists)


#: True in a child made by fork() after this process started numba's thread pool: every
#: kernel then runs its serial twin there (GNU OpenMP terminates a child at its first parallel
#: region: "fork() called from a process already using GNU OpenMP"; the other layers' pools
#: are not copied into a child either). Loading a parallel kernel starts the pool, so this
#: also follows a background compile under backend="auto".
SERIAL_ONLY = False


def _thread_pool_started() -> bool:
    """Whether numba's threading layer (and with it OpenMP's threads) has been started."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return bool(getattr(parallel, "_is_initialized", True))


def _after_fork_child() -> None:
    """In a forked child: no background compiles (the parent's threads are gone, and a child
    is often short-lived); serial kernels only if the parent's thread pool was started;
    forget the parent's jobs."""
    global BACKGROUND, SERIAL_ONLY
    BACKGROUND = False
    SERIAL_ONLY = SERIAL_ONLY or _thread_pool_started()
    _pending.clear()
    _background_jobs.clear()
    for callback in at_fork_child:
        callback()


_background_jobs: list = []  # other background threads (the package's _prepare)
atexit.register(_finish_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_child)
