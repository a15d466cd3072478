"""The work of one item: per-channel helpers (logit, gate, transposed correlation) and the
pooling, scaling and gradient loops over a sample and a range of its channels or positions.

Every function here is serial and trusts its arguments; :mod:`._kernels` hands out items,
and the package's ``forward``/``backward`` choose the schedule. The arithmetic of each
formula lives here once (docs/math.md names each formula; docs/design.md maps them here).
"""

from __future__ import annotations

import math

import numpy as np

from ._compile import jit as _jit
from ._simd import COLUMNS, LANES
from ._simd import column_lane_sums as _column_lane_sums
from ._simd import bits_float as _bits_float
from ._simd import float_bits as _float_bits
from ._simd import lane_sum as _lane_sum
from ._simd import lane_sum2 as _lane_sum2
from ._simd import scale_add_row as _scale_add_row
from ._simd import scale_row as _scale_row
from ._simd import stream_fence as _stream_fence
from ._simd import stream_scale as _stream_scale
from ._simd import stream_scale_add as _stream_scale_add
from ._simd import stream_scale_add_columns as _stream_scale_add_columns
from ._simd import stream_scale_columns as _stream_scale_columns

#: Positions added to a row of sums per load and store of it (_pool_rows, _add_run): the
#: positions s, s + LANES, ..., s + (_RUN_ROWS - 1) LANES of one lane, written out one by
#: one in _add_run and _add_run2 (the same additions in the same order as one position at a
#: time), which therefore take exactly 4.
_RUN_ROWS = 4
#: Channels-last columns of at most this many positions (maps up to 7x7) are pooled COLUMNS
#: at a time with their lane sums in registers (_simd.column_lane_sums): a pass down a block
#: of columns then touches only a few cache lines per lane. Longer columns, which have a
#: whole run of _RUN_ROWS positions in every lane, are pooled row by row into LANES rows of
#: sums in memory (_pool_rows), which reads x in order. Measured on AMD EPYC
#: (benchmarks/pooling.py, docs/performance.md): 49 positions (no whole run in a lane) pool
#: faster in registers, 64 about as fast either way, 196 and more faster in runs; so the
#: registers take the columns whose lanes have no whole run. The backward's sums of x and
#: g * x are always row by row (_sums_cl): twice the sums do not fit in the registers, and
#: reading two arrays down their columns measured no faster on 32 samples of 49 x 2048.
_REGISTER_ROWS = _RUN_ROWS * LANES - 1

# --- small per-channel helpers --------------------------------------------------------------

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
def _group_run(c0, c1, g0, cg, left, right):
    """(a, b, lo, hi) for the group of cg channels that starts at channel g0: [a, b) is its
    part of [c0, c1), and [lo, hi) the channels of that part at least ``left`` channels
    from the group's first and ``right`` from its last (those whose taps all fall inside
    the group; _dms and _tap_products do them tap by tap over the run)."""
    a = max(c0, g0)
    b = min(c1, g0 + cg)
    lo = min(b, max(a, g0 + left))
    hi = max(lo, min(b, g0 + cg - right))
    return a, b, lo, hi


