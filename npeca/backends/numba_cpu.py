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
* Channels-last: waves of samples small enough for L2, in parallel phases over blocks of
  channels (pooling) and of positions (scaling).
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
import warnings

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
_PER_SAMPLE_BYTES = 512 << 10  # samples up to this size are one work item each
_CHUNK_BYTES = 3 << 19  # channels-first forward of large samples: bytes of x per item
_SEGMENTS_PER_THREAD = 1  # channels-first backward of large samples: pipelined segments
_MAX_BLOCK = 256  # channels-last: most channels per pooling item (16 lanes x 256 x 8 B)
_STAGE_BYTES = 4 << 20  # bytes of x staged at a time on the slow path
_STREAM_BYTES = 32 << 20  # outputs of x this large bypass the caches (streaming stores)
_STREAM_MIN_ROW = 1024  # ... when their channels-first rows have at least this many elements
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_SAMPLES, _PIPELINED_SAMPLES, _WAVES = 0, 1, 2  # how kernels hand out work (_Call.schedule)


# --- compiling: cached on disk where a cache location is writable ------------------------------

_cache_warned = False


def _jit(parallel: bool = False):
    """``njit(cache=True)``, or plain ``njit`` where numba finds no writable cache location
    (a read-only install with no writable HOME): then kernels compile in every process, and
    one warning per process says how to give them a cache."""
    def decorate(fn):
        global _cache_warned
        try:
            return njit(parallel=parallel, cache=True)(fn)
        except RuntimeError as exc:
            if "cannot cache" not in str(exc):
                raise
            if not _cache_warned:
                _cache_warned = True
                warnings.warn(
                    "npeca: numba cannot cache compiled kernels here (no writable location "
                    "beside the installed package nor in the user's cache directory); they "
                    "compile again in every process. Set NUMBA_CACHE_DIR to a writable "
                    "directory to cache them.", RuntimeWarning, stacklevel=2)
            return njit(parallel=parallel)(fn)
    return decorate


# --- the lane sum: an explicit SIMD reduction in a fixed order ------------------------------

def _elem(dtype):
    """The LLVM type of a float32 or float64 element."""
    return ir.FloatType() if dtype == types.float32 else ir.DoubleType()


def _widen(builder, vec, dtype):
    """A vector of float32 or float64 as float64 (exact)."""
    if dtype == types.float32:
        return builder.fpext(vec, ir.VectorType(ir.DoubleType(), LANES))
    return vec


