"""The kernels of the CUDA backend (npeca.backends.numba_cuda describes the design): defined
once per threads-per-block value, which numba.cuda needs as a compile-time constant."""

from __future__ import annotations

import functools
import math

import numpy as np

try:  # imported only with numba.cuda present (npeca.backends.numba_cuda checks first)
    from numba import cuda  # a module global: Numba's CUDA simulator patches it by name
except ImportError:  # pragma: no cover
    cuda = None  # type: ignore[assignment]

__all__ = ["_build_kernels"]


# long: every kernel is a closure over the block size, which numba.cuda needs as a compile-time
# constant; each kernel inside is short
@functools.lru_cache(maxsize=None)
def _build_kernels(threads: int):
    """Define (once per threads-per-block value) and return the kernels; needs numba.cuda
    but no GPU (npeca.backends.cuda_ptx compiles them to PTX without one)."""
    float64, int64 = np.float64, np.int64  # casts that work in kernels and the simulator
    tc = min(32, threads)  # channels-last: channels per tile (a warp's consecutive reads)
    ts = threads // tc  # channels-last: position lanes per channel

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

    @cuda.jit(device=True)
    def gate(zv, hard):
        if hard:
            return min(max(zv + 3.0, 0.0), 6.0) / 6.0
        return sigmoid(zv)

    @cuda.jit(device=True)
    def row_sum(part, row, p_):
        """The P partial sums of a row, added in chunk order (the same bits everywhere)."""
        acc = 0.0
        for q in range(p_):
            acc += part[row * p_ + q]
        return acc

    @cuda.jit(device=True)
    def logit(part, w, bias, n, ch, c, s, p_, k, cg, circular):
        """z = bias + sum_j w[ch, j] m~[n, ch + j - p], each m from the partial sums."""
        acc = bias
        for j in range(k):
            t = source(ch, j, k, cg, circular)
            if t >= 0:
                acc += w[ch * k + j] * (row_sum(part, n * c + t, p_) / s)
            else:  # a zero pad: w * 0 (NaN for a non-finite tap, as the reference)
                acc += w[ch * k + j] * 0.0
        return acc

    @cuda.jit(device=True)
    def dm_over_s(dz, w, n, cp, c, s, k, cg, circular):
        """dm[n, cp] / S, dm = sum_j w[ch, j] dz[n, ch] over ch = cp - j + p (same padding)."""
        acc = 0.0
        for j in range(k):
            ch = source(cp, k - 1 - j, k, cg, circular)  # cp - j + p, wrapped or dropped
            if ch >= 0:
                acc += w[ch * k + j] * dz[n * c + ch]
        return acc / s

    @cuda.jit(device=True)
    def param_block(r, t, sh, dz, m, n_, c, k, cg, circular, per_channel, wrows, dw, db):
        """Block r of the parameter gradients: dw[r] for r < wrows * k (one tap of the
        shared kernel, or of one channel's), else dbias; a fixed tree over the terms."""
        acc = 0.0
        if r < wrows * k:
            j = r % k
            wr = r // k
            terms = n_ if per_channel else n_ * c
            q = int64(t)
            while q < terms:
                if per_channel:
                    nn, ch = q, wr
                else:
                    nn = q // c
                    ch = q - nn * c
                src = source(ch, j, k, cg, circular)
                if src >= 0:
                    acc += dz[nn * c + ch] * m[nn * c + src]
                else:  # a zero pad: dz * 0 (NaN where dz is not finite, as the reference)
                    acc += dz[nn * c + ch] * 0.0
                q += threads
        else:
            q = int64(t)
            while q < n_ * c:
                acc += dz[q]
                q += threads
        sh[t] = acc
        stride = threads // 2
        while stride > 0:
            cuda.syncthreads()
            if t < stride:
                sh[t] += sh[t + stride]
            stride //= 2
        cuda.syncthreads()
        if t == 0:
            if r < wrows * k:
                dw[r] = sh[0]
            else:
                db[0] = sh[0]

    # --- channels-first: items are (row, chunk), `lanes` threads each -------------------

    @cuda.jit
    def partial_first(x, g, use_g, rows, s, p_, cl, lanes, part_x, part_gx):
        """part_x[row * P + q] = sum of chunk q (cl values) of row `row` of (N C, S) x, and
        part_gx the same of g x (with use_g): each lane a strided share, a fixed tree."""
        t = cuda.threadIdx.x
        per = threads // lanes
        slot = t // lanes
        lane = t - slot * lanes
        sh = cuda.shared.array(threads, float64)
        sh2 = cuda.shared.array(threads, float64)
        items = rows * p_
        base = int64(cuda.blockIdx.x) * per
        while base < items:  # the same trip count for every thread of the block
            item = base + slot
            acc = 0.0
            acc2 = 0.0
            if item < items:
                row = item // p_
                q = item - row * p_
                stop = min(q * cl + cl, s)
                off = row * s
                i = q * cl + lane
                while i < stop:
                    v = float64(x[off + i])
                    if use_g:
                        acc2 += float64(g[off + i]) * v
                    acc += v
                    i += lanes
            sh[t] = acc
            sh2[t] = acc2
            stride = lanes // 2
            while stride > 0:
                cuda.syncthreads()
                if lane < stride:
                    sh[t] += sh[t + stride]
                    sh2[t] += sh2[t + stride]
                stride //= 2
            cuda.syncthreads()
            if lane == 0 and item < items:
                part_x[item] = sh[t]
                if use_g:
                    part_gx[item] = sh2[t]
            cuda.syncthreads()
            base += int64(cuda.gridDim.x) * per

    @cuda.jit
    def gate_scale_first(x, part, w, bias, c, s, p_, cl, lanes, k, cg, circular, hard,
                         y, m, z, a):
        """Per item: z, a of its row from the partial sums (one lane), m, z, a written by
        chunk 0's item, then y = a x over the chunk, rounded once to y's dtype."""
        t = cuda.threadIdx.x
        per = threads // lanes
        slot = t // lanes
        lane = t - slot * lanes
        sh_a = cuda.shared.array(threads, float64)
        items = int64(m.size) * p_
        base = int64(cuda.blockIdx.x) * per
        while base < items:
            item = base + slot
            if lane == 0 and item < items:
                row = item // p_
                n = row // c
                zv = logit(part, w, bias, n, row - n * c, c, s, p_, k, cg, circular)
                av = gate(zv, hard)
                sh_a[slot] = av
                if item - row * p_ == 0:
                    m[row] = row_sum(part, row, p_) / s
                    z[row] = zv
                    a[row] = av
            cuda.syncthreads()
            if item < items:
                row = item // p_
                q = item - row * p_
                av = sh_a[slot]
                stop = min(q * cl + cl, s)
                off = row * s
                i = q * cl + lane
                while i < stop:
                    y[off + i] = av * float64(x[off + i])
                    i += lanes
            cuda.syncthreads()
            base += int64(cuda.gridDim.x) * per

    @cuda.jit
    def dx_params_first(g, a, dz, m, w, n_, c, s, p_, cl, lanes, k, cg, circular,
                        dx_blocks, n_params, per_channel, wrows, dx, dw, db):
        """Blocks below dx_blocks: per item dm / S of its row (one lane), then
        dx = g a + dm / S over the chunk; the blocks after them: param_block, each looping
        over the n_params parameter gradients a capped grid leaves."""
        t = cuda.threadIdx.x
        sh = cuda.shared.array(threads, float64)
        sh_t = cuda.shared.array(threads, float64)
        b = int64(cuda.blockIdx.x)
        if b >= dx_blocks:
            r = b - dx_blocks
            while r < n_params:
                param_block(r, t, sh, dz, m, n_, c, k, cg, circular, per_channel, wrows, dw,
                            db)
                r += int64(cuda.gridDim.x) - dx_blocks
            return
        per = threads // lanes
        slot = t // lanes
        lane = t - slot * lanes
        items = n_ * c * p_
        base = b * per
        while base < items:
            item = base + slot
            if lane == 0 and item < items:
                row = item // p_
                n = row // c
                sh[slot] = a[row]
                sh_t[slot] = dm_over_s(dz, w, n, row - n * c, c, s, k, cg, circular)
            cuda.syncthreads()
            if item < items:
                row = item // p_
                q = item - row * p_
                av = sh[slot]
                tv = sh_t[slot]
                stop = min(q * cl + cl, s)
                off = row * s
                i = q * cl + lane
                while i < stop:
                    dx[off + i] = float64(g[off + i]) * av + tv
                    i += lanes
            cuda.syncthreads()
            base += dx_blocks * per

    # --- channels-last: items are (tile of tc channels, n, chunk), block (tc, ts) -------

    @cuda.jit(device=True)
    def tile_item(item, tiles, p_, tx):
        """(channel of lane tx, sample, chunk) of channels-last item ``item``."""
        rest = item // tiles
        n = rest // p_
        return (item - rest * tiles) * tc + tx, n, rest - n * p_

    @cuda.jit
    def partial_last(x, g, use_g, nn, s, c, p_, cl, part_x, part_gx):
        """The same partial sums for (N, S, C) data: the tc channels of a tile side by side
        (coalesced), ts position lanes each, a fixed tree over the lanes."""
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        sh = cuda.shared.array((ts, tc), float64)
        sh2 = cuda.shared.array((ts, tc), float64)
        tiles = (c + tc - 1) // tc
        items = tiles * nn * p_
        item = int64(cuda.blockIdx.x)
        while item < items:
            ch, n, q = tile_item(item, tiles, p_, tx)
            acc = 0.0
            acc2 = 0.0
            if ch < c:
                stop = min(q * cl + cl, s)
                i = q * cl + ty
                while i < stop:
                    kk = (n * s + i) * c + ch
                    v = float64(x[kk])
                    if use_g:
                        acc2 += float64(g[kk]) * v
                    acc += v
                    i += ts
            sh[ty, tx] = acc
            sh2[ty, tx] = acc2
            stride = ts // 2
            while stride > 0:
                cuda.syncthreads()
                if ty < stride:
                    sh[ty, tx] += sh[ty + stride, tx]
                    sh2[ty, tx] += sh2[ty + stride, tx]
                stride //= 2
            cuda.syncthreads()
            if ty == 0 and ch < c:
                part_x[(n * c + ch) * p_ + q] = sh[0, tx]
                if use_g:
                    part_gx[(n * c + ch) * p_ + q] = sh2[0, tx]
            cuda.syncthreads()
            item += cuda.gridDim.x

    @cuda.jit
    def gate_scale_last(x, part, w, bias, nn, c, s, p_, cl, k, cg, circular, hard,
                        y, m, z, a):
        """gate_scale_first for (N, S, C) data, tiles of tc channels."""
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        sh_a = cuda.shared.array(tc, float64)
        tiles = (c + tc - 1) // tc
        items = tiles * nn * p_
        item = int64(cuda.blockIdx.x)
        while item < items:
            ch, n, q = tile_item(item, tiles, p_, tx)
            if ty == 0 and ch < c:
                zv = logit(part, w, bias, n, ch, c, s, p_, k, cg, circular)
                av = gate(zv, hard)
                sh_a[tx] = av
                if q == 0:
                    m[n * c + ch] = row_sum(part, n * c + ch, p_) / s
                    z[n * c + ch] = zv
                    a[n * c + ch] = av
            cuda.syncthreads()
            if ch < c:
                av = sh_a[tx]
                stop = min(q * cl + cl, s)
                i = q * cl + ty
                while i < stop:
                    kk = (n * s + i) * c + ch
                    y[kk] = av * float64(x[kk])
                    i += ts
            cuda.syncthreads()
            item += cuda.gridDim.x

    @cuda.jit
    def dx_params_last(g, a, dz, m, w, n_, c, s, p_, cl, k, cg, circular, dx_blocks,
                       n_params, per_channel, wrows, dx, dw, db):
        """dx_params_first for (N, S, C) data, tiles of tc channels."""
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        sh = cuda.shared.array(threads, float64)
        sh_t = cuda.shared.array(tc, float64)
        b = int64(cuda.blockIdx.x)
        if b >= dx_blocks:
            r = b - dx_blocks
            while r < n_params:
                param_block(r, ty * tc + tx, sh, dz, m, n_, c, k, cg, circular, per_channel,
                            wrows, dw, db)
                r += int64(cuda.gridDim.x) - dx_blocks
            return
        tiles = (c + tc - 1) // tc
        items = tiles * n_ * p_
        item = b
        while item < items:
            ch, n, q = tile_item(item, tiles, p_, tx)
            if ty == 0 and ch < c:
                sh[tx] = a[n * c + ch]
                sh_t[tx] = dm_over_s(dz, w, n, ch, c, s, k, cg, circular)
            cuda.syncthreads()
            if ch < c:
                av = sh[tx]
                tv = sh_t[tx]
                stop = min(q * cl + cl, s)
                i = q * cl + ty
                while i < stop:
                    kk = (n * s + i) * c + ch
                    dx[kk] = float64(g[kk]) * av + tv
                    i += ts
            cuda.syncthreads()
            item += dx_blocks

    # --- per row ----------------------------------------------------------------------

    @cuda.jit
    def slope(part_x, part_gx, w, bias, c, s, p_, k, cg, circular, hard, m, a, dz):
        """Per row: m and da from the partial sums, z, a = gate(z), dz = da gate'(z) (the
        sigmoid's a (1 - a) with 1 - a as sigmoid(-z)); grid-stride."""
        i = int64(cuda.blockIdx.x) * threads + cuda.threadIdx.x
        while i < m.size:
            n = i // c
            zv = logit(part_x, w, bias, n, i - n * c, c, s, p_, k, cg, circular)
            av = gate(zv, hard)
            if hard:
                d = 1.0 / 6.0 if (zv > -3.0 and zv < 3.0) else 0.0
            else:
                d = av * sigmoid(-zv)
            m[i] = row_sum(part_x, i, p_) / s
            a[i] = av
            dz[i] = row_sum(part_gx, i, p_) * d
            i += int64(cuda.gridDim.x) * threads

    return {"partial_first": partial_first, "gate_scale_first": gate_scale_first,
            "dx_params_first": dx_params_first, "partial_last": partial_last,
            "gate_scale_last": gate_scale_last, "dx_params_last": dx_params_last,
            "slope": slope, "tc": tc, "ts": ts}
