"""ECA on NVIDIA GPUs with numba-cuda: the memory passes of the model, deterministic
reductions, 64-bit indexing.

The N * C * S tensor is cut into *items*: a chunk of one row (n, c) of S values
(channels-first), or a chunk of positions of one sample for a tile of 32 channels
(channels-last, so that a warp reads 32 consecutive channels: coalesced). Rows are cut into
P chunks when there are too few rows to fill the GPU (N = 1, a few long rows), and a block
of THREADS threads works on THREADS / L items at once, L lanes each, when rows are short
(a 7x7 map: 49 values, 8 lanes), so that short rows do not leave most threads idle.

Forward, 2 launches, 3 passes over memory (x read twice, y written once):

1. ``partial``: the sum of each item, in float64, each lane over its strided share, then a
   fixed shared-memory tree: part[row, chunk]. No atomics: the same input gives the same
   bits on every run.
2. ``gate_scale``: per item, one lane adds the row's partial sums (in chunk order) to m,
   likewise for the k channels its window reads, forms z = bias + sum_j w[c, j] m~[n, c +
   j - p] and a = gate(z), writes m, z, a (the item that holds chunk 0), and every lane
   scales its share: y = a x, rounded once to x's dtype.

Backward, 3 launches, 4 passes (x and g read once together, g read again, dx written):

1. ``partial`` with g: part[row, chunk] of x and of g x, in one read of both.
2. ``slope``: per row, m and da from the partials, z, a, dz = da gate'(z).
3. ``dx_params``: items as above, dm[n, c'] = sum_j w[c, j] dz[n, c] (c = c' - j + p) and
   dx = g a + dm / S; the blocks after the items' reduce dweight (one block per tap, or per
   channel and tap for per-channel kernels) and dbias in fixed trees.

Every index into x is a 64-bit integer; every loop covers what a capped grid does not
(MAX_BLOCKS). The gate is evaluated in float64 with ``math.exp`` (no
fastmath). Per call, nothing is allocated on the device beyond a workspace cached per
thread and device (partials, m, z, a, dz and the host input's device copies) and the
weight, copied only when it changed; with a device ``out=`` (and ``eca``, which does not
return m, z and a) nothing at all. Kernels are compiled per threads-per-block value
(:data:`THREADS`, a power of two); tests lower it to force several blocks on Numba's CUDA
simulator.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .._bfloat16 import is_bfloat16
from ._cuda_kernels import _build_kernels
from .._validate import ECAProblem
from ..errors import BackendUnavailableError, DTypeError
from ..results import ECAForward, ECAGrads

__all__ = ["forward", "backward", "THREADS", "MAX_BLOCKS", "available", "is_device_array",
           "as_device_array", "launch_signatures", "plan"]

#: Threads per block of every kernel (a power of two, at most 1024).
THREADS = 256
#: Largest grid launched (1-D grids only): every kernel loops over what a capped grid does
#: not cover, so the cap changes how work is spread, never which work is done. Tests lower
#: it to 2.
MAX_BLOCKS = 65535 * 32

try:  # this module is imported only when backend="cuda" is asked for
    from numba import cuda  # a module global: Numba's CUDA simulator patches it by name
    _IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - numba is a dependency of npeca
    cuda = None  # type: ignore[assignment]
    _IMPORT_ERROR = exc


def _kernels(threads: int):
    """The kernels for ``threads`` per block (compiled by numba on first launch)."""
    _cuda()
    return _build_kernels(threads)


def _cuda():
    """numba.cuda, or BackendUnavailableError naming the fix."""
    if cuda is None:
        raise BackendUnavailableError(
            f"backend='cuda' needs numba-cuda: pip install 'npeca[cuda]' ({_IMPORT_ERROR})")
    try:
        ok = cuda.is_available()
    except Exception as exc:  # noqa: BLE001 - a broken driver raises instead of answering False
        ok, why = False, f"{type(exc).__name__}: {exc}"
    else:
        why = "no CUDA driver or GPU was found"
    if not ok:
        raise BackendUnavailableError(
            f"backend='cuda' needs an NVIDIA GPU with its driver ({why}). Use backend='numba' "
            f"for the CPU, or set NUMBA_ENABLE_CUDASIM=1 before importing numba to run the "
            f"kernels on Numba's (slow) CUDA simulator")
    return cuda


def available() -> bool:
    """Whether the CUDA backend can run here (a GPU, or the simulator)."""
    try:
        _cuda()
    except BackendUnavailableError:
        return False
    return True


def is_device_array(value: Any) -> bool:
    """True for GPU arrays: Numba device arrays, CuPy arrays, PyTorch CUDA tensors (anything
    with ``__cuda_array_interface__``), and the CUDA simulator's device arrays."""
    return (hasattr(value, "__cuda_array_interface__")
            or type(value).__name__ == "FakeCUDAArray")


