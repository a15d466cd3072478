"""This version's schedule against the previous one, in one process, on ResNet-50's ECA
shapes: the default calls ``y = npeca.eca(x, w)`` and ``npeca.eca_backward(x, w, g)``
(numba backend, new arrays), float32, milliseconds.

What differs, and only how the work is cut (the bits are the same; the tests check it):

* ``whole samples``: channels-first samples up to a quarter of this CPU's share of the L3
  (at most 4 L2s) are one work item each in the forward and the backward
  (``_schedule._PER_SAMPLE_BYTES``); before, only samples up to a quarter of an L2.
* ``blocks``: a channels-last sample alone (N = 1) is pooled in the same number of
  column blocks per thread (``_Call.channels_last_plan``); before, in blocks of at most
  ``_ACC_COLUMNS`` channels however they fell on the threads.

The two settings alternate ``ROUNDS`` times per shape (a disturbance of the host then hits
both); each setting's remembered launches are forgotten when it is switched on. The table
gives the least of the medians (the host runs a process at changing speeds) and the ratio
new / old::

    python benchmarks/schedule.py
    python benchmarks/schedule.py 32x1024x14x14 1x512x28x28nhwc   # NxCxHxW, nhwc: channels-last
"""

from __future__ import annotations

import functools
import sys
import time

import numpy as np

import npeca
from npeca.backends.numba_cpu import _run, _schedule

SHAPES = ["32x1024x14x14", "32x2048x7x7", "32x512x28x28", "16x256x56x56", "8x2048x7x7",
          "1x512x28x28nhwc", "1x1024x14x14nhwc"]
ROUNDS = 7


def _old_channels_last_plan(self, n: int, itemsize: int) -> tuple[int, int, int, int]:
    """The channels-last plan of the previous version: blocks of at most _ACC_COLUMNS."""
    threads = self.threads
    if self.balanced(n):
        return _schedule._SAMPLES, 0, self.c, 0
    c, s = self.c, self.s
    wave = min(n, max(1, (_schedule._WAVE_BYTES_PER_THREAD * threads) // (c * s * itemsize)))
    chunk = min(c, _schedule._ACC_COLUMNS,
                max(_schedule._MIN_BLOCK, _schedule._ceil(_schedule._ceil(c, threads), 16) * 16))
    return (_schedule._WAVES, wave, chunk,
            min(s, _schedule._ceil(wave * s, _schedule._ITEMS_PER_THREAD * threads)))


NEW = (_schedule._PER_SAMPLE_BYTES, _schedule._Call.channels_last_plan)
OLD = (_schedule._CACHES.l2 // 4, _old_channels_last_plan)


def use(setting: tuple) -> None:
    """Switch the schedule to ``setting`` and forget the launches planned with the other."""
    _schedule._PER_SAMPLE_BYTES, plan = setting
    _schedule._Call.channels_last_plan = plan  # type: ignore[method-assign]
    _run._PLANS.clear()
    _run._BACKWARD_PLANS.clear()


def median_ms(call, number: int) -> float:
    """The median of ``number`` timed calls, in milliseconds (after one untimed call)."""
    call()
    times = []
    for _ in range(number):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main() -> None:
    shapes = sys.argv[1:] or SHAPES
    npeca.backends.warmup()
    print(f"{'shape':18s} {'fwd old':>9s} {'fwd new':>9s} {'new/old':>8s} "
          f"{'bwd old':>9s} {'bwd new':>9s} {'new/old':>8s}")
    for text in shapes:
        channels_last = text.endswith("nhwc")
        n, c, h, w_ = (int(v) for v in text.removesuffix("nhwc").split("x"))
        shape = (n, h, w_, c) if channels_last else (n, c, h, w_)
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape, dtype=np.float32)
        g = rng.standard_normal(shape, dtype=np.float32)
        weight = np.array([0.1, 0.2, 0.4, 0.2, 0.1], np.float32)
        axis = -1 if channels_last else 1
        number = max(20, int(1e8 / x.size))
        calls = (("fwd", functools.partial(npeca.eca, x, weight, channel_axis=axis)),
                 ("bwd", functools.partial(npeca.eca_backward, x, weight, g,
                                                   channel_axis=axis)))
        best: dict[str, float] = {}
        for _ in range(ROUNDS):
            for name, setting in (("old", OLD), ("new", NEW)):
                use(setting)
                for part, call in calls:
                    key = f"{part} {name}"
                    best[key] = min(best.get(key, np.inf), median_ms(call, number))
        use(NEW)
        print(f"{text:18s} {best['fwd old']:9.3f} {best['fwd new']:9.3f} "
              f"{best['fwd new'] / best['fwd old']:8.2f} {best['bwd old']:9.3f} "
              f"{best['bwd new']:9.3f} {best['bwd new'] / best['bwd old']:8.2f}", flush=True)


if __name__ == "__main__":
    main()
