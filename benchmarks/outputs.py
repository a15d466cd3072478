"""What a new output array costs: the default call ``y = npeca.eca(x, w)`` with recycled
output memory (npeca/backends/_outputs.py), the same with recycling off (every y a fresh
``np.empty``), and ``out=`` into a preallocated y; then the forward and backward with new
arrays (y and dL/dx alive at once), recycled and fresh. In a process of its own with only
npeca in it; the variants of a shape are timed in rounds of a few calls each, so that a
change in the host's speed touches all of them alike. Medians in milliseconds, with the
ratio to the copy floor (``np.copyto`` of the same tensor) in brackets; last, the
recycling's own cost per output, without a kernel::

    python benchmarks/outputs.py                  # the default shapes
    python benchmarks/outputs.py 32x256x56x56     # N x C x H x W, channels-first
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import npeca
from npeca.backends import _outputs
from npeca.kernel_size import kernel_size

SHAPES = ["1x256x56x56", "1x1024x14x14", "1x2048x7x7", "32x256x56x56", "32x512x28x28",
          "32x1024x14x14", "32x2048x7x7"]


def _fresh(call):
    """call() with recycling off: every output a new np.empty."""
    def run():
        saved = _outputs._limit
        _outputs._limit = 0
        try:
            call()
        finally:
            _outputs._limit = saved
    return run


def medians(calls: dict, budget: float = 0.6, block: int = 8) -> dict:
    """Median seconds per call of each entry: rounds in which every entry runs ``block``
    calls back to back (as a loop of the user's would), about ``budget`` seconds per entry
    in all, at least 3 rounds; a change in the host's speed touches all entries alike."""
    for call in calls.values():  # warm: compile, first faults, free blocks to recycle
        call()
        call()
    start = time.perf_counter()
    for call in calls.values():
        call()
    one = (time.perf_counter() - start) / len(calls)
    rounds = max(3, min(100, int(budget / max(one * block, 1e-6))))
    times: dict = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(block):
                t = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in times.items()}


def _cpuinfo() -> list[str]:
    """The lines of /proc/cpuinfo (none where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read().splitlines()
    except OSError:
        return []


def main() -> None:
    npeca.backends.warmup()
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo()
                if line.startswith("model name")), "unknown CPU")
    print(f"npeca {npeca.__version__} from {npeca.__file__}; {cpu}, {os.cpu_count()} cores; "
          f"output recycling limit {_outputs.limit() >> 20} MiB")
    print("shape | copy floor | y = eca(x, w) | same, recycling off | eca(out=) | "
          "fwd+bwd new arrays | same, recycling off")
    for label in sys.argv[1:] or SHAPES:
        t = measure(*(int(v) for v in label.split("x")))
        cells = [f"{t[k] * 1e3:.3g} ({t[k] / t['copy']:.2f}x)" for k in
                 ("new", "new fresh", "out", "both", "both fresh")]
        print(f"{label} | {t['copy'] * 1e3:.3g} | " + " | ".join(cells), flush=True)
    own = own_cost()
    print(f"the recycling's own cost per output (a 1.6 MB float32 array made and dropped, "
          f"no kernel): {own['recycled'] * 1e6:.2f} us; np.empty: {own['empty'] * 1e6:.2f} us")


def own_cost() -> dict:
    """Median seconds to make and drop one 1x512x28x28 float32 output: recycled (the block
    taken from the free list, the holder, its weak reference, the array; the block handed
    back when the array dies) and a plain np.empty, by ``medians`` in turns of 200 calls
    (100 rounds at most: 20000 calls of each)."""
    shape, dtype = (1, 512, 28, 28), np.dtype(np.float32)
    return medians({"recycled": lambda: _outputs.empty(shape, dtype),  # dies at once
                    "empty": lambda: np.empty(shape, dtype)}, block=200)


def measure(n: int, c: int, h: int, w_: int) -> dict:
    """Median seconds of each variant on an N x C x H x W float32 input."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w_), dtype=np.float32)
    g = rng.standard_normal(x.shape, dtype=np.float32)
    y = np.empty_like(x)
    w = rng.standard_normal(kernel_size(c)).astype(np.float32)

    def new():
        npeca.eca(x, w)

    def both():
        return npeca.eca(x, w), npeca.eca_backward(x, w, g)

    return medians({"copy": lambda: np.copyto(y, x), "new": new, "new fresh": _fresh(new),
                    "out": lambda: npeca.eca(x, w, out=y), "both": both,
                    "both fresh": _fresh(both)})


if __name__ == "__main__":
    main()
