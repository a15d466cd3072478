"""The Numba CPU backend: fused, parallel, deterministic ECA forward and backward.

This module imports numba at import time; :func:`npeca.backends.get_backend` imports it
lazily. It deliberately uses nothing of :mod:`npeca.reference` (DESIGN.md section 2): the two
are independent implementations of the same math, and the tests compare them.

Layout of the work (DESIGN.md section 4):

* A C-contiguous float32/float64 ``x`` is viewed, without a copy, as (N, C, S) for
  channels-first or (N, S, C) for channels-last. Anything else (float16, other strides, a
  non-contiguous ``out``) is staged through a bounded buffer of a few samples at a time.
* Samples are processed in *waves* small enough to stay in the L2 caches. Within a wave the
  work items are (sample, channel) pairs (channels-first) or (sample, channel block) pairs
  (channels-last), spread over all threads, so that N = 1 uses every core too. Forward
  reads a wave once to pool it and once more, from cache, to scale it: two passes over
  main memory (read x, write y) instead of three.
* Every sum over spatial positions runs in float64 over ``LANES`` interleaved lanes
  (position s goes to lane s mod LANES), and the lanes are combined by a fixed pairwise
  tree. Channels-first rows are summed by an explicit SIMD loop written in LLVM IR
  (:func:`_lane_sum`), channels-last columns by the same lane rule in plain loops, so both
  layouts give the same bits. No sum is ever split across threads, and the split of work
  into waves and items never changes the arithmetic: results are bitwise identical for
  any number of threads and on every call.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._validate import ECAProblem
from ..results import ECAForward, ECAGrads

__all__ = ["forward", "backward", "LANES"]

LANES = 16  # float64 accumulators per sum: two AVX-512 or four AVX2 registers
_WAVE_BYTES_PER_THREAD = 1 << 20  # bytes of x per thread in a wave: half of a 2 MiB L2
_ITEMS_PER_THREAD = 8  # work items per thread in a wave, for load balance
_MAX_BLOCK = 256  # channels-last: most channels per pooling item (16 lanes x 256 x 8 B)
_STAGE_BYTES = 4 << 20  # bytes of x staged at a time on the slow path
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --- the lane sum: an explicit SIMD reduction in a fixed order ------------------------------

def _load_lanes(builder, ary, dtype, base):
    """LANES consecutive elements of ``ary`` from index ``base`` as a float64 vector."""
    elem = ir.FloatType() if dtype == types.float32 else ir.DoubleType()
    ptr = builder.gep(ary.data, [base])
    vec = builder.load(builder.bitcast(ptr, ir.VectorType(elem, LANES).as_pointer()),
                       align=dtype.bitwidth // 8)
    if dtype == types.float32:
        vec = builder.fpext(vec, ir.VectorType(ir.DoubleType(), LANES))
    return vec


def _tree(builder, vec):
    """Lane 0 + ... + lane LANES-1 as ``lane[l] + lane[l + h]`` for h = LANES/2, ..., 1."""
    width = LANES
    while width > 1:
        width //= 2
        mask = ir.VectorType(ir.IntType(32), width)
        lo = builder.shuffle_vector(vec, vec, ir.Constant(mask, list(range(width))))
        hi = builder.shuffle_vector(vec, vec, ir.Constant(mask, list(range(width, 2 * width))))
        vec = builder.fadd(lo, hi)  # no fast-math flags: IEEE, in exactly this order
    return builder.extract_element(vec, ir.Constant(ir.IntType(32), 0))


def _lane_codegen(context, builder, sig, args):
    """Sum x (and g * x when two arrays are given) over LANES float64 lanes."""
    arrays = [context.make_array(t)(context, builder, v) for t, v in zip(sig.args, args)]
    dtypes = [t.dtype for t in sig.args]
    count = builder.extract_value(arrays[-1].shape, 0)
    vec_ty = ir.VectorType(ir.DoubleType(), LANES)
    nacc = len(arrays)  # 1: sum x; 2: sum x and sum g * x
    accs = [cgutils.alloca_once_value(builder, ir.Constant(vec_ty, [0.0] * LANES))
            for _ in range(nacc)]
    intp = count.type
    lanes = ir.Constant(intp, LANES)
    blocks = builder.udiv(count, lanes)

    def add(values):
        x = values[-1]
        builder.store(builder.fadd(builder.load(accs[0]), x), accs[0])
        if nacc == 2:
            builder.store(builder.fadd(builder.load(accs[1]), builder.fmul(values[0], x)),
                          accs[1])

    with cgutils.for_range(builder, blocks) as loop:
        base = builder.mul(loop.index, lanes)
        add([_load_lanes(builder, a, d, base) for a, d in zip(arrays, dtypes)])
    # The tail (fewer than LANES elements) goes to lanes 0, 1, ... through a zeroed buffer,
    # so that it costs one more vector add; the padding adds +0.0, which changes no lane
    # (a lane starts at +0.0 and so never holds -0.0).
    start = builder.mul(blocks, lanes)
    buffers = []
    for ary, dtype in zip(arrays, dtypes):
        elem = ir.FloatType() if dtype == types.float32 else ir.DoubleType()
        buf = cgutils.alloca_once(builder, ir.ArrayType(elem, LANES))
        builder.store(ir.Constant(ir.ArrayType(elem, LANES), [0.0] * LANES), buf)
        with cgutils.for_range(builder, count, start=start) as loop:
            slot = builder.gep(buf, [ir.Constant(intp, 0), builder.sub(loop.index, start)])
            builder.store(builder.load(builder.gep(ary.data, [loop.index])), slot)
        buffers.append((buf, dtype))
    tail = []
    for buf, dtype in buffers:
        elem = ir.FloatType() if dtype == types.float32 else ir.DoubleType()
        vec = builder.load(builder.bitcast(buf, ir.VectorType(elem, LANES).as_pointer()),
                           align=dtype.bitwidth // 8)
        if dtype == types.float32:
            vec = builder.fpext(vec, ir.VectorType(ir.DoubleType(), LANES))
        tail.append(vec)
    add(tail)
    sums = [_tree(builder, builder.load(acc)) for acc in accs]
    if nacc == 1:
        return sums[0]
    return context.make_tuple(builder, sig.return_type, sums)


def _is_row(t) -> bool:
    """True for a 1-D C-contiguous float32/float64 array type."""
    return (isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
            and t.dtype in (types.float32, types.float64))


@intrinsic
def _lane_sum(typingctx, x):
    """sum(x) of a contiguous row, in float64 over LANES lanes and a fixed tree."""
    if _is_row(x):
        return types.float64(x), _lane_codegen
    return None


@intrinsic
def _lane_sum2(typingctx, g, x):
    """(sum(x), sum(g * x)) of two contiguous rows of one length, as _lane_sum."""
    if _is_row(g) and _is_row(x) and g.dtype == x.dtype:
        return types.UniTuple(types.float64, 2)(g, x), _lane_codegen
    return None


# --- small per-channel helpers --------------------------------------------------------------

@njit(cache=True)
def _tap_tables(c_, k, cg, circular):
    """(src, rd), each (C, k): the channel that channel c reads through tap j, and the
    channel that reads c through tap j; -1 where the tap falls on a zero pad."""
    p = (k - 1) // 2
    src = np.empty((c_, k), dtype=np.int64)
    rd = np.empty((c_, k), dtype=np.int64)
    for c in range(c_):
        g0 = (c // cg) * cg
        for j in range(k):
            fwd = c - g0 + j - p  # c + j - p inside the group
            bwd = c - g0 - j + p  # c - j + p: the transposed correlation
            if circular:
                fwd %= cg  # Python's modulo: non-negative, wraps any number of times (k > C)
                bwd %= cg
            src[c, j] = g0 + fwd if 0 <= fwd < cg else -1
            rd[c, j] = g0 + bwd if 0 <= bwd < cg else -1
    return src, rd


@njit(cache=True)
def _logit(m_row, w, src, c, bias, has_bias):
    """z = bias + sum_j w[c, j] * m~[c + j - p] for one channel of one sample."""
    z = 0.0
    for j in range(w.shape[1]):
        sj = src[c, j]
        if sj >= 0:  # skip zero pads instead of multiplying by 0: a NaN stays where it is
            z += w[c, j] * m_row[sj]
    if has_bias:
        z += bias
    return z


@njit(cache=True)
def _dm(dz_row, w, rd, c):
    """dm[c] = sum_j w[r, j] * dz[r] over the channels r = c - j + p that read c via tap j."""
    dm = 0.0
    for j in range(w.shape[1]):
        r = rd[c, j]
        if r >= 0:
            dm += w[r, j] * dz_row[r]
    return dm


@njit(cache=True)
def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow, with full relative accuracy for z << 0."""
    e = np.exp(-abs(z))
    if z >= 0:
        return 1.0 / (1.0 + e)
    return e / (1.0 + e)  # also the NaN branch: NaN / NaN