def _load_lanes(builder, ptr, dtype):
    """LANES consecutive elements from ``ptr`` (unaligned) as a float64 vector."""
    vec_ptr = builder.bitcast(ptr, ir.VectorType(_elem(dtype), LANES).as_pointer())
    return _widen(builder, builder.load(vec_ptr, align=dtype.bitwidth // 8), dtype)


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
    """Sum x[start:start+count] (and g * x over the same range when g is given) over LANES
    float64 lanes: element start + i goes to lane i mod LANES."""
    nacc = len(args) - 2  # 1: sum x; 2: sum x and sum g * x
    arrays = [context.make_array(t)(context, builder, v)
              for t, v in zip(sig.args[:nacc], args[:nacc])]
    dtypes = [t.dtype for t in sig.args[:nacc]]
    start, count = args[nacc], args[nacc + 1]
    intp = count.type
    total = builder.extract_value(arrays[-1].shape, 0)
    f64x = ir.VectorType(ir.DoubleType(), LANES)
    zero = ir.Constant(f64x, [0.0] * LANES)
    accs = [cgutils.alloca_once_value(builder, zero) for _ in range(nacc)]
    lanes = ir.Constant(intp, LANES)
    blocks = builder.udiv(count, lanes)

    def add(values):
        x = values[-1]
        builder.store(builder.fadd(builder.load(accs[0]), x), accs[0])
        if nacc == 2:
            builder.store(builder.fadd(builder.load(accs[1]), builder.fmul(values[0], x)),
                          accs[1])

    with cgutils.for_range(builder, blocks) as loop:
        at = builder.add(start, builder.mul(loop.index, lanes))
        add([_load_lanes(builder, builder.gep(a.data, [at]), d)
             for a, d in zip(arrays, dtypes)])

    # The tail, fewer than LANES elements, goes to lanes 0, 1, ... as one more vector add,
    # the unused lanes adding +0.0 (no change: a lane starts at +0.0 and never holds -0.0).
    done = builder.mul(blocks, lanes)
    rest = builder.sub(count, done)
    at = builder.add(start, done)
    with builder.if_then(builder.icmp_unsigned(">", rest, ir.Constant(intp, 0))):
        fits = builder.icmp_unsigned("<=", builder.add(at, lanes), total)
        with builder.if_else(fits) as (inside, at_the_end):
            with inside:  # a full vector load stays inside the array: mask the extra lanes
                ids = ir.Constant(ir.VectorType(intp, LANES), list(range(LANES)))
                splat = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(ir.VectorType(intp, LANES), None),
                                           rest, ir.Constant(ir.IntType(32), 0)),
                    ir.Constant(ir.VectorType(intp, LANES), None),
                    ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
                keep = builder.icmp_unsigned("<", ids, splat)
                add([builder.select(keep, _load_lanes(builder, builder.gep(a.data, [at]), d),
                                    zero) for a, d in zip(arrays, dtypes)])
            with at_the_end:  # the last row of the array: copy the tail to a zeroed buffer
                vals = []
                for a, d in zip(arrays, dtypes):
                    buf_ty = ir.ArrayType(_elem(d), LANES)
                    buf = cgutils.alloca_once(builder, buf_ty)
                    builder.store(ir.Constant(buf_ty, [0.0] * LANES), buf)
                    with cgutils.for_range(builder, rest) as loop:
                        slot = builder.gep(buf, [ir.Constant(intp, 0), loop.index])
                        src = builder.gep(a.data, [builder.add(at, loop.index)])
                        builder.store(builder.load(src), slot)
                    vals.append(_load_lanes(builder, buf, d))
                add(vals)
    sums = [_tree(builder, builder.load(acc)) for acc in accs]
    if nacc == 1:
        return sums[0]
    return context.make_tuple(builder, sig.return_type, sums)


def _is_flat(t) -> bool:
    """True for a 1-D C-contiguous float32/float64 array type."""
    return (isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
            and t.dtype in (types.float32, types.float64))


@intrinsic
def _lane_sum(typingctx, x, start, count):
    """sum(x[start:start + count]) of a flat array, in float64 over LANES lanes and a fixed
    tree (the caller guarantees the range is inside x)."""
    if _is_flat(x) and isinstance(start, types.Integer) and isinstance(count, types.Integer):
        return types.float64(x, types.intp, types.intp), _lane_codegen
    return None


@intrinsic
def _lane_sum2(typingctx, g, x, start, count):
    """(sum(x[r]), sum(g[r] * x[r])) for r = start:start + count, as _lane_sum."""
    if (_is_flat(g) and _is_flat(x) and g.dtype == x.dtype
            and isinstance(start, types.Integer) and isinstance(count, types.Integer)):
        return types.UniTuple(types.float64, 2)(g, x, types.intp, types.intp), _lane_codegen
    return None


# --- streaming stores: results that would not stay in cache go around it -------------------

def _splat(builder, value):
    """A LANES-vector of one float64."""
    vec = ir.VectorType(ir.DoubleType(), LANES)
    one = builder.insert_element(ir.Constant(vec, None), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vec, None),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


def _stream_codegen(context, builder, sig, args):
    """dst[r] = a * src[r] (+ t) for r = start:start + count, each element computed in
    float64 and rounded once to dst's dtype, exactly as the plain loops do. Whole vectors
    of dst that start on a 64-byte boundary are written with non-temporal stores (they
    bypass the caches: no read-for-ownership of dst); the first and last few elements with
    ordinary stores."""
    dst_ty, src_ty = sig.args[0], sig.args[1]
    dst = context.make_array(dst_ty)(context, builder, args[0])
    src = context.make_array(src_ty)(context, builder, args[1])
    start, count, a = args[2], args[3], args[4]
    t = args[5] if len(args) == 6 else None
    intp = count.type
    d_elem, s_elem = _elem(dst_ty.dtype), _elem(src_ty.dtype)
    d_size = dst_ty.dtype.bitwidth // 8
    f64 = ir.DoubleType()

    def value(x, a_, t_):
        x = builder.fpext(x, x.type.__class__(f64, LANES) if isinstance(x.type, ir.VectorType)
                          else f64) if src_ty.dtype == types.float32 else x
        y = builder.fmul(x, a_)  # the plain loops' order: (x * a) + t, no fused multiply-add
        if t_ is not None:
            y = builder.fadd(y, t_)
        if dst_ty.dtype == types.float32:
            y = builder.fptrunc(y, ir.VectorType(d_elem, LANES)
                                if isinstance(y.type, ir.VectorType) else d_elem)
        return y

    d0 = builder.gep(dst.data, [start])
    s0 = builder.gep(src.data, [start])

    def scalar(i):
        builder.store(value(builder.load(builder.gep(s0, [i])), a, t), builder.gep(d0, [i]))

    misaligned = builder.and_(builder.ptrtoint(d0, intp), ir.Constant(intp, 63))
    peel = builder.udiv(builder.and_(builder.sub(ir.Constant(intp, 64), misaligned),
                                     ir.Constant(intp, 63)), ir.Constant(intp, d_size))
    peel = builder.select(builder.icmp_unsigned("<", count, peel), count, peel)
    with cgutils.for_range(builder, peel) as loop:
        scalar(loop.index)
    lanes = ir.Constant(intp, LANES)
    blocks = builder.udiv(builder.sub(count, peel), lanes)
    a_vec = _splat(builder, a)
    t_vec = None if t is None else _splat(builder, t)
    hint = builder.module.add_metadata([ir.IntType(32)(1)])
    with cgutils.for_range(builder, blocks) as loop:
        i = builder.add(peel, builder.mul(loop.index, lanes))
        x = builder.load(builder.bitcast(builder.gep(s0, [i]),
                                         ir.VectorType(s_elem, LANES).as_pointer()),
                         align=src_ty.dtype.bitwidth // 8)
        store = builder.store(value(x, a_vec, t_vec),
                              builder.bitcast(builder.gep(d0, [i]),
                                              ir.VectorType(d_elem, LANES).as_pointer()),
                              align=64)
        store.set_metadata("nontemporal", hint)
    with cgutils.for_range(builder, count, start=builder.add(peel, builder.mul(blocks, lanes))
                           ) as loop:
        scalar(loop.index)
    return context.get_dummy_value()


@intrinsic
def _stream_scale(typingctx, dst, src, start, count, a):
    """dst[start:start + count] = a * src[...] with streaming stores (see _stream_codegen)."""
    if _is_flat(dst) and _is_flat(src):
        return types.void(dst, src, types.intp, types.intp, types.float64), _stream_codegen
    return None


@intrinsic
def _stream_scale_add(typingctx, dst, src, start, count, a, t):
    """dst[start:start + count] = a * src[...] + t with streaming stores."""
    if _is_flat(dst) and _is_flat(src):
        return (types.void(dst, src, types.intp, types.intp, types.float64, types.float64),
                _stream_codegen)
    return None


@intrinsic
def _stream_fence(typingctx):
    """Order the streaming stores before everything after (they are weakly ordered)."""
    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.void(), codegen


# --- small per-channel helpers --------------------------------------------------------------

@_jit()
def _tap_tables(c_, k, cg, circular):
    """(src, rd, span): src[c, j] is the channel that channel c reads through tap j and
    rd[c, j] the channel that reads c through tap j, -1 where the tap falls on a zero pad;
    span[c] = (min, max) of the valid src[c, :], then (min, max) of the valid rd[c, :]."""
    p = (k - 1) // 2
    src = np.empty((c_, k), dtype=np.int64)
    rd = np.empty((c_, k), dtype=np.int64)
    span = np.empty((c_, 4), dtype=np.int64)
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
        span[c, 0], span[c, 1], span[c, 2], span[c, 3] = c_, -1, c_, -1
        for j in range(k):  # tap p is c itself: every channel has a valid tap
            if src[c, j] >= 0:
                span[c, 0] = min(span[c, 0], src[c, j])
                span[c, 1] = max(span[c, 1], src[c, j])
            if rd[c, j] >= 0:
                span[c, 2] = min(span[c, 2], rd[c, j])
                span[c, 3] = max(span[c, 3], rd[c, j])
    return src, rd, span


@_jit()
def _logit(m_row, w, src, c, bias, has_bias):
    """z = bias + sum_j w[c, j] * m~[c + j - p] for one channel of one sample; w is (C, k),
    or (1, k) for a kernel shared by all channels."""
    wc = c if w.shape[0] > 1 else 0
    z = 0.0
    for j in range(w.shape[1]):
        sj = src[c, j]
        if sj >= 0:
            z += w[wc, j] * m_row[sj]
        else:  # a zero pad: w * 0, which is NaN for an infinite or NaN tap, as the reference
            z += w[wc, j] * 0.0
    if has_bias:
        z += bias
    return z


@_jit()
def _dm(dz_row, w, rd, c):
    """dm[c] = sum_j w[r, j] * dz[r] over the channels r = c - j + p that read c via tap j
    (w[0, j] for a shared (1, k) kernel)."""
    shared = w.shape[0] == 1
    dm = 0.0
    for j in range(w.shape[1]):
        r = rd[c, j]
        if r >= 0:
            dm += w[0 if shared else r, j] * dz_row[r]
    return dm


@_jit()
def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow, with full relative accuracy for z << 0."""
    e = np.exp(-abs(z))
    if z >= 0:
        return 1.0 / (1.0 + e)
    return e / (1.0 + e)  # also the NaN branch: NaN / NaN


@_jit()
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


@_jit()
def _gate_grad(z, a, hard):
    """gate'(z): a * sigmoid(-z), or 1/6 strictly inside (-3, 3) and 0 elsewhere."""
    if not hard:
        return a * _sigmoid(-z)  # 1 - a as sigmoid(-z) keeps its accuracy when a -> 1
    if z > -3.0 and z < 3.0:
        return 1.0 / 6.0
    return 0.0


# --- the work of one item: a sample and a range of its channels or positions ----------------

@_jit()
def _pool_cf(xf, n, c0, c1, c_, s_, m):
    """m[n, c] = mean of row (n, c) of the flat (N, C, S) array xf, for c in [c0, c1)."""
    for c in range(c0, c1):
        m[n, c] = _lane_sum(xf, (n * c_ + c) * s_, s_) / s_


@_jit()
def _scale_cf(x, y, w, src, bias, has_bias, hard, stream, n, c0, c1, m_row, z, a):
    """Logit, gate and y[n, c] = a * x[n, c] for the channels [c0, c1) of sample n, whose
    pooled means (those channels and the ones they read) are in m_row."""
    c_, s_ = x.shape[1], x.shape[2]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    for c in range(c0, c1):
        zc = _logit(m_row, w, src, c, bias, has_bias)
        ac = _gate(zc, hard)
        z[n, c] = zc
        a[n, c] = ac
        if stream:
            _stream_scale(yf, xf, (n * c_ + c) * s_, s_, ac)
        else:
            xr = x[n, c]
            yr = y[n, c]
            for s in range(s_):
                yr[s] = ac * np.float64(xr[s])  # rounded once to y's dtype
    if stream:
        _stream_fence()


@_jit()
def _forward_item_cf(x, xf, y, w, src, bias, has_bias, hard, stream, n, c0, c1, m, z, a):
    """The whole forward of the channels [c0, c1) of sample n, with no other item to wait
    for: the few channels outside the range that the convolution reads (its halo) are
    pooled here again, by the same lane sum, so their means have the same bits."""
    c_, s_ = x.shape[1], x.shape[2]
    _pool_cf(xf, n, c0, c1, c_, s_, m)
    if c0 == 0 and c1 == c_:
        _scale_cf(x, y, w, src, bias, has_bias, hard, stream, n, c0, c1, m[n], z, a)
        return
    m_row = np.empty(c_)
    have = np.zeros(c_, dtype=np.bool_)
    for c in range(c0, c1):
        m_row[c] = m[n, c]
        have[c] = True
    for c in range(c0, c1):
        for j in range(src.shape[1]):
            sj = src[c, j]
            if sj >= 0 and not have[sj]:
                m_row[sj] = _lane_sum(xf, (n * c_ + sj) * s_, s_) / s_
                have[sj] = True
    _scale_cf(x, y, w, src, bias, has_bias, hard, stream, n, c0, c1, m_row, z, a)


@_jit()
def _sums_cf(gf, xf, n, c0, c1, c_, s_, m, da):
    """m[n, c] = mean x and da[n, c] = sum g * x over row (n, c), one read of both."""
    for c in range(c0, c1):
        sx, sgx = _lane_sum2(gf, xf, (n * c_ + c) * s_, s_)
        m[n, c] = sx / s_
        da[n, c] = sgx


@_jit()
def _dz(w, src, bias, has_bias, hard, n, c0, c1, m, da, a, dz):
    """a = gate(z) and dz = da * gate'(z) for the channels [c0, c1) of sample n."""
    for c in range(c0, c1):
        zc = _logit(m[n], w, src, c, bias, has_bias)
        ac = _gate(zc, hard)
        a[n, c] = ac
        dz[n, c] = da[n, c] * _gate_grad(zc, ac, hard)


@_jit()
def _dx_cf(g, dx, w, rd, stream, n, c0, c1, a, dz):
    """dx[n, c] = g[n, c] * a + dm / S for the channels [c0, c1) of sample n."""
    c_, s_ = g.shape[1], g.shape[2]
    gf = g.reshape(g.size)
    dxf = dx.reshape(dx.size)
    for c in range(c0, c1):
        ac = a[n, c]
        t = _dm(dz[n], w, rd, c) / s_
        if stream:
            _stream_scale_add(dxf, gf, (n * c_ + c) * s_, s_, ac, t)
        else:
            gr = g[n, c]
            dxr = dx[n, c]
            for s in range(s_):
                dxr[s] = np.float64(gr[s]) * ac + t
    if stream:
        _stream_fence()


@_jit()
def _pool_cl(x, n, c0, c1, m):
    """m[n, c] for c in [c0, c1) of (N, S, C) x: position s into lane s mod LANES, then the
    tree of _lane_sum, so that the bits equal the channels-first ones."""
    acc = np.zeros((LANES, c1 - c0))
    for s in range(x.shape[1]):
        lane = acc[s % LANES]
        xr = x[n, s]
        for c in range(c0, c1):
            lane[c - c0] += np.float64(xr[c])
    _tree_columns(acc)
    for c in range(c0, c1):
        m[n, c] = acc[0, c - c0] / x.shape[1]


@_jit()
def _sums_cl(g, x, n, c0, c1, m, da):
    """m[n, c] and da[n, c] for c in [c0, c1) of (N, S, C) arrays, by the lane rule."""
    acc_x = np.zeros((LANES, c1 - c0))
    acc_gx = np.zeros((LANES, c1 - c0))
    for s in range(x.shape[1]):
        lane_x = acc_x[s % LANES]
        lane_gx = acc_gx[s % LANES]
        xr = x[n, s]
        gr = g[n, s]
        for c in range(c0, c1):
            xv = np.float64(xr[c])
            lane_x[c - c0] += xv
            lane_gx[c - c0] += np.float64(gr[c]) * xv
    _tree_columns(acc_x)
    _tree_columns(acc_gx)
    for c in range(c0, c1):
        m[n, c] = acc_x[0, c - c0] / x.shape[1]
        da[n, c] = acc_gx[0, c - c0]


@_jit()
def _tree_columns(acc):
    """Combine the lanes of every column by _lane_sum's tree; the sums end in acc[0]."""
    width = LANES
    while width > 1:
        width //= 2
        for lane in range(width):
            for j in range(acc.shape[1]):
                acc[lane, j] = acc[lane, j] + acc[lane + width, j]


@_jit()
def _gate_cl(w, src, bias, has_bias, hard, n, c0, c1, m, z, a):
    """z and a = gate(z) for the channels [c0, c1) of sample n."""
    for c in range(c0, c1):
        zc = _logit(m[n], w, src, c, bias, has_bias)
        z[n, c] = zc
        a[n, c] = _gate(zc, hard)


@_jit()
def _scale_cl(x, y, n, s0, s1, a):
    """y[n, s] = a[n] * x[n, s] for the positions [s0, s1) of (N, S, C) arrays."""
    an = a[n]
    for s in range(s0, s1):
        xr = x[n, s]
        yr = y[n, s]
        for c in range(xr.shape[0]):
            yr[c] = an[c] * np.float64(xr[c])


@_jit()
def _dm_cl(w, rd, n, c0, c1, s_, dz, t):
    """t[n, c] = dm[n, c] / S for the channels [c0, c1) of sample n."""
    for c in range(c0, c1):
        t[n, c] = _dm(dz[n], w, rd, c) / s_


@_jit()
def _dx_cl(g, dx, n, s0, s1, a, t):
    """dx[n, s] = g[n, s] * a[n] + t[n] for the positions [s0, s1) of (N, S, C) arrays."""
    an = a[n]
    tn = t[n]
    for s in range(s0, s1):
        gr = g[n, s]
        dxr = dx[n, s]
        for c in range(gr.shape[0]):
            dxr[c] = np.float64(gr[c]) * an[c] + tn[c]


# --- the kernels ------------------------------------------------------------------------------
#
# _SAMPLES: one parallel loop over samples, each item a whole (small) sample from pooling to
# scaling, so no thread waits for another. _WAVES: waves of `wave` samples, each wave one
# parallel loop per phase whose items are a sample and a range of `chunk` channels (or `sb`
# positions), so that a single sample also spreads over every thread while it stays in
# cache between the phases. The channels-first forward needs neither (halo items, see
# _forward_item_cf) except in place; the channels-first backward of large samples is
# pipelined (_pipeline_cf), per sample (_PIPELINED_SAMPLES) or per segment of a sample
# (_WAVES). Items never share a sum: neither the mode, nor the wave and item sizes, nor the
# thread count change a single bit.

@_jit(parallel=True)
def _forward_cf(x, w, src, bias, has_bias, hard, chunk, wave, stream, y, m, z, a):
    """Channels-first forward on x (N, C, S) into y (N, C, S) and m, z, a (N, C).

    One parallel loop over items of `chunk` channels of a sample (a whole sample when chunk
    is C), each pooled, convolved, gated and scaled while it is in cache. When y is x
    (in place) and samples are split, an item must not scale channels that another item
    still has to pool for its halo: then each wave of `wave` samples is pooled entirely
    before it is scaled."""
    n_, c_, s_ = x.shape
    xf = x.reshape(x.size)
    per = (c_ + chunk - 1) // chunk  # items per sample
    if per == 1 or wave == 0:
        for i in prange(n_ * per):
            n = i // per
            c0 = (i % per) * chunk
            _forward_item_cf(x, xf, y, w, src, bias, has_bias, hard, stream, n, c0,
                             min(c_, c0 + chunk), m, z, a)
    else:
        for n0 in range(0, n_, wave):
            items = min(wave, n_ - n0) * per
            for i in prange(items):
                n = n0 + i // per
                c0 = (i % per) * chunk
                _pool_cf(xf, n, c0, min(c_, c0 + chunk), c_, s_, m)
            for i in prange(items):
                n = n0 + i // per
                c0 = (i % per) * chunk
                _scale_cf(x, y, w, src, bias, has_bias, hard, stream, n, c0,
                          min(c_, c0 + chunk), m[n], z, a)


@_jit(parallel=True)
def _forward_cl(x, w, src, bias, has_bias, hard, mode, wave, chunk, sb, y, m, z, a):
    """Channels-last forward on x (N, S, C): pooling items are `chunk` channels, scaling
    items `sb` positions."""
    n_, s_, c_ = x.shape
    if mode == _SAMPLES:
        for n in prange(n_):
            for c0 in range(0, c_, chunk):
                _pool_cl(x, n, c0, min(c_, c0 + chunk), m)
            _gate_cl(w, src, bias, has_bias, hard, n, 0, c_, m, z, a)
            _scale_cl(x, y, n, 0, s_, a)
    else:
        per_c = (c_ + chunk - 1) // chunk
        per_s = (s_ + sb - 1) // sb
        for n0 in range(0, n_, wave):
            wn = min(wave, n_ - n0)
            for i in prange(wn * per_c):
                n = n0 + i // per_c
                c0 = (i % per_c) * chunk
                _pool_cl(x, n, c0, min(c_, c0 + chunk), m)
            for i in prange(wn * per_c):
                n = n0 + i // per_c
                c0 = (i % per_c) * chunk
                _gate_cl(w, src, bias, has_bias, hard, n, c0, min(c_, c0 + chunk), m, z, a)
            for i in prange(wn * per_s):
                n = n0 + i // per_s
                s0 = (i % per_s) * sb
                _scale_cl(x, y, n, s0, min(s_, s0 + sb), a)


@_jit()
def _pipeline_cf(g, x, gf, xf, w, src, rd, span, bias, has_bias, hard, stream, n, s0, s1, m,
                 da, a, dz, dx, zdone, xdone):
    """Backward for the channels [s0, s1) of sample n in one sweep: channel after channel
    sum x and g * x, and as soon as every channel a result needs is done, dz and then
    dx = g * a + dm / S, while g is still in L1/L2. What needs a channel outside [s0, s1)
    is left to _backward_cf's clean-up loops (zdone / xdone False)."""
    c_, s_ = x.shape[1], x.shape[2]
    zp = s0  # next channel whose dz is to be decided
    xp = s0  # next channel whose dx is to be decided
    for done in range(s0 + 1, s1 + 1):  # channels [s0, done) are summed
        _sums_cf(gf, xf, n, done - 1, done, c_, s_, m, da)
        while zp < s1:
            if span[zp, 0] < s0 or span[zp, 1] >= s1:
                zdone[n, zp] = False
            elif span[zp, 1] < done:
                _dz(w, src, bias, has_bias, hard, n, zp, zp + 1, m, da, a, dz)
                zdone[n, zp] = True
            else:
                break
            zp += 1
        while xp < zp:
            if span[xp, 2] < s0 or span[xp, 3] >= s1:
                xdone[n, xp] = False
            elif span[xp, 3] >= zp:
                break
            else:
                ready = True
                for j in range(rd.shape[1]):  # its own tap included: a[n, xp] is known
                    if rd[xp, j] >= 0 and not zdone[n, rd[xp, j]]:
                        ready = False
                if ready:
                    _dx_cf(g, dx, w, rd, stream, n, xp, xp + 1, a, dz)
                xdone[n, xp] = ready
            xp += 1


@_jit(parallel=True)
def _backward_cf(x, g, w, src, rd, span, bias, has_bias, hard, mode, wave, chunk, stream,
                 dx, m, dz):
    """Channels-first backward: dx (N, C, S) and the m, dz (N, C) the weight gradient needs."""
    n_, c_, s_ = x.shape
    xf = x.reshape(x.size)
    gf = g.reshape(g.size)
    da = np.empty((n_, c_))
    a = np.empty((n_, c_))
    zdone = np.zeros((n_, c_), dtype=np.bool_)
    xdone = np.zeros((n_, c_), dtype=np.bool_)
    if mode == _SAMPLES:  # a sample fits in cache: sweep it twice
        for n in prange(n_):
            _sums_cf(gf, xf, n, 0, c_, c_, s_, m, da)
            _dz(w, src, bias, has_bias, hard, n, 0, c_, m, da, a, dz)
            _dx_cf(g, dx, w, rd, stream, n, 0, c_, a, dz)
    elif mode == _PIPELINED_SAMPLES:  # a whole sample per item; only circular wraps wait
        for n in prange(n_):
            _pipeline_cf(g, x, gf, xf, w, src, rd, span, bias, has_bias, hard, stream, n, 0,
                         c_, m, da, a, dz, dx, zdone, xdone)
            for c in range(c_):
                if not zdone[n, c]:
                    _dz(w, src, bias, has_bias, hard, n, c, c + 1, m, da, a, dz)
            for c in range(c_):
                if not xdone[n, c]:
                    _dx_cf(g, dx, w, rd, stream, n, c, c + 1, a, dz)
    else:  # large samples: pipelined segments of `chunk` channels, then the segment edges
        per = (c_ + chunk - 1) // chunk
        for n0 in range(0, n_, wave):
            items = min(wave, n_ - n0) * per
            for i in prange(items):
                n = n0 + i // per
                c0 = (i % per) * chunk
                _pipeline_cf(g, x, gf, xf, w, src, rd, span, bias, has_bias, hard, stream, n,
                             c0, min(c_, c0 + chunk), m, da, a, dz, dx, zdone, xdone)
            for i in prange(items):
                n = n0 + i // per
                for c in range((i % per) * chunk, min(c_, (i % per) * chunk + chunk)):
                    if not zdone[n, c]:
                        _dz(w, src, bias, has_bias, hard, n, c, c + 1, m, da, a, dz)
            for i in prange(items):
                n = n0 + i // per
                for c in range((i % per) * chunk, min(c_, (i % per) * chunk + chunk)):
                    if not xdone[n, c]:
                        _dx_cf(g, dx, w, rd, stream, n, c, c + 1, a, dz)


@_jit(parallel=True)
def _backward_cl(x, g, w, src, rd, bias, has_bias, hard, mode, wave, chunk, sb, dx, m, dz):
    """Channels-last backward on (N, S, C) arrays, items as in _forward_cl."""
    n_, s_, c_ = x.shape
    da = np.empty((n_, c_))
    a = np.empty((n_, c_))
    t = np.empty((n_, c_))
    if mode == _SAMPLES:
        for n in prange(n_):
            for c0 in range(0, c_, chunk):
                _sums_cl(g, x, n, c0, min(c_, c0 + chunk), m, da)
            _dz(w, src, bias, has_bias, hard, n, 0, c_, m, da, a, dz)
            _dm_cl(w, rd, n, 0, c_, s_, dz, t)
            _dx_cl(g, dx, n, 0, s_, a, t)
    else:
        per_c = (c_ + chunk - 1) // chunk
        per_s = (s_ + sb - 1) // sb
        for n0 in range(0, n_, wave):
            wn = min(wave, n_ - n0)
            for i in prange(wn * per_c):
                n = n0 + i // per_c
                c0 = (i % per_c) * chunk
                _sums_cl(g, x, n, c0, min(c_, c0 + chunk), m, da)
            for i in prange(wn * per_c):
                n = n0 + i // per_c
                c0 = (i % per_c) * chunk
                _dz(w, src, bias, has_bias, hard, n, c0, min(c_, c0 + chunk), m, da, a, dz)
            for i in prange(wn * per_c):
                n = n0 + i // per_c
                c0 = (i % per_c) * chunk
                _dm_cl(w, rd, n, c0, min(c_, c0 + chunk), s_, dz, t)
            for i in prange(wn * per_s):
                n = n0 + i // per_s
                s0 = (i % per_s) * sb
                _dx_cl(g, dx, n, s0, min(s_, s0 + sb), a, t)


@_jit(parallel=True)
def _parameter_grads(m, dz, w, src, per_channel, dw, db):
    """dw = sum_n dz[n, c] * m~[n, c + j - p] over n (and c for a shared kernel); db = sum dz.

    One channel per work item with n in order, then (shared kernel, bias) the per-channel
    partial sums added in channel order: a fixed order whatever the thread count."""
    n_, c_ = dz.shape
    k = w.shape[1]
    part = np.empty((c_, k))
    db_c = np.empty(c_)
    for c in prange(c_):  # each item owns its row of part and its db_c: no shared sum
        for j in range(k):
            sj = src[c, j]
            tap = 0.0
            if sj >= 0:
                for n in range(n_):
                    tap += dz[n, c] * m[n, sj]
            else:  # a zero pad: dz * 0, NaN where dz is not finite, as in the reference
                for n in range(n_):
                    tap += dz[n, c] * 0.0
            part[c, j] = tap
        ones = 0.0
        for n in range(n_):
            ones += dz[n, c]
        db_c[c] = ones
    if per_channel:
        dw[:, :] = part
    else:
        for j in range(k):
            total = 0.0
            for c in range(c_):
                total += part[c, j]
            dw[0, j] = total
    bias_total = 0.0
    for c in range(c_):
        bias_total += db_c[c]
    db[0] = bias_total


# --- the wrappers: choose views, the schedule and staging, then call the kernels ------------

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
        # (C, k) per-channel kernels, or (1, k) shared
        self.w = np.ascontiguousarray(problem.weight, dtype=np.float64).reshape(-1, problem.k)
        self.src, self.rd, self.span = _taps(self.c, problem.k, self.c // problem.groups,
                                             problem.padding == "circular")
        self.bias = 0.0 if problem.bias is None else float(problem.bias)
        self.has_bias = problem.bias is not None
        self.hard = problem.gate == "hard_sigmoid"

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
        threads = numba.get_num_threads()
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
            chunk = min(c, _MAX_BLOCK if mode == _SAMPLES else max(16, min(_MAX_BLOCK, chunk)))
        elif pipelined:
            chunk = _ceil(c, _SEGMENTS_PER_THREAD * threads)
        else:
            chunk = min(c, _ceil(wave * c, target))
        return mode, wave, chunk, min(s, _ceil(wave * s, target))

    def forward_chunk(self, n: int, itemsize: int) -> int:
        """Channels per item of the channels-first forward: whole samples when they are
        small and numerous enough to keep every thread busy; else every sample split into
        a multiple of the thread count of items of at most about _CHUNK_BYTES (so an item
        is still in L2 when it is scaled) with as few halo channels as that allows."""
        threads = numba.get_num_threads()
        sample = self.c * self.s * itemsize
        if sample <= _PER_SAMPLE_BYTES and (n % threads == 0 or n >= 4 * threads):
            return self.c
        per = threads * _ceil(sample, threads * _CHUNK_BYTES)
        return _ceil(self.c, min(per, self.c))

    def forward(self, x, y, m, z, a) -> None:
        """The forward kernel on C-contiguous x and y of one dtype."""
        if self.channels_last:
            mode, wave, chunk, sb = self.schedule(x.shape[0], x.dtype.itemsize)
            _forward_cl(self.view3(x), self.w, self.src, self.bias, self.has_bias, self.hard,
                        mode, wave, chunk, sb, self.view3(y), m, z, a)
        else:
            # in place (out is x): wave > 0 asks for pooling before scaling (see the kernel)
            wave = self.schedule(x.shape[0], x.dtype.itemsize)[1] if \
                np.may_share_memory(x, y) else 0
            _forward_cf(self.view3(x), self.w, self.src, self.bias, self.has_bias, self.hard,
                        self.forward_chunk(x.shape[0], x.dtype.itemsize), wave,
                        self.stream(y), self.view3(y), m, z, a)

    def backward(self, x, g, dx, m, dz) -> None:
        """The backward kernel on C-contiguous x, g and dx of one dtype."""
        if self.channels_last:
            mode, wave, chunk, sb = self.schedule(x.shape[0], x.dtype.itemsize)
            _backward_cl(self.view3(x), self.view3(g), self.w, self.src, self.rd, self.bias,
                         self.has_bias, self.hard, mode, wave, chunk, sb,
                         self.view3(dx), m, dz)
        else:
            mode, wave, chunk, _ = self.schedule(x.shape[0], x.dtype.itemsize, pipelined=True)
            _backward_cf(self.view3(x), self.view3(g), self.w, self.src, self.rd, self.span,
                         self.bias, self.has_bias, self.hard, mode, wave, chunk,
                         self.stream(dx), self.view3(dx), m, dz)

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


def _fast(*arrays: np.ndarray) -> bool:
    """True when every array is C-contiguous float32/float64 of one dtype: no staging."""
    dtype = arrays[0].dtype
    return dtype in _FAST_DTYPES and all(a.flags.c_contiguous and a.dtype == dtype
                                         for a in arrays)


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
        if part.flags.c_contiguous and part.dtype == self.dtype:
            return part
        buf = self._buffer(name, self.dtype)[:n1 - n0]
        np.copyto(buf, part)  # float16 -> float32 and float32 -> float64 are exact
        return buf

    def result(self, out: np.ndarray, n0: int, n1: int) -> tuple[np.ndarray, bool]:
        """Where the kernel writes out[n0:n1]: out itself when it can, else a buffer of the
        compute dtype (float64 whenever out's dtype differs, so out is rounded once); and
        whether the buffer must be copied to out afterwards."""
        part = out[n0:n1]
        if part.flags.c_contiguous and part.dtype == self.dtype:
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
    x = problem.x
    y = np.empty(x.shape, dtype=x.dtype) if out is None else out
    m = np.empty((call.n, call.c))
    z = np.empty_like(m)
    a = np.empty_like(m)
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
    x, g = problem.x, grad_out
    dx = np.empty(x.shape, dtype=x.dtype) if out is None else out
    m = np.empty((call.n, call.c))
    dz = np.empty_like(m)
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
    _parameter_grads(m, dz, call.w, call.src, per_channel, dw, db)
    dbias = None
    if problem.bias is not None:
        dbias = np.asarray(db[0], dtype=problem.bias_dtype).reshape(problem.bias_shape)
    return ECAGrads(x=dx, weight=dw.astype(problem.weight_dtype).reshape(problem.weight_shape),
                    bias=dbias)
