"""Verify a backend against a golden suite: run every case, account for every output.

A case's verdict is PASS only when every output the backend returned was compared and lies
within its bound, every required output was returned, and at least one compared output
could have failed. Before a case is run, its stored bounds are recomputed from its inputs
(a bound looser than the derived one is refused) and its expected values are checked
against npeca's float64 reference on the stored inputs, so a suite whose manifest and files
were edited consistently is still refused.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .. import reference
from .._validate import eca_problem
from ..errors import BackendUnavailableError, ParameterError
from .adapters import Adapter, get_adapter
from .bounds import checkable, error_bounds, nonfinite_reach
from .io import Suite
from .progress import Progress
from .dtypes import BFLOAT16, fmt, from_backend, ordered, round_float64, to_backend
from .schema import (INPUTS, INTERMEDIATES, OUTPUTS, SATURATION, SCHEMA_VERSION,
                     GoldenIntegrityError)

def ulp_distance(actual: np.ndarray, expected: np.ndarray, dtype: Any) -> np.ndarray:
    """Representable values of format ``dtype`` (a name or NumPy dtype; bfloat16 too)
    between actual and expected, both rounded to it first; +0 and -0 are one value."""
    name = fmt(dtype).name
    wide = [np.asarray(v, dtype=np.float64) for v in (actual, expected)]
    return np.abs(ordered(wide[0], name) - ordered(wide[1], name))


@dataclass
class OutputResult:
    """How one output of one case compares with the suite.

    ``status`` is PASS, FAIL or UNCHECKABLE (within its bound, but the bound is larger than
    every expected value, so nothing wrong could have failed: reported, never counted as a
    pass). ``max_ratio`` is the largest |actual - expected| / bound (1 is the limit).
    """

    output: str
    status: str
    max_abs: float = 0.0
    max_ratio: float = 0.0
    worst_ulp: int = 0  # ulp of the case's dtype at the worst element; -1: not finite
    worst_index: list[int] | None = None
    message: str = ""


@dataclass
class CaseResult:
    """One case: PASS, FAIL, SKIP (the backend declined it) or ERROR (it raised, or
    returned something that is not a dict of known outputs)."""

    case: str
    status: str
    outputs: list[OutputResult] = field(default_factory=list)
    message: str = ""

    @property
    def compared(self) -> list[str]:
        """The outputs that were compared, in the suite's order."""
        return [o.output for o in self.outputs]

    @property
    def worst(self) -> OutputResult | None:
        """The output furthest beyond (or closest to) its bound."""
        return max(self.outputs, default=None,
                   key=lambda o: (o.status == "FAIL", o.max_ratio))


def _fail(name: str, message: str) -> OutputResult:
    return OutputResult(name, "FAIL", float("inf"), float("inf"), -1, message=message)


