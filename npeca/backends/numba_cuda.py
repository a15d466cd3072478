"""ECA on NVIDIA GPUs with numba-cuda: deterministic block reductions, 64-bit indexing.

Forward, for x of N * C * S elements:

1. ``_rows``: one block per (n, c) row (channels-first) or per (n, tile of channels)
   (channels-last, so that a warp reads consecutive channels: coalesced). Each thread sums
   its strided share of the S values in float64, then the block adds the per-thread sums
   in a fixed shared-memory tree. No atomics: the same input gives the same bits every run.
   The same kernel computes m = sum(x) / S and, for the backward, da = sum(g * x).
2. ``_logits``: one thread per (n, c): z = bias + sum_j w[c, j] * m~[n, c + j - p] (zero or
   circular padding per group), a = gate(z), all float64.
3. ``_scale``: a grid-stride loop over every element, y = a * x, rounded once to x's dtype.

Backward: ``_rows`` for da; ``_slope`` for dz = da * gate'(z); ``_weight_grad`` (one block
per kernel tap, or per (channel, tap) for per-channel kernels, tree-reduced over its terms)
for dweight; the same for dbias; ``_dm`` (one thread per (n, c')) for the transposed
correlation; ``_dx`` for dx = g * a + dm / S.

Every index into x is computed in 64-bit integers, so tensors with more than 2**31 elements
are addressed correctly. The gate is evaluated in float64 with ``math.exp`` (no fastmath).

Kernels are compiled per threads-per-block value (:data:`THREADS`, a power of two); tests
lower it to force several blocks on Numba's CUDA simulator.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .._bfloat16 import is_bfloat16
from .._validate import ECAProblem
from ..errors import BackendUnavailableError, DTypeError
from ..results import ECAForward, ECAGrads

__all__ = ["forward", "backward", "THREADS", "available", "is_device_array", "as_device_array"]

#: Threads per block of every kernel (a power of two, at most 1024).
THREADS = 256
#: Largest grid launched along x, and along y (CUDA's limit for gridDim.y is 65,535):
#: every kernel loops over what a capped grid does not cover (grid-stride), so the caps
#: change how work is spread, never which work is done. Tests lower them to 2.
MAX_BLOCKS = 65535 * 32
MAX_BLOCKS_Y = 65535

try:  # this module is imported only when backend="cuda" is asked for
    from numba import cuda  # a module global: Numba's CUDA simulator patches it by name
    _IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - numba is a dependency of npeca
    cuda = None  # type: ignore[assignment]
    _IMPORT_ERROR = exc


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


# long: every kernel is a closure over the block size, which numba.cuda needs as a compile-time
# constant; each kernel inside is short
def _kernels(threads: int):
    """The kernels for ``threads`` per block (compiled by numba on first launch)."""
    _cuda()
    return _build_kernels(threads)


@functools.lru_cache(maxsize=None)
def _build_kernels(threads: int):
    """Define (once per threads-per-block value) and return the kernels; needs numba.cuda
    but no GPU (npeca.backends.cuda_ptx compiles them to PTX without one)."""
    float64, int64 = np.float64, np.int64  # casts that work in kernels and the simulator

    tc_last = min(32, threads)  # channels per block, channels-last reductions
    ts_last = threads // tc_last  # spatial lanes per channel

    @cuda.jit(device=True)
    def block_sum(sh, t, acc):
        """Leave the sum of every thread's ``acc`` in sh[0]: a fixed tree, no atomics."""
        sh[t] = acc
        cuda.syncthreads()
        stride = threads // 2
        while stride > 0:
            if t < stride:
                sh[t] += sh[t + stride]
            cuda.syncthreads()
            stride //= 2

    @cuda.jit
    def rows_first(x, g, use_g, rows, s, out, scale):
        """out[row] = scale * sum_s x[row, s] (* g[row, s]): a block per row, grid-stride
        over the rows (the grid is capped)."""
        t = cuda.threadIdx.x
        sh = cuda.shared.array(threads, float64)
        row = int64(cuda.blockIdx.x)
        while row < rows:  # the same trip count for every thread of the block
            acc = 0.0
            base = row * s
            i = int64(t)
            while i < s:
                v = float64(x[base + i])
                if use_g:
                    v *= float64(g[base + i])
                acc += v
                i += threads
            block_sum(sh, t, acc)
            if t == 0:
                out[row] = sh[0] * scale
            cuda.syncthreads()  # sh[0] read before the next row overwrites sh
            row += cuda.gridDim.x

    @cuda.jit
    def rows_last(x, g, use_g, nn, s, c, out, scale):
        """The same for (N, S, C) data: block (tile of channels, n), thread (lane in tile,
        s lane); grid-stride over n (gridDim.y is capped at 65,535)."""
        ch = int64(cuda.blockIdx.x) * tc_last + cuda.threadIdx.x
        lane = cuda.threadIdx.y
        sh = cuda.shared.array((ts_last, tc_last), float64)
        n = int64(cuda.blockIdx.y)
        while n < nn:  # the same trip count for every thread of the block
            acc = 0.0
            if ch < c:
                i = int64(lane)
                while i < s:
                    k = (n * s + i) * c + ch
                    v = float64(x[k])
                    if use_g:
                        v *= float64(g[k])
                    acc += v
                    i += ts_last
            sh[lane, cuda.threadIdx.x] = acc
            cuda.syncthreads()
            stride = ts_last // 2
            while stride > 0:
                if lane < stride:
                    sh[lane, cuda.threadIdx.x] += sh[lane + stride, cuda.threadIdx.x]
                cuda.syncthreads()
                stride //= 2
            if lane == 0 and ch < c:
                out[n * c + ch] = sh[0, cuda.threadIdx.x] * scale
            cuda.syncthreads()
            n += cuda.gridDim.y

    @cuda.jit(device=True)
    def source(ch, j, k, cg, circular):
        """The channel tap j of output channel ch reads, or -1 for a zero pad."""
        start = (ch // cg) * cg
        t = ch - start + j - (k - 1) // 2
        if circular:
            t = t % cg
            if t < 0:
                t += cg
        elif t < 0 or t >= cg:
            return -1
        return start + t

    @cuda.jit(device=True)
    def sigmoid(z):
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    @cuda.jit
    def logits(m, w, bias, n, c, k, cg, circular, hard, z, a):
        """z = bias + sum_j w[c, j] m~[n, c + j - p]; a = gate(z); a thread per (n, c),
        grid-stride."""
        i = int64(cuda.blockIdx.x) * threads + cuda.threadIdx.x
        while i < n * c:
            row, ch = i // c, i % c
            acc = bias
            for j in range(k):
                t = source(ch, j, k, cg, circular)
                if t >= 0:
                    acc += w[ch * k + j] * m[row * c + t]
                else:  # a zero pad: w * 0 (NaN for a non-finite tap, as the reference)
                    acc += w[ch * k + j] * 0.0
            z[i] = acc
            if hard:
                a[i] = min(max(acc + 3.0, 0.0), 6.0) / 6.0
            else:
                a[i] = sigmoid(acc)
            i += int64(cuda.gridDim.x) * threads

    @cuda.jit(device=True)
    def row_of(i, s, c, last):
        """The (n, c) row, as n * C + c, of element i of x in its layout."""
        if last:  # (N, S, C)
            return (i // (s * c)) * c + i % c
        return i // s  # (N, C, S)

    @cuda.jit
    def scale(x, a, y, total, s, c, last):
        """y = a[n, c] * x, every element, grid-stride, 64-bit indices."""
        i = int64(cuda.blockIdx.x) * threads + cuda.threadIdx.x
        step = int64(cuda.gridDim.x) * threads
        while i < total:
            nc = row_of(i, s, c, last)
            y[i] = a[nc] * float64(x[i])
            i += step

    @cuda.jit
    def slope(da, z, a, total, hard, dz):
        """dz = da * gate'(z); the sigmoid's a (1 - a) with 1 - a as sigmoid(-z);
        grid-stride."""
        i = int64(cuda.blockIdx.x) * threads + cuda.threadIdx.x
        while i < total:
            if hard:
                d = 1.0 / 6.0 if (z[i] > -3.0 and z[i] < 3.0) else 0.0
            else:
                d = a[i] * sigmoid(-z[i])
            dz[i] = da[i] * d
            i += int64(cuda.gridDim.x) * threads

    @cuda.jit
    def weight_grad(dz, m, n, c, k, cg, circular, per_channel, dw):
        """dw[r, j] = sum dz[n, ch] m~[n, ch + j - p] over n (and ch for a shared kernel):
        one block per output element, a fixed tree over its terms."""
        out = int64(cuda.blockIdx.x)  # r * k + j
        j = out % k
        r = out // k
        t = cuda.threadIdx.x
        terms = n if per_channel else n * c
        acc = 0.0
        q = int64(t)
        while q < terms:
            if per_channel:
                row, ch = q, r
            else:
                row, ch = q // c, q % c
            src = source(ch, j, k, cg, circular)
            if src >= 0:
                acc += dz[row * c + ch] * m[row * c + src]
            else:  # a zero pad: dz * 0 (NaN where dz is not finite, as the reference)
                acc += dz[row * c + ch] * 0.0
            q += threads
        sh = cuda.shared.array(threads, float64)
        block_sum(sh, t, acc)
        if t == 0:
            dw[out] = sh[0]

    @cuda.jit
    def dm_kernel(dz, w, n, c, k, cg, circular, dm):
        """dm[n, c'] = sum_j w[c, j] dz[n, c] with c = c' - j + p (same padding rule);
        grid-stride."""
        i = int64(cuda.blockIdx.x) * threads + cuda.threadIdx.x
        while i < n * c:
            row, cp = i // c, i % c
            acc = 0.0
            for j in range(k):
                ch = source(cp, k - 1 - j, k, cg, circular)  # cp - j + p, wrapped or dropped
                if ch >= 0:
                    acc += w[ch * k + j] * dz[row * c + ch]
            dm[i] = acc
            i += int64(cuda.gridDim.x) * threads

    @cuda.jit
    def dx_kernel(g, a, dm, dx, total, s, c, last, inv_s):
        """dx = g * a + dm / S, every element."""
        i = int64(cuda.blockIdx.x) * threads + cuda.threadIdx.x
        step = int64(cuda.gridDim.x) * threads
        while i < total:
            nc = row_of(i, s, c, last)
            dx[i] = float64(g[i]) * a[nc] + dm[nc] * inv_s
            i += step

    return {"rows_first": rows_first, "rows_last": rows_last, "logits": logits,
            "scale": scale, "slope": slope, "weight_grad": weight_grad, "dm": dm_kernel,
            "dx": dx_kernel, "tc_last": tc_last, "ts_last": ts_last}


# --- host side ------------------------------------------------------------------------------

#: When a list, every launch appends (kernel name, grid, block, argument kinds): the
#: simulator tests count launches per call and check that npeca.backends.cuda_ptx covers
#: every signature launched (see launch_signatures).
LAUNCHES: list | None = None


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
    floats = ("float16", "float32", "float64")
    f64 = A("float64")
    sigs: set[tuple[str, tuple]] = set()
    for xd in floats:
        for gd in floats:
            sigs.add(("rows_first", (A(xd), A(gd), B, N, N, f64, F)))
            sigs.add(("rows_last", (A(xd), A(gd), B, N, N, N, f64, F)))
            sigs.add(("dx", (A(gd), f64, f64, A(xd), N, N, N, B, F)))
        sigs.add(("scale", (A(xd), f64, A(xd), N, N, N, B)))
    sigs.add(("rows_first", (f64, f64, B, N, N, f64, F)))  # dbias
    sigs.add(("logits", (f64, f64, F, N, N, N, N, B, B, f64, f64)))
    sigs.add(("slope", (f64, f64, f64, N, B, f64)))
    sigs.add(("weight_grad", (f64, f64, N, N, N, N, B, B, f64)))
    sigs.add(("dm", (f64, f64, N, N, N, N, B, f64)))
    return sorted(sigs)

def _blocks(count: int, threads: int) -> int:
    """Blocks for ``count`` items of ``threads`` each, at most MAX_BLOCKS (grid-stride)."""
    return max(1, min((count + threads - 1) // threads, MAX_BLOCKS))


def _flat_device(cuda, arr: Any, problem: ECAProblem):
    """x-shaped data as a flat contiguous device array in (N, C, S) or (N, S, C) order."""
    if is_device_array(arr):
        dev = as_device_array(arr)
        if not dev.is_c_contiguous():
            raise BackendUnavailableError(
                "backend='cuda' needs C-contiguous device arrays; make a contiguous copy first")
        return dev.reshape(dev.size)
    host = np.ascontiguousarray(arr)  # channels-last stays channels-last: coalesced reads
    return cuda.to_device(host.reshape(-1))


class _Run:
    """Shared state of one forward (and backward) on the device."""

    def __init__(self, problem: ECAProblem) -> None:
        self.cuda = _cuda()
        self.threads = THREADS
        self.k = _kernels(THREADS)
        p = problem
        self.p = p
        self.device_io = is_device_array(p.x)
        self.n, self.c, self.s = p.n, p.c, p.s
        self.total = p.n * p.c * p.s
        self.cg = p.c // p.groups
        self.circular = p.padding == "circular"
        self.hard = p.gate == "hard_sigmoid"
        w = np.asarray(p.weight, dtype=np.float64).reshape(-1, p.k)
        self.w = self.cuda.to_device(np.ascontiguousarray(np.broadcast_to(w, (p.c, p.k)))
                                     .reshape(-1))
        self.bias = 0.0 if p.bias is None else float(p.bias)
        self.x = _flat_device(self.cuda, p.x, p)

    def reduce_rows(self, g=None):
        """sum over S of x (or g * x), divided by S for the pool: (N * C,) float64."""
        out = self.cuda.device_array(self.n * self.c, dtype=np.float64)
        scale = 1.0 / self.s if g is None else 1.0
        gg = self.x if g is None else g
        if self.p.channels_last:
            tc, ts = self.k["tc_last"], self.k["ts_last"]
            grid = ((self.c + tc - 1) // tc, max(1, min(self.n, MAX_BLOCKS_Y)))
            _launch(self.k, "rows_last", grid, (tc, ts), self.x, gg, g is not None, self.n,
                    self.s, self.c, out, scale)
        else:
            rows = self.n * self.c
            _launch(self.k, "rows_first", max(1, min(rows, MAX_BLOCKS)), self.threads,
                    self.x, gg, g is not None, rows, self.s, out, scale)
        return out

    def forward_small(self):
        m = self.reduce_rows()
        nc = self.n * self.c
        z = self.cuda.device_array(nc, dtype=np.float64)
        a = self.cuda.device_array(nc, dtype=np.float64)
        _launch(self.k, "logits", _blocks(nc, self.threads), self.threads,
                m, self.w, self.bias, self.n, self.c, self.p.k, self.cg, self.circular,
                self.hard, z, a)
        return m, z, a

    def result(self, out: Any):
        """Where a kernel writes y or dx (flat): a contiguous device ``out`` itself (no
        allocation, no copy afterwards), else a new device array."""
        if self.device_io and out is not None:
            dev = as_device_array(out)
            if dev.is_c_contiguous():
                return dev.reshape(dev.size)
        return self.cuda.device_array(self.total, dtype=self.p.x.dtype)

    def shaped(self, flat_device, out: Any):
        """A flat device result in x's shape: a device array for device input, else host
        (written into ``out`` when given: copied from the device straight into a
        C-contiguous ``out``)."""
        shape = self.p.x.shape
        if self.device_io:
            if out is None:
                return flat_device.reshape(shape)
            dev = as_device_array(out)
            if not dev.is_c_contiguous():  # written elsewhere: copy it over
                dev.copy_to_device(flat_device.reshape(shape))
            return out
        if out is not None and out.flags.c_contiguous:
            flat_device.copy_to_host(out.reshape(-1))
            return out
        host = flat_device.copy_to_host().reshape(shape)
        if out is not None:
            np.copyto(out, host)
            return out
        return host

    def nc(self, arr):
        return arr.reshape(self.n, self.c) if self.device_io else \
            arr.copy_to_host().reshape(self.n, self.c)


def _no_bfloat16(*arrays: Any) -> None:
    """DTypeError for bfloat16 data: these kernels read float16/32/64 only."""
    for a in arrays:
        if is_bfloat16(getattr(a, "dtype", None)):
            raise DTypeError("backend='cuda' has no bfloat16 kernels yet; use "
                             "backend='numba' (it reads channels-first bfloat16 directly) "
                             "or backend='numpy'")


def forward(problem: ECAProblem, out: Any = None) -> ECAForward:
    """ECA forward on the GPU: y in x's dtype, m, z, a in float64 (device arrays when x
    is a device array, NumPy arrays otherwise)."""
    _no_bfloat16(problem.x)
    r = _Run(problem)
    m, z, a = r.forward_small()
    y = r.result(out)
    _launch(r.k, "scale", _blocks(r.total, r.threads), r.threads,
            r.x, a, y, r.total, r.s, r.c, problem.channels_last)
    return ECAForward(y=r.shaped(y, out), m=r.nc(m), z=r.nc(z), a=r.nc(a))


def backward(problem: ECAProblem, grad_out: Any, out: Any = None) -> ECAGrads:
    """ECA backward on the GPU: dx in x's dtype (device or host like x), dweight and dbias
    as NumPy arrays in the weight's and bias's shapes and dtypes."""
    _no_bfloat16(problem.x, grad_out)
    r = _Run(problem)
    m, z, a = r.forward_small()
    g = _flat_device(r.cuda, grad_out, problem)
    nc = r.n * r.c
    da = r.reduce_rows(g)
    dz = r.cuda.device_array(nc, dtype=np.float64)
    _launch(r.k, "slope", _blocks(nc, r.threads), r.threads, da, z, a, nc, r.hard, dz)
    rows = problem.c if problem.per_channel else 1
    dw = r.cuda.device_array(rows * problem.k, dtype=np.float64)
    _launch(r.k, "weight_grad", rows * problem.k, r.threads,
            dz, m, r.n, r.c, problem.k, r.cg, r.circular, problem.per_channel, dw)
    dm = r.cuda.device_array(nc, dtype=np.float64)
    _launch(r.k, "dm", _blocks(nc, r.threads), r.threads,
            dz, r.w, r.n, r.c, problem.k, r.cg, r.circular, dm)
    dx = r.result(out)
    _launch(r.k, "dx", _blocks(r.total, r.threads), r.threads,
            g, a, dm, dx, r.total, r.s, r.c, problem.channels_last, 1.0 / r.s)
    dbias = None
    if problem.bias is not None:
        ones = r.cuda.to_device(np.ones(nc))
        total = r.cuda.device_array(1, dtype=np.float64)
        # dbias = sum dz: the per-row reduction kernel over one "row" of N * C values
        _launch(r.k, "rows_first", 1, r.threads, dz, ones, True, 1, nc, total, 1.0)
        dbias = np.asarray(total.copy_to_host()[0], dtype=problem.bias_dtype).reshape(
            problem.bias_shape)
    return ECAGrads(
        x=r.shaped(dx, out),
        weight=dw.copy_to_host().astype(problem.weight_dtype).reshape(problem.weight_shape),
        bias=dbias,
    )