@njit(cache=True)
def _gate(z, hard):
    """sigmoid(z), or relu6(z + 3) / 6 when ``hard``; NaN stays NaN."""
    if not hard:
        return _sigmoid(z)
    t = z + 3.0
    if t < 0.0:
        t = 0.0
    elif t > 6.0:
        t = 6.0
    return t / 6.0


@njit(cache=True)
def _gate_grad(z, a, hard):
    """gate'(z): a * sigmoid(-z), or 1/6 strictly inside (-3, 3) and 0 elsewhere."""
    if not hard:
        return a * _sigmoid(-z)  # 1 - a as sigmoid(-z) keeps its accuracy when a -> 1
    if z > -3.0 and z < 3.0:
        return 1.0 / 6.0
    return 0.0


@njit(cache=True)
def _column_lanes(x, n, c0, c1, acc):
    """acc[s % LANES, c - c0] += x[n, s, c] for c in [c0, c1): _lane_sum's rule, by column."""
    for s in range(x.shape[1]):
        lane = s % LANES
        for c in range(c0, c1):
            acc[lane, c - c0] += np.float64(x[n, s, c])


@njit(cache=True)
def _column_lanes2(g, x, n, c0, c1, acc_x, acc_gx):
    """_column_lanes of x into acc_x and of g * x into acc_gx, in one sweep."""
    for s in range(x.shape[1]):
        lane = s % LANES
        for c in range(c0, c1):
            xv = np.float64(x[n, s, c])
            acc_x[lane, c - c0] += xv
            acc_gx[lane, c - c0] += np.float64(g[n, s, c]) * xv