@_jit()
def _logits(m_row, w, src, cg, c0, c1, bias, has_bias, z_row):
    """z_row[c] = _logit(m_row, w, src, c, bias, has_bias) for c in [c0, c1), the same
    values (bit for bit; only which NaN a sum of NaNs of both signs keeps may differ), tap
    by tap over each group's part of the range, in loops that vectorize. The means the part
    reads, pads included, are first copied into one row (``padded``): tap j of its i-th
    channel reads padded[i + j], a zero pad 0.0 (w * 0.0, NaN for an infinite or NaN tap,
    as the reference) and a circular pad the mean src names. So the channels at the edges of
    a group need no code of their own, and a first call compiles no _logit or _group_run."""
    k = w.shape[1]
    p = (k - 1) // 2
    padded = np.empty(min(c1 - c0, cg) + k - 1)
    g0 = c0 - c0 % cg
    while g0 < c1:
        a = c0 if c0 > g0 else g0  # the group's part of [c0, c1): [a, b)
        b = c1 if c1 < g0 + cg else g0 + cg
        n = b - a + k - 1  # padded[q] holds m~ at channel a - p + q
        off = a - g0 - p  # ... which is off + q channels from the group's first
        h = min(n, max(0, -off))  # q < h: before the group's first channel (src[g0, j])
        e = max(h, min(n, cg - off))  # q >= e: past its last (src[g0 + cg - 1, j])
        for q in range(h):
            s = src[g0, off + q + p]
            padded[q] = m_row[s] if s >= 0 else 0.0
        pr = padded[h:e]  # views and loops from 0, as in _pool_cl
        mr = m_row[g0 + off + h:g0 + off + e]
        for i in range(e - h):
            pr[i] = mr[i]
        for q in range(e, n):
            s = src[g0 + cg - 1, off + q - cg + 1 + p]
            padded[q] = m_row[s] if s >= 0 else 0.0
        zr = z_row[a:b]
        for i in range(b - a):
            zr[i] = 0.0
        for j in range(k):
            pj = padded[j:j + b - a]
            if w.shape[0] == 1:
                wj = w[0, j]
                for i in range(b - a):
                    zr[i] += wj * pj[i]
            else:
                wr = w[a:b, j]
                for i in range(b - a):
                    zr[i] += wr[i] * pj[i]
        if has_bias:
            for i in range(b - a):
                zr[i] += bias
        g0 += cg


@_jit()
def _dms(dz_row, w, rd, cg, c0, c1, s_, t_part):
    """t_part[c - c0] = _dm(dz_row, w, rd, c) / s_ for c in [c0, c1), the same values: the
    channels that every tap reads from inside their group (r = c - j + p) tap by tap over
    the run; the channels at the edges of a group one by one (_dm)."""
    k = w.shape[1]
    p = (k - 1) // 2
    g0 = c0 - c0 % cg
    while g0 < c1:
        a, b, lo, hi = _group_run(c0, c1, g0, cg, k - 1 - p, p)  # every r = c - j + p inside
        for c in range(a, lo):
            t_part[c - c0] = _dm(dz_row, w, rd, c) / s_
        tr = t_part[lo - c0:hi - c0]
        for i in range(hi - lo):
            tr[i] = 0.0
        for j in range(k):
            dr = dz_row[lo - j + p:hi - j + p]
            if w.shape[0] == 1:
                wj = w[0, j]
                for i in range(hi - lo):
                    tr[i] += wj * dr[i]
            else:
                wr = w[lo - j + p:hi - j + p, j]
                for i in range(hi - lo):
                    tr[i] += wr[i] * dr[i]
        for i in range(hi - lo):
            tr[i] = tr[i] / s_
        for c in range(hi, b):
            t_part[c - c0] = _dm(dz_row, w, rd, c) / s_
        g0 += cg


@_jit()
def _channel_products(dz_row, m_row, src, c, part):
    """part[j, c] += dz_row[c] * m~[src[c, j]] for every tap j of one channel (a zero pad
    adds dz * 0, NaN where dz is not finite, as the reference)."""
    d = dz_row[c]
    for j in range(part.shape[0]):
        sj = src[c, j]
        if sj >= 0:
            part[j, c] += d * m_row[sj]
        else:
            part[j, c] += d * 0.0


@_jit(inline=True)
def _tap_products(dz_row, m_row, src, cg, c0, c1, part):
    """part[j, c] += dz_row[c] * m~[c + j - p] for c in [c0, c1) and every tap j (m~: m_row
    with its zero or circular pads; the terms of dL/dw): the channels whose taps all fall
    inside their group tap by tap over the run, loops that vectorize; the channels at the
    edges of a group one by one (_channel_products)."""
    k = part.shape[0]
    p = (k - 1) // 2
    g0 = c0 - c0 % cg
    while g0 < c1:
        a, b, lo, hi = _group_run(c0, c1, g0, cg, p, k - 1 - p)
        for c in range(a, lo):
            _channel_products(dz_row, m_row, src, c, part)
        dr = dz_row[lo:hi]  # views and loops from 0, as in _pool_cl
        for j in range(k):
            pr = part[j, lo:hi]
            mr = m_row[lo + j - p:hi + j - p]
            for i in range(hi - lo):
                pr[i] += dr[i] * mr[i]
        for c in range(hi, b):
            _channel_products(dz_row, m_row, src, c, part)
        g0 += cg


