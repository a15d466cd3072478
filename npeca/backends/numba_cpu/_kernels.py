"""The kernels: parallel loops over work items (see the package docstring for the layout).

Each kernel exists twice, compiled from the same Python source: a parallel version (numba
``prange``) and a serial one (``prange`` is ``range`` there), which runs small problems on
the calling thread and compiles in a fraction of the time. Both do the same items in the
same order per item, so they give the same bits.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._compile import jit as _jit
from ._compile import twin
from ._items import (_backward_item_cl, _dm_cl, _dx_cf, _dx_cl, _dx_one, _dz, _dz_one,
                     _forward_item_cf, _forward_item_cl, _gate_cl, _pool_cf, _pool_cl,
                     _scale_cf, _scale_cl, _sums_cf, _sums_cl, _tap_products)

_SAMPLES, _PIPELINED_SAMPLES, _WAVES, _PHASES = 0, 1, 2, 3  # how kernels hand out work
# (_Call.schedule, _Call.channels_last_plan)

# --- the kernels ------------------------------------------------------------------------------
#
# _SAMPLES: one parallel loop over samples, each item a whole (small) sample from pooling to
# scaling, so no thread waits for another. _WAVES: waves of `wave` samples, each wave one
# parallel loop per phase whose items are a sample and a range of `chunk` channels (or `sb`
# positions), so that a single sample also spreads over every thread while it stays in
# cache between the phases. The channels-first forward needs neither (halo items, see
# _forward_item_cf) except in place (_forward_cf_waves); the channels-first backward of
# large samples is pipelined (_pipeline_cf, in _backward_cf_pipelined), per sample
# (_PIPELINED_SAMPLES) or per segment of a sample (_WAVES). Items never share a sum: neither
# the mode, nor the wave and item sizes, nor the thread count change a single bit.
#
# A kind of call whose schedules need different loops has one kernel per family of
# schedules, with the same arguments (FAMILIES): a first call compiles only the loops its
# schedule runs (docs/performance.md, "Where a first compile's time goes"), and warmup
# compiles the others with it, from the same argument types.

@twin
def _forward_cf(x, w, src, cg, span, bias, has_bias, hard, chunk, wave, stream, y, m, z, a):
    """Channels-first forward on x (N, C, S) into y (N, C, S) and m, z, a (N, C).

    One parallel loop over items of `chunk` channels of a sample (a whole sample when chunk
    is C), each pooled, convolved, gated and scaled while it is in cache (``wave`` is not
    used: the arguments are those of _forward_cf_waves, see FAMILIES)."""
    n_, c_ = x.shape[0], x.shape[1]
    xf = x.reshape(x.size)
    per = (c_ + chunk - 1) // chunk  # items per sample
    for i in prange(n_ * per):
        n = i // per
        c0 = (i % per) * chunk
        _forward_item_cf(x, xf, y, w, src, cg, span, bias, has_bias, hard, stream, n, c0,
                         min(c_, c0 + chunk), m, z, a)


@twin
def _forward_cf_waves(x, w, src, cg, span, bias, has_bias, hard, chunk, wave, stream, y, m, z,
                      a):
    """_forward_cf in place (y is x) with samples split into items: an item must not scale
    channels that another item still has to pool for its halo, so each wave of `wave`
    samples is pooled entirely (one parallel loop) before it is scaled (another)."""
    n_, c_, s_ = x.shape
    xf = x.reshape(x.size)
    per = (c_ + chunk - 1) // chunk  # items per sample
    for n0 in range(0, n_, wave):
        items = min(wave, n_ - n0) * per
        for i in prange(items):
            n = n0 + i // per
            c0 = (i % per) * chunk
            _pool_cf(xf, n, c0, min(c_, c0 + chunk), c_, s_, m)
        for i in prange(items):
            n = n0 + i // per
            c0 = (i % per) * chunk
            _scale_cf(x, y, w, src, cg, bias, has_bias, hard, stream, n, c0,
                      min(c_, c0 + chunk), m[n], z, a)


@twin
def _forward_cl(x, w, src, cg, bias, has_bias, hard, mode, wave, chunk, sb, stream, y, m, z,
                a):
    """Channels-last forward on x (N, S, C) into y.

    _SAMPLES: one parallel loop over whole samples, each pooled, gated and scaled by one
    thread (_forward_item_cl). _WAVES (one sample, or a few that would leave a thread idle):
    each wave of samples is pooled (items of `chunk` channels), gated, then scaled (items of
    `sb` positions), every thread on every phase; also in place, as each phase ends before
    the next begins. ``stream``: y is written with streaming stores."""
    n_, s_, c_ = x.shape
    if mode == _SAMPLES:
        for n in prange(n_):
            _forward_item_cl(x, y, w, src, cg, bias, has_bias, hard, stream, n, m, z, a)
    else:
        per_c = (c_ + chunk - 1) // chunk
        per_s = (s_ + sb - 1) // sb
        for n0 in range(0, n_, wave):
            wn = min(wave, n_ - n0)
            for i in prange(wn * per_c):
                n = n0 + i // per_c
                c0 = (i % per_c) * chunk
                _pool_cl(x, n, c0, min(c_, c0 + chunk), m[n])
            for i in prange(wn * per_c):
                n = n0 + i // per_c
                c0 = (i % per_c) * chunk
                _gate_cl(w, src, cg, bias, has_bias, hard, n, c0, min(c_, c0 + chunk), m[n], z,
                         a)
            for i in prange(wn * per_s):
                n = n0 + i // per_s
                s0 = (i % per_s) * sb
                _scale_cl(x, y, stream, n, s0, min(s_, s0 + sb), a)


@_jit(inline=True)
def _pipeline_cf(g, x, gf, xf, w, src, rd, cg, span, bias, has_bias, hard, stream, n, s0, s1, m,
                 da, a, dz, dx, zdone, xdone):
    """Backward for the channels [s0, s1) of sample n in one sweep: channel after channel
    sum x and g * x, and as soon as every channel a result needs is done, dz and then
    dx = g * a + dm / S, while g is still in L1/L2. What needs a channel outside [s0, s1)
    is left to _backward_cf_pipelined's clean-up loops (zdone / xdone False)."""
    c_, s_ = x.shape[1], x.shape[2]
    zp = s0  # next channel whose dz is to be decided
    xp = s0  # next channel whose dx is to be decided
    for done in range(s0 + 1, s1 + 1):  # channels [s0, done) are summed
        _sums_cf(gf, xf, n, done - 1, done, c_, s_, m, da)
        while zp < s1:
            if span[zp, 0] < s0 or span[zp, 1] >= s1:
                zdone[n, zp] = False
            elif span[zp, 1] < done:
                _dz_one(w, src, bias, has_bias, hard, n, zp, m, da, a, dz)
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
                    _dx_one(g, dx, w, rd, stream, n, xp, a, dz)
                xdone[n, xp] = ready
            xp += 1