@njit(cache=True)
def _tree_columns(acc):
    """Combine the lanes of every column by _lane_sum's tree; the sums end in acc[0]."""
    width = LANES
    while width > 1:
        width //= 2
        for lane in range(width):
            for j in range(acc.shape[1]):
                acc[lane, j] = acc[lane, j] + acc[lane + width, j]


# --- forward kernels ------------------------------------------------------------------------
#
# Every kernel walks the batch in waves of `wave` samples; inside a wave each parallel loop
# hands out work items (a sample and a range of channels or positions). Items never share a
# sum, so neither the wave nor the item sizes, nor the thread count, change a single bit.

@njit(parallel=True, cache=True)
def _forward_cf(x, w, src, bias, has_bias, hard, wave, chunk, y, m, z, a):
    """Channels-first forward on x (N, C, S) into y (N, C, S) and m, z, a (N, C)."""
    n_, c_, s_ = x.shape
    per = (c_ + chunk - 1) // chunk  # items per sample
    for n0 in range(0, n_, wave):
        items = min(wave, n_ - n0) * per
        for i in prange(items):  # pass 1: pool the wave
            n = n0 + i // per
            c0 = (i % per) * chunk
            for c in range(c0, min(c_, c0 + chunk)):
                m[n, c] = _lane_sum(x[n, c]) / s_
        for i in prange(items):  # pass 2: convolve, gate, scale, the wave still in cache
            n = n0 + i // per
            c0 = (i % per) * chunk
            for c in range(c0, min(c_, c0 + chunk)):
                zc = _logit(m[n], w, src, c, bias, has_bias)
                ac = _gate(zc, hard)
                z[n, c] = zc
                a[n, c] = ac
                xr = x[n, c]
                yr = y[n, c]
                for s in range(s_):
                    yr[s] = ac * np.float64(xr[s])  # rounded once to y's dtype


@njit(parallel=True, cache=True)
def _forward_cl(x, w, src, bias, has_bias, hard, wave, cb, sb, y, m, z, a):
    """Channels-last forward on x (N, S, C): pools by blocks of cb channels, scales by
    blocks of sb positions."""
    n_, s_, c_ = x.shape
    per_c = (c_ + cb - 1) // cb
    per_s = (s_ + sb - 1) // sb
    for n0 in range(0, n_, wave):
        wn = min(wave, n_ - n0)
        for i in prange(wn * per_c):
            n = n0 + i // per_c
            c0 = (i % per_c) * cb
            c1 = min(c_, c0 + cb)
            acc = np.zeros((LANES, c1 - c0))
            _column_lanes(x, n, c0, c1, acc)
            _tree_columns(acc)
            for c in range(c0, c1):
                m[n, c] = acc[0, c - c0] / s_
        for i in prange(wn * per_c):
            n = n0 + i // per_c
            c0 = (i % per_c) * cb
            for c in range(c0, min(c_, c0 + cb)):
                zc = _logit(m[n], w, src, c, bias, has_bias)
                z[n, c] = zc
                a[n, c] = _gate(zc, hard)
        for i in prange(wn * per_s):
            n = n0 + i // per_s
            s0 = (i % per_s) * sb
            an = a[n]
            for s in range(s0, min(s_, s0 + sb)):
                xr = x[n, s]
                yr = y[n, s]
                for c in range(c_):
                    yr[c] = an[c] * np.float64(xr[c])


