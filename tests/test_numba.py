"""The numba CPU backend against the NumPy reference, with tolerances from its error bound.

docs/backends.md states the bound this file checks. With u = 2**-53 and
gamma(n) = n u / (1 - n u), every sum of n float64 terms is off by at most gamma(d) times the
sum of their magnitudes, d the depth of the summation tree (Higham, Accuracy and Stability
of Numerical Algorithms, section 4.2). The backend sums S spatial terms over 16 lanes and a
4-level tree, d <= ceil(S / 16) + 4; the reference's NumPy sums have d <= S. The bounds of
m, z, a, y and of the backward quantities follow from those by the Lipschitz constants of
the gates (1/4, 1/6; |sigmoid''| <= 0.1) and are computed per case in ``_bounds``. Outputs
rounded to float16/float32 may also differ by one unit in the last place where the two
float64 values straddle a rounding boundary.
"""

from __future__ import annotations

import itertools
import math
import platform

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import npeca
from fd import directional
from strategies import Case, eca_cases, relayout
from tolerance import ulp_distance

numba_cpu = pytest.importorskip("npeca.backends.numba_cpu",
                                reason="numba is not installed")

U = 2.0 ** -53
F64 = (np.float64,)


def gamma(n: float) -> float:
    """Higham's gamma_n = n u / (1 - n u), u = 2**-53."""
    return n * U / (1.0 - n * U)


# --- the error bound, per case ------------------------------------------------------------

def _ncs(arr: np.ndarray, channel_axis: int) -> np.ndarray:
    """arr as float64 (N, C, S)."""
    a = np.asarray(arr, dtype=np.float64)
    if channel_axis == -1:
        a = np.moveaxis(a, -1, 1)
    return a.reshape(a.shape[0], a.shape[1], -1)


def _bounds(case: Case) -> dict:
    """Bounds on |numba - reference| in float64, per sample (N,) or for the whole call."""
    kw = case.kwargs
    x = _ncs(case.x, kw["channel_axis"])
    g = _ncs(case.grad_out, kw["channel_axis"])
    n, c, s = x.shape
    w = np.asarray(case.weight, dtype=np.float64)
    k = w.shape[-1]
    wsum = float(np.abs(w.reshape(-1, k)).sum(axis=1).max())  # max_c sum_j |w[c, j]|
    b = float(np.abs(np.asarray(kw.get("bias", 0.0), dtype=np.float64)).max())
    hard = kw["gate"] == "hard_sigmoid"
    lip, lip_a = (1 / 6, 4 * U) if hard else (1 / 4, 16 * U)  # gate' and its rounding

    depth = math.ceil(s / 16) + 4  # ours; the reference's is at most s
    amag = np.abs(x).mean(axis=2).max(axis=1)  # (N,) largest mean |x| of a sample
    dm = (gamma(depth + 1) + gamma(s + 1)) * amag
    dz = wsum * dm + 2 * gamma(k + 1) * (wsum * amag + b)
    da = lip * dz + lip_a
    gx = np.abs(g * x).sum(axis=2).max(axis=1)  # (N,) largest sum |g x|
    dda = (gamma(depth + 1) + gamma(s + 1)) * gx
    ddz = dda * lip + (0.0 if hard else gx * (0.1 * dz + 16 * U * lip))
    dzmag = lip * gx
    ddm = wsum * ddz + 2 * gamma(k + 1) * wsum * dzmag
    return {
        "a": da, "z": dz, "m": dm,
        "y": lambda y_ref, xabs: da[:, None, None] * xabs + 2 * U * np.abs(y_ref),
        "dx": lambda gabs, dx_ref: (gabs * da[:, None, None] + ddm[:, None, None] / s
                                    + 4 * U * (gabs + wsum * dzmag[:, None, None] / s)
                                    + 2 * U * np.abs(dx_ref)),
        "dw": c * float(np.sum(ddz * amag + dzmag * dm))
        + 2 * gamma(n * c + 1) * c * float(np.sum(dzmag * amag)),
        "db": c * float(np.sum(ddz)) + 2 * gamma(n * c + 1) * c * float(np.sum(dzmag)),
    }


def _assert_within(actual, expected, bound, what):
    """|actual - expected| <= bound, or (below float64) at most 1 ulp of the output dtype."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    ok = diff <= bound
    if actual.dtype != np.float64:
        ok |= ulp_distance(actual, expected) <= 1
    if not ok.all():
        i = np.unravel_index(np.argmax(np.where(ok, 0, diff)), ok.shape)
        bound_i = np.broadcast_to(bound, ok.shape)[i]
        raise AssertionError(f"{what}: {np.count_nonzero(~ok)} of {ok.size} outside the bound;"
                             f" worst at {i}: {actual[i]!r} vs {expected[i]!r} "
                             f"(bound {bound_i:.3g})")


def _kink_free(z: np.ndarray, margin: float) -> bool:
    """No logit within ``margin`` of hard_sigmoid's kinks, where gate' jumps."""
    return bool(np.all(np.abs(np.abs(z) - 3.0) > margin))


# --- every variant against the reference ---------------------------------------------------

@given(eca_cases())
def test_forward_matches_reference_within_bound(case: Case):
    got = npeca.eca_forward(case.x, case.weight, backend="numba", **case.kwargs)
    ref = npeca.eca_forward(case.x, case.weight, backend="numpy", **case.kwargs)
    bd = _bounds(case)
    for name in ("m", "z", "a"):
        assert getattr(got, name).dtype == np.float64
        _assert_within(getattr(got, name), getattr(ref, name), bd[name][:, None], name)
    assert got.y.flags.c_contiguous
    xabs = np.abs(case.x.astype(np.float64))
    yb = bd["y"](_ncs(ref.y, case.kwargs["channel_axis"]),
                 _ncs(xabs, case.kwargs["channel_axis"]))
    if case.kwargs["channel_axis"] == -1:
        yb = np.moveaxis(yb.reshape((yb.shape[0], yb.shape[1]) + case.x.shape[1:-1]), 1, -1)
    _assert_within(got.y, ref.y, yb.reshape(case.x.shape), "y")
    np.testing.assert_array_equal(
        npeca.eca(case.x, case.weight, backend="numba", **case.kwargs), got.y)


@given(eca_cases())
def test_backward_matches_reference_within_bound(case: Case):
    ref_fwd = npeca.eca_forward(case.x, case.weight, backend="numpy", **case.kwargs)
    bd = _bounds(case)
    if case.kwargs["gate"] == "hard_sigmoid":
        assume(_kink_free(ref_fwd.z, 2 * bd["z"].max() + 1e-12))
    got = npeca.eca_backward(case.x, case.weight, case.grad_out, backend="numba",
                             **case.kwargs)
    ref = npeca.eca_backward(case.x, case.weight, case.grad_out, backend="numpy",
                             **case.kwargs)
    axis = case.kwargs["channel_axis"]
    dxb = bd["dx"](np.abs(_ncs(case.grad_out, axis)), _ncs(ref.x, axis))
    if axis == -1:
        dxb = np.moveaxis(dxb.reshape((dxb.shape[0], dxb.shape[1]) + case.x.shape[1:-1]), 1, -1)
    _assert_within(got.x, ref.x, dxb.reshape(case.x.shape), "dx")
    assert got.x.flags.c_contiguous
    _assert_within(got.weight, ref.weight, bd["dw"] + 2 * U * np.abs(ref.weight), "dweight")
    if "bias" in case.kwargs:
        _assert_within(got.bias, ref.bias, bd["db"] + 2 * U * np.abs(ref.bias), "dbias")
    else:
        assert got.bias is None


@given(eca_cases(dtypes=F64, max_batch=3, max_cg=12, max_side=6))
def test_gradient_matches_finite_differences(case: Case):
    """<v, J u> of the numba forward by a 4th-order stencil against numba's backward."""
    fwd = npeca.eca_forward(case.x, case.weight, backend="numba", **case.kwargs)
    if case.kwargs["gate"] == "hard_sigmoid":
        assume(_kink_free(fwd.z, 5e-2))
    rng = np.random.default_rng(0)
    kw = {k: v for k, v in case.kwargs.items() if k != "bias"}
    bias = case.kwargs.get("bias")
    b0 = np.asarray(0.0 if bias is None else bias, dtype=np.float64)
    v = rng.standard_normal(case.x.shape)
    ux, uw, ub = (rng.standard_normal(case.x.shape), rng.standard_normal(case.weight.shape),
                  rng.standard_normal(b0.shape))

    def loss(t):
        y = npeca.eca(case.x + t * ux, case.weight + t * uw, backend="numba",
                      bias=None if bias is None else b0 + t * ub, **kw)
        return float(np.vdot(v, y))

    grads = npeca.eca_backward(case.x, case.weight, v, backend="numba", **case.kwargs)
    analytic = np.vdot(grads.x, ux) + np.vdot(grads.weight, uw)
    if bias is not None:
        analytic += np.vdot(grads.bias, ub)
    numeric = directional(loss)
    scale = max(1.0, abs(numeric), float(np.abs(v * fwd.y).sum()))
    assert abs(analytic - numeric) <= 1e-9 * scale, (analytic, numeric, scale)