# exp(x) for x <= 0: x = k ln2 + r with k = round(x / ln2) and |r| <= ln2 / 2; ln2 is split
# into _LN2_HI (32 significant bits, so k * _LN2_HI is exact for |k| < 2^21) and _LN2_LO;
# exp(r) is its Taylor polynomial of degree 13 (the remainder r^14 / 14! < 5e-18 relative);
# 2^k is built from its bits in two halves, so that a subnormal result is rounded once.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # 0x3FE62E42FEE00000
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI
_ROUND = 6755399441055744.0  # 1.5 * 2^52: t + _ROUND - _ROUND rounds t to an integer
_ROUND_BITS = 0x4338000000000000  # the bits of _ROUND
_T2, _T3, _T4, _T5, _T6, _T7, _T8, _T9, _T10, _T11, _T12, _T13 = (
    1.0 / math.factorial(i) for i in range(2, 14))  # 1 / i!, rounded to float64


@_jit()
def _exp_nonpositive(x):
    """exp(x) for x <= 0, -inf or NaN, within one ulp of the exact value (the tests compare
    it with math.exp and with 60-digit mpmath), in straight-line code with no call, so that
    a loop of gates vectorizes (libm's exp is a call per element). exp(-inf) = 0,
    exp(0) = 1 and NaN stays NaN; below -745.13 the result rounds to 0, as in libm."""
    x = x if not x < -746.0 else -746.0  # not <: NaN passes through
    t = x * _LOG2E + _ROUND
    kf = t - _ROUND  # k = round(x / ln2), in [-1076, 0]
    r = (x - kf * _LN2_HI) - kf * _LN2_LO
    q = ((((((_T13 * r + _T12) * r + _T11) * r + _T10) * r + _T9) * r + _T8) * r + _T7) * r
    q = ((((q + _T6) * r + _T5) * r + _T4) * r + _T3) * r + _T2  # (e^r - 1 - r) / r^2
    p = 1.0 + (r + (r * r) * q)  # the small terms first: 1 + r (1 + r q) is 1.16 ulp off
    k = _float_bits(t) - _ROUND_BITS  # k again, from the bits (no float -> int of a NaN)
    k1 = k >> 1
    k2 = k - k1  # 2^k = 2^k1 * 2^k2, each a normal float64 for k >= -1076
    return (p * _bits_float((k1 + 1023) << 52)) * _bits_float((k2 + 1023) << 52)


