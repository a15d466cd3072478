"""The inference part of the benchmark (issue 13): ResNet-50's ECA layer shapes with the call
users write, the cost of one call on a tiny input, and the cold start of a fresh install.

Used by ``bench.py``; every function returns plain data that bench.py prints and saves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import peers

import npeca

# ResNet-50's ECA layers see these (C, H = W) at 224 x 224 input; batch 1 and 32.
RESNET = [(256, 56), (512, 28), (1024, 14), (2048, 7)]
BATCHES = (1, 32)
LARGE_BYTES = 16 << 20  # "the large ones": x of at least 16 MiB

FORWARD = [
    ("copy", peers.copy_floor),
    ("npeca", peers.npeca_default),
    ("npeca out=", peers.npeca_default_out),
    ("torch", peers.torch_forward),
    ("onnxruntime", peers.onnxruntime_forward),
]

TRAIN = [
    ("copy", peers.copy_floor),
    ("npeca", peers.npeca_default_train),
    ("torch", peers.torch_train_step),
]


def cases():
    """(label, shape, channels_last) of every inference row."""
    for n in BATCHES:
        for c, h in RESNET:
            for channels_last in (False, True):
                shape = (n, c, h, h)
                label = "x".join(map(str, shape)) + (" NHWC" if channels_last else " NCHW")
                yield label, shape, channels_last


def targets(forward_rows: list, train_rows: list, medians) -> list[dict]:
    """Issue 13's per-shape targets: the default call's forward no slower than the faster
    of PyTorch and onnxruntime; forward+backward at least 2x faster than PyTorch, 5x on
    inputs of at least LARGE_BYTES."""
    out = []
    for row in forward_rows:
        med = medians(row)
        peers_ = [med[p] for p in ("torch", "onnxruntime") if p in med]
        ratio = med["npeca"] / min(peers_) if peers_ and "npeca" in med else None
        out.append({"target": "forward <= 1.0x the faster of PyTorch and onnxruntime",
                    "case": row["case"], "ratio": ratio, "limit": 1.0,
                    "met": None if ratio is None else bool(ratio <= 1.0)})
    for row in train_rows:
        med = medians(row)
        large = row["bytes"] >= LARGE_BYTES
        need = 5.0 if large else 2.0
        speedup = med["torch"] / med["npeca"] if "torch" in med and "npeca" in med else None
        ratio = None if speedup is None else 1.0 / speedup
        out.append({"target": f"forward+backward >= {need:g}x faster than PyTorch",
                    "case": row["case"], "ratio": ratio, "limit": 1.0 / need,
                    "met": None if ratio is None else bool(ratio <= 1.0 / need)})
    return out


# --- the cost of one call on a tiny input --------------------------------------------------------

def per_call_cost(rounds: int = 20000) -> dict:
    """Medians (microseconds) on a 1x64x1x1 float32 input: the numba kernel alone, ``eca``
    with out=, ``eca`` returning a new y, the ECA layer, the backward's two kernels alone and
    ``eca_backward`` with out=, timed one call each in turn (round-robin, so that a
    disturbance hits all alike); the differences are the cost of the call path above the
    kernels."""
    from npeca.backends import numba_cpu
    from npeca._validate import eca_problem
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64, 1, 1)
    w = np.array([0.2, 0.5, 0.3], np.float32)
    g = x[:, ::-1].copy()
    out = np.empty_like(x)
    dx = np.empty_like(x)
    layer = npeca.ECA(64, kernel_size=3, dtype=np.float32)
    layer.weight[...] = w.reshape(layer.weight.shape)
    # the kernel calls forward and backward make, with their arguments, recorded once
    # (benchmark only)
    recording = numba_cpu._schedule._recording
    recording.calls = []
    numba_cpu._run.forward_full(eca_problem(x, w), out)
    (kernel, args), = recording.calls
    recording.calls = []
    # (backward_full: the full path; versions before remembered backward launches had only
    # backward, which was the full path: this function then also times those)
    getattr(numba_cpu._run, "backward_full", numba_cpu._run.backward)(eca_problem(x, w), g, dx)
    (bkernel, bargs), (gkernel, gargs) = recording.calls
    recording.calls = None
    calls = {"kernel": lambda: kernel.serial(*args),
             "eca out=": lambda: npeca.eca(x, w, out=out),
             "eca": lambda: npeca.eca(x, w),
             "ECA layer": lambda: layer(x),
             "backward kernels": lambda: (bkernel.serial(*bargs), gkernel.serial(*gargs)),
             "eca_backward out=": lambda: npeca.eca_backward(x, w, g, out=dx)}
    samples = {name: [] for name in calls}
    clock = time.perf_counter
    for i in range(rounds + 500):
        for name, call in calls.items():
            t0 = clock()
            call()
            if i >= 500:  # the first rounds warm up
                samples[name].append(clock() - t0)
    return {name: float(np.median(v)) * 1e6 for name, v in samples.items()}


# --- cold start: fresh processes with an empty numba cache ---------------------------------------

_COLD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, npeca
what = sys.argv[1]
x = np.random.default_rng(0).standard_normal((1, 256, 56, 56), dtype=np.float32)
w = np.array([0.1, 0.2, 0.4, 0.2, 0.1], np.float32)
t1 = time.perf_counter()
if what == "default":
    npeca.eca(x, w)
elif what == "forward":
    npeca.eca(x, w, backend="numba")
else:
    npeca.eca_backward(x, w, x, backend="numba")
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1}))
"""


def _cold_run(what: str, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    done = subprocess.run([sys.executable, "-c", _COLD, what], capture_output=True, text=True,
                          env=env, timeout=900)
    if done.returncode != 0:
        return {"error": done.stderr[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold_start() -> dict:
    """First calls in fresh processes: with an empty numba cache (the default call, a numba
    forward, a numba backward, each in its own empty cache) and with a filled one (a numba
    forward, then the default call).

    npeca's bytecode is compiled first, as ``pip install`` leaves an installed package (an
    editable install gets it from its first import, unless PYTHONDONTWRITEBYTECODE is set,
    as on the benchmark machine: then every process would compile npeca's sources during
    its first numba call, which imports the numba backend; docs/performance.md, "Cold
    start and the cost of one call")."""
    import compileall
    compileall.compile_dir(os.path.dirname(npeca.__file__), quiet=2)
    results = {}
    with tempfile.TemporaryDirectory(prefix="npeca-cold-") as tmp:
        for what in ("default", "forward", "backward"):
            cache = os.path.join(tmp, what)
            results[f"{what}, empty cache"] = _cold_run(what, cache)
        # the forward's cache now holds the forward kernels (serial, and the parallel ones
        # the background thread finished before that process exited)
        results["forward, cached"] = _cold_run("forward", os.path.join(tmp, "forward"))
        results["default, cached"] = _cold_run("default", os.path.join(tmp, "forward"))
    return results


COLD_LIMITS = {"default, empty cache": 3.0, "forward, empty cache": 3.0,
               "backward, empty cache": 5.0, "forward, cached": 0.3, "default, cached": 0.3}
CALL_LIMITS = {"eca out=": 10.0, "ECA layer": 15.0}