def test_mixed_grad_dtype_and_float16_weight():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 5)).astype(np.float32)
    g = rng.standard_normal(x.shape)  # float64 upstream gradient for float32 x
    w = rng.standard_normal((6, 3)).astype(np.float16)
    got = npeca.eca_backward(x, w, g, bias=np.float16(0.5), backend="numba")
    ref = npeca.eca_backward(x, w, g, bias=np.float16(0.5), backend="numpy")
    assert got.x.dtype == np.float32 and got.weight.dtype == np.float16
    assert got.bias.dtype == np.float16 and got.bias.shape == ()
    assert ulp_distance(got.x, ref.x).max() <= 1
    assert ulp_distance(got.weight, ref.weight).max() <= 1
    assert ulp_distance(got.bias, ref.bias).max() <= 1


def test_hard_sigmoid_gradient_is_zero_at_the_kinks():
    """z = +-3 exactly: gate' = 0 there, as in PyTorch, so dz, dw and db vanish."""
    for level in (3.0, -3.0):
        x = np.full((2, 4, 3), level)
        g = np.random.default_rng(0).standard_normal(x.shape)
        got = npeca.eca_backward(x, np.ones(1), g, bias=0.0, gate="hard_sigmoid",
                                 backend="numba")
        ref = npeca.eca_backward(x, np.ones(1), g, bias=0.0, gate="hard_sigmoid",
                                 backend="numpy")
        assert got.weight.tolist() == [0.0] and float(got.bias) == 0.0
        np.testing.assert_array_equal(got.x, ref.x)


def test_nan_and_inf_propagate_per_ieee():
    w = np.array([0.5, 1.0, 0.5])
    x = np.ones((1, 8, 4))
    x[0, 3, 1] = np.nan
    y = npeca.eca(x, w, backend="numba")
    assert np.isnan(y[0, 2:5]).all() and np.isfinite(y[0, [0, 1, 5, 6, 7]]).all()
    x = np.ones((1, 8, 4))
    x[0, 5, 0] = np.inf
    fwd = npeca.eca_forward(x, w, backend="numba")
    assert fwd.m[0, 5] == np.inf and fwd.a[0, 4] == 1.0 and fwd.a[0, 6] == 1.0
    assert np.isinf(fwd.y[0, 5, 0]) and np.isfinite(fwd.y[0, 5, 1:]).all()
    big = npeca.eca_forward(np.full((1, 3, 2), 1e300), np.ones(1), backend="numba")
    assert big.a.tolist() == [[1.0, 1.0, 1.0]]
    small = npeca.eca_forward(np.full((1, 3, 2), -700.0), np.ones(1), backend="numba")
    assert np.allclose(small.a, np.exp(-700.0), rtol=1e-14, atol=0)


# --- exact properties: layouts, channels-last, the split of the work ------------------------

@given(eca_cases(layouts=("contiguous",)),
       st.sampled_from(("strided", "fortran", "reversed", "swapped")))
def test_memory_layout_does_not_change_a_bit(case: Case, layout: str):
    axis = case.kwargs["channel_axis"]
    other = relayout(np.random.default_rng(1), case.x, layout, axis)
    kw = dict(case.kwargs, backend="numba")
    np.testing.assert_array_equal(npeca.eca(other, case.weight, **kw),
                                  npeca.eca(case.x, case.weight, **kw))
    g_other = relayout(np.random.default_rng(2), case.grad_out, layout, axis)
    a = npeca.eca_backward(other, case.weight, g_other, **kw)
    b = npeca.eca_backward(case.x, case.weight, case.grad_out, **kw)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@given(eca_cases(layouts=("contiguous",)))
