"""Check and time backend="cuda" on a GPU: every variant and dtype of the golden suite, the
benchmark shapes at full size, then CUDA-event timings against the device-to-device copy
floor and PyTorch CUDA eager; meant to finish within 5 minutes on one GPU (not yet timed:
no GPU so far).

    python benchmarks/gpu.py              # on a machine with an NVIDIA GPU and numba-cuda
    python benchmarks/gpu.py --huge       # also a float16 tensor of more than 2**31 elements
    python benchmarks/gpu.py --json out.json
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu.py --smoke   # code paths only: the
                                                              # simulator times nothing

Correctness: the committed golden suite (tests/golden/core: every padding, gate, weight form,
layout and dtype, exact expected values and derived bounds; bfloat16 is declined, the
backend has no bfloat16 kernels) judged as `npeca golden verify` judges it; then for every
channels-first shape, forward and backward on device arrays compared with the NumPy
reference (float64 inside), max abs and relative error printed, failure if beyond float32
tolerances. Timing: warm-up, then the median of many runs timed with CUDA events, rotating
between several input buffers so that the L2 cache does not flatter (the large shapes'
buffers exceed an H100's 50 MB L2 anyway), with out= and with a new y (dx);
channels-last rows too. Ratios as in docs/performance.md: the copy floor is one
device-to-device copy (one read and one write); forward needs 3 passes (read x twice,
write y: 1.5 copies), backward 4 (read g and x, read g again, write dx: 2 copies). "% of
floor bandwidth" is floor time / measured time. The GPU, its compute capability and the
toolkit versions are printed first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import npeca  # noqa: E402
from npeca.backends import numba_cuda  # noqa: E402

STANDARD = [((64, 256, 56, 56), "float32", False), ((16, 256, 56, 56), "float32", False),
            ((16, 256, 56, 56), "float32", True), ((32, 64, 112, 112), "float32", False),
            ((32, 64, 112, 112), "float32", True), ((64, 512, 7, 7), "float32", False),
            ((8, 2048, 7, 7), "float32", False), ((1, 64, 56, 56), "float32", False),
            ((1, 64, 56, 56), "float32", True), ((16, 256, 56, 56), "float64", False)]
SMOKE = [((2, 16, 4, 4), "float32", False), ((2, 16, 4, 4), "float32", True),
         ((1, 8, 3, 5), "float64", False)]
SUITE = Path(__file__).resolve().parent.parent / "tests" / "golden" / "core"


def versions(cuda, simulated: bool) -> dict:
    """The GPU, its compute capability and the toolkit pieces that compiled the kernels."""
    import numba

    info = {"numba": numba.__version__}
    try:
        import numba_cuda
        info["numba_cuda"] = getattr(numba_cuda, "__version__", "?")
    except ImportError:
        pass
    if simulated:
        info["device"] = "Numba's CUDA simulator"
        return info
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    info.update(device=name, compute_capability=".".join(map(str, dev.compute_capability)),
                multiprocessors=int(getattr(dev, "MULTIPROCESSOR_COUNT", 0)))
    for key, get in (("driver", lambda: cuda.cudadrv.driver.driver.get_version()),
                     ("runtime", lambda: cuda.runtime.get_version()),
                     ("nvvm", lambda: cuda.cudadrv.nvvm.NVVM().get_version())):
        try:
            info[key] = ".".join(map(str, get()))
        except Exception as exc:  # noqa: BLE001 - report what cannot be read, keep going
            info[key] = f"unknown ({type(exc).__name__})"
    return info


def golden_check(limit: int | None) -> dict:
    """The golden core suite with the cuda backend (cases up to ``limit`` elements)."""
    import math

    from npeca.golden import Suite
    from npeca.golden.adapters import get_adapter
    from npeca.golden.verify import verify_case

    suite, adapter = Suite(SUITE), get_adapter("cuda")
    counts: dict = {}
    bad = []
    for name, case in suite.cases.items():
        if limit is not None and math.prod(case["arrays"]["x"]["shape"]) > limit:
            continue
        r = verify_case(suite, name, adapter, require=("y", "m", "z", "a", "dx", "dweight"))
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.status not in ("PASS", "SKIP") or (r.status == "SKIP"
                                               and case["dtype"] != "bfloat16"):
            bad.append(f"{name}: {r.status} {r.message}")
    return {"counts": counts, "failures": bad, "ok": not bad}


def timer(cuda, fn, repeats: int, rotate: int):
    """Median milliseconds of fn(i) over ``repeats`` runs (i cycles through ``rotate``)."""
    for i in range(3):
        fn(i % rotate)
    cuda.synchronize()
    times = []
    for r in range(repeats):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn(r % rotate)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))  # milliseconds
    return statistics.median(times)


def torch_eca(torch, x, w):
    m = x.mean(dim=(2, 3))
    k = w.shape[-1]
    z = torch.nn.functional.conv1d(m[:, None, :], w, padding=(k - 1) // 2)[:, 0, :]
    return x * torch.sigmoid(z)[:, :, None, None]


def check(cuda, shape, dtype, rng) -> dict:
    """Forward and backward on the GPU against the reference; errors and a verdict."""
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    w = (rng.standard_normal((1, 1, npeca.kernel_size(shape[1]))) / 2).astype(dtype)
    xd, gd = cuda.to_device(x), cuda.to_device(g)
    y = npeca.eca(xd, w, backend="cuda").copy_to_host()
    grads = npeca.eca_backward(xd, w, gd, backend="cuda")
    ref_y = npeca.eca(x, w, backend="numpy")
    ref = npeca.eca_backward(x, w, g, backend="numpy")
    out = {}
    for name, got, exp, rtol in (("y", y, ref_y, 2e-5), ("dx", grads.x.copy_to_host(), ref.x,
                                                          1e-4),
                                 ("dweight", grads.weight, ref.weight, 1e-4)):
        got64, exp64 = got.astype(np.float64), exp.astype(np.float64)
        err = float(np.abs(got64 - exp64).max())
        scale = float(np.abs(exp64).max()) or 1.0
        out[name] = {"max_abs": err, "max_rel_to_max": err / scale, "ok": err <= rtol * scale}
    return out


def bench(cuda, torch, shape, dtype, last: bool, repeats: int, rng) -> dict:
    rotate = 3
    stored = (shape[0],) + tuple(shape[2:]) + (shape[1],) if last else shape
    axis = dict(channel_axis=-1) if last else {}
    xs = [cuda.to_device(rng.standard_normal(stored).astype(dtype)) for _ in range(rotate)]
    gs = [cuda.to_device(rng.standard_normal(stored).astype(dtype)) for _ in range(rotate)]
    outs = [cuda.device_array(stored, dtype=dtype) for _ in range(rotate)]
    w = (rng.standard_normal((1, 1, npeca.kernel_size(shape[1]))) / 2).astype(dtype)
    row = {"shape": "x".join(map(str, shape)), "dtype": dtype,
           "layout": "NHWC" if last else "NCHW"}
    row["copy_ms"] = timer(cuda, lambda i: outs[i].copy_to_device(xs[i]), repeats, rotate)
    row["forward_ms"] = timer(
        cuda, lambda i: npeca.eca(xs[i], w, backend="cuda", out=outs[i], **axis), repeats,
        rotate)
    row["forward_new_y_ms"] = timer(
        cuda, lambda i: npeca.eca(xs[i], w, backend="cuda", **axis), repeats, rotate)
    row["backward_ms"] = timer(
        cuda, lambda i: npeca.eca_backward(xs[i], w, gs[i], backend="cuda", out=outs[i],
                                           **axis), repeats, rotate)
    row["backward_new_dx_ms"] = timer(
        cuda, lambda i: npeca.eca_backward(xs[i], w, gs[i], backend="cuda", **axis), repeats,
        rotate)
    if torch is not None and torch.cuda.is_available():
        def nchw(a):  # channels-last memory seen as NCHW, as torch's channels_last format
            t = torch.as_tensor(a, device="cuda")
            return t.permute(0, 3, 1, 2) if last else t
        tx = [nchw(a) for a in xs]
        tg = [nchw(a) for a in gs]
        tw = torch.tensor(w, device="cuda")
        row["torch_forward_ms"] = timer(cuda, lambda i: torch_eca(torch, tx[i], tw), repeats,
                                        rotate)

        def torch_backward(i):
            xi = tx[i].detach().requires_grad_(True)
            wi = tw.detach().requires_grad_(True)
            torch.autograd.grad(torch_eca(torch, xi, wi), (xi, wi), tg[i])

        row["torch_fwd_bwd_ms"] = timer(cuda, torch_backward, repeats, rotate)
        row["fwd_bwd_ms"] = row["forward_ms"] + row["backward_ms"]
    copy = row["copy_ms"]
    row["forward_floor_fraction"] = 1.5 * copy / row["forward_ms"]
    row["backward_floor_fraction"] = 2.0 * copy / row["backward_ms"]
    return row


def huge_check(cuda) -> dict:
    """A float16 tensor of 2**31 + 2**20 elements: indices beyond int32 must be right."""
    n, c, s = 1, 64, (2**31 + 2**20) // 64
    x = cuda.device_array((n, c, s), dtype=np.float16)
    host_row = np.ones(s, dtype=np.float16)
    for ch in range(c):
        x[0, ch].copy_to_device(host_row * np.float16(1 + ch % 4))
    w = np.array([0.0, 1.0, 0.0])  # z = m: a = sigmoid(1 + ch % 4)
    y = npeca.eca(x, w, backend="cuda")
    last = y[0, c - 1, s - 8:].copy_to_host().astype(np.float64)
    expect = float(np.float16((1 + (c - 1) % 4) / (1 + np.exp(-(1 + (c - 1) % 4)))))
    return {"elements": n * c * s, "ok": bool(np.all(last == expect)), "tail": last.tolist()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (for the simulator)")
    ap.add_argument("--huge", action="store_true", help="also check a >2**31-element tensor")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if not numba_cuda.available():
        print("no CUDA device (or simulator): nothing to do", file=sys.stderr)
        return 2
    cuda = numba_cuda._cuda()
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    shapes = SMOKE if args.smoke else STANDARD
    repeats = 3 if args.smoke else args.repeats
    info = versions(cuda, args.smoke)
    print("; ".join(f"{k}: {v}" for k, v in info.items())
          + f"; torch: {getattr(torch, '__version__', 'not installed')}")
    results = {"versions": info, "time": time.strftime("%Y-%m-%d %H:%M"), "rows": []}
    golden = golden_check(200 if args.smoke else None)
    results["golden"] = golden
    print(f"golden core suite: {golden['counts']}"
          + "".join(f"\n  {f}" for f in golden["failures"]))
    failed = not golden["ok"]
    for shape, dtype, last in shapes:
        correct = check(cuda, shape, dtype, rng) if not last else {}
        failed |= not all(v["ok"] for v in correct.values())
        row = bench(cuda, torch, shape, dtype, last, repeats, rng)
        row["correct"] = correct
        results["rows"].append(row)
        t_f = row.get("torch_forward_ms")
        t_b = row.get("torch_fwd_bwd_ms")
        print(f"{row['shape']:>16} {row['layout']} {dtype:>7}  copy {row['copy_ms']:8.3f} ms  "
              f"fwd {row['forward_ms']:8.3f} ms ({100 * row['forward_floor_fraction']:5.1f}% of "
              f"3-pass floor; new y {row['forward_new_y_ms']:8.3f} ms)  "
              f"bwd {row['backward_ms']:8.3f} ms "
              f"({100 * row['backward_floor_fraction']:5.1f}% of 4-pass floor; new dx "
              f"{row['backward_new_dx_ms']:8.3f} ms)"
              + (f"  torch fwd {t_f / row['forward_ms']:5.2f}x slower, fwd+bwd "
                 f"{t_b / row['fwd_bwd_ms']:5.2f}x slower" if t_f else "  torch n/a")
              + ("" if all(v["ok"] for v in correct.values()) else "  INCORRECT"))
    if args.huge and not args.smoke:
        results["huge"] = huge_check(cuda)
        failed |= not results["huge"]["ok"]
        print(f"huge tensor ({results['huge']['elements']} elements): "
              f"{'ok' if results['huge']['ok'] else 'WRONG'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