def as_device_array(value: Any):
    """A Numba device array viewing ``value``'s GPU memory (no copy)."""
    if type(value).__name__ == "FakeCUDAArray":
        return value
    return _cuda().as_cuda_array(value)


# --- host side ------------------------------------------------------------------------------

#: When a list, every launch appends (kernel name, grid, block, argument kinds): the
#: simulator tests count launches per call and check that npeca.backends.cuda_ptx covers
#: every signature launched (see launch_signatures).
LAUNCHES: list | None = None
#: When a dict, device allocations ("alloc") and copies ("h2d", "d2h", "d2d") are counted
#: into it: the simulator tests check the numbers per call.
COUNTS: dict | None = None


def _count(what: str) -> None:
    if COUNTS is not None:
        COUNTS[what] = COUNTS.get(what, 0) + 1


def _arg_kind(value: Any) -> tuple:
    """How numba types a kernel argument: ("array", dtype name) for a 1-D contiguous array,
    ("bool",), ("int64",) or ("float64",) for Python scalars."""
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return ("array", np.dtype(value.dtype).name)
    if isinstance(value, bool):
        return ("bool",)
    if isinstance(value, int):
        return ("int64",)
    return ("float64",)


def _launch(k: dict, name: str, grid: Any, block: Any, *args: Any) -> None:
    """Launch kernel ``name`` of the table ``k``."""
    if LAUNCHES is not None:
        LAUNCHES.append((name, grid, block, tuple(_arg_kind(a) for a in args)))
    k[name][grid, block](*args)


def launch_signatures() -> list[tuple[str, tuple]]:
    """Every (kernel name, argument kinds) the host code below can launch, for x of float16,
    float32 or float64 and grad_out of any of the three: the list npeca.backends.cuda_ptx
    compiles. A simulator test records real launches and checks each is listed here."""
    A = lambda d: ("array", d)  # noqa: E731
    B, N, F = ("bool",), ("int64",), ("float64",)  # bool, integer, float scalars
    f64 = A("float64")
    sigs: set[tuple[str, tuple]] = set()
    for xd in ("float16", "float32", "float64"):
        for gd in ("float16", "float32", "float64"):
            sigs.add(("partial_first", (A(xd), A(gd), B, N, N, N, N, N, f64, f64)))
            sigs.add(("partial_last", (A(xd), A(gd), B, N, N, N, N, N, f64, f64)))
            sigs.add(("dx_params_first", (A(gd), f64, f64, f64, f64, N, N, N, N, N, N, N, N,
                                          B, N, N, B, N, A(xd), f64, f64)))
            sigs.add(("dx_params_last", (A(gd), f64, f64, f64, f64, N, N, N, N, N, N, N, B,
                                         N, N, B, N, A(xd), f64, f64)))
        sigs.add(("gate_scale_first", (A(xd), f64, f64, F, N, N, N, N, N, N, N, B, B, A(xd),
                                       f64, f64, f64)))
        sigs.add(("gate_scale_last", (A(xd), f64, f64, F, N, N, N, N, N, N, N, B, B, A(xd),
                                      f64, f64, f64)))
    sigs.add(("slope", (f64, f64, f64, F, N, N, N, N, N, B, B, f64, f64, f64)))
    return sorted(sigs)


def _blocks(count: int) -> int:
    """Blocks for ``count`` work units, at least 1 and at most MAX_BLOCKS (the kernels
    loop over the rest)."""
    return max(1, min(count, MAX_BLOCKS))


