"""The Numba CPU backend: fused, parallel, deterministic ECA forward and backward.

This module imports numba at import time; :func:`npeca.backends.get_backend` imports it
lazily. It deliberately uses nothing of :mod:`npeca.reference` (see docs/backends.md): the two
are independent implementations of the same math, and the tests compare them. Kernels are
private and trust their inputs: :mod:`npeca.api` validates, this module's ``forward`` and
``backward`` allocate and choose a schedule, the kernels compute.

How the work is laid out (the pass model of docs/performance.md; docs/backends.md has the long
version):

* A C-contiguous float32/float64 ``x`` is viewed, without a copy, as (N, C, S) for
  channels-first or (N, S, C) for channels-last. Anything else (float16, other strides, a
  non-contiguous ``out``, a grad_out of another dtype) is staged a few samples at a time
  through reused float32/float64 buffers: bounded extra memory, one rounding to the output.
* Channels-first forward: one parallel loop whose items are a whole sample (small samples)
  or a range of a sample's channels (so that N = 1 uses every core too). An item pools its
  channels, convolves, gates and scales them while they are still in L2: x is read from
  memory once and y written once, the two passes of the copy floor. The few neighbouring
  channels its convolution reads are pooled again by the item (same arithmetic, same bits)
  instead of waiting for the item that owns them, so no thread ever waits for another.
* Channels-first backward, rows of 8 KiB and more: per item, channel after channel, sum x
  and g * x, and as soon as the neighbours are known, dz and dx = g * a + dm / S, while g
  is still in cache (:func:`_pipeline_cf`); x and g are read from memory once, dx written
  once. Shorter rows: whole small samples per item, or waves in three parallel phases over
  blocks of channels (sums, dz, dx), the rows read again from cache.
* Channels-last: whole samples per item when they divide among the threads (one thread
  sums down every column, gates, then scales position by position: whole rows of C); else
  waves of samples in three parallel phases (columns summed in blocks of up to 256
  channels, gates, then blocks of positions scaled), so that N = 1 uses every core too.
* Every kernel exists as a serial and a parallel twin (:mod:`._compile`): small inputs run
  the serial one on the calling thread; a large call whose parallel twin is not compiled yet
  runs the serial one while the parallel one compiles in the background. Item and wave sizes
  come from this machine's caches (:mod:`._machine`).
* Outputs of 32 MiB and more are written with streaming (non-temporal) stores, which skip
  reading the destination into cache first.
* Every sum over positions is accumulated in float64 over ``LANES`` interleaved lanes
  (position s into lane s mod LANES), the lanes combined by a fixed pairwise tree; the
  channels-first rows by an explicit SIMD loop written in LLVM IR (:func:`_lane_sum`), the
  channels-last columns by the same rule in plain loops, so both layouts give the same bits.
  No sum is split across threads, and no schedule changes an operation or its order:
  results are bitwise identical for any number of threads and on every call.
"""

from __future__ import annotations

from ._ready import ready, wait_until_ready, warmup
from ._run import backward, forward
from ._simd import LANES

__all__ = ["forward", "backward", "LANES", "ready", "wait_until_ready", "warmup"]
