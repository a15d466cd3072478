"""npeca.testing.strategies and check_backend: correct backends pass, planted bugs are caught.

How many examples a planted bug needs. Over 500 problems of the default strategy, each bug
below puts some output beyond its bound on a fraction p of them: about 0.5 for the
forgotten bias, the sigmoid slope and dbias (half the problems have a bias, half a sigmoid),
0.3 to 0.42 for the channels-last reshape, the float16 sums, the flipped kernel, groups
ignored and circular-as-zeros, 0.23 for the circular window wrapped once (it needs a
circular half-window longer than C / groups). The hard sigmoid's unclamped slope needs some
|z| > 3 (p = 0.15 by default) and runs on hard-sigmoid problems only (p = 0.29). With
p >= 0.23, 100 examples miss a bug with probability 0.77 ** 100 < 1e-11. Hypothesis' draws
are not independent, so this was also measured: across 60 seeds every bug was found by its
38th problem at the latest (the median by the 1st to 7th) and shrunk to at most 16 elements
(median 1 to 4). So the tests pass under the derandomized "ci" profile and under any random
seed of the default one.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings

import npeca
from npeca.errors import BackendUnavailableError, NpecaError, ParameterError
from npeca.golden.adapters import npeca_adapter
from npeca.golden.bounds import error_bounds
from npeca.testing import check_backend
from npeca.testing.backend_check import (BackendCheckSummary, BackendMismatch,
                                         _expected_exact, judge)
from npeca.testing.strategies import ECAProblemDraw, eca_problems

GRADS = ("y", "dx", "dweight", "dbias")


# --- a small ECA written for these tests, with bugs to plant ----------------------------------

BUGS = {
    "bias_forgotten": "z computed without the bias",
    "circular_as_zeros": "circular padding treated as zero padding",
    "circular_wraps_once": "circular index wrapped once (t + C or t - C), not modulo C",
    "sigmoid_slope_a": "the sigmoid's derivative taken as a instead of a (1 - a)",
    "hard_slope_unclamped": "the hard sigmoid's derivative 1/6 everywhere, clamp ignored",
    "channels_last_reshaped": "channels-last x reshaped to (N, C, S), not transposed",
    "float16_sums": "a float32 backend that sums (mean, da, dweight) in float16",
    "flipped_kernel": "convolution instead of cross-correlation",
    "groups_ignored": "groups ignored: windows cross group edges",
    "dbias_from_da": "dbias summed from da instead of dz",
}


def _sources(c: int, k: int, groups: int, padding: str, bug: str | None) -> np.ndarray:
    """src[c, j]: the channel tap j of output channel c reads, -1 for a zero pad."""
    cg, p = c // groups, (k - 1) // 2
    ch = np.arange(c)[:, None]
    start = (ch // cg) * cg
    t = ch - start + np.arange(k)[None, :] - p
    if padding == "circular" and bug == "circular_wraps_once":
        t = np.where(t < 0, t + cg, np.where(t >= cg, t - cg, t))  # still outside: skipped
    elif padding == "circular":
        return start + t % cg
    return np.where((t >= 0) & (t < cg), start + t, -1)


def planted_eca(inputs: dict, params: dict, bug: str | None = None) -> dict:
    """ECA forward and backward in float64, every output rounded once to x's dtype."""
    x, g = inputs["x"], inputs["grad_out"]
    dt, axis, k = x.dtype, params["channel_axis"], params["k"]
    n, c = x.shape[0], x.shape[axis]
    xc_shape = np.moveaxis(x, axis, 1).shape
    if axis == -1 and bug == "channels_last_reshaped":
        def to_ncs(a): return a.reshape(n, c, -1)
        def from_ncs(a): return a.reshape(x.shape)
    else:
        def to_ncs(a): return np.moveaxis(a, axis, 1).reshape(n, c, -1)
        def from_ncs(a): return np.moveaxis(a.reshape(xc_shape), 1, axis)
    x3, g3 = to_ncs(x).astype(np.float64), to_ncs(g).astype(np.float64)
    s = x3.shape[2]
    half = bug == "float16_sums" and dt == np.float32

    def total(t: np.ndarray, ax: int) -> np.ndarray:
        if half:
            return t.astype(np.float16).sum(axis=ax, dtype=np.float16).astype(np.float64)
        return t.sum(axis=ax)

    w = inputs["weight"].astype(np.float64).reshape(-1, k)
    per_channel = w.shape[0] != 1
    if bug == "flipped_kernel":
        w = w[:, ::-1]
    wc = np.broadcast_to(w, (c, k))
    b = 0.0 if "bias" not in inputs or bug == "bias_forgotten" else float(inputs["bias"][0])
    src = _sources(c, k, 1 if bug == "groups_ignored" else params["groups"],
                   "zeros" if bug == "circular_as_zeros" else params["padding"], bug)
    valid = src >= 0
    m = total(x3, 2) / s
    mt = np.where(valid[None], m[:, np.where(valid, src, 0)], 0.0)  # (N, C, k)
    z = b + (wc[None] * mt).sum(axis=2)
    if params["gate"] == "sigmoid":
        a = 1.0 / (1.0 + np.exp(-z))
        slope = a if bug == "sigmoid_slope_a" else a * (1.0 - a)
    else:
        a = np.clip(z + 3.0, 0.0, 6.0) / 6.0
        slope = np.full_like(z, 1.0 / 6.0) if bug == "hard_slope_unclamped" else \
            np.where(np.abs(z) < 3.0, 1.0 / 6.0, 0.0)
    y = x3 * a[:, :, None]
    da = total(g3 * x3, 2)
    dz = da * slope
    prod = dz[:, :, None] * mt
    dw = total(prod, 0) if per_channel else total(prod.reshape(-1, k), 0)
    dm = np.zeros((n, c))
    for j in range(k):
        cols = np.nonzero(valid[:, j])[0]
        np.add.at(dm, (slice(None), src[cols, j]), wc[cols, j] * dz[:, cols])
    dx = g3 * a[:, :, None] + dm[:, :, None] / s
    out = {"y": from_ncs(y).astype(dt), "m": m.astype(dt), "z": z.astype(dt),
           "a": a.astype(dt), "dx": from_ncs(dx).astype(dt),
           "dweight": dw.reshape(inputs["weight"].shape).astype(dt)}
    if "bias" in inputs:
        out["dbias"] = np.array([(da if bug == "dbias_from_da" else dz).sum()]).astype(dt)
    return out