@_jit()
def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow, with full relative accuracy for z << 0."""
    e = _exp_nonpositive(-abs(z))
    # 1 / (1 + e) for z >= 0, else e / (1 + e) (also for NaN: NaN / NaN), written as a
    # select of the numerator rather than a branch: random signs mispredict a branch
    numerator = 1.0 if z >= 0 else e
    return numerator / (1.0 + e)


@_jit()
def _hard_sigmoid(z):
    """relu6(z + 3) / 6; NaN stays NaN."""
    t = z + 3.0
    if t < 0.0:
        t = 0.0
    elif t > 6.0:
        t = 6.0
    return t / 6.0


@_jit()
def _gates(z_row, a_row, c0, c1, hard):
    """a_row[c] = gate(z_row[c]) for c in [c0, c1): sigmoid, or relu6(z + 3) / 6 when
    ``hard`` (NaN stays NaN). Views and loops from 0, and ``hard`` tested once, outside the
    loops, as in _gates_and_grads."""
    zr = z_row[c0:c1]
    ar = a_row[c0:c1]
    if hard:
        for i in range(zr.shape[0]):
            ar[i] = _hard_sigmoid(zr[i])
    else:
        for i in range(zr.shape[0]):
            ar[i] = _sigmoid(zr[i])


@_jit()
def _gate_and_grad(z, hard):
    """(gate(z), gate'(z)) of one logit: _hard_gate_and_grad or _sigmoid_and_grad. For the
    channels one at a time (_dz_one); a loop over channels calls _gates_and_grads, which
    tests ``hard`` once, outside its loops."""
    if hard:
        return _hard_gate_and_grad(z)
    return _sigmoid_and_grad(z)


@_jit()
def _sigmoid_and_grad(z):
    """(sigmoid(z), sigmoid'(z)) = (a, a * sigmoid(-z)) (1 - a as sigmoid(-z) keeps its
    accuracy when a -> 1), both from the one exp(-|z|) that _sigmoid(z) and _sigmoid(-z)
    would each compute: the same bits, one exp instead of two."""
    e = _exp_nonpositive(-abs(z))
    a = (1.0 if z >= 0 else e) / (1.0 + e)
    return a, a * ((1.0 if -z >= 0 else e) / (1.0 + e))


@_jit()
def _hard_gate_and_grad(z):
    """(relu6(z + 3) / 6, its slope): 1/6 strictly inside (-3, 3), 0 elsewhere. Not _gates:
    the backward then compiles no _sigmoid (0.2 s, AMD EPYC)."""
    return _hard_sigmoid(z), (1.0 / 6.0 if z > -3.0 and z < 3.0 else 0.0)


@_jit()
def _gates_and_grads(an, dan, dzn, c0, c1, hard):
    """an[c] = gate(an[c]) (the logit before) and dzn[c] = dan[c] * gate'(that logit), for
    c in [c0, c1), in loops that vectorize. It takes both of two things: views indexed from
    0 (indexed from a run-time c0, each access keeps a test for a negative index), and
    ``hard`` tested once, outside the loops (the loop that tested it per channel, through
    _gate_and_grad, computed one sigmoid at a time; docs/performance.md, "Gate loops that
    vectorize again")."""
    ar = an[c0:c1]
    dr = dan[c0:c1]
    zr = dzn[c0:c1]
    if hard:
        for i in range(ar.shape[0]):
            ac, grad = _hard_gate_and_grad(ar[i])
            ar[i] = ac
            zr[i] = dr[i] * grad
    else:
        for i in range(ar.shape[0]):
            ac, grad = _sigmoid_and_grad(ar[i])
            ar[i] = ac
            zr[i] = dr[i] * grad


# --- the work of one item: a sample and a range of its channels or positions ----------------

@_jit(inline=True)
def _pool_cf(xf, n, c0, c1, c_, s_, m):
    """m[n, c] = mean of row (n, c) of the flat (N, C, S) array xf, for c in [c0, c1)."""
    for c in range(c0, c1):
        m[n, c] = _lane_sum(xf, (n * c_ + c) * s_, s_) / s_


@_jit(inline=True)
def _scale_cf(x, y, w, src, cg, bias, has_bias, hard, stream, n, c0, c1, m_row, z, a):
    """Logit, gate and y[n, c] = a * x[n, c] for the channels [c0, c1) of sample n, whose
    pooled means (those channels and the ones they read) are in m_row."""
    c_, s_ = x.shape[1], x.shape[2]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    zn, an = z[n], a[n]
    _logits(m_row, w, src, cg, c0, c1, bias, has_bias, zn)  # logits, gates, then rows:
    _gates(zn, an, c0, c1, hard)  # each loop simple and tight
    for c in range(c0, c1):
        ac = an[c]
        if stream:
            _stream_scale(yf, xf, (n * c_ + c) * s_, s_, ac)
        else:  # y = a * x in float64, rounded once to y's dtype
            _scale_row(yf, xf, (n * c_ + c) * s_, s_, ac)
    if stream:
        _stream_fence()


@_jit(inline=True)
def _forward_item_cf(x, xf, y, w, src, cg, span, bias, has_bias, hard, stream, n, c0, c1,
                     m, z, a):
    """The whole forward of the channels [c0, c1) of sample n, with no other item to wait
    for: the few channels outside the range that the convolution reads (its halo) are
    pooled here again, by the same lane sum, so their means have the same bits."""
    c_, s_ = x.shape[1], x.shape[2]
    _pool_cf(xf, n, c0, c1, c_, s_, m)
    m_row = m[n]
    if c0 > 0 or c1 < c_:  # the halo's means into a row of this item's own
        m_row = _halo_means(xf, n, c0, c1, c_, s_, m, src, span)
    _scale_cf(x, y, w, src, cg, bias, has_bias, hard, stream, n, c0, c1, m_row, z, a)


@_jit(inline=True)
def _halo_means(xf, n, c0, c1, c_, s_, m, src, span):
    """A row of C means for the channels [c0, c1) of sample n: theirs from m, those of the
    channels around them that their convolution reads pooled again here (the rest unset)."""
    m_row = np.empty(c_)
    for c in range(c0, c1):
        m_row[c] = m[n, c]
    lo, hi = c0, c1  # the channels the block reads: [lo, hi)
    for c in range(c0, c1):
        lo = min(lo, span[c, 0])
        hi = max(hi, span[c, 1] + 1)
    if hi - lo <= c1 - c0 + 2 * src.shape[1]:  # a contiguous halo on either side
        for c in range(lo, c0):
            m_row[c] = _lane_sum(xf, (n * c_ + c) * s_, s_) / s_
        for c in range(c1, hi):
            m_row[c] = _lane_sum(xf, (n * c_ + c) * s_, s_) / s_
    else:  # circular padding wraps around a group edge: the far channels one by one
        have = np.empty(c_)  # 1.0 where m_row[c] is set (float64, as m_row: no second
        for c in range(c_):  # allocation to compile for a first call)
            have[c] = 1.0 if c0 <= c < c1 else 0.0
        for c in range(c0, c1):
            for j in range(src.shape[1]):
                sj = src[c, j]
                if sj >= 0 and have[sj] == 0.0:
                    m_row[sj] = _lane_sum(xf, (n * c_ + sj) * s_, s_) / s_
                    have[sj] = 1.0
    return m_row


@_jit(inline=True)
def _sums_cf(gf, xf, n, c0, c1, c_, s_, m, da):
    """m[n, c] = mean x and da[n, c] = sum g * x over row (n, c), one read of both."""
    for c in range(c0, c1):
        sx, sgx = _lane_sum2(gf, xf, (n * c_ + c) * s_, s_)
        m[n, c] = sx / s_
        da[n, c] = sgx


@_jit()
def _dz(w, src, cg, bias, has_bias, hard, n, c0, c1, m, da, a, dz):
    """a = gate(z) and dz = da * gate'(z) for the channels [c0, c1) of sample n (the logits
    go to a first, then each is replaced by its gate)."""
    an, dzn, dan = a[n], dz[n], da[n]
    _logits(m[n], w, src, cg, c0, c1, bias, has_bias, an)
    _gates_and_grads(an, dan, dzn, c0, c1, hard)


@_jit()
def _dz_one(w, src, bias, has_bias, hard, n, c, m, da, a, dz):
    """_dz for the one channel c, with _logit (the formula _logits runs over ranges, with
    the same values as _logits says): the pipelined backward decides channels one at a
    time, and so compiles none of _logits' vector loops (docs/performance.md, "Where a
    first compile's time goes")."""
    ac, grad = _gate_and_grad(_logit(m[n], w, src, c, bias, has_bias), hard)
    a[n, c] = ac
    dz[n, c] = da[n, c] * grad


@_jit()
def _dx_one(g, dx, w, rd, stream, n, c, a, dz):
    """_dx_cf for the one channel c, with _dm (the formula _dms runs over ranges, the same
    values), for the pipelined backward as _dz_one."""
    c_, s_ = g.shape[1], g.shape[2]
    gf = g.reshape(g.size)
    dxf = dx.reshape(dx.size)
    t = _dm(dz[n], w, rd, c) / s_
    if stream:
        _stream_scale_add(dxf, gf, (n * c_ + c) * s_, s_, a[n, c], t)
        _stream_fence()
    else:  # dx = g * a + t in float64, rounded once
        _scale_add_row(dxf, gf, (n * c_ + c) * s_, s_, a[n, c], t)


@_jit()
def _dx_cf(g, dx, w, rd, cg, stream, n, c0, c1, a, dz):
    """dx[n, c] = g[n, c] * a + dm / S for the channels [c0, c1) of sample n."""
    c_, s_ = g.shape[1], g.shape[2]
    gf = g.reshape(g.size)
    dxf = dx.reshape(dx.size)
    t = np.empty(c1 - c0)  # dm / S of each channel of the range
    _dms(dz[n], w, rd, cg, c0, c1, s_, t)
    for c in range(c0, c1):
        ac = a[n, c]
        if stream:
            _stream_scale_add(dxf, gf, (n * c_ + c) * s_, s_, ac, t[c - c0])
        else:  # dx = g * a + t in float64, rounded once
            _scale_add_row(dxf, gf, (n * c_ + c) * s_, s_, ac, t[c - c0])
    if stream:
        _stream_fence()


@_jit(inline=True)
def _pool_cl(x, n, c0, c1, m_row):
    """m_row[c] = mean of column c of sample n of (N, S, C) x, for c in [c0, c1): position s
    into lane s mod LANES, then the tree of _lane_sum, so that the bits equal the
    channels-first ones (and do not depend on the range a column is pooled with, nor on
    whether its sums were in registers: see _REGISTER_ROWS).

    Short columns go COLUMNS at a time into registers from the first column whose elements
    start a 64-byte line, when every row starts at the same place in a line (C elements a
    whole number of lines): each block then reads whole lines. The columns before it, and
    those after the last whole block, are pooled row by row. Blocks that straddle lines
    (NumPy's large arrays start 16 bytes into a line) measured 2.4x slower on 32 samples of
    49 x 2048 on AMD EPYC than the same blocks on whole lines (benchmarks/pooling.py)."""
    s_ = x.shape[1]
    if s_ <= _REGISTER_ROWS:  # short columns: COLUMNS at a time, the sums in registers
        c_ = x.shape[2]
        xf = x.reshape(x.size)
        first = c0
        per_line = 64 // x.itemsize
        if c_ % per_line == 0:  # every row at the same offset in a line: align the blocks
            offset = (xf.ctypes.data // x.itemsize + (n * s_) * c_ + c0) % per_line
            first = min(c1, c0 + (per_line - offset) % per_line)
        b = first
        while b + COLUMNS <= c1:
            _column_lane_sums(xf, (n * s_) * c_ + b, c_, s_, m_row, b)
            for c in range(b, b + COLUMNS):
                m_row[c] = m_row[c] / s_
            b += COLUMNS
        if c0 < first:
            _pool_rows(x, n, c0, first, m_row)
        if b < c1:
            _pool_rows(x, n, b, c1, m_row)
        return
    _pool_rows(x, n, c0, c1, m_row)


@_jit()
def _pool_rows(x, n, c0, c1, m_row):
    """_pool_cl's columns [c0, c1) row by row: position s added into row s mod LANES of
    LANES rows of sums, then the tree (the same bits as in registers). Positions go
    _RUN_ROWS at a time into each row of sums (s, s + LANES, ...: the same additions in the
    same order), so that a row of sums is loaded and stored once per _RUN_ROWS rows of x,
    not once per row (_add_run)."""
    s_ = x.shape[1]
    acc = np.zeros((LANES, c1 - c0))
    s0 = 0  # the first position of a group of _RUN_ROWS positions per lane
    while s0 + _RUN_ROWS * LANES <= s_:
        for lane in range(LANES):
            _add_run(acc[lane], x[n], s0 + lane, c0, c1)
        s0 += _RUN_ROWS * LANES
    for s in range(s0, s_):  # the last positions, one at a time
        sums = acc[s % LANES]
        xr = x[n, s, c0:c1]  # a view and a loop from 0: numba then knows the index is not
        for j in range(c1 - c0):  # negative, drops the wrap-around test, and LLVM vectorizes
            sums[j] += np.float64(xr[j])
    _tree_columns(acc)
    for c in range(c0, c1):
        m_row[c] = acc[0, c - c0] / s_


@_jit()
def _add_run(lane, xs, s, c0, c1):
    """lane[j] += xs[s, c0 + j], then xs[s + LANES, c0 + j], ... for _RUN_ROWS (4)
    positions, one after the other in float64 as a row-by-row loop adds them (the positions
    of one lane of _pool_rows): one load and one store of the row of sums for 4 rows of xs
    (measured on AMD EPYC: pooling 1.4x to 1.6x faster on one sample of 56x56 to 14x14
    channels-last maps in cache, 1.4x to 2.1x on 32 samples, than one row of x at a time;
    benchmarks/pooling.py, docs/performance.md)."""
    x0 = xs[s, c0:c1]
    x1 = xs[s + LANES, c0:c1]
    x2 = xs[s + 2 * LANES, c0:c1]
    x3 = xs[s + 3 * LANES, c0:c1]
    for j in range(c1 - c0):
        lane[j] = (((lane[j] + np.float64(x0[j])) + np.float64(x1[j])) + np.float64(x2[j])) \
            + np.float64(x3[j])


@_jit(inline=True)
def _forward_item_cl(x, y, w, src, cg, bias, has_bias, hard, stream, n, m, z, a):
    """The whole forward of sample n of (N, S, C) arrays, by one thread: pool every column,
    gate, then scale the sample, position by position (rows of all C channels). It reads
    nothing another item writes, so y may be x."""
    c_, s_ = x.shape[2], x.shape[1]
    first = c_ - c_  # 0 as a run-time int64 (a literal 0 compiles a second copy of a helper)
    m_row = m[n]
    _pool_cl(x, n, first, c_, m_row)
    _gate_cl(w, src, cg, bias, has_bias, hard, n, first, c_, m_row, z, a)
    _scale_cl(x, y, stream, n, first, s_, a)


@_jit(inline=True)
def _scale_cl(x, y, stream, n, s0, s1, a):
    """y[n, s] = a[n] * x[n, s] for the positions [s0, s1) of (N, S, C) arrays, each element
    in float64, rounded once to y's dtype; with ``stream``, by streaming stores (the same
    values)."""
    an = a[n]
    if stream:
        c_ = x.shape[2]
        xf = x.reshape(x.size)
        yf = y.reshape(y.size)
        for s in range(s0, s1):
            _stream_scale_columns(yf, xf, (n * x.shape[1] + s) * c_, c_, an, 0)
        _stream_fence()
        return
    for s in range(s0, s1):
        xr = x[n, s]  # views and loops from 0, as in _pool_cl
        yr = y[n, s]
        for c in range(xr.shape[0]):
            yr[c] = an[c] * np.float64(xr[c])


@_jit(inline=True)
def _sums_cl(g, x, n, c0, c1, m_row, da_row):
    """m_row[c] = mean of x and da_row[c] = sum of g * x over column c of sample n of
    (N, S, C) arrays, for c in [c0, c1), by the lane rule of _pool_cl, _RUN_ROWS positions
    at a time into each lane as in _pool_rows (_add_run2)."""
    s_ = x.shape[1]
    width = c1 - c0
    acc_x = np.zeros((LANES, width))
    acc_gx = np.zeros((LANES, width))
    s0 = 0  # the first position of a group of _RUN_ROWS positions per lane
    while s0 + _RUN_ROWS * LANES <= s_:
        for lane in range(LANES):
            _add_run2(acc_x[lane], acc_gx[lane], g[n], x[n], s0 + lane, c0, c1)
        s0 += _RUN_ROWS * LANES
    for s in range(s0, s_):
        lane_x = acc_x[s % LANES]
        lane_gx = acc_gx[s % LANES]
        xr = x[n, s, c0:c1]  # views and loops from 0, as in _pool_cl
        gr = g[n, s, c0:c1]
        for j in range(width):
            xv = np.float64(xr[j])
            lane_x[j] += xv
            lane_gx[j] += np.float64(gr[j]) * xv
    _tree_columns(acc_x)
    _tree_columns(acc_gx)
    for c in range(c0, c1):
        m_row[c] = acc_x[0, c - c0] / s_
        da_row[c] = acc_gx[0, c - c0]


@_jit()
def _add_run2(lane_x, lane_gx, gs, xs, s, c0, c1):
    """_add_run for the backward's two sums: lane_x of x and lane_gx of g * x (each product
    rounded to float64, then added), _RUN_ROWS positions s, s + LANES, ... in order."""
    x0 = xs[s, c0:c1]
    x1 = xs[s + LANES, c0:c1]
    x2 = xs[s + 2 * LANES, c0:c1]
    x3 = xs[s + 3 * LANES, c0:c1]
    g0 = gs[s, c0:c1]
    g1 = gs[s + LANES, c0:c1]
    g2 = gs[s + 2 * LANES, c0:c1]
    g3 = gs[s + 3 * LANES, c0:c1]
    for j in range(c1 - c0):
        v0 = np.float64(x0[j])
        v1 = np.float64(x1[j])
        v2 = np.float64(x2[j])
        v3 = np.float64(x3[j])
        lane_x[j] = (((lane_x[j] + v0) + v1) + v2) + v3
        lane_gx[j] = (((lane_gx[j] + np.float64(g0[j]) * v0) + np.float64(g1[j]) * v1)
                      + np.float64(g2[j]) * v2) + np.float64(g3[j]) * v3


@_jit(inline=True)
def _backward_item_cl(x, g, dx, w, src, rd, cg, bias, has_bias, hard, stream, n, m, dz):
    """The whole backward of sample n of (N, S, C) arrays, by one thread: sum x and g * x
    over every column, then dz, dm and dx = g * a + dm / S position by position. Every sum
    is done before the first dx is written, so dx may be x or g."""
    c_, s_ = x.shape[2], x.shape[1]
    first = c_ - c_  # 0 as a run-time int64 (a literal 0 compiles a second copy of a helper)
    m_row = m[n]
    da_row = np.empty(c_)
    a_row = np.empty(c_)
    _sums_cl(g, x, n, first, c_, m_row, da_row)
    dz_row = dz[n]
    _logits(m_row, w, src, cg, first, c_, bias, has_bias, a_row)  # z, then a in its place
    _gates_and_grads(a_row, da_row, dz_row, first, c_, hard)
    t = np.empty(c_)
    _dms(dz_row, w, rd, cg, first, c_, s_, t)
    _dx_cl(g, dx, stream, n, first, s_, a_row, t)


@_jit()
def _tree_columns(acc):
    """Combine the lanes of every column by _lane_sum's tree; the sums end in acc[0]."""
    width = LANES
    while width > 1:
        width //= 2
        for lane in range(width):
            for j in range(acc.shape[1]):
                acc[lane, j] = acc[lane, j] + acc[lane + width, j]


@_jit(inline=True)
def _gate_cl(w, src, cg, bias, has_bias, hard, n, c0, c1, m_row, z, a):
    """z and a = gate(z) for the channels [c0, c1) of sample n, whose pooled means (and
    those of the channels they read) are in m_row."""
    zn, an = z[n], a[n]
    _logits(m_row, w, src, cg, c0, c1, bias, has_bias, zn)
    _gates(zn, an, c0, c1, hard)


@_jit(inline=True)
def _dm_cl(w, rd, cg, n, c0, c1, s_, dz, t):
    """t[n, c] = dm[n, c] / S for the channels [c0, c1) of sample n."""
    _dms(dz[n], w, rd, cg, c0, c1, s_, t[n, c0:c1])


@_jit(inline=True)
def _dx_cl(g, dx, stream, n, s0, s1, an, tn):
    """dx[n, s] = g[n, s] * an + tn for the positions [s0, s1) of (N, S, C) arrays (an, tn:
    sample n's gates and dm / S, per channel), each element in float64, rounded once; with
    ``stream``, by streaming stores (the same values)."""
    if stream:
        c_ = g.shape[2]
        gf = g.reshape(g.size)
        dxf = dx.reshape(dx.size)
        for s in range(s0, s1):
            _stream_scale_add_columns(dxf, gf, (n * g.shape[1] + s) * c_, c_, an, tn, 0)
        _stream_fence()
        return
    for s in range(s0, s1):
        gr = g[n, s]  # views and loops from 0, as in _pool_cl
        dxr = dx[n, s]
        for c in range(gr.shape[0]):
            dxr[c] = np.float64(gr[c]) * an[c] + tn[c]

