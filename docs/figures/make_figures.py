"""Regenerate the documentation's figures: ``python docs/figures/make_figures.py``.

Needs matplotlib (``pip install -e ".[docs]"``). Writes PNG files next to this script:
kernel_size.png (the kernel-size staircase), attention.png (one ECA forward pass) and, when a
benchmark result exists (benchmarks/results.json, written by ``python benchmarks/bench.py
--json benchmarks/results.json``), benchmark.png (timings relative to the copy floor).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import npeca  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
METADATA = {"Software": None}  # no version string: identical bytes on every rerun


def kernel_size_figure() -> Path:
    cs = np.unique(np.round(np.logspace(0, 14, 2000, base=2)).astype(int))
    paper = [npeca.kernel_size(int(c)) for c in cs]
    timm = [npeca.kernel_size(int(c), min_size=3) for c in cs]
    t = np.floor((np.log2(cs) + 1) / 2)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    ax.plot(cs, (np.log2(cs) + 1) / 2, color="0.7", lw=1, label="(log2 C + 1) / 2")
    ax.step(cs, t, where="post", color="0.5", lw=1, ls="--", label="t = floor(...)")
    ax.step(cs, timm, where="post", color="tab:orange", lw=1.5, label="timm (min 3)")
    ax.step(cs, paper, where="post", color="tab:blue", lw=2, label="k = psi(C), paper")
    for lo, hi in ((8, 31), (128, 511), (2048, 8191)):
        ax.axvspan(lo, hi + 1, color="tab:red", alpha=0.08)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("channels C (shaded: t even, k = t + 1)")
    ax.set_ylabel("kernel size k")
    ax.set_yticks(range(0, 9))
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = HERE / "kernel_size.png"
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)
    return path


def attention_figure() -> Path:
    rng = np.random.default_rng(7)
    c = 64
    means = np.sin(np.arange(c) / 5.0) + 0.4 * rng.standard_normal(c)
    x = means[None, :, None, None] + rng.standard_normal((1, c, 8, 8))
    w = np.array([0.6, 1.2, 0.6])  # k = psi(64) = 3
    fwd = npeca.eca_forward(x, w)
    fig, axes = plt.subplots(3, 1, figsize=(7, 5), dpi=110, sharex=True)
    for ax, values, label in zip(axes, (fwd.m[0], fwd.z[0], fwd.a[0]),
                                 ("pooled mean m", "logit z = w ⋆ m~", "attention a = sigmoid(z)")):
        ax.bar(np.arange(c), values, color="tab:blue", width=0.8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("channel c")
    fig.suptitle("ECA on one sample: C = 64, k = 3, w = (0.6, 1.2, 0.6)", fontsize=10)
    fig.tight_layout()
    path = HERE / "attention.png"
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)
    return path


def benchmark_figure(results: Path) -> Path | None:
    if not results.is_file():
        print(f"no {results.relative_to(ROOT)}: skipping benchmark.png", file=sys.stderr)
        return None
    data = json.loads(results.read_text())
    rows = data.get("rows", data if isinstance(data, list) else [])
    labels, series = [], {}
    for row in rows:
        if row.get("pass", "forward") != "forward":
            continue
        labels.append(row["shape"] + (" f64" if row.get("dtype") == "float64" else ""))
        for peer, ratio in row.get("ratio_to_copy", {}).items():
            series.setdefault(peer, []).append(ratio if ratio is not None else np.nan)
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=110)
    width = 0.8 / max(len(series), 1)
    for i, (peer, ratios) in enumerate(series.items()):
        ax.bar(np.arange(len(labels)) + i * width, ratios, width, label=peer)
    ax.axhline(1.0, color="k", lw=1)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=20, fontsize=8)
    ax.set_ylabel("time / copy floor (forward)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = HERE / "benchmark.png"
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)
    return path


def main() -> None:
    for path in (kernel_size_figure(), attention_figure(),
                 benchmark_figure(ROOT / "benchmarks" / "results.json")):
        if path:
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