def plan(n: int, c: int, s: int, channels_last: bool, sms: int,
         threads: int | None = None) -> tuple[int, int, int, int]:
    """(lanes per item, chunks per row, chunk length, blocks of the item kernels) for an
    N x C x S problem on a GPU with ``sms`` multiprocessors: lanes for short rows so that a
    block holds several (channels-first; channels-last tiles have THREADS / 32 lanes), and
    rows cut into chunks, of at least 2 values per lane, until there are 4 blocks per SM.
    Needs no GPU: docs/backends.md prints it for the benchmark shapes."""
    t = THREADS if threads is None else threads
    tc = min(32, t)
    if channels_last:
        lanes, units, per_block = t // tc, -(-c // tc) * n, 1
    else:
        lanes = min(t, _pow2_at_least(-(-s // 4)))
        units, per_block = n * c, t // lanes
    chunks = 1
    while units * chunks < 4 * sms * per_block and s >= 4 * lanes * chunks:
        chunks *= 2
    return lanes, chunks, -(-s // chunks), _blocks(-(-units * chunks // per_block))


def _pow2_at_least(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


_local = threading.local()  # per thread: {device: (workspace, weight cache)}


class _Workspace:
    """A device buffer kept per thread and device, carved into the arrays of one call
    (256-byte aligned); it grows, and is allocated, only when a call needs more."""

    def __init__(self, cuda) -> None:
        self.cuda = cuda
        self.buffer: Any = None
        self.at = 0

    def ensure(self, nbytes: int) -> None:
        if self.buffer is None or self.buffer.size < nbytes:
            _count("alloc")
            self.buffer = self.cuda.device_array(max(nbytes, 1), dtype=np.uint8)
        self.at = 0

    def take(self, count: int, dtype: Any):
        dt = np.dtype(dtype)
        size = max(int(count), 1) * dt.itemsize
        view = self.buffer[self.at:self.at + size].view(dt)
        self.at += (size + 255) // 256 * 256
        return view


def _state(cuda) -> dict:
    """This thread's state for the current device, made on first use: the workspace, the
    weight cache and the multiprocessor count (asked of the driver once, not per call)."""
    per_thread = getattr(_local, "devices", None)
    if per_thread is None:
        per_thread = _local.devices = {}
    try:
        device = cuda.get_current_device()
        key = getattr(device, "id", 0)  # the simulator's device may lack an id
    except Exception:  # noqa: BLE001
        device, key = None, 0
    state = per_thread.get(key)
    if state is None:
        try:
            sms = int(getattr(device, "MULTIPROCESSOR_COUNT", 1) or 1)
        except Exception:  # noqa: BLE001
            sms = 1
        state = per_thread[key] = {"ws": _Workspace(cuda), "w_host": None, "w_dev": None,
                                   "sms": sms}
    return state


class _Run:
    """One forward or backward: the plan (lanes, chunks, blocks) and the device arrays."""

    def __init__(self, problem: ECAProblem, grad_out: Any = None, out: Any = None) -> None:
        cuda = self.cuda = _cuda()
        self.threads = THREADS
        self.k = _kernels(THREADS)
        p = self.p = problem
        self.device_io = is_device_array(p.x)
        self.n, self.c, self.s = p.n, p.c, p.s
        self.rows = p.n * p.c
        self.total = self.rows * p.s
        self.cg = p.c // p.groups
        self.circular = p.padding == "circular"
        self.hard = p.gate == "hard_sigmoid"
        self.bias = 0.0 if p.bias is None else float(p.bias)
        self.last = p.channels_last
        state = _state(cuda)
        self._plan(state["sms"])
        self.ws = state["ws"]
        need = 8 * (2 * self.rows * self.chunks + 6 * self.rows + self.c * p.k + 2) + 256 * 16
        x_bytes = self.total * np.dtype(p.x.dtype).itemsize
        if not self.device_io:
            need += 2 * x_bytes  # x's device copy, and y or dx before they go to the host
        elif out is not None and not as_device_array(out).is_c_contiguous():
            need += x_bytes  # y or dx, then copied into the strided out
        if grad_out is not None and not is_device_array(grad_out):
            need += self.total * np.dtype(grad_out.dtype).itemsize
        self.ws.ensure(need)
        self.w = self._weight(state)
        self.x = self._input(p.x)

    def _plan(self, sms: int) -> None:
        self.lanes, self.chunks, self.chunk_len, self.item_blocks = plan(
            self.n, self.c, self.s, self.last, sms, self.threads)

    def _weight(self, state: dict):
        """The weight as (C, k) float64 on the device, copied only when it changed."""
        w = np.ascontiguousarray(np.broadcast_to(
            np.asarray(self.p.weight, dtype=np.float64).reshape(-1, self.p.k),
            (self.c, self.p.k))).reshape(-1)
        old = state["w_host"]
        if old is None or old.shape != w.shape or \
                not np.array_equal(old.view(np.uint64), w.view(np.uint64)):  # every bit
            _count("alloc")
            _count("h2d")
            state["w_dev"] = self.cuda.to_device(w)
            state["w_host"] = w.copy()  # w may be the caller's own array, changed in place later
        return state["w_dev"]

    def _input(self, arr: Any):
        """x-shaped data as a flat contiguous device array (NumPy input: copied into the
        workspace; channels-last stays channels-last, for coalesced reads)."""
        if is_device_array(arr):
            dev = as_device_array(arr)
            if not dev.is_c_contiguous():
                raise BackendUnavailableError(
                    "backend='cuda' needs C-contiguous device arrays; make a contiguous "
                    "copy first")
            return dev.reshape(dev.size)
        host = np.ascontiguousarray(arr).reshape(-1)
        dev = self.ws.take(host.size, host.dtype)
        _count("h2d")
        dev.copy_to_device(host)
        return dev

    def result(self, out: Any):
        """Where y or dx is written (flat): a contiguous device ``out`` itself; for device
        input without ``out``, a new device array (the result the caller keeps); else the
        workspace (then copied to the host, or into a strided device ``out``)."""
        if self.device_io:
            if out is None:
                _count("alloc")
                return self.cuda.device_array(self.total, dtype=self.p.x.dtype)
            dev = as_device_array(out)
            if dev.is_c_contiguous():
                return dev.reshape(dev.size)
        return self.ws.take(self.total, self.p.x.dtype)

    def shaped(self, flat, out: Any):
        """The result in x's shape: on the device for device input (``out`` itself when it
        was written there; a new array otherwise), else a NumPy array (``out`` when
        given, filled straight from the device when it is C-contiguous)."""
        shape = self.p.x.shape
        if self.device_io:
            if out is None:
                return flat.reshape(shape)
            dev = as_device_array(out)
            if not dev.is_c_contiguous():
                _count("d2d")
                dev.copy_to_device(flat.reshape(shape))
            return out
        _count("d2h")
        if out is not None and out.flags.c_contiguous:
            flat.copy_to_host(out.reshape(-1))
            return out
        host = flat.copy_to_host().reshape(shape)
        if out is not None:
            np.copyto(out, host)
            return out
        return host

    def partial(self, g=None):
        """The partial sums of x (and of g x): (rows * chunks,) float64 each."""
        px = self.ws.take(self.rows * self.chunks, np.float64)
        pgx = self.ws.take(self.rows * self.chunks, np.float64) if g is not None else px
        gg = self.x if g is None else g
        if self.last:
            _launch(self.k, "partial_last", self.item_blocks, (self.k["tc"], self.k["ts"]),
                    self.x, gg, g is not None, self.n, self.s, self.c, self.chunks,
                    self.chunk_len, px, pgx)
        else:
            _launch(self.k, "partial_first", self.item_blocks, self.threads, self.x, gg,
                    g is not None, self.rows, self.s, self.chunks, self.chunk_len,
                    self.lanes, px, pgx)
        return px, pgx

    def intermediates(self, keep: bool):
        """m, z, a: a new (3, rows) device array for device input when they are returned,
        else workspace (copied to the host for NumPy input)."""
        if keep and self.device_io:
            _count("alloc")
            mza = self.cuda.device_array((3, self.rows), dtype=np.float64)
        else:
            mza = self.ws.take(3 * self.rows, np.float64).reshape((3, self.rows))
        return mza

    def host_nc(self, mza):
        if self.device_io:
            return [mza[i].reshape(self.n, self.c) for i in range(3)]
        _count("d2h")
        host = mza.copy_to_host()
        return [host[i].reshape(self.n, self.c) for i in range(3)]


def _no_bfloat16(*arrays: Any) -> None:
    """DTypeError for bfloat16 data: these kernels read float16/32/64 only."""
    for a in arrays:
        if is_bfloat16(getattr(a, "dtype", None)):
            raise DTypeError("backend='cuda' has no bfloat16 kernels yet; use "
                             "backend='numba' (it reads channels-first bfloat16 directly) "
                             "or backend='numpy'")


def forward(problem: ECAProblem, out: Any = None, *,
            intermediates: bool = True) -> ECAForward:
    """ECA forward on the GPU, 2 launches: y in x's dtype, and m, z, a in float64 (device
    arrays when x is a device array, NumPy arrays otherwise; None with
    ``intermediates=False``, which ``npeca.eca`` passes)."""
    _no_bfloat16(problem.x)
    r = _Run(problem, out=out)
    px, _ = r.partial()
    mza = r.intermediates(intermediates)
    y = r.result(out)
    args = (r.x, px, r.w, r.bias)
    if r.last:
        _launch(r.k, "gate_scale_last", r.item_blocks, (r.k["tc"], r.k["ts"]), *args, r.n,
                r.c, r.s, r.chunks, r.chunk_len, problem.k, r.cg, r.circular, r.hard, y,
                mza[0], mza[1], mza[2])
    else:
        _launch(r.k, "gate_scale_first", r.item_blocks, r.threads, *args, r.c, r.s,
                r.chunks, r.chunk_len, r.lanes, problem.k, r.cg, r.circular, r.hard, y,
                mza[0], mza[1], mza[2])
    y = r.shaped(y, out)
    if not intermediates:
        return ECAForward(y=y, m=None, z=None, a=None)  # type: ignore[arg-type]
    m, z, a = r.host_nc(mza)
    return ECAForward(y=y, m=m, z=z, a=a)


def backward(problem: ECAProblem, grad_out: Any, out: Any = None) -> ECAGrads:
    """ECA backward on the GPU, 3 launches: dx in x's dtype (device or host like x), dweight
    and dbias as NumPy arrays in the weight's and bias's shapes and dtypes."""
    _no_bfloat16(problem.x, grad_out)
    r = _Run(problem, grad_out, out)
    g = r._input(grad_out)
    px, pgx = r.partial(g)
    rows = r.rows
    m, a, dz = (r.ws.take(rows, np.float64) for _ in range(3))
    _launch(r.k, "slope", _blocks(-(-rows // r.threads)), r.threads, px, pgx, r.w, r.bias,
            r.c, r.s, r.chunks, problem.k, r.cg, r.circular, r.hard, m, a, dz)
    wrows = problem.c if problem.per_channel else 1
    params = wrows * problem.k + (1 if problem.bias is not None else 0)
    param_blocks = max(1, min(params, MAX_BLOCKS // 2))  # both kinds loop over the rest
    dx_blocks = max(1, min(r.item_blocks, MAX_BLOCKS - param_blocks))
    dwdb = r.ws.take(wrows * problem.k + 1, np.float64)
    dw, db = dwdb[:wrows * problem.k], dwdb[wrows * problem.k:]
    dx = r.result(out)
    common = (g, a, dz, m, r.w, r.n, r.c, r.s, r.chunks, r.chunk_len)
    tail = (problem.k, r.cg, r.circular, dx_blocks, params, problem.per_channel, wrows, dx,
            dw, db)
    if r.last:
        _launch(r.k, "dx_params_last", dx_blocks + param_blocks, (r.k["tc"], r.k["ts"]),
                *common, *tail)
    else:
        _launch(r.k, "dx_params_first", dx_blocks + param_blocks, r.threads, *common,
                r.lanes, *tail)
    _count("d2h")
    dwdb_host = dwdb.copy_to_host()
    dbias = None
    if problem.bias is not None:
        dbias = np.asarray(dwdb_host[-1], dtype=problem.bias_dtype).reshape(problem.bias_shape)
    return ECAGrads(
        x=r.shaped(dx, out),
        weight=dwdb_host[:-1].astype(problem.weight_dtype).reshape(problem.weight_shape),
        bias=dbias,
    )
