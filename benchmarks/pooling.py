"""The channels-last pooling alone, three ways, in one process on the same float32 input,
the bits of the three compared first:

* ``one row``: each position added into one of 16 rows of C float64 sums in memory, one row
  of x at a time (the row-by-row pooling of columns longer than 64 positions before the
  runs);
* ``runs``: ``_items._pool_rows``, the same sums with 4 positions of a lane added per load
  and store of its row of sums (``_add_run``);
* ``now``: ``_items._pool_cl``, what the kernels run: columns of at most 63 positions
  summed 16 at a time in registers (two passes of 8 lanes), longer ones by ``_pool_rows``.

Per shape (positions x channels): one thread on one sample (which then stays in cache), and
all threads on 32 samples (one sample per thread at a time, x read from memory or L3), in
microseconds, medians of rounds that alternate the three::

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

SHAPES = [(49, 2048), (49, 1024), (49, 512), (49, 256), (64, 1024), (16, 2048), (196, 1024),
          (784, 512), (3136, 256)]


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
def all_runs(x, m):
    for n in prange(x.shape[0]):
        _items._pool_rows(x, n, 0, x.shape[2], m[n])


@njit(parallel=True, error_model="numpy")
def all_now(x, m):
    for n in prange(x.shape[0]):
        _items._pool_cl(x, n, 0, x.shape[2], m[n])


def mean_us(call, *args) -> float:
    """The mean time of one call of call(*args) over enough calls for about 20 ms, in us."""
    number = max(3, int(0.02 / max(1e-6, timeit.timeit(lambda: call(*args), number=1))))
    return timeit.timeit(lambda: call(*args), number=number) / number * 1e6


def alternated(calls: list, rounds: int = 11) -> list[float]:
    """The median over ``rounds`` of mean_us of each (call, *args) of ``calls``, the calls
    taking turns within each round, so that a slow spell of the machine hits all alike."""
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for i, (call, *args) in enumerate(calls):
            times[i].append(mean_us(call, *args))
    return [float(np.median(t)) for t in times]


def main() -> None:
    print(f"target CPU: {os.environ.get('NUMBA_CPU_NAME', 'this one')}; microseconds")
    print(f"{'S x C':12s} {'1 sample: one row':>18s} {'runs':>7s} {'now':>7s} "
          f"{'32 samples: one row':>20s} {'runs':>7s} {'now':>7s}")
    rng = np.random.default_rng(0)
    for s, c in SHAPES:
        x = rng.standard_normal((32, s, c)).astype(np.float32)
        before, runs, now = np.empty((3, 32, c))
        all_rows(x, before)
        all_runs(x, runs)
        all_now(x, now)
        if before.tobytes() != now.tobytes() or before.tobytes() != runs.tobytes():
            raise SystemExit(f"{s}x{c}: the poolings differ")
        one = alternated([(rows, x, 0, 0, c, before[0]), (_items._pool_rows, x, 0, 0, c, runs[0]),
                          (_items._pool_cl, x, 0, 0, c, now[0])])
        many = alternated([(all_rows, x, before), (all_runs, x, runs), (all_now, x, now)])
        print(f"{s}x{c:<9d} {one[0]:18.1f} {one[1]:7.1f} {one[2]:7.1f} "
              f"{many[0]:20.0f} {many[1]:7.0f} {many[2]:7.0f}", flush=True)


if __name__ == "__main__":
    main()
