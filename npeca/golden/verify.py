"""Verify a backend against a golden suite: run every case, compare every output."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError
from .adapters import Adapter, get_adapter
from .io import Suite
from .progress import Progress

_UINT = {np.dtype(np.float16): np.int16, np.dtype(np.float32): np.int32,
         np.dtype(np.float64): np.int64}


def ulp_distance(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Representable values between actual and expected, in actual's dtype (expected is
    rounded to that dtype first); +0 and -0 are one value."""
    dt = actual.dtype
    e = expected.astype(dt)
    bits = 8 * dt.itemsize

    def ordered(v: np.ndarray) -> np.ndarray:
        i = v.view(_UINT[dt]).astype(np.int64)
        return np.where(i < 0, -(i & ((1 << (bits - 1)) - 1)), i)

    return np.abs(ordered(actual) - ordered(e))


@dataclass
class OutputResult:
    """How one output of one case compares with the suite."""

    output: str
    status: str  # PASS or FAIL
    max_abs: float
    max_rel: float
    max_ulp: int
    rtol: float
    atol: float
    worst_index: list[int] | None = None
    message: str = ""


@dataclass
class CaseResult:
    """One case: PASS, FAIL, SKIP (unsupported by the backend) or ERROR (it raised)."""

    case: str
    status: str
    outputs: list[OutputResult] = field(default_factory=list)
    message: str = ""

    @property
    def worst(self) -> OutputResult | None:
        """The output with the largest error relative to its tolerance."""
        return max(self.outputs, default=None,
                   key=lambda o: (o.status == "FAIL", o.max_abs / max(o.atol, 1e-300)))


def compare(actual: Any, expected: np.ndarray, rtol: float, atol: float,
            name: str) -> OutputResult:
    """Element-wise |actual - expected| <= atol + rtol |expected|; non-finite values must
    match exactly (NaN where NaN, the same infinity)."""
    act = np.asarray(actual)
    if act.shape != expected.shape:
        return OutputResult(name, "FAIL", np.inf, np.inf, -1, rtol, atol,
                            message=f"shape {act.shape}, expected {expected.shape}")
    if act.dtype.kind != "f":
        return OutputResult(name, "FAIL", np.inf, np.inf, -1, rtol, atol,
                            message=f"dtype {act.dtype} is not a float dtype")
    a64, e64 = act.astype(np.float64), expected.astype(np.float64)
    finite = np.isfinite(e64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(finite, np.abs(a64 - e64), 0.0)
        ok = np.where(finite, diff <= atol + rtol * np.abs(e64),
                      (np.isnan(e64) & np.isnan(a64)) | (a64 == e64))
        diff = np.where(ok | finite, diff, np.inf)
        rel = np.where(~finite, 0.0, np.where(e64 != 0, diff / np.abs(e64),
                                              np.where(diff == 0, 0.0, np.inf)))
    ulps = np.where(finite & np.isfinite(a64), ulp_distance(act, expected), 0)
    worst = np.unravel_index(int(np.argmax(np.where(ok, -1.0, diff + 1.0))), act.shape) \
        if not ok.all() else None
    return OutputResult(
        output=name, status="PASS" if ok.all() else "FAIL",
        max_abs=float(diff.max()) if diff.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        max_ulp=int(ulps.max()) if ulps.size else 0, rtol=rtol, atol=atol,
        worst_index=None if worst is None else [int(i) for i in worst],
        message="" if worst is None else (
            f"{int((~ok).sum())} of {ok.size} elements out of tolerance; worst at "
            f"{tuple(int(i) for i in worst)}: got {float(a64[worst])!r}, expected "
            f"{float(e64[worst])!r}"))


INPUTS = ("x", "weight", "bias", "grad_out")


def verify_case(suite: Suite, name: str, adapter: Adapter, fmt: str | None = None) -> CaseResult:
    """Run ``adapter`` on case ``name`` and compare what it returns."""
    case = suite.cases[name]
    if not suite.has_format(name, fmt):
        return CaseResult(name, "SKIP", message=f"no {fmt} file for this case (JSON is "
                                                f"written only for small cases)")
    arrays = suite.arrays(name, fmt)
    inputs = {k: arrays[k].copy() for k in INPUTS if k in arrays}
    try:
        got = adapter(inputs, dict(case["params"]))
    except NotImplementedError as exc:
        return CaseResult(name, "SKIP", message=str(exc) or "not supported")
    except BackendUnavailableError:
        raise
    except Exception as exc:  # a backend bug is a result, not a crash of the verifier
        return CaseResult(name, "ERROR", message=f"{type(exc).__name__}: {exc}")
    results = []
    for out, tol in case["tolerances"].items():
        if out in got and got[out] is not None:
            results.append(compare(got[out], arrays[out], tol["rtol"], tol["atol"], out))
    if not results:
        return CaseResult(name, "SKIP", message="the backend returned none of the outputs")
    status = "PASS" if all(r.status == "PASS" for r in results) else "FAIL"
    return CaseResult(name, status, results)


def verify(path: str | os.PathLike, backend: str = "numpy", *, fmt: str | None = None,
           progress: bool | None = None) -> list[CaseResult]:
    """Verify ``backend`` on every case of the suite at ``path``.

    The suite's schema and every file's SHA-256 are checked first
    (:class:`~npeca.golden.io.GoldenIntegrityError` otherwise). ``backend`` is one of
    "numpy", "numba", "cuda", "torch", "onnxruntime" or "module:function" (see
    :mod:`npeca.golden.adapters` for the function's signature).
    """
    suite = Suite(path)
    adapter = get_adapter(backend)
    results = []
    with Progress(len(suite.cases), f"verify {backend}", progress) as bar:
        for name in suite.cases:
            results.append(verify_case(suite, name, adapter, fmt))
            bar.step(name)
    return results


def to_json(results: list[CaseResult]) -> list[dict]:
    """The results as JSON-ready dicts."""
    return [asdict(r) for r in results]


def format_table(results: list[CaseResult], verbose: bool = False) -> str:
    """A fixed-width table: one row per case (its worst output), or per output."""
    head = (f"{'case':<30} {'output':<8} {'max abs err':>11} {'max rel err':>11} "
            f"{'max ulp':>8} {'tolerance':>20}  result")
    lines = [head, "-" * len(head)]
    for r in results:
        rows = r.outputs if verbose else [r.worst] if r.worst else []
        if not rows:
            lines.append(f"{r.case:<30} {'-':<8} {'':>11} {'':>11} {'':>8} {'':>20}  "
                         f"{r.status} {r.message}")
        for o in rows:
            status = o.status if verbose else r.status
            tol = f"{o.atol:.1e}+{o.rtol:.0e}|e|"
            lines.append(f"{r.case:<30} {o.output:<8} {o.max_abs:>11.3e} {o.max_rel:>11.3e} "
                         f"{o.max_ulp:>8d} {tol:>20}  {status}"
                         + (f"  {o.message}" if o.status == "FAIL" else ""))
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "ERROR", "SKIP")}
    lines.append("-" * len(head))
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(results)} cases")
    return "\n".join(lines)