def test_channels_last_gives_the_same_bits_as_channels_first(case: Case):
    """Both layouts put position s in lane s mod 16 and combine the lanes alike."""
    kw = dict(case.kwargs, backend="numba")
    x, g = case.x, case.grad_out
    if kw["channel_axis"] == -1:
        x, g = np.moveaxis(x, -1, 1), np.moveaxis(g, -1, 1)
    first = npeca.eca_forward(np.ascontiguousarray(x), case.weight, **dict(kw, channel_axis=1))
    last = npeca.eca_forward(np.ascontiguousarray(np.moveaxis(x, 1, -1)), case.weight,
                             **dict(kw, channel_axis=-1))
    np.testing.assert_array_equal(np.moveaxis(last.y, -1, 1), first.y)
    for name in ("m", "z", "a"):
        np.testing.assert_array_equal(getattr(last, name), getattr(first, name))
    gf = npeca.eca_backward(np.ascontiguousarray(x), case.weight, np.ascontiguousarray(g),
                            **dict(kw, channel_axis=1))
    gl = npeca.eca_backward(np.ascontiguousarray(np.moveaxis(x, 1, -1)), case.weight,
                            np.ascontiguousarray(np.moveaxis(g, 1, -1)),
                            **dict(kw, channel_axis=-1))
    np.testing.assert_array_equal(np.moveaxis(gl.x, -1, 1), gf.x)
    np.testing.assert_array_equal(gl.weight, gf.weight)


@given(eca_cases(gates=("sigmoid",), allow_bias=False))
def test_zero_weight_halves_the_input_exactly(case: Case):
    zero = np.zeros_like(case.weight)
    expected = (case.x.astype(np.float64) / 2).astype(case.x.dtype)
    np.testing.assert_array_equal(npeca.eca(case.x, zero, backend="numba", **case.kwargs),
                                  expected)


def test_channels_last_waves_give_every_thread_the_same_number_of_pooling_blocks(
        monkeypatch):
    """One sample channels-last: blocks of at most _ACC_COLUMNS channels, multiples of 16,
    and a count that the threads divide (one thread with 7 blocks of 160 while the other
    has 6 waits for it), unless the blocks are already as small as _MIN_BLOCK or one block
    is all C."""
    from npeca._validate import eca_problem
    sched = numba_cpu._schedule
    checked = 0
    for acc in (160, 256, 336):
        monkeypatch.setattr(sched, "_ACC_COLUMNS", acc)
        for c in list(range(1, 300)) + list(range(300, 4200, 7)) + [512, 1024, 2048, 4096]:
            call = sched._Call(eca_problem(np.zeros((1, 1, 1, c), np.float32), np.ones(3),
                                           channel_axis=-1))
            for threads in (2, 3, 4, 8):
                call.threads = threads
                mode, wave, chunk, sb = call.channels_last_plan(1, 4)
                assert mode == sched._WAVES and wave == 1 and 1 <= sb
                assert chunk <= max(acc, sched._MIN_BLOCK) and (chunk == c or chunk % 16 == 0)
                if sched._MIN_BLOCK < chunk < c:
                    assert -(-c // chunk) % threads == 0, (acc, c, threads, chunk)
                checked += 1
    assert checked > 10000


@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [4, 5])
def test_schedule_does_not_change_a_bit(monkeypatch, channel_axis, dtype, n):
    """Per-sample items or waves of channel ranges, pipelined or not, big or small, with
    streaming stores or without: the split of the work is a schedule, not arithmetic."""
    rng = np.random.default_rng(11)
    c = 12 if channel_axis == 1 else 40  # channels-last blocks are 16 channels at least
    x = rng.standard_normal((n, c, 7, 9)).astype(dtype)
    if channel_axis == -1:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    g = rng.standard_normal(x.shape).astype(dtype)
    kw = dict(channel_axis=channel_axis, backend="numba")
    for w, extra in ((rng.standard_normal(5), dict(bias=0.25)),
                     (rng.standard_normal((c, 9)), dict(padding="circular", groups=2))):
        base = (npeca.eca_forward(x, w, **kw, **extra),
                npeca.eca_backward(x, w, g, **kw, **extra))
        for (per_sample, wave_bytes, items, stream), min_row in itertools.product(
                ((0, 1, 1, False), (0, 1, 64, True), (0, 1 << 30, 1, True), (0, 700, 3, False),
                 (1 << 30, 1, 1, True)), (0, 1 << 30)):
            sched = numba_cpu._schedule  # raising=True: a renamed constant fails here
            # the channels-first backward: pipelined (rows of any length) or in phases
            monkeypatch.setattr(sched, "_PIPELINE_MIN_ROW", min_row)
            monkeypatch.setattr(sched, "_PER_SAMPLE_BYTES", per_sample)
            monkeypatch.setattr(sched, "_SEGMENTS_PER_THREAD", items)  # 1 to 64 segments
            monkeypatch.setattr(sched, "_STREAM_BYTES", 0 if stream else 1 << 62)
            monkeypatch.setattr(sched, "_STREAM_MIN_ROW", 1)  # streaming stores, rows of
            # 63 elements at every alignment: the ordinary head and tail and the vector body
            # (channels-last: rows of 40 channels, each with its own factor)
            monkeypatch.setattr(sched, "_STREAM_MIN_COLUMNS", 1)
            monkeypatch.setattr(sched, "_WAVE_BYTES_PER_THREAD", wave_bytes)
            monkeypatch.setattr(sched, "_ITEMS_PER_THREAD", items)
            # every thread, however small x is (else one thread and whole samples), and
            # forward items of 1 to 1 << 30 bytes: one channel (16 channels-last) to all
            monkeypatch.setattr(sched, "_SERIAL_BYTES", -1)
            monkeypatch.setattr(sched, "_CHUNK_BYTES", wave_bytes)
            # channels-last: pooling blocks of 16 channels (ragged) or all
            monkeypatch.setattr(sched, "_ACC_COLUMNS", 16 if items > 1 else 1 << 20)
            # weight gradients: items of 1 to C channels on every thread, or one thread
            monkeypatch.setattr(sched, "_PARAMETER_SERIAL", 0 if items > 1 else 1 << 62)
            again = (npeca.eca_forward(x, w, **kw, **extra),
                     npeca.eca_backward(x, w, g, **kw, **extra))
            for u, v in zip(base[0] + base[1], again[0] + again[1]):
                np.testing.assert_array_equal(u, v)
            xi, gi = x.copy(), g.copy()  # in place: y over x, dx over g
            np.testing.assert_array_equal(npeca.eca(xi, w, out=xi, **kw, **extra), base[0].y)
            np.testing.assert_array_equal(
                npeca.eca_backward(x, w, gi, out=gi, **kw, **extra).x, base[1].x)


