"""Time ECA forward and forward+backward against the copy floor and the peers, in one process.

Run from a clone of the repository (after ``pip install -e .``)::

    python benchmarks/bench.py            # every table, about 4 minutes on 2 cores
    python benchmarks/bench.py --quick    # fewer repeats, no cold-start runs: about a minute
    python benchmarks/bench.py --json results.json
    python benchmarks/bench.py --skip standard --skip cold   # only the inference table

It compiles every kernel first (``npeca.backends.warmup()``), then times, interleaved round by
round so that a disturbance hits every column alike:

* the standard table (issue 4): the copy floor ``np.copyto(out, x)`` (one read and one write
  of the tensor, docs/performance.md), npeca's numba backend (into a preallocated ``out`` and
  returning a new array), the NumPy reference, PyTorch eager and onnxruntime (each only if
  installed; "n/a" otherwise);
* the inference table (issue 13, benchmarks/inference.py): ResNet-50's ECA layer shapes at
  batch 1 and 32, channels-first and channels-last, with the call users write,
  ``y = npeca.eca(x, w)``, as the primary column, ``out=`` beside it and the peers;
* the cost of one call on a tiny input, and the first call of fresh processes with an empty
  numba cache (skipped by --quick).

It prints medians in milliseconds, every median as a ratio to the copy floor, npeca's
speed-up over each peer, and a verdict per target. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # peers.py, when run as a script

import inference  # noqa: E402
import peers  # noqa: E402

STANDARD = [
    ((16, 256, 56, 56), "float32"),
    ((32, 64, 112, 112), "float32"),
    ((64, 512, 7, 7), "float32"),
    ((8, 2048, 7, 7), "float32"),
    ((1, 64, 56, 56), "float32"),
    ((16, 256, 56, 56), "float64"),
    ((16, 256, 56, 56), "bfloat16"),
    ((32, 64, 112, 112), "bfloat16"),
]

FORWARD = [
    ("copy", peers.copy_floor),
    ("numba", peers.npeca_forward("numba")),
    ("numba new y", peers.npeca_forward("numba", preallocated=False)),
    ("numpy", peers.npeca_forward("numpy", preallocated=False)),
    ("torch", peers.torch_forward),
    ("onnxruntime", peers.onnxruntime_forward),
]

TRAIN = [
    ("copy", peers.copy_floor),
    ("numba", peers.npeca_train_step("numba")),
    ("numpy", peers.npeca_train_step("numpy")),
    ("torch", peers.torch_train_step),
]

_WARM_S = 0.03  # untimed calls before each block of timed calls
#: A column's timed calls last at least about this long in all (``repeats`` calls at the
#: least, _MAX_RUNS at most): 21 calls of 0.03 ms are 0.6 ms, three blocks of 7 that one
#: interruption of the host could fill; calls of about 12 ms and more keep ``repeats``.
_TIMED_S = 0.25
_MAX_RUNS = 600

# The targets of issue 4: (what, implementation, reference column, shapes, largest ratio).
BIG = ["16x256x56x56 float32", "32x64x112x112 float32"]
TARGETS = [
    ("forward no slower than onnxruntime", "forward", "numba", "onnxruntime", None, 1.0),
    ("forward within 1.3x of the copy floor", "forward", "numba", "copy", BIG, 1.3),
    ("forward+backward at least 5x faster than PyTorch eager", "train", "numba", "torch",
     BIG, 1 / 5),
    ("forward+backward within 3x of the copy floor", "train", "numba", "copy", BIG, 3.0),
    ("single sample forward within 3x of the copy floor", "forward", "numba", "copy",
     ["1x64x56x56 float32"], 3.0),
]


def machine() -> dict:
    """What the numbers were measured on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}
    for name in ("numba", "torch", "onnxruntime"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if info["numba"]:
        from npeca.backends.numba_cpu._machine import caches
        info["caches"] = caches().__dict__
        import numba
        info["numba_threads"] = numba.get_num_threads()
        try:
            info["numba_threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel region has run yet
            info["numba_threading_layer"] = None
    return info


def label(shape, dtype) -> str:
    """'16x256x56x56 float32'."""
    return "x".join(map(str, shape)) + f" {dtype}"


def time_row(case: peers.Case, columns, repeats: int, budget: float, cycles: int = 3,
             least: int = 3, timed: float = _TIMED_S) -> dict:
    """Median seconds per column.

    Each column runs in blocks: untimed calls for _WARM_S, then its share of the timed
    calls, so that the thread pools of one library (which spin for a while after their
    work) do not slow the next one, and idle virtual CPUs are awake. The blocks of all
    columns are cycled ``cycles`` times, so that a passing disturbance from another process
    lands on every column rather than on one. A slow column (the NumPy reference on large
    shapes) runs fewer calls, at least ``least``, within ``budget`` seconds; a fast one more,
    up to _MAX_RUNS, so that its timed calls take about ``timed`` seconds in all."""
    calls, notes = {}, {}
    for name, setup in columns:
        try:
            calls[name] = setup(case)
        except peers.NotAvailable as exc:
            calls[name], notes[name] = None, str(exc)
    calls = {name: call for name, call in calls.items() if call is not None}
    samples, runs, slow = {name: [] for name in calls}, {}, {}
    for name, call in calls.items():
        t0 = time.perf_counter()
        call()  # JIT compilation or cache load, session creation, first touch
        if name == "numba":
            samples["numba first call"] = [time.perf_counter() - t0]
        t0 = time.perf_counter()
        call()
        once = time.perf_counter() - t0
        fill = min(_MAX_RUNS, int(timed / max(once, 1e-9)))  # fast calls: more of them
        runs[name] = max(least, min(max(repeats, fill), int(budget / max(once, 1e-9))))
        slow[name] = once > _WARM_S  # a long call needs no warming up
    for _ in range(cycles):
        for name, call in calls.items():
            todo = min(-(-runs[name] // cycles), runs[name] - len(samples[name]))
            if todo <= 0:
                continue
            warm_until = time.perf_counter() + (0.0 if slow[name] else _WARM_S)
            while time.perf_counter() < warm_until:
                call()
            for _ in range(todo):
                t0 = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - t0)
    times = {name: _summary(ts) for name, ts in samples.items()}
    times.update({name: {"unavailable": why} for name, why in notes.items()})
    return times


def _summary(ts: list) -> dict:
    """What the results keep of a column's timed calls: their median, their number and the
    quantiles 0, 10, 25, 75, 90 and 100 % (seconds), not the calls themselves (up to
    _MAX_RUNS of them per column)."""
    quantiles = np.percentile(ts, [0, 10, 25, 75, 90, 100])
    return {"median_s": float(np.median(ts)), "n": len(ts),
            "quantiles_s": [float(q) for q in quantiles]}


def _write_json(path: str, results: dict) -> None:
    """``results`` as JSON at ``path``, atomically: written to a new file beside it, then
    renamed over it (an interrupted run leaves the old file whole)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def ratio_text(value: float | None, floor: float | None) -> str:
    """'3.71 (1.02x)' or 'n/a'."""
    if value is None or floor is None:
        return "n/a"
    return f"{value * 1e3:.3g} ({value / floor:.2f}x)"


def print_table(title: str, rows: list, columns: list[str], main: str = "numba") -> None:
    """Medians in ms with the ratio to the copy floor, then numba's speed-up over peers."""
    print(f"\n{title}: median ms (ratio to the copy floor)")
    head = ["shape"] + columns
    body = []
    for row in rows:
        med = _medians(row)
        floor = med.get("copy")
        body.append([row["case"]] + [ratio_text(med.get(c), floor) for c in columns])
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    for r in [head] + body:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    peers_ = [c for c in columns if c not in ("copy", "numba", "numba new y") and
              not c.startswith("npeca")]
    print(f"{main} speed-up over: " + ", ".join(peers_))
    for row in rows:
        med = _medians(row)
        ups = [f"{med[p] / med[main]:.2f}x" if p in med and main in med else "n/a"
               for p in peers_]
        print(f"  {row['case']:<26}" + "  ".join(f"{p}: {u}" for p, u in zip(peers_, ups)))
    for row in rows:
        for name, v in row["times"].items():
            if "unavailable" in v:
                print(f"  n/a: {name} on {row['case']}: {v['unavailable']}")


def _medians(row: dict) -> dict:
    """Median seconds of every column that ran."""
    return {k: v["median_s"] for k, v in row["times"].items() if "median_s" in v}


def check_targets(results: dict) -> list[dict]:
    """Each target of issue 4 per shape: the measured ratio and whether it is met."""
    out = []
    for what, table, impl, ref, shapes, limit in TARGETS:
        for row in results[table]:
            if shapes is not None and row["case"] not in shapes:
                continue
            med = _medians(row)
            if impl not in med or ref not in med:
                out.append({"target": what, "case": row["case"], "ratio": None, "met": None})
                continue
            ratio = med[impl] / med[ref]
            out.append({"target": what, "case": row["case"], "ratio": ratio,
                        "limit": limit, "met": bool(ratio <= limit)})
    return out


def main(argv=None) -> int:
    """Run the benchmark; print the tables; optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, a smaller time budget and no cold-start runs")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per column (default 21, quick 6; without --quick a "
                             "fast column gets more, up to 0.25 s or 600 calls)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--only", metavar="SHAPE", action="append",
                        help="run only rows whose label starts with SHAPE, e.g. 64x512x7x7")
    parser.add_argument("--skip", choices=("standard", "inference", "cold", "calls"),
                        action="append", default=[], help="leave out a part of the run")
    args = parser.parse_args(argv)
    repeats = args.repeats or (6 if args.quick else 21)
    budget = 1.0 if args.quick else 8.0  # seconds per slow column and row
    cycles, least = (2, 2) if args.quick else (3, 3)
    timed = 0.0 if args.quick else _TIMED_S
    started = time.perf_counter()

    import npeca.backends
    t0 = time.perf_counter()
    npeca.backends.warmup()  # every kernel compiled (or loaded): "auto" uses numba from here
    warm_s = time.perf_counter() - t0

    def wanted(text: str) -> bool:
        return not args.only or any(text.startswith(o) for o in args.only)

    results = {"forward": [], "train": [], "inference_forward": [], "inference_train": []}
    if "standard" not in args.skip:
        for shape, dtype in [(s, d) for s, d in STANDARD if wanted(label(s, d))]:
            case = peers.Case.make(shape, dtype)
            for key, columns in (("forward", FORWARD), ("train", TRAIN)):
                times = time_row(case, columns, repeats, budget, cycles, least, timed)
                results[key].append({"case": label(shape, dtype), "shape": list(shape),
                                     "dtype": dtype, "times": times})
            del case
    if "inference" not in args.skip:
        for text, shape, channels_last in inference.cases():
            if not wanted(text):
                continue
            case = peers.Case.make(shape, "float32", channels_last=channels_last)
            for key, columns in (("inference_forward", inference.FORWARD),
                                 ("inference_train", inference.TRAIN)):
                times = time_row(case, columns, repeats, budget, cycles, least, timed)
                results[key].append({"case": text, "shape": list(shape), "dtype": "float32",
                                     "channels_last": channels_last,
                                     "bytes": case.x.nbytes, "times": times})
            del case
    results["calls_us"] = None if "calls" in args.skip else inference.per_call_cost()
    results["cold"] = None if (args.quick or "cold" in args.skip) else inference.cold_start()
    results["machine"] = machine()
    results["settings"] = {"repeats": repeats, "timed_s": timed, "budget_s": budget,
                           "cycles": cycles, "least": least, "quick": args.quick,
                           "warmup_s": warm_s, "elapsed_s": time.perf_counter() - started}
    results["targets"] = check_targets(results)
    results["bfloat16_vs_float32"] = bfloat16_ratios(results)
    results["inference_targets"] = inference.targets(
        results["inference_forward"], results["inference_train"], _medians)
    report(results)
    if args.json:
        _write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


def bfloat16_ratios(results: dict) -> list[dict]:
    """Per shape with a bfloat16 and a float32 row: bfloat16 median / float32 median of the
    copy floor and of npeca's numba columns (forward, and forward+backward)."""
    rows = {}
    for key in ("forward", "train"):
        for row in results[key]:
            rows[(key, row["case"])] = _medians(row)
    out = []
    for row in results["forward"]:
        if row["dtype"] != "bfloat16":
            continue
        shape = row["case"].split()[0]
        f32 = rows.get(("forward", f"{shape} float32"))
        if f32 is None:
            continue
        bf = rows[("forward", row["case"])]
        entry = {"shape": shape}
        for col in ("copy", "numba", "numba new y"):
            if col in bf and col in f32:
                entry[col] = bf[col] / f32[col]
        t_bf, t_32 = rows.get(("train", row["case"])), rows.get(("train", f"{shape} float32"))
        if t_bf and t_32 and "numba" in t_bf and "numba" in t_32:
            entry["numba fwd+bwd"] = t_bf["numba"] / t_32["numba"]
        out.append(entry)
    return out


def _verdict(met) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def report(results: dict) -> None:
    """Print every table and target of a run."""
    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, caches {m.get('caches')}; numba "
          f"{m['numba']} ({m.get('numba_threads')} threads, "
          f"{m.get('numba_threading_layer')}), numpy {m['numpy']}, torch {m['torch']}, "
          f"onnxruntime {m['onnxruntime']}")
    print(f"warmup (npeca.backends.warmup(), before any timing): "
          f"{results['settings']['warmup_s']:.1f} s")
    if results["forward"]:
        print_table("forward", results["forward"], [n for n, _ in FORWARD])
        print_table("forward+backward", results["train"], [n for n, _ in TRAIN])
        halves = bfloat16_ratios(results)
        if halves:
            print("\nbfloat16 against float32 on the same shape (issue 17: half the bytes, so "
                  "about half the time; ratio = bfloat16 median / float32 median):")
            for h in halves:
                print(f"  {h['shape']:<16} " + "  ".join(
                    f"{col}: {h[col]:.2f}" for col in ("copy", "numba", "numba new y",
                                                       "numba fwd+bwd") if col in h))
        print("\ntargets of issue 4:")
        for t in results["targets"]:
            ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f} (limit {t['limit']:.2f})"
            print(f"  {_verdict(t['met']):<8} {t['target']}, {t['case']}: {ratio}")
    if results["inference_forward"]:
        print("\nResNet-50 ECA layers, float32. 'npeca' is the call users write, "
              "y = npeca.eca(x, w) (default backend, new y); 'npeca out=' writes into a "
              "preallocated y.")
        print_table("inference forward", results["inference_forward"],
                    [n for n, _ in inference.FORWARD], main="npeca")
        print_table("inference forward+backward (new arrays)", results["inference_train"],
                    [n for n, _ in inference.TRAIN], main="npeca")
        print("\ntargets of issue 13 (ratio = npeca time / reference time):")
        for t in results["inference_targets"]:
            ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f} (limit {t['limit']:.2f})"
            print(f"  {_verdict(t['met']):<8} {t['target']}, {t['case']}: {ratio}")
    calls = results.get("calls_us")
    if calls:
        print("\nper-call cost on a 1x64x1x1 float32 input (median microseconds): "
              + ", ".join(f"{k} {v:.1f}" for k, v in calls.items()))
        for name, limit in inference.CALL_LIMITS.items():
            extra = calls[name] - calls["kernel"]
            print(f"  {_verdict(extra <= limit):<8} {name} costs {extra:.1f} us above the "
                  f"kernel (limit {limit:g} us)")
        if "eca_backward out=" in calls:
            print(f"  (no target) eca_backward out= costs "
                  f"{calls['eca_backward out='] - calls['backward kernels']:.1f} us above its "
                  f"two kernels")
    cold = results.get("cold")
    if cold:
        print("\ncold start (fresh processes; 'empty cache' = a new NUMBA_CACHE_DIR), "
              "1x256x56x56 float32:")
        for name, limit in inference.COLD_LIMITS.items():
            got = cold.get(name, {})
            if "first_call_s" not in got:
                print(f"  n/a      {name}: {got.get('error', 'not run')}")
                continue
            print(f"  {_verdict(got['first_call_s'] <= limit):<8} first call, {name}: "
                  f"{got['first_call_s']:.2f} s (limit {limit:g} s; import "
                  f"{got['import_s']:.2f} s)")
    elif cold is None:
        print("\ncold start: not measured (--quick or --skip cold)")
    first = [row["times"].get("numba first call", {}).get("median_s")
             for row in results["forward"]]
    print(f"\n{results['settings']['elapsed_s']:.0f} s in all; numba's first call per row "
          f"of the standard table: "
          + ", ".join("n/a" if f is None else f"{f * 1e3:.0f} ms" for f in first))


if __name__ == "__main__":
    sys.exit(main())