def compare(actual: Any, expected: np.ndarray, bound: np.ndarray, name: str,
            dtype: Any, nan_allowed: np.ndarray | None = None) -> OutputResult:
    """``|actual - expected| <= bound`` element by element; NaN where NaN, the same infinity
    where infinite, and NaN also accepted where ``nan_allowed`` (elements that depend on a
    non-finite input, see :func:`~npeca.golden.bounds.nonfinite_reach`). ``actual`` must
    have the case's ``dtype`` (m, z and a: that dtype or a wider float); ulp are counted in
    the case's dtype, at the worst element."""
    dt = fmt(dtype)
    try:
        act = np.asarray(actual)
    except Exception as exc:  # noqa: BLE001 - a backend's odd object: its verdict, not a crash
        return _fail(name, f"not convertible to an array ({type(exc).__name__})")
    if act.shape != expected.shape:
        return _fail(name, f"shape {act.shape}, expected {expected.shape}")
    own = from_backend(act, dt.name)  # bfloat16 results as float32 carriers; None: not bf16
    of_format = own is not None and (dt.name == BFLOAT16 or act.dtype == dt.carrier)
    width = 2 if dt.name == BFLOAT16 else dt.carrier.itemsize  # bytes per value
    wider = name in INTERMEDIATES and act.dtype.kind == "f" and act.dtype.itemsize > width
    if not of_format and not wider:
        return _fail(name, f"returned {act.dtype}, the case's dtype is {dt.name}"
                     + (" (or a wider float)" if name in INTERMEDIATES else ""))
    if of_format and own is not None:
        act = own
    a64, e64 = act.astype(np.float64), expected.astype(np.float64)
    finite = np.isfinite(e64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.where(finite, np.abs(a64 - e64), 0.0)
        ok = np.where(finite, diff <= bound,
                      (np.isnan(e64) & np.isnan(a64)) | (a64 == e64))
        excused = np.zeros(ok.shape, dtype=bool) if nan_allowed is None else \
            nan_allowed & np.isnan(a64) & ~ok
        ok |= excused
        diff = np.where(excused, 0.0, np.where(ok | finite, diff, np.inf))
        diff = np.where(np.isnan(diff), np.inf, diff)
        ratio = np.where(diff == 0, 0.0, diff / bound)
    ulps = np.where(finite & np.isfinite(a64), ulp_distance(a64, e64, dt.name), -1)
    worst = np.unravel_index(int(np.argmax(np.where(ok, -np.inf, ratio))
                                 if not ok.all() else np.argmax(ratio)), act.shape) \
        if act.size else ()
    result = OutputResult(name, "PASS", float(diff.max(initial=0.0)),
                          float(ratio.max(initial=0.0)), int(ulps[worst]) if act.size else 0)
    if not ok.all():
        result.status = "FAIL"
        result.worst_index = [int(i) for i in worst]
        result.message = (f"{int((~ok).sum())} of {ok.size} elements beyond their bound; "
                          f"worst at {tuple(result.worst_index)}: got {float(a64[worst])!r}, "
                          f"expected {float(e64[worst])!r}, bound {float(bound[worst]):.3g}")
    elif not checkable(expected, bound):
        result.status = "UNCHECKABLE"
    return result


def reference_outputs(p: Mapping, arrays: Mapping[str, np.ndarray], dtype: str | None = None
                      ) -> dict[str, np.ndarray]:
    """npeca's float64 reference on a case's inputs (``p``: the case's params), each output
    rounded once to the case's format ``dtype`` (default: the arrays' own dtype)."""
    if dtype == BFLOAT16:  # carriers: compute on the exact float64 values, round at the end
        wide = {k: arrays[k].astype(np.float64) for k in INPUTS if k in arrays}
        out = reference_outputs(p, wide)
        return {k: v if k in INTERMEDIATES else round_float64(v, dtype) for k, v in out.items()}
    problem = eca_problem(arrays["x"], arrays["weight"], bias=arrays.get("bias"),
                          channel_axis=p["channel_axis"], padding=p["padding"],
                          groups=p["groups"], gate=p["gate"])
    with np.errstate(all="ignore"):
        fwd = reference.forward(problem)
        grads = reference.backward(problem, arrays["grad_out"])
    out = {"y": fwd.y, "m": fwd.m, "z": fwd.z, "a": fwd.a, "dx": grads.x,
           "dweight": grads.weight}
    if grads.bias is not None:
        out["dbias"] = grads.bias
    return out


def check_case(case: Mapping, arrays: Mapping[str, np.ndarray], *,
               schema_version: int = SCHEMA_VERSION) -> None:
    """Refuse (GoldenIntegrityError) a case that is not consistent: expected values that
    disagree with npeca's float64 reference on its inputs by more than the reference's own
    error bound plus rounding, stored bounds that differ from the bounds derived from its
    arrays, or flags that do not match them. (A suite rebuilt consistently from other
    inputs is consistent: only a pinned digest tells it apart.) ``schema_version`` is the
    suite's (:attr:`Suite.schema_version`): the bounds are derived with its formula."""
    name, p = case["name"], case["params"]
    with np.errstate(all="ignore"):
        derived = error_bounds(arrays, p, case["dtype"], schema_version=schema_version)
        own = error_bounds(arrays, p, "float64")  # the reference's bound
    ref = reference_outputs(p, arrays, case["dtype"])
    for out in case["bounds"]:
        e, r = arrays[out].astype(np.float64), ref[out].astype(np.float64)
        info = fmt("float64" if out in INTERMEDIATES else case["dtype"])
        u = info.unit_roundoff
        with np.errstate(invalid="ignore"):
            slack = own[out] + u * np.abs(e) * (1 + u) + info.smallest_subnormal
            finite = np.isfinite(e) & np.isfinite(r)
            agree = np.where(finite, np.abs(e - r) <= slack,
                             (np.isnan(e) & np.isnan(r)) | (e == r))
        if not agree.all():
            i = tuple(int(v) for v in np.argwhere(~agree)[0])
            raise GoldenIntegrityError(
                f"case {name}: expected {out}{list(i)} = {float(e[i])!r} disagrees with the "
                f"reference on the stored inputs ({float(r[i])!r}); the suite was edited or "
                f"damaged")
    for out, bname in case["bounds"].items():
        stored = arrays[bname]
        bad = ~(stored == derived[out])
        if bad.any():
            i = tuple(int(v) for v in np.argwhere(bad)[0])
            how = "looser than" if stored[i] > derived[out][i] else "not"
            raise GoldenIntegrityError(
                f"case {name}: {bname}{list(i)} = {float(stored[i])!r} is {how} the bound "
                f"derived from the case's inputs ({float(derived[out][i])!r}, by the formula "
                f"of schema_version {schema_version}); the suite was edited")
    flags = case["flags"]
    nonfinite = not all(np.isfinite(arrays[i]).all() for i in INPUTS if i in arrays)
    with np.errstate(invalid="ignore"):
        saturated = bool(np.nanmax(np.abs(arrays["z"]), initial=0.0) >= SATURATION)
    if flags["nonfinite"] != nonfinite or flags["saturated"] != saturated:
        raise GoldenIntegrityError(
            f"case {name}: flags {flags} do not match its arrays (non-finite inputs: "
            f"{nonfinite}, some |z| >= {SATURATION:g}: {saturated}); the suite was edited")



def _not_checkable_note(case: Mapping, result: OutputResult) -> str:
    why = "gate saturated" if case["flags"]["saturated"] else "bound exceeds every value"
    return f"{result.output}: not checkable, {why}"


def verify_case(suite: Suite, name: str, adapter: Adapter, fmt: str | None = None,
                require: Iterable[str] = ("y",)) -> CaseResult:
    """Check case ``name``'s integrity, run ``adapter`` on it and judge what it returns."""
    case = suite.cases[name]
    if not suite.has_format(name, fmt):
        return CaseResult(name, "SKIP", message=f"no {fmt} file for this case (JSON is "
                                                f"written only for small cases)")
    arrays = suite.arrays(name, fmt)
    check_case(case, arrays, schema_version=suite.schema_version)
    return run_case(case, arrays, adapter, require)


def run_case(case: Mapping, arrays: Mapping[str, np.ndarray], adapter: Adapter,
             require: Iterable[str] = ("y",)) -> CaseResult:
    """Run ``adapter`` on a case whose arrays were checked, and judge what it returns."""
    name = case["name"]
    try:
        inputs = {k: to_backend(arrays[k].copy(), case["dtype"]) for k in INPUTS if k in arrays}
        got = adapter(inputs, dict(case["params"]))
    except NotImplementedError as exc:
        return CaseResult(name, "SKIP", message=str(exc) or "not supported")
    except BackendUnavailableError:
        raise
    except SystemExit as exc:  # a backend that exits must not end the verification early
        return CaseResult(name, "ERROR", message=f"the backend called sys.exit({exc.code!r})")
    # a backend bug is a result, not a crash of the verifier
    except Exception as exc:  # noqa: BLE001
        return CaseResult(name, "ERROR", message=f"{type(exc).__name__}: {exc}")
    if not isinstance(got, Mapping):
        return CaseResult(name, "ERROR", message=f"the backend returned "
                                                 f"{type(got).__name__}, not a dict of outputs")
    unknown = [str(k) for k in got if k not in OUTPUTS]
    if unknown:
        return CaseResult(name, "ERROR", message=(
            f"unknown output {unknown[0][:40]!r}; the suite knows {', '.join(OUTPUTS)}"))
    results, notes = [], []
    reach = nonfinite_reach(arrays, case["params"]) if case["flags"]["nonfinite"] else {}
    for out in OUTPUTS:
        if got.get(out) is None:
            continue
        if out not in case["bounds"]:
            results.append(_fail(out, "returned, but this case has no bias"))
            continue
        r = compare(got[out], arrays[out], arrays[case["bounds"][out]], out, case["dtype"],
                    reach.get(out))
        if r.status == "UNCHECKABLE":
            notes.append(_not_checkable_note(case, r))
        results.append(r)
    missing = [o for o in require if o in case["bounds"] and got.get(o) is None]
    failed = [r for r in results if r.status == "FAIL"]
    if missing:
        notes.insert(0, f"required output {', '.join(missing)} not returned")
    if not results:
        notes.insert(0, "no output compared")
    elif not failed and not any(r.status == "PASS" for r in results):
        notes.insert(0, "nothing checkable was compared")
    status = "FAIL" if failed or missing or not any(r.status == "PASS" for r in results) \
        else "PASS"
    if failed:
        notes.insert(0, "; ".join(f"{r.output}: {r.message}" for r in failed))
    return CaseResult(name, status, results, "; ".join(notes))


def parse_require(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"y,dx"`` or ``["y", "dx"]`` as a tuple of known output names."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    bad = [n for n in names if n not in OUTPUTS]
    if bad:
        raise ParameterError(f"require: unknown output {bad[0]!r}; choose from "
                             f"{', '.join(OUTPUTS)}")
    return tuple(names)


def verify(path: str | os.PathLike, backend: str | Callable = "numpy", *,
           fmt: str | None = None, progress: bool | None = None,
           require: str | Iterable[str] = ("y",),
           expect_digest: str | None = None) -> list[CaseResult]:
    """Verify ``backend`` on every case of the suite at ``path``.

    The suite's manifest, every file's SHA-256 and (with ``expect_digest``) the suite's
    digest are checked first, then each case's bounds and expected values before it runs
    (:class:`~npeca.golden.io.GoldenIntegrityError` otherwise). ``backend`` is a callable
    with the adapter signature or one of "numpy", "numba", "cuda", "torch", "onnxruntime"
    or "module:function" (see :mod:`npeca.golden.adapters`). ``require`` names outputs a
    case must return to pass (default ``y``).
    """
    required = parse_require(require)
    suite = Suite(path)
    if expect_digest is not None:
        want = str(expect_digest).strip().lower()
        if want != suite.digest:
            raise GoldenIntegrityError(f"suite digest is {suite.digest}, expected {want}: the "
                                       f"suite is not the one pinned")
    if fmt is not None and not any(suite.has_format(n, fmt) for n in suite.cases):
        raise ParameterError(f"the suite has no {fmt} files (it holds "
                             f"{', '.join(suite.manifest['formats'])}); choose one of those")
    adapter = backend if callable(backend) else get_adapter(backend)
    label = getattr(backend, "__name__", "backend") if callable(backend) else backend
    results = []
    with Progress(len(suite.cases), f"verify {label}", progress) as bar:
        for name in suite.cases:
            results.append(verify_case(suite, name, adapter, fmt, required))
            bar.step(name)
    return results


def to_json(results: list[CaseResult]) -> list[dict]:
    """The results as JSON-ready dicts (each case lists the outputs it compared; a
    non-finite error or ratio is null, as JSON has no Infinity)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return [clean({**asdict(r), "compared": r.compared}) for r in results]


def _ulp(o: OutputResult) -> str:
    return "-" if o.worst_ulp < 0 else str(o.worst_ulp)


def format_table(results: list[CaseResult], verbose: bool = False) -> str:
    """A fixed-width table: per case its result, the outputs compared and the worst one
    (err/bound: its largest |actual - expected| / bound; ulp: the distance there in ulp of
    the case's dtype, - where a value is not finite); with ``verbose`` a row per output."""
    head = (f"{'case':<28} {'result':<6} {'compared':<24} {'worst':<8} {'err/bound':>9} "
            f"{'ulp':>8}  note")
    lines = [head, "-" * len(head)]
    for r in results:
        compared = " ".join(r.compared) or "-"
        w = r.worst
        if w is None:
            lines.append(f"{r.case:<28} {r.status:<6} {compared:<24} {'-':<8} {'':>9} "
                         f"{'':>8}  {r.message}")
            continue
        lines.append(f"{r.case:<28} {r.status:<6} {compared:<24} {w.output:<8} "
                     f"{w.max_ratio:>9.3g} {_ulp(w):>8}  {r.message}")
        if verbose:
            for o in r.outputs:
                lines.append(f"{'':<28} {o.status:<6} {o.output:<24} {'':<8} "
                             f"{o.max_ratio:>9.3g} {_ulp(o):>8}  {o.message}")
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "ERROR", "SKIP")}
    lines.append("-" * len(head))
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(results)} cases")
    return "\n".join(lines)


__all__ = ["OutputResult", "CaseResult", "compare", "check_case", "verify_case", "run_case",
           "verify",
           "parse_require", "to_json", "format_table", "ulp_distance"]