def test_channels_last_pooling_in_registers_gives_the_lane_sum_bits():
    """Columns of up to _REGISTER_ROWS positions are pooled COLUMNS at a time with their sums
    in registers (_simd.column_lane_sums), longer ones row by row, _RUN_ROWS positions of a
    lane per load of its row of sums, then the last ones one at a time: all must give the bits
    of the channels-first lane sum of the same values, for every count of positions (full
    lane cycles and every tail), ragged ranges of channels, float32 and float64, rows that
    are whole 64-byte lines (C a multiple of 16 or 8) at every element offset in a line (the
    blocks then start at the first column on a line boundary), -0.0 (a column of only -0.0
    has the mean +0.0, as lanes start at +0.0), NaN and Inf."""
    from npeca.backends.numba_cpu import _items
    rng = np.random.default_rng(21)
    cols = numba_cpu._simd.COLUMNS
    assert _items._REGISTER_ROWS >= 16 and cols >= 4
    checked = 0
    for s_ in list(range(1, 35)) + [47, 48, 49, 63, 64, 65, 80, 127, 128, 129, 143, 196, 263]:
        for dtype in (np.float32, np.float64):
            c = int(rng.integers(1, 4 * cols + 3))
            if rng.integers(2):  # rows of whole lines
                c = 16 * int(rng.integers(1, 6))
            values = rng.standard_normal((2, s_, c)) * 10.0 ** rng.integers(-3, 4, (1, 1, c))
            buffer = np.empty(values.size + 32, dtype)  # x at a random element offset
            offset = int(rng.integers(16))  # from a 64-byte boundary
            start = (-buffer.ctypes.data % 64) // buffer.itemsize + offset
            x = buffer[start:start + values.size].reshape(values.shape)
            x[...] = values
            x[1, :, 0] = -0.0  # an all -0.0 column
            if c > 2:
                x[1, rng.integers(s_), 1] = np.nan
                x[1, rng.integers(s_), 2] = -np.inf
            flat = np.ascontiguousarray(np.moveaxis(x, -1, 1)).reshape(-1)  # (N, C, S)
            for n in range(2):
                want = np.empty((2, c))
                _items._pool_cf(flat, n, 0, c, c, s_, want)
                c2 = int(rng.integers(c)) if c > 1 else 0
                for c0, c1 in ((0, c), (c // 3, c), (min(1, c - 1), max(1, c - 1)),
                               (c2, int(rng.integers(c2, c)) + 1)):
                    got = np.full(c, 7.0)
                    _items._pool_cl(x, n, c0, c1, got)
                    assert got[c0:c1].tobytes() == want[n, c0:c1].tobytes(), (s_, c, c0, c1)
                    assert (got[:c0] == 7.0).all() and (got[c1:] == 7.0).all()
                    checked += 1
    assert checked > 200
    zeros = np.full((1, 5, 16), -0.0, np.float32)  # each lane +0.0 + (-0.0): means of +0.0
    m = np.empty(16)
    _items._pool_cl(zeros, 0, 0, 16, m)
    assert m.tobytes() == np.zeros(16).tobytes()


def test_channels_last_sums_give_the_channels_first_bits():
    """The backward's channels-last sums of x and g * x (_sums_cl: runs of _RUN_ROWS positions
    per lane, then the last positions one at a time) give the bits of the channels-first
    _sums_cf of the same values, for counts of positions with no run, whole runs and every
    kind of tail, ragged ranges of channels, float32 and float64, with NaN and Inf; and
    write nothing outside the range."""
    from npeca.backends.numba_cpu import _items
    rng = np.random.default_rng(22)
    run = _items._RUN_ROWS * numba_cpu._simd.LANES
    checked = 0
    for s_ in [1, 15, 16, 17, run - 1, run, run + 1, 2 * run - 1, 2 * run, 2 * run + 17, 196]:
        for dtype in (np.float32, np.float64):
            c = int(rng.integers(1, 70))
            scale = 10.0 ** rng.integers(-3, 4, (1, 1, c))
            x = (rng.standard_normal((2, s_, c)) * scale).astype(dtype)
            g = rng.standard_normal((2, s_, c)).astype(dtype)
            if c > 2:
                x[1, rng.integers(s_), 1] = np.nan
                g[1, rng.integers(s_), 2] = np.inf
            xf = np.ascontiguousarray(np.moveaxis(x, -1, 1)).reshape(-1)  # (N, C, S)
            gf = np.ascontiguousarray(np.moveaxis(g, -1, 1)).reshape(-1)
            want_m, want_da = np.empty((2, c)), np.empty((2, c))
            for n in range(2):
                _items._sums_cf(gf, xf, n, 0, c, c, s_, want_m, want_da)
                c0 = int(rng.integers(c))
                for lo, hi in ((0, c), (c0, int(rng.integers(c0, c)) + 1)):
                    m, da = np.full(c, 7.0), np.full(c, 7.0)
                    _items._sums_cl(g, x, n, lo, hi, m, da)
                    assert m[lo:hi].tobytes() == want_m[n, lo:hi].tobytes(), (s_, c, lo, hi)
                    assert da[lo:hi].tobytes() == want_da[n, lo:hi].tobytes(), (s_, c, lo, hi)
                    assert (m[:lo] == 7.0).all() and (m[hi:] == 7.0).all()
                    assert (da[:lo] == 7.0).all() and (da[hi:] == 7.0).all()
                    checked += 1
    assert checked == 88


def test_tap_loops_over_runs_equal_the_per_channel_formulas_bit_for_bit():
    """_logits, _dms and _tap_products (channels inside a group tap by tap over the run,
    loops that vectorize) give the bits of _logit, _dm and the per-channel product through
    the tap tables, for every channel of a random range [c0, c1), and write nothing outside
    it: group sizes 1 to 11, both paddings, shared and per-channel kernels (with infinite
    and NaN taps), k from 1 to 15 (also k > C), with and without a bias."""
    from npeca.backends.numba_cpu import _items
    from npeca.backends.numba_cpu._schedule import _tap_tables
    rng = np.random.default_rng(11)
    for _ in range(150):
        cg, groups = int(rng.integers(1, 12)), int(rng.integers(1, 4))
        c, k = cg * groups, int(rng.choice([1, 2, 3, 5, 7, 9, 15]))
        src, rd, _ = _tap_tables(c, k, cg, bool(rng.integers(2)))
        w = rng.standard_normal((c if rng.integers(2) else 1, k))
        if rng.random() < 0.2:
            w.flat[rng.integers(w.size)] = rng.choice([np.inf, -np.inf, np.nan])
        m_row, dz_row = rng.standard_normal(c), rng.standard_normal(c)
        c0 = int(rng.integers(0, c))
        c1 = int(rng.integers(c0 + 1, c + 1))
        bias, has_bias, s_ = float(rng.standard_normal()), bool(rng.integers(2)), 49.0
        z, t = np.full(c, 7.0), np.full(c, 7.0)
        _items._logits(m_row, w, src, cg, c0, c1, bias, has_bias, z)
        _items._dms(dz_row, w, rd, cg, c0, c1, s_, t[c0:c1])
        part0 = rng.standard_normal((k, c))
        part = part0.copy()
        _items._tap_products(dz_row, m_row, src, cg, c0, c1, part)
        z_want, t_want, part_want = np.full(c, 7.0), np.full(c, 7.0), part0.copy()
        for ch in range(c0, c1):
            z_want[ch] = _items._logit(m_row, w, src, ch, bias, has_bias)
            t_want[ch] = _items._dm(dz_row, w, rd, ch) / s_
            for j in range(k):
                value = m_row[src[ch, j]] if src[ch, j] >= 0 else 0.0
                part_want[j, ch] += dz_row[ch] * value
        case = (cg, groups, k, c0, c1, w.shape)
        assert z.tobytes() == z_want.tobytes(), case
        assert t.tobytes() == t_want.tobytes(), case
        assert part.tobytes() == part_want.tobytes(), case


def _exp_nonpositive_of(x: np.ndarray) -> np.ndarray:
    """The numba backend's exp, element by element (a loop like the kernels' gate loops)."""
    from numba import njit
    from npeca.backends.numba_cpu import _items

    @njit(error_model="numpy")
    def run(values, out):
        for i in range(values.shape[0]):
            out[i] = _items._exp_nonpositive(values[i])

    out = np.empty_like(x)
    run(x, out)
    return out


def test_exp_of_the_gates_is_within_one_ulp_of_libm_and_of_the_exact_value():
    """_exp_nonpositive (the gates' exp, straight-line code that vectorizes) against
    math.exp on 400,000 points of [-746, 0] (dense where the result turns subnormal and
    where it rounds to 0) and against 60-digit mpmath on 20,000 points k ln2 + r with r
    anywhere in [-ln2/2, ln2/2] (and three where evaluating the polynomial as
    1 + r (1 + r q) was 1.11 to 1.16 ulp off); exp(0) = 1, exp(-inf) = 0, NaN stays NaN."""
    from mpmath import mp, mpf
    from mpmath import exp as exact_exp
    rng = np.random.default_rng(3)
    x = np.concatenate([-rng.random(200_000) * 746.5, -rng.random(100_000) * 2.0,
                        -708.4 + rng.uniform(-1.0, 1.0, 50_000),
                        -745.1332191019411 + rng.uniform(-0.01, 0.01, 50_000),
                        -np.ldexp(1.0, -np.arange(0, 1075))])  # -1 down to -5e-324
    got = _exp_nonpositive_of(x)
    want = np.array([math.exp(v) for v in x.tolist()])
    assert (got >= 0).all()
    steps = np.abs(got.view(np.int64) - want.view(np.int64))  # ulps: both >= 0
    assert steps.max() <= 1, x[steps.argmax()]
    ln2 = math.log(2.0)
    x = rng.integers(-1070, 1, 20_000) * ln2 + rng.uniform(-ln2 / 2, ln2 / 2, 20_000)
    x = np.concatenate([x[x <= 0], [-1.0231391467595885, -316.40722394118444,
                                    -4.45945029165676]])
    mp.dps = 60
    tiny = mpf(2) ** -1074  # the spacing of subnormals
    for v, e in zip(x.tolist(), _exp_nonpositive_of(x).tolist()):
        exact = exact_exp(mpf(v))
        ulp = mpf(math.ulp(float(exact))) if float(exact) >= 2.0 ** -1022 else tiny
        assert abs(mpf(e) - exact) <= ulp, (v, e)
    special = _exp_nonpositive_of(np.array([0.0, -0.0, -np.inf, np.nan, -746.0, -800.0]))
    assert special[:2].tolist() == [1.0, 1.0] and special[2] == 0.0 and np.isnan(special[3])
    assert special[4:].tolist() == [0.0, 0.0]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="reads x86 assembly")
