"""npeca alone, in a process of its own: per ResNet-50 ECA shape and layout, the median of
``npeca.eca(x, w, out=y)`` and of a forward and backward with new arrays
(``npeca.eca`` then ``npeca.eca_backward``), next to the copy floor.

For comparing two versions of npeca on the same machine, one process after the other, with
no other library's thread pool in the process::

    python benchmarks/compare.py
    git worktree add /tmp/old <commit> && PYTHONPATH=/tmp/old python benchmarks/compare.py

Shapes as arguments (``1x2048x7x7``) replace the default list.
"""

from __future__ import annotations

import sys
import timeit

import numpy as np

import npeca

SHAPES = ["1x256x56x56", "1x512x28x28", "1x1024x14x14", "1x2048x7x7",
          "32x256x56x56", "32x512x28x28", "32x1024x14x14", "32x2048x7x7"]


def median_ms(call) -> float:
    """The median of 9 means of enough calls for about 30 ms each, in milliseconds."""
    number = max(3, int(0.03 / max(1e-6, timeit.timeit(call, number=1))))
    return float(np.median(timeit.repeat(call, number=number, repeat=9))) / number * 1e3


def main() -> None:
    npeca.backends.warmup()
    print(f"npeca from {npeca.__file__}")
    print(f"{'shape':14s} {'layout':6s} {'copy':>8s} {'eca out=':>16s} {'fwd+bwd':>16s}  (ms)")
    for label in sys.argv[1:] or SHAPES:
        n, c, h, w_ = (int(v) for v in label.split("x"))
        for layout, axis in (("NCHW", 1), ("NHWC", -1)):
            shape = (n, c, h, w_) if axis == 1 else (n, h, w_, c)
            rng = np.random.default_rng(0)
            x = rng.standard_normal(shape, dtype=np.float32)
            g = rng.standard_normal(shape, dtype=np.float32)
            y = np.empty_like(x)
            w = np.array([0.1, 0.2, 0.4, 0.2, 0.1], np.float32)
            copy = median_ms(lambda x=x, y=y: np.copyto(y, x))
            fwd = median_ms(lambda x=x, y=y, w=w, a=axis: npeca.eca(x, w, out=y, channel_axis=a))
            train = median_ms(lambda x=x, g=g, w=w, a=axis: (
                npeca.eca(x, w, channel_axis=a), npeca.eca_backward(x, w, g, channel_axis=a)))
            print(f"{label:14s} {layout:6s} {copy:8.4f} {fwd:8.4f} ({fwd / copy:5.2f}x) "
                  f"{train:8.4f} ({train / copy:5.2f}x)", flush=True)


if __name__ == "__main__":
    main()