# --- backward kernels -----------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _backward_cf(x, g, w, src, rd, bias, has_bias, hard, wave, chunk, dx, m, dz):
    """Channels-first backward: dx (N, C, S) and the m, dz (N, C) the weight gradient needs."""
    n_, c_, s_ = x.shape
    per = (c_ + chunk - 1) // chunk
    wmax = min(wave, n_)
    da = np.empty((wmax, c_))
    a = np.empty((wmax, c_))
    for n0 in range(0, n_, wave):
        items = min(wave, n_ - n0) * per
        for i in prange(items):  # sweep 1: sum x and sum g * x in one read of g and x
            n = n0 + i // per
            c0 = (i % per) * chunk
            for c in range(c0, min(c_, c0 + chunk)):
                sx, sgx = _lane_sum2(g[n, c], x[n, c])
                m[n, c] = sx / s_
                da[n - n0, c] = sgx
        for i in prange(items):
            n = n0 + i // per
            c0 = (i % per) * chunk
            for c in range(c0, min(c_, c0 + chunk)):
                zc = _logit(m[n], w, src, c, bias, has_bias)
                ac = _gate(zc, hard)
                a[n - n0, c] = ac
                dz[n, c] = da[n - n0, c] * _gate_grad(zc, ac, hard)
        for i in prange(items):  # sweep 2: dx = g * a + dm / S, g still in cache
            n = n0 + i // per
            c0 = (i % per) * chunk
            for c in range(c0, min(c_, c0 + chunk)):
                ac = a[n - n0, c]
                t = _dm(dz[n], w, rd, c) / s_
                gr = g[n, c]
                dxr = dx[n, c]
                for s in range(s_):
                    dxr[s] = np.float64(gr[s]) * ac + t


@njit(parallel=True, cache=True)
def _backward_cl(x, g, w, src, rd, bias, has_bias, hard, wave, cb, sb, dx, m, dz):
    """Channels-last backward on (N, S, C) arrays, blocked as _forward_cl."""
    n_, s_, c_ = x.shape
    per_c = (c_ + cb - 1) // cb
    per_s = (s_ + sb - 1) // sb
    wmax = min(wave, n_)
    da = np.empty((wmax, c_))
    a = np.empty((wmax, c_))
    t = np.empty((wmax, c_))
    for n0 in range(0, n_, wave):
        wn = min(wave, n_ - n0)
        for i in prange(wn * per_c):
            n = n0 + i // per_c
            c0 = (i % per_c) * cb
            c1 = min(c_, c0 + cb)
            acc_x = np.zeros((LANES, c1 - c0))
            acc_gx = np.zeros((LANES, c1 - c0))
            _column_lanes2(g, x, n, c0, c1, acc_x, acc_gx)
            _tree_columns(acc_x)
            _tree_columns(acc_gx)
            for c in range(c0, c1):
                m[n, c] = acc_x[0, c - c0] / s_
                da[n - n0, c] = acc_gx[0, c - c0]
        for i in prange(wn * per_c):
            n = n0 + i // per_c
            c0 = (i % per_c) * cb
            for c in range(c0, min(c_, c0 + cb)):
                zc = _logit(m[n], w, src, c, bias, has_bias)
                ac = _gate(zc, hard)
                a[n - n0, c] = ac
                dz[n, c] = da[n - n0, c] * _gate_grad(zc, ac, hard)
        for i in prange(wn * per_c):
            n = n0 + i // per_c
            c0 = (i % per_c) * cb
            for c in range(c0, min(c_, c0 + cb)):
                t[n - n0, c] = _dm(dz[n], w, rd, c) / s_
        for i in prange(wn * per_s):
            n = n0 + i // per_s
            s0 = (i % per_s) * sb
            an = a[n - n0]
            tn = t[n - n0]
            for s in range(s0, min(s_, s0 + sb)):
                gr = g[n, s]
                dxr = dx[n, s]
                for c in range(c_):
                    dxr[c] = np.float64(gr[c]) * an[c] + tn[c]