def test_the_loops_of_gates_vectorize_over_a_run_time_range():
    """The backward's loop of gates and slopes over a range [c0, c1) known only at run time
    (the items of the batch-1 schedules) compiles to packed divisions (v)divpd, each kind of
    gate on its own (``hard`` a constant here, so only that kind's loop is compiled): indexed
    from c0, with ``hard`` tested per channel, it computed one sigmoid at a time (no timing
    here; docs/performance.md, "Gate loops that vectorize again"). The forward's loop of
    gates is checked the same way; its earlier form vectorized too."""
    import re
    from numba import njit
    from npeca.backends.numba_cpu import _items

    @njit(error_model="numpy")
    def gates_soft(z, a, c0, c1):
        _items._gates(z, a, c0, c1, False)

    @njit(error_model="numpy")
    def gates_hard(z, a, c0, c1):
        _items._gates(z, a, c0, c1, True)

    @njit(error_model="numpy")
    def slopes_soft(a, da, dz, c0, c1):
        _items._gates_and_grads(a, da, dz, c0, c1, False)

    @njit(error_model="numpy")
    def slopes_hard(a, da, dz, c0, c1):
        _items._gates_and_grads(a, da, dz, c0, c1, True)

    @njit(error_model="numpy")
    def slopes(a, da, dz, c0, c1, hard):
        _items._gates_and_grads(a, da, dz, c0, c1, hard)

    row = np.linspace(-8.0, 8.0, 64)
    gates_soft(row, row.copy(), 3, 60)
    gates_hard(row, row.copy(), 3, 60)
    slopes_soft(row.copy(), row, row.copy(), 3, 60)
    slopes_hard(row.copy(), row, row.copy(), 3, 60)
    slopes(row.copy(), row, row.copy(), 3, 60, False)
    for fn in (gates_soft, gates_hard, slopes_soft, slopes_hard):
        asm = fn.inspect_asm(fn.signatures[0])
        assert re.search(r"\bv?divpd\b", asm), (fn.__name__, "a division per channel")
    # with ``hard`` known only at run time: both loops vectorized, the sigmoid's with its two
    # divisions per channel and the hard gate's with one (a loop that tests ``hard`` per
    # channel has none)
    packed = re.findall(r"\bv?divpd\b", slopes.inspect_asm(slopes.signatures[0]))
    assert len(packed) >= 3, len(packed)


def test_lane_sum_matches_exact_sum_to_its_bound():
    """The SIMD lane sum of every length 0..100 against math.fsum, both dtypes."""
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        for s in range(1, 101):
            x = (rng.standard_normal((1, 1, s)) * 10.0 ** rng.integers(-3, 4, s)).astype(dtype)
            fwd = npeca.eca_forward(x, np.ones(1), backend="numba")
            exact = math.fsum(x.astype(np.float64).ravel().tolist())
            bound = gamma(math.ceil(s / 16) + 5) * float(np.abs(x.astype(np.float64)).sum())
            assert abs(fwd.m[0, 0] * s - exact) <= bound + abs(exact) * 2 * U, (dtype, s)


