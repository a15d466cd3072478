"""SIMD building blocks written in LLVM IR: the lane sum (a float64 sum in a fixed order,
bit-identical on every CPU) and streaming (non-temporal) stores.

Arrays are float32, float64 or uint16; uint16 holds bfloat16 bit patterns (the upper half
of a float32). A bfloat16 element is widened by a shift (exact), and a float64 result is
rounded to bfloat16 once, to nearest even, with the same results as
npeca._bfloat16.round_bits by a cheaper route (see _bfloat16_bits).

Numba has no vector types; these intrinsics emit LLVM vector code directly, which LLVM then
lowers to AVX2 or AVX-512 (or SSE2) for the CPU it compiles for. Nothing here chooses a
schedule or touches Python objects: each intrinsic is inlined at its call site in a kernel.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["LANES", "COLUMNS", "lane_sum", "lane_sum2", "column_lane_sums", "stream_scale",
           "stream_scale_add", "stream_scale_columns", "stream_scale_add_columns", "scale_row",
           "scale_add_row", "stream_fence", "float_bits", "bits_float"]

LANES = 16  # float64 accumulators per sum: two AVX-512 or four AVX2 registers
#: Columns summed at once by column_lane_sums: a 64-byte line of float32, as LANES float64
#: vectors of COLUMNS of which one pass down the columns keeps half, 16 AVX-512 registers (32
#: AVX2 registers, of which LLVM keeps half in L1: still no L2 traffic)
COLUMNS = LANES

# --- the lane sum: an explicit SIMD reduction in a fixed order ------------------------------

_STORAGE = (types.float32, types.float64, types.uint16)  # uint16: bfloat16 patterns


def _elem(dtype):
    """The LLVM type of a float32, float64 or bfloat16 (uint16) element."""
    if dtype == types.uint16:
        return ir.IntType(16)
    return ir.FloatType() if dtype == types.float32 else ir.DoubleType()


def _like(value, elem):
    """``elem``, or a vector of it as long as ``value`` when ``value`` is a vector."""
    if isinstance(value.type, ir.VectorType):
        return ir.VectorType(elem, value.type.count)
    return elem


def _const(value, elem, number):
    """The constant ``number`` of type ``elem``, splat like ``value``."""
    ty = _like(value, elem)
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [number] * ty.count)
    return ir.Constant(ty, number)


def _widen(builder, vec, dtype):
    """Elements (a vector or one) of float32, float64 or bfloat16 as float64 (exact)."""
    if dtype == types.uint16:  # bfloat16 -> float32 is a shift of the bit pattern
        i32 = builder.zext(vec, _like(vec, ir.IntType(32)))
        f32 = builder.bitcast(builder.shl(i32, _const(i32, ir.IntType(32), 16)),
                              _like(vec, ir.FloatType()))
        return builder.fpext(f32, _like(vec, ir.DoubleType()))
    if dtype == types.float32:
        return builder.fpext(vec, _like(vec, ir.DoubleType()))
    return vec


def _bfloat16_bits(builder, v):
    """float64 ``v`` (a vector or one) rounded once to bfloat16, to nearest even, as i16 bit
    patterns; the same results as npeca._bfloat16.round_bits (tests/test_bfloat16.py
    compares them on every midpoint and its neighbours).

    Where bfloat16 is normal and v finite (2^-126 <= |v| < inf, nearly always), to nearest
    even on the float64 bits directly: bfloat16 keeps 7 of float64's 52 fraction bits, so
    add 2^44 - 1 (half the dropped place, less one) plus the last kept bit and clear the 45
    bits below it (a carry into the exponent is the next binade; 2^128 becomes inf in the
    conversion below). Only when some element of the vector is below 2^-126, infinite or
    NaN does a second block run: there the spacing is fixed at 2^-133, and
    (v + 1.5 * 2^-81) - 1.5 * 2^-81 rounds v to it exactly (the sum's ulp is 2^-133; v's
    sign is put back on a zero); infinities keep their bits and NaN becomes the quiet NaN
    of its sign. Either way the result is a bfloat16, so converting it to float32 is exact,
    and the upper 16 bits of that float32 are the answer."""
    i64, i32, i16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
    bits = builder.bitcast(v, _like(v, i64))
    lsb = builder.and_(builder.lshr(bits, _const(bits, i64, 45)), _const(bits, i64, 1))
    up = builder.add(bits, builder.add(_const(bits, i64, (1 << 44) - 1), lsb))
    normal = builder.bitcast(builder.and_(up, _const(bits, i64, ~((1 << 45) - 1))), v.type)

    def upper_half(r):  # a float64 that is a bfloat16 -> its 16-bit pattern
        f = builder.bitcast(builder.fptrunc(r, _like(v, ir.FloatType())), _like(v, i32))
        return builder.trunc(builder.lshr(f, _const(f, i32, 16)), _like(v, i16))

    result = cgutils.alloca_once(builder, _like(v, i16))
    builder.store(upper_half(normal), result)
    magnitude = builder.and_(bits, _const(bits, i64, (1 << 63) - 1))
    special = builder.or_(
        builder.icmp_unsigned("<", magnitude, _const(bits, i64, (1023 - 126) << 52)),
        builder.icmp_unsigned(">=", magnitude, _const(bits, i64, 0x7FF << 52)))
    if isinstance(v.type, ir.VectorType):  # any lane special: one test per vector
        count = v.type.count
        special_any = builder.icmp_unsigned(
            "!=", builder.bitcast(special, ir.IntType(count)), ir.Constant(ir.IntType(count), 0))
    else:
        special_any = special
    with builder.if_then(special_any, likely=False):
        magic = _const(v, ir.DoubleType(), 1.5 * 2.0 ** -81)
        tiny = builder.fsub(builder.fadd(v, magic), magic)  # +0 for a small negative v
        tiny = builder.bitcast(builder.or_(builder.bitcast(tiny, bits.type),
                                           builder.and_(bits, _const(bits, i64, 1 << 63))),
                               v.type)
        small = builder.icmp_unsigned("<", magnitude, _const(bits, i64, (1023 - 126) << 52))
        r = builder.select(small, tiny, builder.select(special, v, normal))  # inf as it is
        sign = builder.trunc(builder.lshr(bits, _const(bits, i64, 48)), _like(v, i16))
        quiet = builder.or_(builder.and_(sign, _const(sign, i16, 0x8000)),
                            _const(sign, i16, 0x7FC0))
        nan = builder.fcmp_unordered("uno", v, v)  # true only for NaN
        builder.store(builder.select(nan, quiet, upper_half(r)), result)
    return builder.load(result)


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
                    builder.store(ir.Constant(buf_ty, [0] * LANES if d == types.uint16
                                              else [0.0] * LANES), buf)
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
    """True for a 1-D C-contiguous float32/float64/bfloat16 (uint16) array type."""
    return (isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
            and t.dtype in _STORAGE)


@intrinsic
def lane_sum(typingctx, x, start, count):
    """sum(x[start:start + count]) of a flat array, in float64 over LANES lanes and a fixed
    tree (the caller guarantees the range is inside x)."""
    if _is_flat(x) and isinstance(start, types.Integer) and isinstance(count, types.Integer):
        return types.float64(x, types.intp, types.intp), _lane_codegen
    return None


@intrinsic
def lane_sum2(typingctx, g, x, start, count):
    """(sum(x[r]), sum(g[r] * x[r])) for r = start:start + count, as _lane_sum."""
    if (_is_flat(g) and _is_flat(x) and g.dtype == x.dtype
            and isinstance(start, types.Integer) and isinstance(count, types.Integer)):
        return types.UniTuple(types.float64, 2)(g, x, types.intp, types.intp), _lane_codegen
    return None


def _column_codegen(context, builder, sig, args):
    """out[at:at + COLUMNS] = the lane sums of COLUMNS adjacent columns of ``count`` rows
    ``stride`` elements apart from x[start]: row r into lane r mod LANES, each lane in row
    order from +0.0, then _tree's order across the lanes. One float64 vector of COLUMNS per
    lane, in registers, so that no sum goes through memory.

    In two passes down the columns: the rows of lanes 0 to LANES/2 - 1 first, then those of
    the other half (their first step of the tree adds the two halves). A pass keeps LANES/2
    vectors of COLUMNS float64 (16 AVX-512 registers), and a row's COLUMNS elements (a whole
    64-byte line of float32) are read once, in one pass. Summing every lane in one pass
    needs twice the registers, and so took half a line per pass down the columns: an 8-way
    L1 (AMD EPYC) evicted a column's lines before the next pass down them when the rows were
    2 KiB or more apart (docs/performance.md, "Channels-last pooling in registers")."""
    x_ty, out_ty = sig.args[0], sig.args[4]
    x = context.make_array(x_ty)(context, builder, args[0])
    out = context.make_array(out_ty)(context, builder, args[4])
    start, stride, count, at = args[1], args[2], args[3], args[5]
    intp = count.type
    half = LANES // 2
    vec = ir.VectorType(ir.DoubleType(), COLUMNS)
    row_ptr = ir.VectorType(_elem(x_ty.dtype), COLUMNS).as_pointer()
    accs = [cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * COLUMNS))
            for _ in range(LANES)]
    lanes = ir.Constant(intp, LANES)

    def add(lane, row):  # acc[lane] += x[start + row * stride:][:COLUMNS] (in float64)
        ptr = builder.gep(x.data, [builder.add(start, builder.mul(row, stride))])
        v = _widen(builder, builder.load(builder.bitcast(ptr, row_ptr),
                                         align=x_ty.dtype.bitwidth // 8), x_ty.dtype)
        builder.store(builder.fadd(builder.load(accs[lane]), v), accs[lane])

    blocks = builder.udiv(count, lanes)
    first = builder.mul(blocks, lanes)
    rest = builder.sub(count, first)
    for lo in (0, half):  # the two passes, each over its half of the lanes
        with cgutils.for_range(builder, blocks) as loop:  # LANES rows at a time
            base = builder.mul(loop.index, lanes)
            for lane in range(lo, lo + half):
                add(lane, builder.add(base, ir.Constant(intp, lane)))
        for lane in range(lo, min(lo + half, LANES - 1)):  # the last count mod LANES rows
            with builder.if_then(builder.icmp_unsigned(">", rest, ir.Constant(intp, lane))):
                add(lane, builder.add(first, ir.Constant(intp, lane)))
    width = LANES
    while width > 1:  # _tree, for COLUMNS columns at once
        width //= 2
        for lane in range(width):
            builder.store(builder.fadd(builder.load(accs[lane]),
                                       builder.load(accs[lane + width])), accs[lane])
    builder.store(builder.load(accs[0]),
                  builder.bitcast(builder.gep(out.data, [at]), vec.as_pointer()), align=8)
    return context.get_dummy_value()


@intrinsic
def column_lane_sums(typingctx, x, start, stride, count, out, at):
    """out[at + j] = sum of x[start + r * stride + j] over r in range(count), for j in
    range(COLUMNS), with the bits of lane_sum on that column (see _column_codegen; the caller
    guarantees every index is inside x and out). x is a flat float32 or float64 array, out a
    writeable C-contiguous float64 one (the results are stored as one vector)."""
    if (_is_flat(x) and x.dtype != types.uint16 and isinstance(out, types.Array)
            and out.ndim == 1 and out.layout == "C" and out.mutable
            and out.dtype == types.float64):
        return (types.void(x, types.intp, types.intp, types.intp, out, types.intp),
                _column_codegen)
    return None


# --- streaming stores: results that would not stay in cache go around it -------------------

def _splat(builder, value):
    """A LANES-vector of one float64."""
    vec = ir.VectorType(ir.DoubleType(), LANES)
    one = builder.insert_element(ir.Constant(vec, None), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vec, None),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


def _stream_codegen(context, builder, sig, args):
    """dst[r] = a * src[r] (+ t) with streaming stores: _scale_codegen(nontemporal=True)."""
    return _scale_codegen(context, builder, sig, args, nontemporal=True)


def _row_codegen(context, builder, sig, args):
    """dst[r] = a * src[r] (+ t) with ordinary stores: _scale_codegen(nontemporal=False)."""
    return _scale_codegen(context, builder, sig, args, nontemporal=False)


def _scale_codegen(context, builder, sig, args, nontemporal):
    """dst[r] = a * src[r] (+ t) for r = start:start + count: _scale_loop with one a (and t)
    for every element."""
    a = args[4]
    t = args[5] if len(args) == 6 else None

    def factors(i, vector):  # the same a (and t) for every element
        if not vector:
            return a, t
        return _splat(builder, a), None if t is None else _splat(builder, t)
    _scale_loop(context, builder, sig, args, nontemporal, factors)
    return context.get_dummy_value()


def _columns_codegen(context, builder, sig, args):
    """dst[r] = a[at + r - start] * src[r] (+ t[at + r - start]) for r = start:start +
    count, with streaming stores: _scale_loop with a (and t) read from float64 arrays, one
    factor per element (a channels-last row: one per channel)."""
    with_t = len(args) == 7  # (dst, src, start, count, a, t, at)
    arrays = [context.make_array(sig.args[4 + k])(context, builder, args[4 + k]).data
              for k in range(2 if with_t else 1)]
    at = args[-1]
    vec_ptr = ir.VectorType(ir.DoubleType(), LANES).as_pointer()

    def factors(i, vector):  # a[at + i] (and t[at + i]): one element or LANES of them
        got = []
        for data in arrays:
            ptr = builder.gep(data, [builder.add(at, i)])
            got.append(builder.load(builder.bitcast(ptr, vec_ptr), align=8) if vector
                       else builder.load(ptr))
        return got[0], got[1] if with_t else None
    _scale_loop(context, builder, sig, args, True, factors)
    return context.get_dummy_value()


def _scale_loop(context, builder, sig, args, nontemporal, factors):
    """dst[r] = a * src[r] (+ t) for r = start:start + count (args: dst, src, start, count,
    ...), each element computed in float64 and rounded once to dst's dtype, exactly as a
    plain loop does, LANES elements per vector and the last count mod LANES one at a time;
    ``factors(i, vector)`` gives a and t (or None) for the element i - or, with ``vector``,
    the LANES elements from i - counted from start. ``nontemporal``: whole vectors of
    dst that start on a 64-byte boundary are written with non-temporal stores (they bypass
    the caches: no read-for-ownership of dst), the first few elements one at a time until
    that boundary. Otherwise a short row (a 7x7 map: 49 elements) costs three vectors and
    one element, where a compiler's loop would check aliasing and unroll past it."""
    dst_ty, src_ty = sig.args[0], sig.args[1]
    dst = context.make_array(dst_ty)(context, builder, args[0])
    src = context.make_array(src_ty)(context, builder, args[1])
    start, count = args[2], args[3]
    intp = count.type
    d_elem, s_elem = _elem(dst_ty.dtype), _elem(src_ty.dtype)
    d_size = dst_ty.dtype.bitwidth // 8

    def value(x, a_, t_):
        x = _widen(builder, x, src_ty.dtype)
        y = builder.fmul(x, a_)  # the plain loops' order: (x * a) + t, no fused multiply-add
        if t_ is not None:
            y = builder.fadd(y, t_)
        if dst_ty.dtype == types.float32:
            y = builder.fptrunc(y, _like(y, d_elem))
        elif dst_ty.dtype == types.uint16:
            y = _bfloat16_bits(builder, y)
        return y

    d0 = builder.gep(dst.data, [start])
    s0 = builder.gep(src.data, [start])

    def scalar(i):
        builder.store(value(builder.load(builder.gep(s0, [i])), *factors(i, False)),
                      builder.gep(d0, [i]))

    peel = ir.Constant(intp, 0)
    if nontemporal:
        misaligned = builder.and_(builder.ptrtoint(d0, intp), ir.Constant(intp, 63))
        peel = builder.udiv(builder.and_(builder.sub(ir.Constant(intp, 64), misaligned),
                                         ir.Constant(intp, 63)), ir.Constant(intp, d_size))
        peel = builder.select(builder.icmp_unsigned("<", count, peel), count, peel)
        with cgutils.for_range(builder, peel) as loop:
            scalar(loop.index)
    lanes = ir.Constant(intp, LANES)
    blocks = builder.udiv(builder.sub(count, peel), lanes)
    hint = builder.module.add_metadata([ir.IntType(32)(1)])
    with cgutils.for_range(builder, blocks) as loop:
        i = builder.add(peel, builder.mul(loop.index, lanes))
        x = builder.load(builder.bitcast(builder.gep(s0, [i]),
                                         ir.VectorType(s_elem, LANES).as_pointer()),
                         align=src_ty.dtype.bitwidth // 8)
        store = builder.store(value(x, *factors(i, True)),
                              builder.bitcast(builder.gep(d0, [i]),
                                              ir.VectorType(d_elem, LANES).as_pointer()),
                              # whole vectors from a 64-byte boundary: each one is aligned
                              # to its own size, up to 64 (bfloat16: 32 bytes)
                              align=min(64, LANES * d_size) if nontemporal else d_size)
        if nontemporal:
            store.set_metadata("nontemporal", hint)
    with cgutils.for_range(builder, count, start=builder.add(peel, builder.mul(blocks, lanes))
                           ) as loop:
        scalar(loop.index)


@intrinsic
def stream_scale(typingctx, dst, src, start, count, a):
    """dst[start:start + count] = a * src[...] with streaming stores (see _stream_codegen)."""
    if _is_flat(dst) and _is_flat(src):
        return types.void(dst, src, types.intp, types.intp, types.float64), _stream_codegen
    return None


@intrinsic
def stream_scale_add(typingctx, dst, src, start, count, a, t):
    """dst[start:start + count] = a * src[...] + t with streaming stores."""
    if _is_flat(dst) and _is_flat(src):
        return (types.void(dst, src, types.intp, types.intp, types.float64, types.float64),
                _stream_codegen)
    return None


@intrinsic
def scale_row(typingctx, dst, src, start, count, a):
    """dst[start:start + count] = a * src[...] (see _scale_codegen)."""
    if _is_flat(dst) and _is_flat(src):
        return types.void(dst, src, types.intp, types.intp, types.float64), _row_codegen
    return None


@intrinsic
def scale_add_row(typingctx, dst, src, start, count, a, t):
    """dst[start:start + count] = a * src[...] + t (see _scale_codegen)."""
    if _is_flat(dst) and _is_flat(src):
        return (types.void(dst, src, types.intp, types.intp, types.float64, types.float64),
                _row_codegen)
    return None


def _factor_array(a) -> bool:
    """A C-contiguous 1-D float64 array (the intrinsics index its data directly)."""
    return (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and a.dtype == types.float64)


def _columns_args(dst, src, start, count, at) -> bool:
    """Flat arrays, a writeable dst and integer positions (as lane_sum asks)."""
    return (_is_flat(dst) and _is_flat(src) and dst.mutable
            and all(isinstance(v, types.Integer) for v in (start, count, at)))


@intrinsic
def stream_scale_columns(typingctx, dst, src, start, count, a, at):
    """dst[start + j] = a[at + j] * src[start + j] for j in range(count), with streaming
    stores (see _columns_codegen): a channels-last row, one factor per channel. a: a flat
    float64 array."""
    if _columns_args(dst, src, start, count, at) and _factor_array(a):
        return types.void(dst, src, types.intp, types.intp, a, types.intp), _columns_codegen
    return None


@intrinsic
def stream_scale_add_columns(typingctx, dst, src, start, count, a, t, at):
    """dst[start + j] = a[at + j] * src[start + j] + t[at + j] for j in range(count), with
    streaming stores. a, t: flat float64 arrays."""
    if _columns_args(dst, src, start, count, at) and _factor_array(a) and _factor_array(t):
        return (types.void(dst, src, types.intp, types.intp, a, t, types.intp),
                _columns_codegen)
    return None


@intrinsic
def stream_fence(typingctx):
    """Order the streaming stores before everything after (they are weakly ordered)."""
    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.void(), codegen



# --- the bits of a float64: how _items._exp_nonpositive scales by a power of two ------------

@intrinsic
def float_bits(typingctx, x):
    """The 64 bits of a float64 as an int64 (a bitcast: no rounding, NaN included)."""
    if x == types.float64:
        return types.int64(types.float64), \
            lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(64))
    return None


@intrinsic
def bits_float(typingctx, i):
    """The float64 whose 64 bits are the int64 i (a bitcast)."""
    if isinstance(i, types.Integer):
        return types.float64(types.int64), \
            lambda context, builder, sig, args: builder.bitcast(args[0], ir.DoubleType())
    return None
