"""Streaming stores on channels-last rows, on against off, in one process: the numba
backend's channels-last forward (``npeca.eca(x, w, out=y, channel_axis=-1)``) and backward
(``npeca.eca_backward(..., out=dx)``) with y and dx written by streaming stores on rows of
C channels, and with ordinary stores, float32, milliseconds.

The two settings alternate three times per shape (a disturbance of the host then hits both)
and the table gives the median of the three and the ratio on / off. The outputs here are
all at least 32 MiB, the size from which npeca streams an output (``_STREAM_BYTES``); only
the row length (``_STREAM_MIN_COLUMNS``, the fewest channels a streamed row has) is
switched::

    python benchmarks/streaming.py
    python benchmarks/streaming.py 32x512x28x28 64x1024x14x14   # NxCxHxW
"""

from __future__ import annotations

import sys
import timeit

import numpy as np

import npeca
from npeca.backends.numba_cpu import _schedule

SHAPES = ["32x64x112x112", "32x256x56x56", "32x512x28x28", "64x1024x14x14", "128x2048x7x7"]


def median_ms(call) -> float:
    """The median of 7 means of enough calls for about 50 ms each, in milliseconds."""
    number = max(3, int(0.05 / max(1e-6, timeit.timeit(call, number=1))))
    return float(np.median(timeit.repeat(call, number=number, repeat=7))) / number * 1e3


def main() -> None:
    print("channels-last, float32, ms (medians of 3 alternating rounds); ratio on / off")
    print(f"{'shape':16s} {'MiB':>5s} {'copy':>7s} {'fwd off':>8s} {'fwd on':>8s} {'ratio':>6s} "
          f"{'bwd off':>8s} {'bwd on':>8s} {'ratio':>6s}")
    for label in sys.argv[1:] or SHAPES:
        print(row(label), flush=True)


def row(label: str) -> str:
    """The table row of one shape."""
    w = np.array([0.1, 0.2, 0.4, 0.2, 0.1], np.float32)
    n, c, h, width = (int(v) for v in label.split("x"))
    x = np.random.default_rng(0).standard_normal((n, h, width, c), dtype=np.float32)
    if x.nbytes < _schedule._STREAM_BYTES:
        raise SystemExit(f"{label}: {x.nbytes} bytes, under the {_schedule._STREAM_BYTES} "
                         f"from which outputs are streamed; choose a larger shape")
    y, dx, g = np.empty_like(x), np.empty_like(x), x[::-1].copy()
    times: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    for _ in range(3):
        for setting in ("off", "on"):
            _schedule._STREAM_MIN_COLUMNS = 1 << 30 if setting == "off" else 1
            forward = median_ms(lambda: npeca.eca(x, w, out=y, channel_axis=-1,
                                                  backend="numba"))
            backward = median_ms(lambda: npeca.eca_backward(x, w, g, out=dx, channel_axis=-1,
                                                            backend="numba"))
            times[setting].append((forward, backward))
    copy = median_ms(lambda: np.copyto(y, x))
    off = np.median(times["off"], axis=0)
    on = np.median(times["on"], axis=0)
    return (f"{label:16s} {x.nbytes / 2**20:5.0f} {copy:7.2f} {off[0]:8.2f} {on[0]:8.2f} "
            f"{on[0] / off[0]:6.2f} {off[1]:8.2f} {on[1]:8.2f} {on[1] / off[1]:6.2f}")


if __name__ == "__main__":
    main()
