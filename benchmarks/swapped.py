"""Inputs in the other layout's memory order, in one process: a channels-first x (N, C, H, W)
that is channels-last in memory (what a PyTorch ``channels_last`` tensor's ``.numpy()``
gives), through the numba backend's staging by the tiled ``_transpose_samples`` kernel
("tiled"), and by NumPy's copy of the view, which it used before ("numpy copy"); beside them
the same values C-contiguous (channels-first) and as a C-contiguous (N, H, W, C) array with
``channel_axis=-1`` (no staging at all). Forward ``y = npeca.eca(x, w)`` and backward
``npeca.eca_backward(x, w, g)``, float32, milliseconds: per shape, the median over 5 rounds
in which the columns take turns (so that a slow spell of the host hits all alike) of the
mean of enough calls for about 30 ms::

    python benchmarks/swapped.py
    python benchmarks/swapped.py 32x256x56x56 1x2048x7x7   # NxCxHxW
"""

from __future__ import annotations

import sys
import timeit

import numpy as np

import npeca
from npeca.backends.numba_cpu import _schedule

SHAPES = ["1x256x56x56", "1x1024x14x14", "32x256x56x56", "32x1024x14x14", "32x2048x7x7"]


def mean_ms(call) -> float:
    """The mean of enough calls of ``call`` for about 30 ms, in milliseconds."""
    number = max(2, int(0.03 / max(1e-6, timeit.timeit(call, number=1))))
    return timeit.timeit(call, number=number) / number * 1e3


def numpy_copy(call):
    """``call`` with the stager's swapped views switched off: NumPy copies them."""
    def run():
        swapped = _schedule._Stager.swapped
        _schedule._Stager.swapped = lambda self, part: None
        try:
            return call()
        finally:
            _schedule._Stager.swapped = swapped
    return run


def _columns(x, g, last, g_last, w) -> list:
    """The eight calls of a row: forward then backward, each tiled, NumPy copy, C-contiguous
    and channel_axis=-1 (x, g: (N, C, H, W) views of the (N, H, W, C) arrays last, g_last)."""
    xc, gc = np.ascontiguousarray(x), np.ascontiguousarray(g)
    return [lambda: npeca.eca(x, w), numpy_copy(lambda: npeca.eca(x, w)),
            lambda: npeca.eca(xc, w), lambda: npeca.eca(last, w, channel_axis=-1),
            lambda: npeca.eca_backward(x, w, g),
            numpy_copy(lambda: npeca.eca_backward(x, w, g)),
            lambda: npeca.eca_backward(xc, w, gc),
            lambda: npeca.eca_backward(last, w, g_last, channel_axis=-1)]


def main() -> None:
    npeca.backends.warmup()
    shapes = sys.argv[1:] or SHAPES
    w = np.array([0.1, 0.2, 0.4, 0.2, 0.1], np.float32)
    print("ms, float32; forward: tiled / numpy copy / C-contiguous / channel_axis=-1 | "
          "backward: the same four")
    for text in shapes:
        n, c, h, wd = (int(v) for v in text.split("x"))
        rng = np.random.default_rng(0)
        last = rng.standard_normal((n, h, wd, c), dtype=np.float32)  # memory order NHWC
        g_last = rng.standard_normal((n, h, wd, c), dtype=np.float32)
        x, g = last.transpose(0, 3, 1, 2), g_last.transpose(0, 3, 1, 2)  # NCHW views
        columns = _columns(x, g, last, g_last, w)
        want = npeca.eca(np.ascontiguousarray(x), w)
        for got in (columns[0](), columns[1](), columns[3]().transpose(0, 3, 1, 2)):
            if got.tobytes(order="C") != want.tobytes(order="C"):
                raise SystemExit(f"{text}: the forwards differ")
        want_b = columns[6]()
        last_b = columns[7]()
        last_b = last_b._replace(x=last_b.x.transpose(0, 3, 1, 2))
        for got_b in (columns[4](), columns[5](), last_b):
            if any(np.asarray(u).tobytes(order="C") != np.asarray(v).tobytes(order="C")
                   for u, v in zip(got_b, want_b) if v is not None):
                raise SystemExit(f"{text}: the backwards differ")
        times: list[list[float]] = [[] for _ in columns]
        for _ in range(5):
            for i, call in enumerate(columns):
                times[i].append(mean_ms(call))
        med = [float(np.median(t)) for t in times]
        print(f"{text:14s} forward {med[0]:8.2f} {med[1]:8.2f} {med[2]:8.2f} {med[3]:8.2f} | "
              f"backward {med[4]:8.2f} {med[5]:8.2f} {med[6]:8.2f} {med[7]:8.2f}", flush=True)


if __name__ == "__main__":
    main()