@twin
def _backward_cf(x, g, w, src, rd, cg, span, bias, has_bias, hard, mode, wave, chunk, stream,
                 dx, m, dz):
    """Channels-first backward: dx (N, C, S) and the m, dz (N, C) the weight gradient needs,
    in sweeps (_SAMPLES, _PHASES; the pipelined modes are _backward_cf_pipelined, with the
    same arguments: see FAMILIES)."""
    n_, c_, s_ = x.shape
    first = n_ - n_  # 0 as a run-time int64: a literal 0 would make numba compile a
    # second copy of every helper it is passed to
    xf = x.reshape(x.size)
    gf = g.reshape(g.size)
    da = np.empty((n_, c_))
    a = np.empty((n_, c_))
    if mode == _SAMPLES:  # a sample fits in cache: sweep it twice
        for n in prange(n_):
            _sums_cf(gf, xf, n, first, c_, c_, s_, m, da)
            _dz(w, src, cg, bias, has_bias, hard, n, first, c_, m, da, a, dz)
            _dx_cf(g, dx, w, rd, cg, stream, n, first, c_, a, dz)
    else:  # _PHASES, short rows, few samples: every thread on each phase of a wave
        per = (c_ + chunk - 1) // chunk
        for n0 in range(0, n_, wave):
            items = min(wave, n_ - n0) * per
            for i in prange(items):
                n = n0 + i // per
                c0 = (i % per) * chunk
                _sums_cf(gf, xf, n, c0, min(c_, c0 + chunk), c_, s_, m, da)
            for i in prange(items):
                n = n0 + i // per
                c0 = (i % per) * chunk
                _dz(w, src, cg, bias, has_bias, hard, n, c0, min(c_, c0 + chunk), m, da, a, dz)
            for i in prange(items):
                n = n0 + i // per
                c0 = (i % per) * chunk
                _dx_cf(g, dx, w, rd, cg, stream, n, c0, min(c_, c0 + chunk), a, dz)


