"""Channels-last (NHWC) forward of the default backend alone, in a process of its own: one
median per shape of ``npeca.eca(x, w, out=y, channel_axis=-1)`` next to the copy floor.

Used to compare two versions of npeca on the same machine at the same time (no other
library's thread pool in the process), e.g. before and after a change of schedule::

    python benchmarks/nhwc.py
    git worktree add /tmp/old <commit> && PYTHONPATH=/tmp/old python benchmarks/nhwc.py
"""

from __future__ import annotations

import sys
import timeit

import numpy as np

import npeca

SHAPES = ["1x256x56x56", "1x1024x14x14", "1x2048x7x7", "32x1024x14x14", "32x2048x7x7"]


def median_ms(call) -> float:
    """The best of 9 means of enough calls for about 50 ms each, in milliseconds."""
    number = max(3, int(0.05 / max(1e-6, timeit.timeit(call, number=1))))
    return min(timeit.repeat(call, number=number, repeat=9)) / number * 1e3


def main() -> None:
    npeca.backends.warmup()
    print(f"npeca from {npeca.__file__}")
    for label in sys.argv[1:] or SHAPES:
        n, c, h, w_ = (int(v) for v in label.split("x"))
        x = np.random.default_rng(0).standard_normal((n, h, w_, c), dtype=np.float32)
        y = np.empty_like(x)
        w = np.array([0.1, 0.2, 0.4, 0.2, 0.1], np.float32)
        copy = median_ms(lambda x=x, y=y: np.copyto(y, x))
        eca = median_ms(lambda x=x, y=y, w=w: npeca.eca(x, w, out=y, channel_axis=-1))
        print(f"{label:14s} NHWC  copy {copy:.4f} ms  eca out= {eca:.4f} ms ({eca / copy:.2f}x)")


if __name__ == "__main__":
    main()