# --- determinism across threads and calls -----------------------------------------------------

_DETERMINISM_SCRIPT = r"""
import hashlib, sys
import numpy as np, numba, npeca
assert numba.get_num_threads() == int(sys.argv[1]), numba.get_num_threads()
h = hashlib.sha256()
rng = np.random.default_rng(0)
for shape, axis, dtype in (((1, 96, 40, 41), 1, np.float32), ((7, 33, 9, 5), 1, np.float64),
                           ((1, 30, 41, 96), -1, np.float32), ((6, 5, 7, 40), -1, np.float64),
                           ((3, 24, 300), 1, np.float16)):
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    c = shape[axis]
    for w, kw in ((rng.standard_normal(5), dict(bias=0.1)),
                  (rng.standard_normal((c, 3)), dict(padding="circular", gate="hard_sigmoid"))):
        fwd = npeca.eca_forward(x, w, channel_axis=axis, backend="numba", **kw)
        grads = npeca.eca_backward(x, w, g, channel_axis=axis, backend="numba", **kw)
        for arr in fwd + tuple(a for a in grads if a is not None):
            h.update(np.ascontiguousarray(arr).tobytes())
print(h.hexdigest())
"""


def _run_python(code: str, *args: str, env: dict | None = None) -> str:
    """Run ``code`` in a fresh interpreter; its stdout, or a failure with its stderr."""
    import os
    import subprocess
    import sys
    full_env = dict(os.environ, **(env or {}))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=600, env=full_env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bitwise_identical_for_one_and_two_threads():
    """NUMBA_NUM_THREADS=1 and 2 in separate processes give the same bits, N = 1 included
    (where the channels, not the samples, are spread over the threads)."""
    one = _run_python(_DETERMINISM_SCRIPT, "1", env={"NUMBA_NUM_THREADS": "1"})
    two = _run_python(_DETERMINISM_SCRIPT, "2", env={"NUMBA_NUM_THREADS": "2"})
    assert one.strip() == two.strip() and len(one.strip()) == 64


def test_the_thread_count_follows_set_num_threads_in_every_thread():
    """The schedule's quick read of numba's thread count (_schedule._num_threads) returns
    what numba.get_num_threads() does, after set_num_threads, and per thread as numba keeps
    it; a call in a thread limited to one thread runs serial kernels (a planted constant
    count fails here)."""
    import threading

    import numba
    sched = numba_cpu._schedule
    before = numba.get_num_threads()
    x = np.ones((2, 64, 30, 30), np.float32)
    try:
        for threads in (1, before):
            numba.set_num_threads(threads)
            assert sched._num_threads() == numba.get_num_threads() == threads
            assert sched._Call.use_threads(x.nbytes) == threads
        seen = []

        def other():
            numba.set_num_threads(1)
            seen.append((sched._num_threads(), numba.get_num_threads()))

        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        assert seen == [(1, 1)]
        assert sched._num_threads() == numba.get_num_threads() == before
    finally:
        numba.set_num_threads(before)


def test_bitwise_identical_across_calls_and_set_num_threads():
    import numba
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 64, 30, 30)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(5)
    first = npeca.eca_forward(x, w, backend="numba"), npeca.eca_backward(x, w, g,
                                                                         backend="numba")
    before = numba.get_num_threads()
    try:
        for threads in (1, before, 1, before):
            numba.set_num_threads(threads)
            again = npeca.eca_forward(x, w, backend="numba"), npeca.eca_backward(
                x, w, g, backend="numba")
            for u, v in zip(first[0] + first[1][:2], again[0] + again[1][:2]):
                np.testing.assert_array_equal(u, v)
    finally:
        numba.set_num_threads(before)


_PLAN_CASES = [((1, 64, 9, 7), 1, {}), ((3, 40, 5, 6), -1, dict(bias=0.3)),
               ((1, 7, 8, 33), -1, dict(padding="circular", gate="hard_sigmoid")),
               ((2, 48, 60, 50), 1, dict(groups=4, bias=-0.2)), ((1, 60, 40, 48), -1, {}),
               ((64, 256, 2, 3), 1, dict(bias=0.1))]


def _plan_trials(plans: dict, seed: int):
    """For each of _PLAN_CASES, dtype and weight form (shared, per channel), at one thread
    and at all: ``plans`` emptied, then three calls' (rng, x, weight, channel_axis, keywords),
    the first taking the full path and recording, the later ones replaying with a new weight
    (float32 from the second on) and bias. The caller restores the thread count."""
    import numba
    rng = np.random.default_rng(seed)
    for threads in (1, numba.get_num_threads()):
        numba.set_num_threads(threads)
        for shape, axis, kw in _PLAN_CASES:
            for dtype in (np.float32, np.float64):
                x = rng.standard_normal(shape).astype(dtype)
                c = shape[axis]
                for w in (rng.standard_normal(5), rng.standard_normal((c, 3))):
                    plans.clear()
                    for trial in range(3):
                        wt = (w * (1 + trial)).astype(np.float32 if trial else w.dtype)
                        kwt = dict(kw, bias=kw["bias"] * trial) if "bias" in kw else kw
                        yield rng, x, wt, axis, kwt


def test_a_remembered_launch_gives_the_bits_of_the_full_path():
    """The second forward of a kind of call runs a remembered launch (_run._PLANS), without
    the schedule: it must give the full path's bits, for each layout, in place or not, for
    one thread and all, and use the weight and bias of its own call, not of the first."""
    import numba
    from npeca._validate import eca_problem
    run = numba_cpu._run
    before = numba.get_num_threads()
    try:
        for _, x, wt, axis, kwt in _plan_trials(run._PLANS, 12):
            full = run.forward_full(eca_problem(x, wt, channel_axis=axis, **kwt))
            got = npeca.eca_forward(x, wt, channel_axis=axis, backend="numba", **kwt)
            assert run._PLANS, "nothing was remembered"
            for u, v in zip(full, got):
                np.testing.assert_array_equal(u, v)
            xi = x.copy()  # in place
            np.testing.assert_array_equal(
                npeca.eca(xi, wt, out=xi, channel_axis=axis, backend="numba", **kwt), full.y)
    finally:
        numba.set_num_threads(before)