@njit(parallel=True, cache=True)
def _parameter_grads(m, dz, w, src, per_channel, dw, db):
    """dw = sum_n dz[n, c] * m~[n, c + j - p] over n (and c for a shared kernel); db = sum dz.

    One channel per work item with n in order, then (shared kernel, bias) the per-channel
    partial sums added in channel order: a fixed order whatever the thread count."""
    n_, c_ = dz.shape
    k = w.shape[1]
    part = np.empty((c_, k))
    db_c = np.empty(c_)
    for c in prange(c_):
        for j in range(k):
            sj = src[c, j]
            acc = 0.0
            if sj >= 0:
                for n in range(n_):
                    acc += dz[n, c] * m[n, sj]
            part[c, j] = acc
        acc = 0.0
        for n in range(n_):
            acc += dz[n, c]
        db_c[c] = acc
    if per_channel:
        dw[:, :] = part
    else:
        for j in range(k):
            acc = 0.0
            for c in range(c_):
                acc += part[c, j]
            dw[0, j] = acc
    acc = 0.0
    for c in range(c_):
        acc += db_c[c]
    db[0] = acc


# --- the wrappers: choose views, waves and staging, then call the kernels -------------------

def _view3(arr: np.ndarray, problem: ECAProblem) -> np.ndarray:
    """A C-contiguous array shaped like x as (N, C, S) or (N, S, C), without a copy."""
    if problem.channels_last:
        return arr.reshape(arr.shape[0], problem.s, problem.c)
    return arr.reshape(arr.shape[0], problem.c, problem.s)


