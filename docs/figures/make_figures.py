"""Regenerate the documentation's figures: ``python docs/figures/make_figures.py``.

Needs matplotlib (``pip install -e ".[docs]"``). Writes PNG files next to this script:
kernel_size.png (the kernel-size staircase), attention.png (one ECA forward pass),
window.png (the kernel's window over padded means) and, when a
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
COLORS = {"numba": "tab:blue", "numba new y": "tab:cyan", "numpy": "tab:green",
          "torch": "tab:red", "onnxruntime": "tab:purple"}


def _save(fig, name: str) -> Path:
    """Lay out, write next to this script without a version stamp, close; the path."""
    fig.tight_layout()
    path = HERE / name
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)
    return path


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
    return _save(fig, "kernel_size.png")


def attention_figure() -> Path:
    rng = np.random.default_rng(7)
    c = 64
    means = 0.6 * np.sin(np.arange(c) / 5.0) + 0.2 * rng.standard_normal(c)
    means[20] = 3.0  # one strong channel: its neighbours show which way the kernel reads
    x = means[None, :, None, None] + 0.3 * rng.standard_normal((1, c, 8, 8))
    w = np.array([1.5, 0.5, -0.5])  # k = psi(64) = 3, not symmetric
    fwd = npeca.eca_forward(x, w)
    fig, axes = plt.subplots(3, 1, figsize=(7, 5), dpi=110, sharex=True)
    labels = ("pooled mean m", "logit z = w ⋆ m~", "attention a = sigmoid(z)")
    for ax, values, label in zip(axes, (fwd.m[0], fwd.z[0], fwd.a[0]), labels):
        colors = ["tab:orange" if i in (19, 20, 21) else "tab:blue" for i in range(c)]
        ax.bar(np.arange(c), values, color=colors, width=0.8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[1].annotate("z_21 = 1.5 m_20 + ...: the right neighbour\nreads the strong channel "
                     "through w_0", xy=(21, fwd.z[0, 21]), xytext=(30, fwd.z[0, 21] - 0.5),
                     fontsize=7, arrowprops={"arrowstyle": "->", "lw": 0.8})
    axes[-1].set_xlabel("channel c (orange: channel 20 and its two neighbours)")
    fig.suptitle("ECA on one sample: C = 64, k = 3, w = (1.5, 0.5, -0.5)", fontsize=10)
    return _save(fig, "attention.png")


def window_figure() -> Path:
    """The kernel sliding over the padded means of six channels: zero padding above,
    circular below; the window of output channel 0 and of output channel 5 drawn."""
    m = np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.0])
    fig, axes = plt.subplots(2, 1, figsize=(7, 3.2), dpi=110)
    for ax, (mode, pad) in zip(axes, (("zeros", (0.0, 0.0)), ("circular", (m[-1], m[0])))):
        values = [pad[0], *m, pad[1]]
        for i, v in enumerate(values):
            ch = i - 1
            padded = ch in (-1, 6)
            ax.add_patch(plt.Rectangle((i, 0), 0.9, 0.9, fill=True, alpha=0.35,
                                       color="lightgray" if padded else "tab:blue"))
            ax.text(i + 0.45, 0.45, f"{v:g}", ha="center", va="center", fontsize=9)
            label = f"m~ {ch}" if padded else f"m {ch}"
            if padded and mode == "circular":
                label += f"\n(= m {ch % 6})"
            ax.text(i + 0.45, -0.25, label, ha="center", va="top", fontsize=7)
        for start, color, out in ((0, "tab:orange", 0), (5, "tab:green", 5)):
            ax.add_patch(plt.Rectangle((start - 0.05, -0.05), 3.0, 1.0, fill=False, lw=1.6,
                                       color=color))
            for j, wj in enumerate(("w0", "w1", "w2")):
                ax.text(start + j + 0.45, 1.1, wj, ha="center", fontsize=7, color=color)
            ax.text(start + 1.45, 1.45, f"z {out}", ha="center", fontsize=8, color=color)
        ax.set_xlim(-0.3, 8.2)
        ax.set_ylim(-0.9, 1.8)
        ax.axis("off")
        ax.set_title(f"padding = {mode!r}", fontsize=9, loc="left")
    fig.tight_layout()
    return _save(fig, "window.png")


def benchmark_figure(results: Path) -> Path | None:
    """Medians of every column as a ratio to the copy floor, forward and forward+backward,
    from the JSON that benchmarks/bench.py writes."""
    if not results.is_file():
        print(f"no {results.relative_to(ROOT)}: skipping benchmark.png", file=sys.stderr)
        return None
    data = json.loads(results.read_text())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110, sharey=True)
    for ax, key, title in zip(axes, ("forward", "train"), ("forward", "forward + backward")):
        rows = data.get(key, [])
        labels = [row["case"].replace(" float32", "").replace(" float64", " f64")
                  for row in rows]
        columns = [c for c in dict.fromkeys(n for row in rows for n in row["times"])
                   if c not in ("copy", "numba first call")]
        width = 0.8 / max(len(columns), 1)
        for i, col in enumerate(columns):
            ratios = []
            for row in rows:
                t, floor = row["times"].get(col, {}), row["times"].get("copy", {})
                ok = "median_s" in t and "median_s" in floor
                ratios.append(t["median_s"] / floor["median_s"] if ok else np.nan)
            ax.bar(np.arange(len(rows)) + i * width, ratios, width, label=col,
                   color=COLORS.get(col, "0.5"))
        ax.axhline(1.0, color="k", lw=1)
        ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, labels, rotation=25, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("median time / copy floor (np.copyto)")
    cpu = data.get("machine", {}).get("cpu", "")
    fig.suptitle(f"npeca benchmark relative to the copy floor ({cpu})", fontsize=9)
    return _save(fig, "benchmark.png")


def main() -> None:
    for path in (kernel_size_figure(), attention_figure(), window_figure(),
                 benchmark_figure(ROOT / "benchmarks" / "results.json")):
        if path:
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