def test_a_remembered_backward_launch_gives_the_bits_of_the_full_path():
    """The second backward of a kind of call runs remembered launches (_run._BACKWARD_PLANS):
    the gradients of x, weight and bias must be the full path's bits, for each layout, into
    a new dx or in place over x or g, for one thread and all (the weight gradients on all
    threads too: 64 x 256 x 5 terms), with the weight, bias and g of its own call."""
    import numba
    from npeca._validate import eca_problem
    run = numba_cpu._run
    before = numba.get_num_threads()
    try:
        for rng, x, wt, axis, kwt in _plan_trials(run._BACKWARD_PLANS, 14):
            g = rng.standard_normal(x.shape).astype(x.dtype)
            full = run.backward_full(eca_problem(x, wt, channel_axis=axis, **kwt), g)
            got = npeca.eca_backward(x, wt, g, channel_axis=axis, backend="numba", **kwt)
            assert run._BACKWARD_PLANS, "nothing was remembered"
            assert (got.bias is None) == (full.bias is None)
            for u, v in zip(full, got):
                if u is not None:
                    assert u.dtype == v.dtype and u.shape == v.shape
                    np.testing.assert_array_equal(u, v)
            for which in ("x", "g"):  # in place
                xi, gi = x.copy(), g.copy()
                dx = npeca.eca_backward(xi, wt, gi, channel_axis=axis, backend="numba",
                                        out=xi if which == "x" else gi, **kwt)
                np.testing.assert_array_equal(dx.x, full.x)
                np.testing.assert_array_equal(dx.weight, full.weight)
    finally:
        numba.set_num_threads(before)


def test_every_size_of_the_schedule_is_in_the_key_of_a_remembered_launch(monkeypatch):
    """A remembered launch is keyed by _schedule.tuning(): every module-level size that the
    schedule reads must change it, or a changed size would replay the old schedule (the
    schedule test would then no longer run the modes it asks for)."""
    import ast
    import inspect
    sched = numba_cpu._schedule
    source = inspect.getsource(sched)
    sizes = {node.targets[0].id for node in ast.parse(source).body
             if isinstance(node, ast.Assign) and len(node.targets) == 1
             and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
             and node.targets[0].id.startswith("_")
             and isinstance(getattr(sched, node.targets[0].id), int)}
    read_by_calls = {name for name in sizes
                     if any(name in inspect.getsource(f) for f in
                            vars(sched._Call).values() if inspect.isfunction(f)
                            or isinstance(f, staticmethod))}
    assert {"_PIPELINE_MIN_ROW", "_SEGMENTS_PER_THREAD", "_PARAMETER_SERIAL",
            "_ACC_COLUMNS", "_SERIAL_BYTES"} <= read_by_calls
    for name in sorted(read_by_calls):
        before = sched.tuning()
        monkeypatch.setattr(sched, name, getattr(sched, name) + 12345)
        assert sched.tuning() != before, f"{name} is not in tuning()"


def test_remembered_launches_keep_no_array_of_the_caller():
    import gc
    import weakref
    x = np.random.default_rng(13).standard_normal((2, 32, 40, 40)).astype(np.float32)
    w = np.array([0.2, 0.5, 0.3], np.float32)
    g = x[::-1].copy()
    for _ in range(2):
        y = npeca.eca(x, w, backend="numba")
        grads = npeca.eca_backward(x, w, g, bias=0.5, backend="numba")
    assert numba_cpu._run._PLANS and numba_cpu._run._BACKWARD_PLANS
    refs = [weakref.ref(a) for a in (x, w, y, g, grads.x, grads.weight, grads.bias)]
    del x, w, y, g, grads
    gc.collect()
    assert all(r() is None for r in refs)


# --- memory: no full-size temporaries ---------------------------------------------------------

@pytest.mark.parametrize("channel_axis", [1, -1])
def test_no_full_size_temporaries(channel_axis):
    """With out=, the only NumPy allocations are O(N*C): m, z, a and the (C, k) tables."""
    rng = np.random.default_rng(0)
    shape = (4, 32, 64, 64) if channel_axis == 1 else (4, 64, 64, 32)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    out = np.empty_like(x)
    w = rng.standard_normal(3)
    kw = dict(channel_axis=channel_axis, backend="numba")
    npeca.eca(x, w, out=out, **kw)  # compile outside the measurement
    npeca.eca_backward(x, w, g, out=out, **kw)
    assert numba_cpu.wait_until_ready(timeout=600)  # no background compile while tracing
    for call in (lambda: npeca.eca(x, w, out=out, **kw),
                 lambda: npeca.eca_backward(x, w, g, out=out, **kw)):
        peak = _peak(call)
        assert peak < 64 * 4 * 32 * 8 + 65536, peak  # a few (N, C) float64 arrays
        assert peak < x.nbytes / 50


def _peak(call) -> int:
    """Peak bytes NumPy allocates during call()."""
    import tracemalloc
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["float16", "strided"])
def test_staging_memory_is_bounded(kind):
    """float16 and strided inputs go through reused buffers of a few samples: the extra
    memory is a few _STAGE_BYTES however large the batch."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal(3)
    peaks = []
    for n in (48, 96):
        if kind == "float16":
            x = rng.standard_normal((n, 16, 64, 64)).astype(np.float16)
        else:
            x = np.empty((n, 16, 64, 128), np.float32)[..., ::2]
            x[...] = rng.standard_normal(x.shape)
        out, g = np.empty_like(x), np.ones_like(x)
        npeca.eca(x, w, out=out, backend="numba")  # compile outside the measurement
        npeca.eca_backward(x, w, g, out=out, backend="numba")
        assert numba_cpu.wait_until_ready(timeout=600)  # no background compile while tracing
        peaks.append((_peak(lambda x=x, out=out: npeca.eca(x, w, out=out, backend="numba")),
                      _peak(lambda x=x, g=g, out=out: npeca.eca_backward(x, w, g, out=out,
                                                                         backend="numba"))))
    stage = numba_cpu._schedule._STAGE_BYTES
    for fwd, bwd in peaks:
        assert fwd <= 3 * stage + 65536 and bwd <= 4 * stage + 65536, peaks
    assert abs(peaks[1][0] - peaks[0][0]) < 65536 and abs(peaks[1][1] - peaks[0][1]) < 65536


_RSS_SCRIPT = r"""
import resource, sys
import numpy as np, npeca
axis = int(sys.argv[1])
w = np.full(5, 0.2)
from npeca.backends import numba_cpu
for shape in ((2, 8, 4, 4), (8, 256, 8, 8)):  # serial and parallel kernels: compile first
    small = np.ones(shape if axis == 1 else (shape[0],) + shape[2:] + (shape[1],), np.float32)
    npeca.eca(small, w, channel_axis=axis, backend="numba", out=np.ones_like(small))
    npeca.eca_backward(small, w, small, channel_axis=axis, backend="numba",
                       out=np.ones_like(small))