def _ceil(a: int, b: int) -> int:
    """ceil(a / b) for positive integers."""
    return -(-a // b)


class _Plan:
    """How one call splits its work: wave size and item sizes (never the arithmetic)."""

    def __init__(self, problem: ECAProblem, itemsize: int):
        threads = numba.get_num_threads()
        n, c, s = problem.n, problem.c, problem.s
        self.wave = min(n, max(1, (_WAVE_BYTES_PER_THREAD * threads) // (c * s * itemsize)))
        target = _ITEMS_PER_THREAD * threads  # items per wave, for balance
        self.chunk = min(c, _ceil(self.wave * c, target))  # channels-first: channels per item
        cb = _ceil(_ceil(self.wave * c, target), 16) * 16  # channels-last: whole cache lines
        self.cb = min(c, max(16, min(_MAX_BLOCK, cb)))
        self.sb = min(s, _ceil(self.wave * s, target))  # channels-last: positions per item


def _common(problem: ECAProblem):
    """Kernel arguments every call shares: (C, k) float64 weight, tap tables, bias, gate."""
    w = np.asarray(problem.weight, dtype=np.float64)
    if not problem.per_channel:
        w = np.broadcast_to(w, (problem.c, problem.k))
    w = np.ascontiguousarray(w)
    src, rd = _tap_tables(problem.c, problem.k, problem.c // problem.groups,
                          problem.padding == "circular")
    bias = 0.0 if problem.bias is None else float(problem.bias)
    return w, src, rd, bias, problem.bias is not None, problem.gate == "hard_sigmoid"


def _fast(*arrays: np.ndarray) -> bool:
    """True when every array is C-contiguous float32/float64 of one dtype: no staging."""
    dtype = arrays[0].dtype
    return dtype in _FAST_DTYPES and all(a.flags.c_contiguous and a.dtype == dtype
                                         for a in arrays)


def _compute_dtype(*dtypes: np.dtype) -> np.dtype:
    """float32 unless an input is float64: float16 widens to float32 exactly."""
    return np.dtype(np.float64 if np.dtype(np.float64) in dtypes else np.float32)


class _Stager:
    """Copies a few samples at a time into reused C-contiguous buffers of the compute dtype
    (bounded extra memory: about _STAGE_BYTES per staged array)."""

    def __init__(self, problem: ECAProblem, dtype: np.dtype):
        self.dtype = dtype
        self.step = max(1, _STAGE_BYTES // (problem.c * problem.s * dtype.itemsize))
        self.n = problem.n
        self.shape = (min(self.step, problem.n),) + problem.x.shape[1:]
        self._buffers: dict[str, np.ndarray] = {}

    def ranges(self):
        """(n0, n1) sample ranges of ``step`` samples, the last one shorter."""
        for n0 in range(0, self.n, self.step):
            yield n0, min(self.n, n0 + self.step)

    def load(self, name: str, arr: np.ndarray, n0: int, n1: int) -> np.ndarray:
        """arr[n0:n1] as a C-contiguous array of the compute dtype (a view when it is one)."""
        part = arr[n0:n1]
        if part.flags.c_contiguous and part.dtype == self.dtype:
            return part
        buf = self.buffer(name, self.dtype)[:n1 - n0]
        np.copyto(buf, part)  # float16 -> float32 and float32 -> float64 are exact
        return buf

    def buffer(self, name: str, dtype: np.dtype) -> np.ndarray:
        """The reused buffer ``name`` of one stage of samples."""
        if name not in self._buffers:
            self._buffers[name] = np.empty(self.shape, dtype)
        return self._buffers[name]

    def result(self, out: np.ndarray, n0: int, n1: int) -> tuple[np.ndarray, bool]:
        """Where the kernel writes out[n0:n1]: out itself when it can, else a buffer (float64
        when out's dtype is not the compute dtype, so that it is rounded once); and whether
        the buffer must be copied to out afterwards."""
        part = out[n0:n1]
        if part.flags.c_contiguous and part.dtype == self.dtype:
            return part, False
        dtype = self.dtype if out.dtype == self.dtype else np.dtype(np.float64)
        return self.buffer("out", dtype)[:n1 - n0], True


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
    x = problem.x
    y = np.empty(x.shape, dtype=x.dtype) if out is None else out
    m = np.empty((problem.n, problem.c))
    z = np.empty_like(m)
    a = np.empty_like(m)
    w, src, _, bias, has_bias, hard = _common(problem)

    def run(xs, ys, ms, zs, as_):
        plan = _Plan(problem, xs.dtype.itemsize)
        if problem.channels_last:
            _forward_cl(_view3(xs, problem), w, src, bias, has_bias, hard, plan.wave, plan.cb,
                        plan.sb, _view3(ys, problem), ms, zs, as_)
        else:
            _forward_cf(_view3(xs, problem), w, src, bias, has_bias, hard, plan.wave,
                        plan.chunk, _view3(ys, problem), ms, zs, as_)

    if _fast(x, y):
        run(x, y, m, z, a)
    else:  # a few samples at a time through contiguous buffers: bounded extra memory
        stager = _Stager(problem, _compute_dtype(x.dtype))
        for n0, n1 in stager.ranges():
            ys, copy = stager.result(y, n0, n1)
            run(stager.load("x", x, n0, n1), ys, m[n0:n1], z[n0:n1], a[n0:n1])
            if copy:
                y[n0:n1] = ys  # the only rounding to y's dtype
    return ECAForward(y=y, m=m, z=z, a=a)


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
    x, g = problem.x, grad_out
    dx = np.empty(x.shape, dtype=x.dtype) if out is None else out
    m = np.empty((problem.n, problem.c))
    dz = np.empty_like(m)
    w, src, rd, bias, has_bias, hard = _common(problem)

    def run(xs, gs, dxs, ms, dzs):
        plan = _Plan(problem, xs.dtype.itemsize)
        if problem.channels_last:
            _backward_cl(_view3(xs, problem), _view3(gs, problem), w, src, rd, bias, has_bias,
                         hard, plan.wave, plan.cb, plan.sb, _view3(dxs, problem), ms, dzs)
        else:
            _backward_cf(_view3(xs, problem), _view3(gs, problem), w, src, rd, bias, has_bias,
                         hard, plan.wave, plan.chunk, _view3(dxs, problem), ms, dzs)

    if _fast(x, g, dx):
        run(x, g, dx, m, dz)
    else:
        stager = _Stager(problem, _compute_dtype(x.dtype, g.dtype))
        for n0, n1 in stager.ranges():
            # dx may be x or g itself: the kernels read every element before writing it
            dxs, copy = stager.result(dx, n0, n1)
            run(stager.load("x", x, n0, n1), stager.load("g", g, n0, n1), dxs, m[n0:n1],
                dz[n0:n1])
            if copy:
                dx[n0:n1] = dxs

    dw = np.empty((problem.c, problem.k) if problem.per_channel else (1, problem.k))
    db = np.empty(1)
    _parameter_grads(m, dz, w, src, problem.per_channel, dw, db)
    dbias = None
    if problem.bias is not None:
        dbias = np.asarray(db[0], dtype=problem.bias_dtype).reshape(problem.bias_shape)
    return ECAGrads(x=dx, weight=dw.astype(problem.weight_dtype).reshape(problem.weight_shape),
                    bias=dbias)
