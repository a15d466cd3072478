"""Check and time backend="cuda" on a GPU: correctness at full sizes, then CUDA-event timings
against the device-to-device copy floor and PyTorch CUDA eager.

    python benchmarks/gpu.py              # on a machine with an NVIDIA GPU and numba-cuda
    python benchmarks/gpu.py --huge       # also a float16 tensor of more than 2**31 elements
    python benchmarks/gpu.py --json out.json
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu.py --smoke   # code paths only: the
                                                              # simulator times nothing

Correctness: for every shape, forward and backward on device arrays compared with the NumPy
reference (float64 inside), max abs and relative error printed, failure if beyond the golden
suite's float32 tolerances. Timing: warm-up, then the median of many runs timed with CUDA
events, rotating between several input buffers so that the L2 cache does not flatter (each
buffer of the standard shapes is larger than an H100's 50 MB L2 anyway). Ratios as in
docs/performance.md: the copy floor is one device-to-device copy (one read and one write);
forward needs 3 passes (read x twice, write y: 1.5 copies), backward 4 (read g and x, read g
again, write dx: 2 copies). "% of floor bandwidth" is floor time / measured time.
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

STANDARD = [((64, 256, 56, 56), "float32"), ((16, 256, 56, 56), "float32"),
            ((32, 64, 112, 112), "float32"), ((64, 512, 7, 7), "float32"),
            ((8, 2048, 7, 7), "float32"), ((1, 64, 56, 56), "float32"),
            ((16, 256, 56, 56), "float64")]
SMOKE = [((2, 16, 4, 4), "float32"), ((1, 8, 3, 5), "float64")]


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


def bench(cuda, torch, shape, dtype, repeats: int, rng) -> dict:
    rotate = 3
    xs = [cuda.to_device(rng.standard_normal(shape).astype(dtype)) for _ in range(rotate)]
    gs = [cuda.to_device(rng.standard_normal(shape).astype(dtype)) for _ in range(rotate)]
    outs = [cuda.device_array(shape, dtype=dtype) for _ in range(rotate)]
    w = (rng.standard_normal((1, 1, npeca.kernel_size(shape[1]))) / 2).astype(dtype)
    row = {"shape": "x".join(map(str, shape)), "dtype": dtype}
    row["copy_ms"] = timer(cuda, lambda i: outs[i].copy_to_device(xs[i]), repeats, rotate)
    row["forward_ms"] = timer(cuda, lambda i: npeca.eca(xs[i], w, backend="cuda", out=outs[i]),
                              repeats, rotate)
    row["backward_ms"] = timer(
        cuda, lambda i: npeca.eca_backward(xs[i], w, gs[i], backend="cuda", out=outs[i]),
        repeats, rotate)
    if torch is not None and torch.cuda.is_available():
        tx = [torch.as_tensor(a, device="cuda") for a in xs]
        tg = [torch.as_tensor(a, device="cuda") for a in gs]
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
    device = "simulator" if args.smoke else cuda.get_current_device().name
    device = device.decode() if isinstance(device, bytes) else str(device)
    print(f"device: {device}; torch: {getattr(torch, '__version__', 'not installed')}")
    results = {"device": device, "time": time.strftime("%Y-%m-%d %H:%M"), "rows": []}
    failed = False
    for shape, dtype in shapes:
        correct = check(cuda, shape, dtype, rng)
        failed |= not all(v["ok"] for v in correct.values())
        row = bench(cuda, torch, shape, dtype, repeats, rng)
        row["correct"] = correct
        results["rows"].append(row)
        t_f = row.get("torch_forward_ms")
        t_b = row.get("torch_fwd_bwd_ms")
        print(f"{row['shape']:>16} {dtype:>7}  copy {row['copy_ms']:8.3f} ms  "
              f"fwd {row['forward_ms']:8.3f} ms ({100 * row['forward_floor_fraction']:5.1f}% of "
              f"3-pass floor)  bwd {row['backward_ms']:8.3f} ms "
              f"({100 * row['backward_floor_fraction']:5.1f}% of 4-pass floor)"
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