@twin
def _backward_cf_pipelined(x, g, w, src, rd, cg, span, bias, has_bias, hard, mode, wave, chunk,
                           stream, dx, m, dz):
    """_backward_cf pipelined (_pipeline_cf), for samples too large to sweep twice from
    cache, or too few to share among the threads as whole samples: waves of `wave` samples in
    segments of `chunk` channels, then what a segment's edges left for later (what reads a
    channel outside the segment). _PIPELINED_SAMPLES: one wave of whole samples, where only
    circular wraps are left for later."""
    n_, c_ = x.shape[0], x.shape[1]
    xf = x.reshape(x.size)
    gf = g.reshape(g.size)
    da = np.empty((n_, c_))
    a = np.empty((n_, c_))
    zdone = np.zeros((n_, c_), dtype=np.bool_)
    xdone = np.zeros((n_, c_), dtype=np.bool_)
    if mode == _PIPELINED_SAMPLES:  # whole samples, one wave: a segment is a sample
        chunk, wave = c_, n_
    per = (c_ + chunk - 1) // chunk  # segments of `chunk` channels, then the segment edges
    for n0 in range(0, n_, wave):
        items = min(wave, n_ - n0) * per
        for i in prange(items):
            n = n0 + i // per
            c0 = (i % per) * chunk
            _pipeline_cf(g, x, gf, xf, w, src, rd, cg, span, bias, has_bias, hard, stream, n,
                         c0, min(c_, c0 + chunk), m, da, a, dz, dx, zdone, xdone)
        for i in prange(items):
            n = n0 + i // per
            for c in range((i % per) * chunk, min(c_, (i % per) * chunk + chunk)):
                if not zdone[n, c]:
                    _dz_one(w, src, bias, has_bias, hard, n, c, m, da, a, dz)
        for i in prange(items):
            n = n0 + i // per
            for c in range((i % per) * chunk, min(c_, (i % per) * chunk + chunk)):
                if not xdone[n, c]:
                    _dx_one(g, dx, w, rd, stream, n, c, a, dz)


#: Kernels with the same arguments, one per family of schedules of one kind of call: the
#: schedule picks one for each call; "auto" and warmup compile all of them together.
FAMILIES = ((_forward_cf, _forward_cf_waves), (_backward_cf, _backward_cf_pipelined))


def family(kernel) -> tuple:
    """The kernels compiled together with ``kernel`` (itself included)."""
    for kernels in FAMILIES:
        if any(k is kernel for k in kernels):
            return kernels
    return (kernel,)


@twin
def _backward_cl(x, g, w, src, rd, cg, bias, has_bias, hard, mode, wave, chunk, sb, stream, dx,
                 m, dz):
    """Channels-last backward on (N, S, C) arrays.

    _SAMPLES: one parallel loop over whole samples, each done by one thread
    (_backward_item_cl). _WAVES (one sample, or a few that would leave a thread idle): waves
    of samples, each summed (items of `chunk` channels), then dz, dm, then dx (items of `sb`
    positions); dx may be x or g, as every sum of a wave ends before its first dx.
    ``stream``: dx is written with streaming stores."""
    n_, s_, c_ = x.shape
    per_c = (c_ + chunk - 1) // chunk
    if mode == _SAMPLES:
        for n in prange(n_):
            _backward_item_cl(x, g, dx, w, src, rd, cg, bias, has_bias, hard, stream, n, m,
                              dz)
    else:
        da = np.empty((n_, c_))
        a = np.empty((n_, c_))
        t = np.empty((n_, c_))
        per_s = (s_ + sb - 1) // sb
        for n0 in range(0, n_, wave):
            wn = min(wave, n_ - n0)
            for i in prange(wn * per_c):
                n = n0 + i // per_c
                c0 = (i % per_c) * chunk
                _sums_cl(g, x, n, c0, min(c_, c0 + chunk), m[n], da[n])
            for i in prange(wn * per_c):
                n = n0 + i // per_c
                c0 = (i % per_c) * chunk
                _dz(w, src, cg, bias, has_bias, hard, n, c0, min(c_, c0 + chunk), m, da, a, dz)
            for i in prange(wn * per_c):
                n = n0 + i // per_c
                c0 = (i % per_c) * chunk
                _dm_cl(w, rd, cg, n, c0, min(c_, c0 + chunk), s_, dz, t)
            for i in prange(wn * per_s):
                n = n0 + i // per_s
                s0 = (i % per_s) * sb
                _dx_cl(g, dx, stream, n, s0, min(s_, s0 + sb), a[n], t[n])


