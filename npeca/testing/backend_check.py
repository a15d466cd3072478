"""check_backend: a Hypothesis property test of any ECA backend against npeca's reference.

For every problem :func:`~npeca.testing.strategies.eca_problems` draws, the backend (an
adapter ``fn(inputs, params) -> dict``, see :mod:`npeca.golden.adapters`) is run and
judged exactly as ``npeca golden verify`` judges a golden case
(:func:`npeca.golden.verify.run_case`): each output it returns must lie, element by
element, within the bound that the golden contract allows (a backend that stores every
tensor in the problem's dtype and accumulates in that dtype, or in float32 for float16,
passes; see docs/golden.md, "The contract").

The expected values are either

- ``expected="exact"`` (the default): computed with rational arithmetic and rounded once,
  as a golden suite stores them (:func:`npeca.golden.exact.exact_eca`), with the golden
  bounds :func:`npeca.golden.bounds.error_bounds` for the problem's dtype; or
- ``expected="reference"`` (about 5 times faster on large draws): npeca's float64 reference
  rounded to the problem's dtype. It is not exact, so the bound is widened by the
  reference's own rounding-error bound (``error_bounds`` for float64): since
  ``|got - E'| <= |got - exact| + |exact - r| + |r - E'|`` with r the reference and
  ``E' = round(r)``, the dtype bound (its contract error plus half an ulp of E', which
  covers ``|r - E'|``) plus the float64 bound (which covers ``|exact - r|``) suffices.

A failure raises :class:`BackendMismatch` (an ``AssertionError``) whose message is npeca's
verdict on the smallest failing problem Hypothesis found, with a line that rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import NpecaError, ParameterError
from .strategies import DTYPES, ECAProblemDraw, eca_problems  # raises without hypothesis

import hypothesis  # noqa: E402  (strategies has checked that it imports)
from hypothesis import HealthCheck, Phase, Verbosity, strategies as st  # noqa: E402

__all__ = ["check_backend", "judge", "BackendMismatch", "BackendCheckSummary"]

_GRADIENTS = ("dx", "dweight", "dbias")


class BackendMismatch(NpecaError, AssertionError):
    """:func:`check_backend` found a problem on which the backend disagrees with npeca's
    reference beyond the golden bounds (or errs, or supports no problem at all).

    ``problem`` is the (shrunk) :class:`~npeca.testing.strategies.ECAProblemDraw` and
    ``result`` npeca's :class:`~npeca.golden.CaseResult` on it; both are None when no
    problem could be judged. ``first_failure`` counts the problems judged up to and
    including the first failing one (before shrinking)."""

    def __init__(self, message: str, problem: ECAProblemDraw | None = None,
                 result: Any = None, first_failure: int | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.result = result
        self.first_failure = first_failure


@dataclass
class BackendCheckSummary:
    """What :func:`check_backend` ran: problems judged (``passed``), declined by the backend
    (``unsupported``, with a few of its reasons) and set aside because no output the
    backend returned could have failed on them (``not_checkable``)."""

    passed: int = 0
    failed: int = 0
    unsupported: int = 0
    not_checkable: int = 0
    reasons: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.passed} problems passed"
        if self.unsupported:
            text += f", {self.unsupported} unsupported ({'; '.join(self.reasons)})"
        if self.not_checkable:
            text += f", {self.not_checkable} with nothing checkable"
        return text


def _expected_exact(problem: ECAProblemDraw) -> dict[str, np.ndarray]:
    from ..golden.exact import exact_eca

    inputs, p = problem.inputs, problem.params
    w = inputs["weight"]
    w2 = w.reshape(problem.channels, p["k"]) if p["weight_form"] in ("Ck", "C1k") else \
        w.reshape(p["k"])
    out = exact_eca(inputs["x"], w2, inputs["grad_out"], bias=inputs.get("bias"),
                    channel_axis=p["channel_axis"], padding=p["padding"], groups=p["groups"],
                    gate=p["gate"])
    out["dweight"] = out["dweight"].reshape(w.shape)
    return out


def judge(problem: ECAProblemDraw, fn: Callable, require: Iterable[str] = ("y",),
          expected: str = "exact"):
    """Run ``fn`` on one problem and judge it: a :class:`npeca.golden.CaseResult`
    (PASS, FAIL, ERROR or SKIP), exactly as ``npeca golden verify`` judges a case."""
    from ..golden.bounds import error_bounds
    from ..golden.dtypes import carrier
    from ..golden.io import BOUND_PREFIX
    from ..golden.schema import SATURATION
    from ..golden.verify import reference_outputs, run_case

    if expected not in ("exact", "reference"):
        raise ParameterError(f"expected must be 'exact' or 'reference'; got {expected!r}")
    dtype, p = problem.dtype, problem.params
    inputs = dict(problem.inputs)
    # fn runs first, on copies, so that a problem it declines costs no expected values;
    # run_case then judges what it returned (or what it raised) as for a golden case
    try:
        got: Any = fn({k: v.copy() for k, v in inputs.items()}, dict(p))
        raised: BaseException | None = None
    except NotImplementedError as exc:
        from ..golden.verify import CaseResult
        return CaseResult("problem", "SKIP", message=str(exc) or "not supported")
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a backend's failure is a
        got, raised = None, exc  # verdict (ERROR), given by run_case, which sees it raised

    def replay(_inputs: dict, _params: dict) -> Any:
        if raised is not None:
            raise raised
        return got

    with np.errstate(all="ignore"):
        if expected == "exact":
            exp = _expected_exact(problem)
            arrays = {**inputs, **exp}
            bounds = error_bounds(arrays, p, dtype)
        else:
            ref = reference_outputs(p, inputs, dtype)  # rounded once to dtype (bfloat16:
            exp = {name: v if name in ("m", "z", "a") else v.astype(carrier(dtype))
                   for name, v in ref.items()}  # in float32 carriers, npeca.golden.dtypes)
            arrays = {**inputs, **exp}
            own = error_bounds(arrays, p, "float64")
            bounds = {name: b + own[name] for name, b in error_bounds(arrays, p, dtype).items()}
    arrays.update({BOUND_PREFIX + name: b for name, b in bounds.items()})
    case = {"name": "problem", "dtype": dtype, "params": dict(p),
            "flags": {"nonfinite": False,
                      "saturated": bool(np.max(np.abs(arrays["z"]), initial=0.0)
                                        >= SATURATION)},
            "bounds": {name: BOUND_PREFIX + name for name in bounds}}
    return run_case(case, arrays, replay, tuple(require))


def _format(label: str, problem: ECAProblemDraw, result: Any, expected: str) -> str:
    lines = [f"{label} disagrees with npeca's reference ({expected} expected values, golden "
             f"bounds): {result.status}",
             f"  problem: {problem.describe()}",
             f"  rebuild: problem = npeca.testing.strategies.{problem!r}",
             f"           {label}(problem.inputs, problem.params)"]
    failed = [o for o in result.outputs if o.status == "FAIL"]
    notes = result.message
    shown = "; ".join(f"{o.output}: {o.message}" for o in failed)
    if failed and notes.startswith(shown):  # the failed outputs get a line each below
        notes = notes[len(shown):].lstrip("; ")
    for o in failed:
        ulp = f", {o.worst_ulp} ulp" if 0 <= o.worst_ulp < 10 ** 6 else ""
        lines.append(f"  {o.output}: FAIL, {o.message} ({o.max_ratio:.3g} x the bound{ulp})")
    others = [f"{o.output} {o.status.lower()} ({o.max_ratio:.2g} of its bound)"
              for o in result.outputs if o.status != "FAIL"]
    if others:
        lines.append(f"  within bounds: {', '.join(others)}")
    if notes:
        lines.append(f"  {'verdict' if result.status == 'ERROR' else 'note'}: {notes}")
    return "\n".join(lines)


def _label(fn: Any) -> str:
    if isinstance(fn, str):
        return fn
    return getattr(fn, "__name__", None) or getattr(fn, "__qualname__", None) or \
        type(fn).__name__


# long: argument checks, the Hypothesis settings and the one property, kept together so that
# the test Hypothesis shrinks is the one documented here
def check_backend(fn: str | Callable, *, max_examples: int = 100,
                  dtypes: Sequence[Any] | None = None, require: str | Iterable[str] = ("y",),
                  gradients: bool = True, seed: int | None = None,
                  problems: st.SearchStrategy[ECAProblemDraw] | None = None,
                  expected: str = "exact") -> BackendCheckSummary:
    """Property-test an ECA backend against npeca's reference on random problems.

    Parameters
    ----------
    fn : callable or str
        The backend as an adapter ``fn(inputs, params) -> dict`` (see
        :mod:`npeca.golden.adapters`), or a name ``npeca golden verify`` accepts: "numpy",
        "numba", "cuda", "torch", "onnxruntime" or "package.module:function". It returns any
        subset of y, m, z, a, dx, dweight, dbias; every output it returns is checked. It
        may raise ``NotImplementedError`` for a problem it does not support: that problem is
        set aside (but at least one must be supported).
    max_examples : int
        Problems to judge (Hypothesis' ``max_examples``). 100 problems take a few seconds
        plus the backend's own time.
    dtypes : sequence of {"float64", "float32", "float16", "bfloat16"}, optional
        The dtypes to draw problems in (default the first three; bfloat16 needs
        ml_dtypes); not with ``problems``.
    require : str or sequence of str
        Outputs that must be returned (default y), as ``npeca golden verify --require``.
    gradients : bool
        Require dx and dweight (and dbias when the problem has a bias) too. With False,
        gradients are still checked when ``fn`` returns them.
    seed : int, optional
        Make the run deterministic: the same problems in the same order on every run.
        Without it the run follows the current Hypothesis profile (random, or derandomized
        when the profile sets ``derandomize=True``).
    problems : strategy, optional
        The problems to draw, default ``eca_problems(dtypes=dtypes)``; pass
        ``npeca.testing.strategies.eca_problems(...)`` to narrow or widen them.
    expected : {"exact", "reference"}
        How the expected values are computed (see the module docstring).

    Returns
    -------
    BackendCheckSummary
        How many problems passed, were unsupported or had nothing checkable.

    Raises
    ------
    BackendMismatch
        On the smallest problem Hypothesis finds where an output is beyond its bound, a
        required output is missing, ``fn`` raises (other than NotImplementedError) or
        returns something that is not a dict of outputs; also when ``fn`` supports no
        problem. The message is npeca's verdict with a line that rebuilds the problem.
    BackendUnavailableError
        Without hypothesis installed (at import), or when ``fn`` raises it.

    The Hypothesis deadline is off and failures are not saved to a database, whatever the
    active profile says; call it from a plain test function (not one decorated with
    ``@given``) or from a script.

    Example
    -------
    >>> from npeca.testing import check_backend
    >>> check_backend("numpy", max_examples=5, dtypes=("float64",), seed=0).passed
    5
    """
    from ..golden.adapters import get_adapter
    from ..golden.verify import parse_require

    adapter = get_adapter(fn) if isinstance(fn, str) else fn
    if not callable(adapter):
        raise ParameterError(f"fn must be an adapter fn(inputs, params) -> dict or a backend "
                             f"name; got {type(fn).__name__}")
    if isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer)) \
            or max_examples < 1:
        raise ParameterError(f"max_examples must be an integer >= 1; got {max_examples!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ParameterError(f"seed must be an integer or None; got {seed!r}")
    if expected not in ("exact", "reference"):
        raise ParameterError(f"expected must be 'exact' or 'reference'; got {expected!r}")
    required = parse_require(require)
    if gradients:
        required = tuple(dict.fromkeys(required + _GRADIENTS))
    if dtypes is not None and problems is not None:
        raise ParameterError("give dtypes or problems, not both: pass "
                             "problems=eca_problems(dtypes=..., ...) instead")
    if problems is None:
        strategy = eca_problems(dtypes=DTYPES if dtypes is None else dtypes)
    elif isinstance(problems, st.SearchStrategy):
        strategy = problems
    else:
        raise ParameterError(f"problems must be a Hypothesis strategy such as "
                             f"eca_problems(...); got {type(problems).__name__}")
    label = _label(fn)
    summary = BackendCheckSummary()
    first: list[int | None] = [None]

    def check_one(problem: ECAProblemDraw) -> None:
        result = judge(problem, adapter, required, expected)
        if result.status == "SKIP":
            summary.unsupported += 1
            reason = result.message[:120]
            if reason not in summary.reasons and len(summary.reasons) < 3:
                summary.reasons.append(reason)
            hypothesis.reject()
        failed = any(o.status == "FAIL" for o in result.outputs)
        if result.status == "FAIL" and not failed and result.outputs and \
                not result.message.startswith("required output") and \
                all(o.status == "UNCHECKABLE" for o in result.outputs):
            # every output returned is within a bound larger than its values: nothing that
            # is wrong could have failed here (a gate at 0 everywhere): not a verdict
            summary.not_checkable += 1
            hypothesis.reject()
        ratios = [o.max_ratio for o in result.outputs if np.isfinite(o.max_ratio)]
        if ratios:
            hypothesis.target(float(max(ratios)), label="worst error / bound")
        if result.status != "PASS":
            summary.failed += 1
            if first[0] is None:
                first[0] = summary.passed + summary.failed
            raise BackendMismatch(_format(label, problem, result, expected), problem, result)
        summary.passed += 1

    config = hypothesis.settings(
        max_examples=int(max_examples), deadline=None, database=None,
        verbosity=Verbosity.quiet, report_multiple_bugs=False, print_blob=False,
        phases=(Phase.explicit, Phase.generate, Phase.target, Phase.shrink),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                               HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    if seed is not None:  # a seed replays its own problems, not the profile's derandomized ones
        config = hypothesis.settings(config, derandomize=False)
    test = hypothesis.given(strategy)(check_one)
    test = config(test)
    if seed is not None:
        test = hypothesis.seed(int(seed))(test)
    try:
        test()
    except BackendMismatch as exc:
        how = f", seed={seed}" if seed is not None else ""
        raise BackendMismatch(
            f"{exc}\n  (first failure at problem {first[0]} of at most {max_examples}{how}; "
            f"the problem shown is the smallest failing one Hypothesis found)",
            exc.problem, exc.result, first[0]) from None
    except hypothesis.errors.Unsatisfiable:
        if summary.unsupported and not summary.passed:
            raise BackendMismatch(
                f"{label} supported none of the {summary.unsupported} problems drawn: each "
                f"raised NotImplementedError ({'; '.join(summary.reasons)}); narrow the "
                f"problems with dtypes=... or problems=eca_problems(...)") from None
        raise BackendMismatch(f"{label}: too few of the problems drawn could be judged "
                              f"({summary}); narrow the problems with dtypes=... or "
                              f"problems=eca_problems(...)") from None
    except hypothesis.errors.FlakyFailure as exc:
        original = next((e for e in exc.exceptions if isinstance(e, BackendMismatch)), None)
        raise BackendMismatch(
            f"{label} failed a problem, then passed it when run again (is it "
            f"nondeterministic?)" + (f"; the first failure:\n{original}" if original else ""),
            getattr(original, "problem", None), getattr(original, "result", None),
            first[0]) from None
    if summary.passed == 0:  # every draw rejected without Hypothesis giving up
        raise BackendMismatch(f"{label}: no problem was judged ({summary})")
    return summary
