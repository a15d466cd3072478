"""Proof that a suite's verdicts can fail: ECA written to the contract, and plausible bugs.

:func:`contract_eca` is an ECA that keeps the contract of docs/golden.md and nothing more:
every tensor is stored in the case's dtype and every sum is accumulated in that dtype (in
float32 for float16 and bfloat16 cases), left to right in the order asked for (``"sequential"``,
``"reverse"``, ``"shuffled"``) or pairwise. A suite must pass it in every order.

:data:`MUTANTS` is a catalogue of ECA bugs seen in, or easily made by, real ports. Each is
:func:`contract_eca` with one change; a suite must fail each of them on at least one case.
:func:`kill_table` runs both against a suite (``npeca golden mutants DIR``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .bounds import taps
from .schema import OUTPUTS

ORDERS = ("sequential", "reverse", "shuffled", "pairwise")

MUTANTS: dict[str, str] = {
    "flipped_kernel": "convolution instead of cross-correlation (kernel reversed)",
    "sum_not_mean": "pooling by sum instead of mean (and no 1/S in dx)",
    "batch_pooled": "the mean taken over the batch too",
    "no_conv": "the channel convolution skipped: z = m + bias",
    "window_off_by_one": "the window shifted by one channel",
    "groups_ignored": "groups ignored: the convolution crosses group edges",
    "circular_as_zeros": "circular padding treated as zeros",
    "reflect_not_wrap": "circular padding done as reflection",
    "circular_wraps_once": "circular padding as (t + C) % C, right only while p <= C",
    "keras_hard_sigmoid": "hard sigmoid as Keras writes it, clip(0.2 z + 0.5, 0, 1)",
    "sigmoid_clamped": "a fast sigmoid that returns exactly 0 or 1 beyond |z| > 8",
    "bias_dropped": "the bias ignored",
    "per_channel_transposed": "a (C, k) kernel read as (k, C) transposed",
    "detached_gate": "gate detached: dz = 0 (no weight, bias or pooling gradient)",
    "sigmoid_slope_a": "sigmoid'(z) taken as a instead of a (1 - a)",
    "hard_slope_unclamped": "hard sigmoid's derivative 1/6 everywhere, clamp ignored",
    "hard_slope_float32": "hard sigmoid's derivative with 1/6 as a float32 constant",
    "slope_in_storage": "sigmoid' as exp(-z) / (1 + exp(-z))**2 in the storage dtype",
    "half_accumulation": "sums accumulated in the 16-bit storage dtype (float16 and "
                         "bfloat16 cases), not float32",
    "zero_dweight": "dweight = 0",
    "negated_dweight": "dweight with the wrong sign",
    "dbias_from_da": "dbias summed from da instead of dz",
    "dm_not_transposed": "dm by the forward correlation instead of its transpose",
    "no_pool_path": "dx = g a: the path through the pooled mean missing",
    "dm_not_divided": "dx = g a + dm: dm not divided by S",
    "dx_missing_ga": "dx = dm / S: the g a term missing",
}


def _reflect(t: np.ndarray, n: int) -> np.ndarray:
    """Reflection padding (numpy's 'reflect') of indices into [0, n), repeated as needed."""
    if n == 1:
        return np.zeros_like(t)
    period = 2 * (n - 1)
    t = np.abs(t) % period
    return np.where(t >= n, period - t, t)


def _sources(c: int, k: int, groups: int, padding: str, mutant: str | None) -> np.ndarray:
    if mutant == "groups_ignored":
        groups = 1
    if mutant == "circular_as_zeros":
        padding = "zeros"
    if mutant in ("reflect_not_wrap", "window_off_by_one", "circular_wraps_once"):
        cg, p = c // groups, (k - 1) // 2
        ch = np.arange(c)[:, None]
        start = (ch // cg) * cg
        t = ch - start + np.arange(k)[None, :] - p
        if mutant == "window_off_by_one":
            t = t + 1
            if padding == "circular":
                return start + t % cg
            return np.where((t >= 0) & (t < cg), start + t, -1)
        if padding == "circular" and mutant == "circular_wraps_once":
            return start + np.fmod(t + cg, cg)  # C's %: negative when t < -C
        if padding == "circular":
            return start + _reflect(t, cg)
    return taps(c, k, groups, padding)


# long: the contract implementation step by step, in the order of docs/golden.md; the mutants
# switch single steps, so the steps stay side by side
def contract_eca(inputs: Mapping[str, np.ndarray], params: Mapping[str, Any], *,
                 order: str = "sequential", seed: int = 0,
                 mutant: str | None = None) -> dict[str, np.ndarray]:
    """ECA forward and backward under the golden contract (see the module docstring), with
    the bug ``mutant`` (a key of :data:`MUTANTS`) planted when given."""
    x = np.asarray(inputs["x"])
    st = x.dtype  # float16/32/64, or ml_dtypes' bfloat16 (npeca.golden.dtypes.to_backend)
    acc = np.dtype(np.float32) if st.itemsize == 2 and mutant != "half_accumulation" else st
    rng = np.random.default_rng(seed)
    axis = params["channel_axis"]
    xc = np.moveaxis(x, axis, 1)
    n, c = xc.shape[:2]
    s = math.prod(xc.shape[2:])
    k = params["k"]
    x3 = xc.reshape(n, c, s).astype(acc)
    g3 = np.moveaxis(np.asarray(inputs["grad_out"]), axis, 1).reshape(n, c, s).astype(acc)
    w = np.asarray(inputs["weight"]).astype(acc).reshape(-1, k)
    per_channel = w.shape[0] != 1
    if mutant == "per_channel_transposed" and per_channel:
        w = w.reshape(-1).reshape(k, c).T
    if mutant == "flipped_kernel":
        w = w[:, ::-1]
    w = np.broadcast_to(w, (c, k))
    bias = acc.type(0) if "bias" not in inputs or mutant == "bias_dropped" else \
        np.asarray(inputs["bias"]).astype(acc).reshape(-1)[0]

    def total(t: np.ndarray, axes: int | tuple = -1) -> np.ndarray:
        """Sum over ``axes`` in ``acc``, in the chosen order."""
        t = np.asarray(t, dtype=acc)
        axes = (axes,) if isinstance(axes, int) else axes
        t = np.moveaxis(t, axes, tuple(range(-len(axes), 0)))
        t = t.reshape(t.shape[:t.ndim - len(axes)] + (-1,))
        if order == "pairwise":
            return np.sum(t, axis=-1, dtype=acc)
        if order == "reverse":
            t = t[..., ::-1]
        elif order == "shuffled":
            t = np.take(t, rng.permutation(np.shape(t)[-1]), axis=-1)
        with np.errstate(invalid="ignore", over="ignore"):
            return np.cumsum(t, axis=-1, dtype=acc)[..., -1]

    def store(v: Any) -> np.ndarray:  # round to the case's dtype, back to acc for the next op
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(v, dtype=acc).astype(st).astype(acc)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # forward
        if mutant == "batch_pooled":
            m = store(np.broadcast_to(total(x3, (0, 2)) / acc.type(n * s), (n, c)))
        elif mutant == "sum_not_mean":
            m = store(total(x3))
        else:
            m = store(total(x3) / acc.type(s))
        src = _sources(c, k, params["groups"], params["padding"], mutant)
        valid = src >= 0
        mt = np.where(valid[None], m[:, np.where(valid, src, 0)], acc.type(0))  # (N, C, k)
        if mutant == "no_conv":
            z = store(m + bias)
        else:
            z = store(total(w[None] * mt) + bias)
        if params["gate"] == "sigmoid":
            a = store(acc.type(1) / (acc.type(1) + np.exp(-z)))
            if mutant == "sigmoid_clamped":
                a = np.where(z > 8, acc.type(1), np.where(z < -8, acc.type(0), a))
            slope = a if mutant == "sigmoid_slope_a" else a * (acc.type(1) - a)
            if mutant == "slope_in_storage":
                e = np.exp(-z.astype(st))
                slope = (e / (st.type(1) + e) ** 2).astype(acc)
        else:
            if mutant == "keras_hard_sigmoid":
                a = store(np.clip(acc.type(0.2) * z + acc.type(0.5), 0, 1))
            else:
                a = store(np.clip(z + acc.type(3), 0, 6) / acc.type(6))
            inside = (z > -3) & (z < 3)
            if mutant == "hard_slope_unclamped":
                inside = np.ones_like(inside)
            sixth = np.float32(1) / np.float32(6) if mutant == "hard_slope_float32" else \
                acc.type(1) / acc.type(6)
            slope = np.where(inside, acc.type(sixth), acc.type(0))
        y = store(x3 * a[:, :, None])

        # backward
        da = store(total(store(g3 * x3)))
        dz = store(da * slope)
        if mutant == "detached_gate":
            dz = np.zeros_like(dz)
        prod = store(dz[:, :, None] * mt)  # (N, C, k)
        dw = store(total(prod, 0)) if per_channel else store(total(prod, (0, 1)))
        if mutant == "zero_dweight":
            dw = np.zeros_like(dw)
        elif mutant == "negated_dweight":
            dw = -dw
        db = store(total(da if mutant == "dbias_from_da" else dz, (0, 1)))
        if mutant == "dm_not_transposed":
            dzt = np.where(valid[None], dz[:, np.where(valid, src, 0)], acc.type(0))
            dm = store(total(w[None] * dzt))
        else:
            terms = np.zeros((n, c, k), dtype=acc)
            for j in range(k):
                cols = np.nonzero(valid[:, j])[0]
                terms[:, src[cols, j], j] = store(w[cols, j] * dz[:, cols])
            dm = store(total(terms))
        if mutant == "dm_not_divided" or mutant == "sum_not_mean":
            dms = dm
        elif mutant == "no_pool_path":
            dms = np.zeros_like(dm)
        else:
            dms = store(dm / acc.type(s))
        ga = np.zeros_like(g3) if mutant == "dx_missing_ga" else store(g3 * a[:, :, None])
        dx = store(ga + dms[:, :, None])

    def layout(v: np.ndarray) -> np.ndarray:
        return np.moveaxis(v.astype(st).reshape(xc.shape), 1, axis)

    out = {"y": layout(y), "m": m.astype(st), "z": z.astype(st), "a": a.astype(st),
           "dx": layout(dx), "dweight": dw.astype(st).reshape(np.shape(inputs["weight"]))}
    if "bias" in inputs:
        out["dbias"] = db.astype(st).reshape(1)
    return out


@dataclass
class KillRow:
    """One implementation against a suite: which cases it failed (a mutant's kills)."""

    name: str
    description: str
    failed: list[str]
    ran: int
    failed_by_dtype: dict[str, int]
    outputs: list[str]  # outputs that caught it somewhere


def kill_table(suite: Any, *, seed: int = 0) -> tuple[list[KillRow], list[KillRow]]:
    """(correct implementations, mutants) run on every case of ``suite`` (a
    :class:`~npeca.golden.io.Suite`), every output required."""
    from .verify import check_case, run_case

    cases = []
    for name, case in suite.cases.items():
        arrays = suite.arrays(name)
        check_case(case, arrays, schema_version=suite.schema_version)
        cases.append((case, arrays))

    def run(label: str, text: str, fn: Callable) -> KillRow:
        failed: list[str] = []
        by_dtype: dict[str, int] = {}
        outputs: set[str] = set()
        for case, arrays in cases:
            r = run_case(case, arrays, fn, require=OUTPUTS)
            if r.status in ("FAIL", "ERROR"):
                failed.append(case["name"])
                by_dtype[case["dtype"]] = by_dtype.get(case["dtype"], 0) + 1
                outputs.update(o.output for o in r.outputs if o.status == "FAIL")
        return KillRow(label, text, failed, len(cases), by_dtype,
                       [o for o in OUTPUTS if o in outputs])

    def impl(order: str | None, mutant: str | None) -> Callable:
        return lambda inputs, params: contract_eca(inputs, params, order=order or "sequential",
                                                   seed=seed, mutant=mutant)

    correct = [run(f"contract_{o}", f"correct, sums {o}", impl(o, None)) for o in ORDERS]
    mutants = [run(m, text, impl(None, m)) for m, text in MUTANTS.items()]
    return correct, mutants


def format_kill_table(correct: list[KillRow], mutants: list[KillRow]) -> str:
    """The table ``npeca golden mutants`` prints."""
    head = f"{'implementation':<24} {'cases failed':>12} {'f16':>4} {'f32':>4} {'f64':>4} " \
           f"{'bf16':>4}  {'caught by':<28} verdict"
    lines = [head, "-" * len(head)]
    for rows, good in ((correct, "passes"), (mutants, "killed")):
        for r in rows:
            ok = (not r.failed) if good == "passes" else bool(r.failed)
            verdict = good if ok else ("FAILS A CASE" if good == "passes" else "SURVIVES")
            d = r.failed_by_dtype
            lines.append(f"{r.name:<24} {len(r.failed):>5} of {r.ran:<4} "
                         f"{d.get('float16', 0):>4} {d.get('float32', 0):>4} "
                         f"{d.get('float64', 0):>4} {d.get('bfloat16', 0):>4}  "
                         f"{' '.join(r.outputs) or '-':<28} {verdict}")
    return "\n".join(lines)


__all__ = ["ORDERS", "MUTANTS", "contract_eca", "KillRow", "kill_table", "format_kill_table"]
