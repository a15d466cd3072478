"""The channels-last pooling alone: this version's ``_pool_cl`` (columns of at most 64
positions summed 16 at a time in registers, in two passes of 8 lanes) against the row-by-row
pooling every column
used before (each position added into one of 16 rows of C float64 sums in memory), in one
process, on the same float32 input, the bits of the two compared first.

Per shape (positions x channels): one thread on one sample (which then stays in cache), and
all threads on 32 samples (one sample per thread at a time, x read from memory or L3), in
microseconds, medians::

    python benchmarks/pooling.py
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2,+fma,+avx,+sse4.2,+popcnt \
        python benchmarks/pooling.py   # compiled for AVX2 only (the name alone is not)
"""

from __future__ import annotations

import os
import timeit

import numpy as np
from numba import njit, prange

from npeca.backends.numba_cpu import _items
from npeca.backends.numba_cpu._simd import LANES

SHAPES = [(49, 2048), (49, 1024), (49, 512), (49, 256), (64, 1024), (16, 2048), (196, 1024)]


@njit(error_model="numpy")
def rows(x, n, c0, c1, m_row):
    """The pooling of every channels-last column before: position s into row s mod LANES."""
    width = c1 - c0
    acc = np.zeros((LANES, width))
    for s in range(x.shape[1]):
        lane = acc[s % LANES]
        xr = x[n, s, c0:c1]
        for j in range(width):
            lane[j] += np.float64(xr[j])
    _items._tree_columns(acc)
    for c in range(c0, c1):
        m_row[c] = acc[0, c - c0] / x.shape[1]


@njit(parallel=True, error_model="numpy")
def all_rows(x, m):
    for n in prange(x.shape[0]):
        rows(x, n, 0, x.shape[2], m[n])


@njit(parallel=True, error_model="numpy")
def all_now(x, m):
    for n in prange(x.shape[0]):
        _items._pool_cl(x, n, 0, x.shape[2], m[n])


def median_us(call, *args) -> float:
    """The median of 11 means of enough calls of call(*args) for about 30 ms each, in us."""
    number = max(3, int(0.03 / max(1e-6, timeit.timeit(lambda: call(*args), number=1))))
    times = timeit.repeat(lambda: call(*args), number=number, repeat=11)
    return float(np.median(times)) / number * 1e6


def main() -> None:
    print(f"target CPU: {os.environ.get('NUMBA_CPU_NAME', 'this one')}; microseconds")
    print(f"{'S x C':12s} {'1 sample: rows':>15s} {'now':>8s} {'32 samples: rows':>17s} "
          f"{'now':>8s}")
    rng = np.random.default_rng(0)
    for s, c in SHAPES:
        x = rng.standard_normal((32, s, c)).astype(np.float32)
        before, now = np.empty((2, 32, c))
        all_rows(x, before)
        all_now(x, now)
        if before.tobytes() != now.tobytes():
            raise SystemExit(f"{s}x{c}: the two poolings differ")
        print(f"{s}x{c:<9d} {median_us(rows, x, 0, 0, c, before[0]):15.1f} "
              f"{median_us(_items._pool_cl, x, 0, 0, c, now[0]):8.1f} "
              f"{median_us(all_rows, x, before):17.0f} "
              f"{median_us(all_now, x, now):8.0f}")


if __name__ == "__main__":
    main()