assert numba_cpu.wait_until_ready(timeout=600)
shape = (8, 256, 64, 64) if axis == 1 else (8, 64, 64, 256)
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)  # 32 MiB
g = np.ones_like(x)
out = np.ones_like(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
npeca.eca(x, w, out=out, channel_axis=axis, backend="numba")
npeca.eca_backward(x, w, g, out=out, channel_axis=axis, backend="numba")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, x.nbytes)
"""


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_peak_resident_memory_grows_by_much_less_than_x(channel_axis):
    """Counts allocations inside the compiled kernels too, which tracemalloc cannot see."""
    grew, nbytes = map(int, _run_python(_RSS_SCRIPT, str(channel_axis)).split())
    assert grew < nbytes / 8, (grew, nbytes)


# --- start-up: lazy import and the on-disk cache ----------------------------------------------

_CACHE_SCRIPT = r"""
import json, sys
import numpy as np, npeca
from npeca.backends.numba_cpu import _kernels
x = np.ones((2, 8, 5), np.float32)
npeca.eca(x, np.ones(3), backend="numba")
npeca.eca_backward(x, np.ones(3), x, backend="numba")
stats = {}
for name in ("_forward_cf", "_backward_cf", "_parameter_grads"):
    st = getattr(_kernels, name).serial.stats  # small x: the serial twins
    stats[name] = [sum(st.cache_hits.values()), sum(st.cache_misses.values())]
print(json.dumps(stats))
"""


@pytest.mark.slow
def test_second_process_loads_kernels_from_the_cache(tmp_path):
    import json
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    first = json.loads(_run_python(_CACHE_SCRIPT, env=env))
    index = list(tmp_path.rglob("*.nbi"))
    assert index, "no cache index written under NUMBA_CACHE_DIR"
    assert all(misses >= 1 and hits == 0 for hits, misses in first.values()), first
    second = json.loads(_run_python(_CACHE_SCRIPT, env=env))
    assert all(hits >= 1 and misses == 0 for hits, misses in second.values()), second


def test_inputs_in_the_other_layouts_memory_order_are_transposed_by_the_tiled_kernel(
        monkeypatch):
    """A channels-first x (and grad_out, and out=) that is channels-last in memory, and the
    reverse, are staged by _transpose_samples (not NumPy's element-by-element copy), with
    the bits of the C-contiguous call: forward, backward, out= in either memory order and
    in place, float32 and float64 (float32 x with a float64 grad_out: the float32 copy
    into a float64 buffer), shapes with fewer and more rows than columns."""
    from npeca.backends.numba_cpu import _kernels
    sched = numba_cpu._schedule
    rng = np.random.default_rng(31)
    launched = []
    launch = sched._Call.launch

    def recording(self, kernel, *args, **kwargs):
        launched.append(kernel)
        return launch(self, kernel, *args, **kwargs)

    monkeypatch.setattr(sched._Call, "launch", recording)
    monkeypatch.setattr(numba_cpu._run, "_PLANS", {})  # every call through the full path
    transposes = 0
    for shape, axis, dtype, gtype in (((2, 24, 9, 7), 1, np.float32, np.float32),
                                       ((3, 5, 4, 70), -1, np.float64, np.float64),
                                       ((1, 130, 3), 1, np.float32, np.float64),
                                       ((2, 6, 3, 2, 33), -1, np.float32, np.float32)):
        x = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(gtype)
        w = rng.standard_normal(5)
        kw = dict(channel_axis=axis, backend="numba", bias=0.25)
        xs, gs = relayout(rng, x, "swapped", axis), relayout(rng, g, "swapped", axis)
        assert not xs.flags.c_contiguous and np.moveaxis(
            xs, axis, -1 if axis == 1 else 1).flags.c_contiguous
        want = npeca.eca(x, w, **kw)
        want_b = npeca.eca_backward(x, w, g, **kw)
        launched.clear()
        y = npeca.eca(xs, w, **kw)
        assert y.tobytes() == want.tobytes() and y.flags.c_contiguous
        assert launched.count(_kernels._transpose_samples) == 1  # x in
        out = np.empty_like(xs)  # the swapped memory order too
        npeca.eca(xs, w, out=out, **kw)
        np.testing.assert_array_equal(out, want)
        inplace = relayout(rng, x, "swapped", axis)
        npeca.eca(inplace, w, out=inplace, **kw)
        np.testing.assert_array_equal(inplace, want)
        assert launched.count(_kernels._transpose_samples) == 5  # and 2 x (x in, y out)
        got = npeca.eca_backward(xs, w, gs, **kw)
        for u, v in zip(got, want_b):
            if u is not None:
                assert np.asarray(u).tobytes() == np.asarray(v).tobytes()
        transposes += launched.count(_kernels._transpose_samples)
    assert transposes == 4 * 7  # the backward: x and g in
    # several stages, the last one short: every stage read from and written to its own
    # samples (a stage of 2 samples for 5)
    x = rng.standard_normal((5, 3, 4, 40)).astype(np.float64)
    g = rng.standard_normal(x.shape)
    w = rng.standard_normal(3)
    kw = dict(channel_axis=-1, backend="numba")
    want, want_b = npeca.eca(x, w, **kw), npeca.eca_backward(x, w, g, **kw)
    monkeypatch.setattr(sched, "_STAGE_BYTES", 2 * x[0].nbytes)
    xs, gs = relayout(rng, x, "swapped", -1), relayout(rng, g, "swapped", -1)
    launched.clear()
    out = np.empty_like(xs)
    assert npeca.eca(xs, w, out=out, **kw) is out
    np.testing.assert_array_equal(out, want)
    dx = np.empty_like(gs)
    got = npeca.eca_backward(xs, w, gs, out=dx, **kw)
    assert got.x is dx
    np.testing.assert_array_equal(dx, want_b.x)
    np.testing.assert_array_equal(got.weight, want_b.weight)
    assert launched.count(_kernels._transpose_samples) == 3 * (2 + 3)  # per stage
    # the tiled kernel itself, both loop orders, one and several bands, every edge of bands
    # and tiles
    for a_, b_ in ((1, 1), (63, 65), (65, 63), (130, 17), (17, 130), (64, 16), (200, 3),
                   (65, 130), (130, 200), (129, 257)):
        for src_t, dst_t in ((np.float32, np.float32), (np.float64, np.float64),
                             (np.float32, np.float64)):
            src = rng.standard_normal((2, a_, b_)).astype(src_t)
            for kernel in (_kernels._transpose_samples.serial,
                           _kernels._transpose_samples.parallel):
                dst = np.full((2, b_, a_), np.nan, dst_t)
                kernel(src, dst)
                assert dst.tobytes() == src.transpose(0, 2, 1).astype(dst_t).tobytes()