@twin
def _parameter_grads(m, dz, w, src, cg, per_channel, chunk, dw, db):
    """dw = sum_n dz[n, c] * m~[n, c + j - p] over n (and c for a shared kernel); db = sum dz.

    Items of `chunk` channels, each walking the rows n in order (row by row: contiguous
    reads) and adding to its own channels' partial sums, then (shared kernel, bias) the
    per-channel partial sums added in channel order: every sum in a fixed order whatever
    the thread count and chunk."""
    n_, c_ = dz.shape
    k = w.shape[1]
    part = np.empty((k + 1, c_))  # part[j, c]: tap-major, so a tap's loop over channels is
    taps = part[:k]  # contiguous (_tap_products); the last row, db_c: the bias's partial sums
    db_c = part[k]
    for i in prange((c_ + chunk - 1) // chunk):  # items own their columns of part and db_c
        c0 = i * chunk
        c1 = min(c_, c0 + chunk)
        for j in range(k + 1):  # row by row (a column at a time strides k + 1 rows apart),
            row = part[j, c0:c1]  # views and loops from 0, as in _items._pool_rows
            for c in range(c1 - c0):
                row[c] = 0.0
        db_part = db_c[c0:c1]
        for n in range(n_):
            _tap_products(dz[n], m[n], src, cg, c0, c1, taps)
            dz_part = dz[n, c0:c1]
            for c in range(c1 - c0):
                db_part[c] += dz_part[c]
    totals = np.empty(k + 1)
    if per_channel:
        for c in range(c_):  # element by element: a slice assignment would compile numba's
            for j in range(k):  # shape-mismatch error path, seconds of compile for nothing
                dw[c, j] = part[j, c]
        _row_sums(part, k, k + 1, totals)
    else:
        _row_sums(part, k - k, k + 1, totals)  # k - k: a run-time 0 (see _backward_cf)
        for j in range(k):
            dw[0, j] = totals[j]
    db[0] = totals[k]


@_jit()
def _row_sums(rows, r0, r1, out):
    """out[r] = ((0.0 + rows[r, 0]) + rows[r, 1]) + ... in channel order, for r in [r0, r1):
    four rows at a time, so that four chains of dependent additions overlap (each sum is
    still added in its own order: the bits of one row after another). One chain waits about
    4 cycles per addition: the weight gradient of 2048 channels, k = 5 and a bias took 21 us
    one row after another on AMD EPYC, 13 us four rows at a time (eight at a time: no
    faster)."""
    c_ = rows.shape[1]
    r = r0
    while r < r1:
        last = min(r1 - r, 4)  # rows past the last one read the first one again, not kept
        q1 = r + 1 if last > 1 else r
        q2 = r + 2 if last > 2 else r
        q3 = r + 3 if last > 3 else r
        t0 = 0.0
        t1 = 0.0
        t2 = 0.0
        t3 = 0.0
        for c in range(c_):
            t0 += rows[r, c]
            t1 += rows[q1, c]
            t2 += rows[q2, c]
            t3 += rows[q3, c]
        sums = (t0, t1, t2, t3)
        for i in range(last):  # a tuple of one type: numba indexes it at run time
            out[r + i] = sums[i]
        r += 4


#: Rows of src per item of _transpose_samples, and the width of its tiles.
_BAND = 64
_TILE = 16


@twin
def _transpose_samples(src, dst):
    """dst[n, b, a] = src[n, a, b] for (n, A, B) src and (n, B, A) dst, both C-contiguous
    (float32 to float32 or float64, float64 to float64: exact). The staging of inputs whose
    memory order is the other layout's (_Stager.load, _Stager.store): a channels-first x
    that is channels-last in memory (a PyTorch ``channels_last`` tensor's ``.numpy()``),
    and the reverse. Items are a sample and a band of _BAND rows of src. With at least as
    many rows as columns (A >= B), each row of dst gets its band's part in one run (the band
    is read down its columns: _BAND lines, which stay in L1 while the next columns on the
    same lines are read); with
    fewer, the band is read row by row, _TILE columns at a time, each element written to
    its row of dst (_TILE lines of dst in L1). Each order was the faster one on AMD EPYC for
    its kind of shape (a throwaway script, one thread, float32, 8 samples: 2048 x 49 took
    0.24 ms the first way and 2.2 ms the second, 49 x 2048 0.6 ms the second way and 2.2 ms
    the first). Only values move: no bit depends on how."""
    n_, a_, b_ = src.shape
    per = (a_ + _BAND - 1) // _BAND
    for i in prange(n_ * per):
        n = i // per
        a0 = (i % per) * _BAND
        a1 = min(a_, a0 + _BAND)
        band = src[n, a0:a1]
        dn = dst[n]
        if a_ >= b_:
            for b in range(b_):
                row = dn[b, a0:a1]
                for a in range(a1 - a0):
                    row[a] = band[a, b]
        else:
            for b0 in range(0, b_, _TILE):
                b1 = min(b_, b0 + _TILE)
                for a in range(a1 - a0):
                    part = band[a, b0:b1]
                    col = a0 + a
                    for b in range(b1 - b0):
                        dn[b0 + b, col] = part[b]
