"""Write the tables of a benchmark run into the documentation: every table between a pair of
markers ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in README.md and
docs/performance.md is replaced by the table NAME drawn from the run's JSON, so that the
numbers on the page are those of the run the page names::

    python benchmarks/bench.py --json benchmarks/results.json
    python benchmarks/tables.py benchmarks/results.json

Tables: ``forward``, ``train`` (the standard shapes), ``targets`` (issue 4),
``inference-forward``, ``inference-train`` (ResNet-50's ECA layers), ``readme`` (the
README's summary). Times are medians in ms with the ratio to the copy floor in brackets.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "docs" / "performance.md"]


def _ms(seconds: float) -> str:
    """Three significant digits, as the benchmark prints them."""
    return f"{seconds * 1e3:.3g}"


def _ratio(times: dict, name: str) -> str:
    """Column ``name``'s median over the copy floor's, as 'r.rrx'."""
    return f"{times[name]['median_s'] / times['copy']['median_s']:.2f}x"


def _cell(times: dict, name: str, bold: bool = False) -> str:
    """'t (r x)' for column ``name`` of a row (r: the ratio to the copy floor), or n/a."""
    if name not in times or "median_s" not in times[name]:
        return "n/a"
    text = f"{_ms(times[name]['median_s'])} ({_ratio(times, name)})"
    return f"**{text}**" if bold else text


def _inference_start(row: dict) -> str:
    """The first cells of a ResNet-50 row: shape, layout, copy floor, npeca in bold."""
    shape, layout = row["case"].split()
    t = row["times"]
    return f"| {shape} | {layout} | {_ms(t['copy']['median_s'])} | {_cell(t, 'npeca', True)} | "


def _shape(case: str) -> str:
    return case.removesuffix(" float32")


def forward(run: dict) -> list[str]:
    lines = ["| shape | copy floor | numba, new y | numba (`out=`) | NumPy reference "
             "| PyTorch eager | onnxruntime |",
             "|-------|-----------:|-------------:|---------------:|----------------:"
             "|--------------:|------------:|"]
    for row in run["forward"]:
        if row["dtype"] == "bfloat16":
            continue
        t = row["times"]
        lines.append(f"| {_shape(row['case'])} | {_ms(t['copy']['median_s'])} | "
                     f"{_cell(t, 'numba new y', True)} | {_cell(t, 'numba')} | "
                     f"{_cell(t, 'numpy')} | {_cell(t, 'torch')} | {_cell(t, 'onnxruntime')} |")
    return lines


def train(run: dict) -> list[str]:
    lines = ["| shape | copy floor | numba | NumPy reference | PyTorch eager |",
             "|-------|-----------:|------:|----------------:|--------------:|"]
    for row in run["train"]:
        if row["dtype"] == "bfloat16":
            continue
        t = row["times"]
        lines.append(f"| {_shape(row['case'])} | {_ms(t['copy']['median_s'])} | "
                     f"{_cell(t, 'numba', True)} | {_cell(t, 'numpy')} | {_cell(t, 'torch')} |")
    return lines


def _verdict(target: dict) -> str:
    if target["ratio"] is None:
        return "n/a"
    return "met" if target["met"] else "**not met**"


def targets(run: dict) -> list[str]:
    lines = ["| target | shape | measured | |", "|---|---|--:|---|"]
    for t in run["targets"]:
        if "bfloat16" in t["case"]:
            continue
        measured = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f} (limit {t['limit']:.2f})"
        lines.append(f"| {t['target']} | {_shape(t['case'])} | {measured} | {_verdict(t)} |")
    return lines


def inference_forward(run: dict) -> list[str]:
    lines = ["| shape | layout | copy floor | **npeca** | npeca `out=` | PyTorch eager "
             "| onnxruntime | npeca / faster peer |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    for row in run["inference_forward"]:
        t = row["times"]
        peer = min(t[name]["median_s"] for name in ("torch", "onnxruntime") if name in t)
        lines.append(_inference_start(row) + f"{_cell(t, 'npeca out=')} | {_cell(t, 'torch')} | "
                     f"{_cell(t, 'onnxruntime')} | {t['npeca']['median_s'] / peer:.2f} |")
    return lines


def inference_train(run: dict) -> list[str]:
    lines = ["| shape | layout | copy floor | **npeca** | PyTorch eager | PyTorch / npeca "
             "| target |", "|---|---|--:|--:|--:|--:|--:|"]
    verdicts = {t["case"]: t for t in run["inference_targets"] if "backward" in t["target"]}
    for row in run["inference_train"]:
        t = row["times"]
        target = verdicts[row["case"]]
        lines.append(_inference_start(row) + f"{_cell(t, 'torch')} | "
                     f"{t['torch']['median_s'] / t['npeca']['median_s']:.2f}x | "
                     f"{1 / target['limit']:.0f}x: {_verdict(target)} |")
    return lines


def readme(run: dict) -> list[str]:
    lines = ["| shape | forward: `eca(x, w)` | `out=` | onnxruntime | PyTorch | fwd+bwd: numba "
             "| PyTorch |", "|---|---|---|---|---|---|---|"]
    train_rows = {row["case"]: row["times"] for row in run["train"]}
    for row in run["forward"]:
        if row["dtype"] != "float32":
            continue
        t, b = row["times"], train_rows[row["case"]]
        lines.append(f"| {_shape(row['case'])} | **{_ratio(t, 'numba new y')}** | "
                     f"{_ratio(t, 'numba')} | {_ratio(t, 'onnxruntime')} | {_ratio(t, 'torch')} | "
                     f"{_ratio(b, 'numba')} | {_ratio(b, 'torch')} |")
    return lines


def _replace(table: str, match: re.Match) -> str:
    """The markers of ``match`` around ``table``."""
    return match.group(1) + table + match.group(2)


TABLES = {"forward": forward, "train": train, "targets": targets,
          "inference-forward": inference_forward, "inference-train": inference_train,
          "readme": readme}


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/tables.py RESULTS.json")
    run = json.loads(Path(sys.argv[1]).read_text())
    for page in PAGES:
        text = page.read_text()
        for name, make in TABLES.items():
            pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(\n<!-- /bench:{name} -->)",
                                 re.DOTALL)
            text = pattern.sub(functools.partial(_replace, "\n".join(make(run))), text)
        page.write_text(text)
        print(f"wrote the tables of {sys.argv[1]} into {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