def planted(bug: str):
    fn = functools.partial(planted_eca, bug=bug)
    fn.__name__ = bug  # the name check_backend's message uses
    return fn


# --- the strategies ---------------------------------------------------------------------------

WEIGHT_SHAPES = {"k": lambda c, k: (k,), "11k": lambda c, k: (1, 1, k),
                 "Ck": lambda c, k: (c, k), "C1k": lambda c, k: (c, 1, k)}


@given(eca_problems(saturated=True))
def test_every_draw_is_a_valid_problem_in_adapter_form(problem):
    inputs, p = problem.inputs, problem.params
    assert set(p) == {"k", "padding", "groups", "gate", "bias", "channel_axis", "weight_form"}
    assert set(inputs) == {"x", "weight", "grad_out"} | ({"bias"} if p["bias"] else set())
    c = problem.channels
    assert inputs["x"].shape == problem.shape == inputs["grad_out"].shape
    assert inputs["x"].shape[p["channel_axis"]] == c and 3 <= inputs["x"].ndim <= 5
    assert inputs["weight"].shape == WEIGHT_SHAPES[p["weight_form"]](c, p["k"])
    assert p["k"] % 2 == 1 and p["k"] <= 4 * (c // p["groups"]) + 3 and c % p["groups"] == 0
    if p["bias"]:
        assert inputs["bias"].shape == (1,)
    for a in inputs.values():
        assert a.dtype == np.dtype(problem.dtype) and np.isfinite(a).all()
    npeca.eca_forward(inputs["x"], inputs["weight"], **problem.kwargs())  # npeca accepts it
    again = eval(repr(problem), {"ECAProblemDraw": ECAProblemDraw})  # the repr rebuilds it
    assert again.params == p and set(again.inputs) == set(inputs)
    for name, a in inputs.items():
        assert np.array_equal(again.inputs[name], a)


def test_strategy_covers_every_variant_and_edge_case():
    seen = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(eca_problems(saturated=True))
    def collect(problem):
        p, c = problem.params, problem.channels
        cg, half = c // p["groups"], (p["k"] - 1) // 2
        seen.update({problem.dtype, p["padding"], p["gate"], f"bias={p['bias']}",
                     f"axis={p['channel_axis']}", p["weight_form"],
                     f"spatial={len(problem.spatial)}"})
        seen.update(name for name, hit in [
            ("C=1", c == 1), ("k>C", p["k"] > c), ("groups>1", p["groups"] > 1),
            ("wraps more than once", p["padding"] == "circular" and half > cg),
            ("saturated", problem.saturate), ("N=2", problem.shape[0] == 2)] if hit)

    collect()
    want = {"float16", "float32", "float64", "zeros", "circular", "sigmoid", "hard_sigmoid",
            "bias=True", "bias=False", "axis=1", "axis=-1", "k", "11k", "Ck", "C1k",
            "spatial=1", "spatial=2", "spatial=3", "C=1", "k>C", "groups>1",
            "wraps more than once", "saturated", "N=2"}
    assert want <= seen, want - seen


def test_strategy_options_narrow_the_draws():
    @settings(max_examples=30, deadline=None, database=None)
    @given(eca_problems(dtypes=("float32",), max_channels=3, spatial_dims=(2,), max_side=2,
                        paddings="circular", gates=("hard_sigmoid",), bias=True,
                        channel_axes=(-1,), weight_forms=("C1k",), max_kernel=3))
    def check(problem):
        assert problem.dtype == "float32" and problem.channels <= 3
        assert len(problem.spatial) == 2 and max(problem.spatial) <= 2 and problem.k <= 3
        assert (problem.padding, problem.gate, problem.channel_axis, problem.weight_form) == \
            ("circular", "hard_sigmoid", -1, "C1k") and "bias" in problem.inputs

    check()


@pytest.mark.parametrize("kwargs", [{"dtypes": ("float128",)}, {"dtypes": ()},
                                    {"paddings": ("reflect",)}, {"max_channels": 0},
                                    {"weight_forms": ("kC",)}, {"spatial_dims": (4,)},
                                    {"scales": (float("inf"),)}])
def test_strategy_refuses_bad_options(kwargs):
    with pytest.raises((ParameterError, TypeError)):
        eca_problems(**kwargs)


def test_build_refuses_an_invalid_problem():
    with pytest.raises(ParameterError, match="groups 2 must divide C = 3"):
        ECAProblemDraw.build("float32", (1, 3, 4), k=3, groups=2)
    with pytest.raises(ParameterError, match="k must be odd"):
        ECAProblemDraw.build("float32", (1, 3, 4), k=2)


def test_repr_and_description_are_readable():
    p = ECAProblemDraw.build("float16", (2, 5, 3), k=7, padding="circular", bias=True,
                             channel_axis=-1, weight_form="Ck", seed=3)
    assert repr(p) == ("ECAProblemDraw.build('float16', (2, 5, 3), k=7, padding='circular', "
                       "groups=1, gate='sigmoid', bias=True, channel_axis=-1, "
                       "weight_form='Ck', seed=3)")
    assert p.describe() == ("float16 x(2, 5, 3) (channels-last, C=3), k=7 weight(3, 7) (Ck), "
                            "padding=circular, groups=1, gate=sigmoid, bias")


# --- correct backends pass --------------------------------------------------------------------

def test_npeca_numpy_backend_passes_every_dtype_with_gradients():
    summary = check_backend(npeca_adapter("numpy"))
    assert isinstance(summary, BackendCheckSummary)
    assert summary.passed == 100 and summary.unsupported == 0


def test_backend_names_and_saturated_logits():
    assert check_backend("numpy", max_examples=40,
                         problems=eca_problems(saturated=True)).passed == 40


def test_npeca_numba_backend_passes_float32_and_float64():
    assert check_backend("numba", dtypes=("float32", "float64"), max_examples=40).passed == 40


def test_bfloat16_problems_pass_npeca_and_the_contract_and_catch_a_wrong_port(ml_dtypes):
    """On request the strategy draws bfloat16 problems (ml_dtypes arrays): both npeca
    backends, forward and gradients, and the bfloat16 contract implementation (stored in
    bfloat16, summed in float32) pass; a port that treats circular padding as zeros fails."""
    from npeca.golden.mutants import contract_eca

    for backend in ("numpy", "numba"):
        assert check_backend(backend, dtypes=("bfloat16",), max_examples=40,
                             seed=3).passed == 40
    assert check_backend(contract_eca, dtypes=["bfloat16"], max_examples=40).passed == 40
    problem = ECAProblemDraw.build("bfloat16", (2, 6, 3), k=3, padding="circular")
    assert problem.inputs["x"].dtype == ml_dtypes.bfloat16

    def zeros_padding(inputs, params):
        return {"y": npeca.eca(inputs["x"], inputs["weight"], padding="zeros",
                               channel_axis=params["channel_axis"], groups=params["groups"],
                               gate=params["gate"], bias=inputs.get("bias"))}
    with pytest.raises(BackendMismatch, match="bfloat16 x"):
        check_backend(zeros_padding, dtypes=("bfloat16",), gradients=False, max_examples=60,
                      seed=0, problems=None)


@pytest.mark.parametrize("order", ["sequential", "reverse", "shuffled", "pairwise"])
def test_contract_implementations_pass(order):
    # npeca.golden.mutants.contract_eca stores every tensor in the problem's dtype and
    # accumulates in it (float32 for float16): the least accurate backend the bounds allow
    from npeca.golden.mutants import contract_eca

    fn = functools.partial(contract_eca, order=order, seed=7)
    assert check_backend(fn, max_examples=40).passed == 40


def test_module_function_name():
    assert check_backend("npeca.golden.mutants:contract_eca", max_examples=15,
                         seed=1).passed == 15


def test_this_files_correct_eca_passes():
    assert check_backend(planted_eca, problems=eca_problems(saturated=True)).passed == 100


def test_reference_expected_values_pass_correct_and_catch_wrong():
    assert check_backend("numpy", max_examples=50, expected="reference").passed == 50
    with pytest.raises(BackendMismatch, match="dbias: FAIL"):
        check_backend(planted("dbias_from_da"), expected="reference")


def test_a_float16_result_that_underflows_is_within_its_bound():
    """A backend keeping the contract may round z (and any result) to float16; near zero
    that rounding underflows, an absolute error of up to half the smallest float16
    subnormal, which a bound relative to |z| alone does not cover. This problem (found by
    the random Hypothesis profile) has a logit of 6.36e-7, which float16 stores as 6.56e-7:
    the correct model rounding every output once to float16 must pass; the bound there must
    stay below |z| (the element is still checked), and twice the bound away must fail.
    Without the underflow term (the formula of schema version 2) the correct model fails."""
    problem = ECAProblemDraw.build("float16", (2, 4, 2, 4), k=3, padding="zeros", groups=4,
                                   gate="sigmoid", bias=False, channel_axis=1,
                                   weight_form="Ck", seed=113, scale=0.25)
    assert judge(problem, planted_eca, GRADS).status == "PASS"
    exact = _expected_exact(problem)
    tiny = np.unravel_index(np.argmin(np.abs(exact["z"])), exact["z"].shape)
    assert 0 < abs(exact["z"][tiny]) < 2.0 ** -14  # in float16's subnormal range
    bound = error_bounds({**problem.inputs, **exact}, problem.params, "float16")["z"][tiny]
    assert np.finfo(np.float16).smallest_subnormal / 2 <= bound < abs(exact["z"][tiny])

    def off(inputs, params):  # the correct model, one logit twice its bound off
        out = planted_eca(inputs, params)
        z = out["z"].astype(np.float64)
        z[tiny] = float(exact["z"][tiny]) + 2 * bound
        out["z"] = z
        return out
    assert judge(problem, off, GRADS).status == "FAIL"
    old = error_bounds({**problem.inputs, **exact}, problem.params, "float16",
                       schema_version=2)["z"][tiny]
    model_z = planted_eca(problem.inputs, problem.params)["z"].astype(np.float64)[tiny]
    assert old < abs(model_z - exact["z"][tiny]) <= bound


def test_float64_results_in_the_subnormal_range_are_within_their_bounds():
    # float64's half subnormal (2**-1075) is not a float64: eta and tiny_E must not round
    # to 0 there, or a bound of 0 fails a reference that is off by one subnormal (found by
    # a reviewer at x scale 1e-160; 1e-310 makes x itself subnormal)
    for scale in (1e-160, 1e-310):
        problems = eca_problems(dtypes=("float64",), scales=(scale,), locs=(0.0,))
        assert check_backend("numpy", problems=problems, max_examples=60,
                             seed=0).passed == 60


def test_channels_last_with_as_many_channels_as_positions():
    # x (N, S, C) with S == C: the (N, C, S) order of the bound computation has x's shape
    # there; the bounds must still be moved back to x's layout (they once were not)
    problem = ECAProblemDraw.build("float64", (1, 3, 3), k=1, groups=3, gate="hard_sigmoid",
                                   channel_axis=-1, weight_form="Ck", seed=3, scale=0.25,
                                   loc=-2.0)
    assert judge(problem, planted_eca, GRADS).status == "PASS"
    assert judge(problem, npeca_adapter("numpy"), GRADS).status == "PASS"
    arrays = {**problem.inputs, **_expected_exact(problem)}
    moved = error_bounds(arrays, problem.params, "float64")
    first = {k: np.moveaxis(v, -1, 1) if k in ("x", "grad_out", "y", "dx") else v
             for k, v in arrays.items()}
    direct = error_bounds(first, {**problem.params, "channel_axis": 1}, "float64")
    for name in moved:
        want = np.moveaxis(direct[name], 1, -1) if name in ("y", "dx") else direct[name]
        assert np.array_equal(moved[name], want), name


# --- planted bugs are caught, on a small problem ----------------------------------------------

CAUGHT_BY = {  # the outputs each bug must fail (it may fail others too)
    "bias_forgotten": ("y", "z"),
    "circular_as_zeros": ("y", "z"),
    "circular_wraps_once": ("z",),
    "sigmoid_slope_a": ("dx",),
    "hard_slope_unclamped": ("dx",),
    "channels_last_reshaped": ("y", "m"),
    "float16_sums": ("m",),
    "flipped_kernel": ("z",),
    "groups_ignored": ("z",),
    "dbias_from_da": ("dbias",),
}
NARROWED = {  # the bugs only rarer problems reveal, on the problems that can
    "hard_slope_unclamped": eca_problems(gates=("hard_sigmoid",)),
}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_planted_bug_is_caught_and_shrunk(bug):
    with pytest.raises(BackendMismatch) as info:
        check_backend(planted(bug), problems=NARROWED.get(bug))
    exc = info.value
    text = str(exc)
    assert isinstance(exc, AssertionError) and isinstance(exc, NpecaError)
    assert text.startswith(f"{bug} disagrees with npeca's reference")
    assert any(line.startswith(f"  {out}: FAIL") for out in CAUGHT_BY[bug]
               for line in text.splitlines()), text
    assert "worst at" in text and "expected" in text and "bound" in text
    # shrunk: a problem of a few elements, which the message rebuilds and which still fails
    assert exc.problem.size <= 32, exc.problem  # median 1 to 4 elements, at most 16 seen
    assert "rebuild: problem = npeca.testing.strategies.ECAProblemDraw.build(" in text
    rebuilt = eval(repr(exc.problem), {"ECAProblemDraw": ECAProblemDraw})
    assert judge(rebuilt, planted(bug), GRADS).status == "FAIL"
    assert judge(rebuilt, planted_eca, GRADS).status == "PASS"  # the bug, not the problem
    assert exc.result.status == "FAIL" and 1 <= exc.first_failure <= 100


def test_float16_sums_fail_float32_problems_only():
    # the planted float16 accumulation only touches float32 problems (on float16 ones the
    # model's own rounding of a logit near zero is within the bound's underflow term)
    assert check_backend(planted("float16_sums"), dtypes=("float16", "float64"),
                         max_examples=30).passed == 30
    with pytest.raises(BackendMismatch, match=r"problem: float32 x\(1, 1, 1\)"):
        check_backend(planted("float16_sums"), dtypes=("float32",))


def test_same_seed_same_failure():
    runs = []
    for _ in range(2):
        with pytest.raises(BackendMismatch) as info:
            check_backend(planted("groups_ignored"), seed=12345)
        runs.append((str(info.value), info.value.first_failure))
    assert runs[0] == runs[1]
    assert "seed=12345" in runs[0][0]


def test_same_seed_same_problems():
    drawn = [[], []]
    for run in drawn:
        def record(inputs, params, run=run):
            run.append((inputs["x"].shape, inputs["x"].dtype, sorted(params.items()),
                        inputs["x"].tobytes()))
            return npeca_adapter("numpy")(inputs, params)
        check_backend(record, max_examples=20, seed=99)
    assert drawn[0] == drawn[1] and len(drawn[0]) == 20


# --- what the backend may decline, miss or break ----------------------------------------------

def test_unsupported_problems_are_set_aside():
    numpy = npeca_adapter("numpy")

    def no_float16(inputs, params):
        if inputs["x"].dtype == np.float16:
            raise NotImplementedError("float16 is not supported")
        return numpy(inputs, params)

    summary = check_backend(no_float16, max_examples=30, seed=0)
    assert summary.passed == 30 and summary.unsupported > 0
    assert summary.reasons == ["float16 is not supported"]
    assert "unsupported (float16 is not supported)" in str(summary)


def test_a_backend_that_supports_nothing_fails_clearly():
    def nothing(inputs, params):
        raise NotImplementedError("not written yet")

    with pytest.raises(BackendMismatch, match=r"nothing supported none of the \d+ problems "
                                              r"drawn.*not written yet.*dtypes="):
        check_backend(nothing, max_examples=10)


def test_a_backend_that_raises_is_reported_with_its_error():
    def broken(inputs, params):
        if params["padding"] == "circular":
            raise IndexError("window index out of range")
        return npeca_adapter("numpy")(inputs, params)

    with pytest.raises(BackendMismatch, match=r"ERROR[\s\S]*padding=circular[\s\S]*"
                                              r"IndexError: window index out of range"):
        check_backend(broken)


def test_required_gradients():
    numpy = npeca_adapter("numpy")

    def forward_only(inputs, params):
        return {k: v for k, v in numpy(inputs, params).items() if k in ("y", "m", "z", "a")}

    with pytest.raises(BackendMismatch, match="required output dx, dweight not returned"):
        check_backend(forward_only, max_examples=20)
    assert check_backend(forward_only, gradients=False, max_examples=20).passed == 20
    with pytest.raises(BackendMismatch, match="required output dx not returned"):
        check_backend(forward_only, gradients=False, require="y,dx", max_examples=20)


def test_wrong_dtype_is_a_failure():
    def float64_out(inputs, params):
        out = planted_eca({k: v.astype(np.float64) for k, v in inputs.items()}, params)
        return {"y": out["y"]}

    with pytest.raises(BackendMismatch, match="y: FAIL, returned float64, the case's dtype "
                                              "is float32"):
        check_backend(float64_out, dtypes=("float32",), gradients=False, max_examples=20)


def test_a_nondeterministic_backend_is_named_so():
    numpy, calls = npeca_adapter("numpy"), []

    def once(inputs, params):  # wrong on its fourth call only
        calls.append(1)
        out = numpy(inputs, params)
        return {**out, "y": out["y"] * 2} if len(calls) == 4 else out

    with pytest.raises(BackendMismatch, match=r"then passed it when run again \(is it "
                                              r"nondeterministic\?\)[\s\S]*y: FAIL"):
        check_backend(once, seed=0)


def test_backend_unavailable_propagates():
    def missing(inputs, params):
        raise BackendUnavailableError("the frobnicator backend needs libfrob")

    with pytest.raises(BackendUnavailableError, match="libfrob"):
        check_backend(missing, max_examples=5)


def test_the_active_profile_deadline_is_ignored():
    numpy = npeca_adapter("numpy")

    def slow(inputs, params):
        time.sleep(0.003)
        return numpy(inputs, params)

    settings.register_profile("npeca-test-tight-deadline", deadline=1, max_examples=3)
    try:
        settings.load_profile("npeca-test-tight-deadline")
        assert check_backend(slow, max_examples=10, seed=0).passed == 10
    finally:
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.mark.parametrize("kwargs, match", [
    ({"max_examples": 0}, "max_examples"), ({"expected": "float64"}, "expected"),
    ({"seed": 1.5}, "seed"), ({"require": "y,q"}, "unknown output"),
    ({"dtypes": ("float32",), "problems": eca_problems()}, "dtypes or problems"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        check_backend("numpy", **kwargs)


def test_bad_backend_name():
    with pytest.raises(ParameterError, match="no_such_module_npeca"):
        check_backend("no_such_module_npeca:fn")
    with pytest.raises(ParameterError, match="fn must be"):
        check_backend(42)


# --- outside pytest, and without hypothesis ---------------------------------------------------

def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(npeca.__file__))),
         os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_from_a_plain_script_and_without_hypothesis():
    run = _python("""
        import numpy as np
        from npeca.testing import check_backend
        print(check_backend("numpy", max_examples=10, seed=0))
        def wrong(inputs, params):
            raise NotImplementedError("no")
        try:
            check_backend(wrong, max_examples=5)
        except AssertionError as exc:
            print(type(exc).__name__)
    """)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["10 problems passed", "BackendMismatch"]

    run = _python("""
        import sys
        sys.modules["hypothesis"] = None  # as if it were not installed
        import npeca.testing
        npeca.testing.assert_close(1.0, 1.0)  # the rest of npeca.testing works without it
        for load in (lambda: npeca.testing.check_backend,
                     lambda: __import__("npeca.testing.strategies")):
            try:
                load()
            except ImportError as exc:
                print(type(exc).__name__, exc)
    """)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().split("\n")
    assert len(lines) == 2 and all(line.startswith("BackendUnavailableError") and
                                   "pip install hypothesis" in line for line in lines)
