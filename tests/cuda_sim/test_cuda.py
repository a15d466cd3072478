"""backend="cuda" against the NumPy reference: every variant, host and device arrays.

Runs on Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1 must be set before numba is
imported; tests/test_cuda_simulator.py runs this directory in such a subprocess) or,
unchanged, on a GPU: ``pytest tests/cuda_sim``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests/ helpers

import npeca  # noqa: E402
from npeca.backends import numba_cuda  # noqa: E402
from strategies import make_weight, relayout  # noqa: E402
from tolerance import assert_rounded_close  # noqa: E402

if not numba_cuda.available():
    pytest.fail("backend='cuda' is unavailable: run with NUMBA_ENABLE_CUDASIM=1 or on a GPU",
                pytrace=False)



@pytest.fixture(autouse=True)
def few_threads(monkeypatch):
    """Eight threads per block (NPECA_CUDA_TEST_THREADS), so that even these small problems
    use several blocks and every reduction tree has several levels."""
    monkeypatch.setattr(numba_cuda, "THREADS",
                        int(os.environ.get("NPECA_CUDA_TEST_THREADS", "8")))


VARIANTS = [
    # (shape, dtype, kwargs, weight form, k)
    ((2, 6, 3, 2), np.float32, {}, "11k", 3),
    ((2, 6, 5), np.float64, {"padding": "circular"}, "k", 5),
    ((1, 3, 4), np.float32, {"padding": "circular"}, "k", 7),  # k > C, wraps twice
    ((2, 3, 2, 6), np.float32, {"channel_axis": -1, "groups": 2}, "Ck", 3),
    ((2, 4, 2, 2, 3), np.float64, {"groups": 2, "padding": "circular"}, "C1k", 3),
    ((2, 5, 9), np.float16, {"bias": 0.25}, "11k", 3),
    ((2, 8, 3), np.float32, {"gate": "hard_sigmoid", "bias": np.array([0.5], np.float32)},
     "k", 3),
    ((1, 2, 40), np.float64, {"channel_axis": -1, "gate": "hard_sigmoid"}, "k", 1),
]


def _case(shape, dtype, kwargs, form, k, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[-1] if kwargs.get("channel_axis") == -1 else shape[1]
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    w = make_weight(rng, form, c, k, dtype)
    g = rng.standard_normal(shape).astype(dtype)
    return x, w, g


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{np.dtype(v[1])}-{v[2]}"
                         f"-{v[3]}-k{v[4]}")
def test_matches_reference(variant):
    shape, dtype, kw, form, k = variant
    x, w, g = _case(*variant)
    ref = npeca.eca_forward(x, w, backend="numpy", **kw)
    got = npeca.eca_forward(x, w, backend="cuda", **kw)
    scale = float(np.abs(x.astype(np.float64)).max())
    assert_rounded_close(got.y, ref.y, scale=scale, what="y")
    for name in ("m", "z", "a"):
        assert_rounded_close(getattr(got, name), getattr(ref, name), scale=scale + 1,
                             rel64=1e-13, max_ulp=4, what=name)
    rg = npeca.eca_backward(x, w, g, backend="numpy", **kw)
    gg = npeca.eca_backward(x, w, g, backend="cuda", **kw)
    size = x.size
    assert_rounded_close(gg.x, rg.x, scale=10 * scale, what="dx")
    assert_rounded_close(gg.weight, rg.weight, scale=size * scale * scale, what="dweight")
    assert gg.weight.shape == w.shape and gg.weight.dtype == w.dtype
    if "bias" in kw:
        assert_rounded_close(gg.bias, rg.bias, scale=size * scale, what="dbias")
    else:
        assert gg.bias is None


def test_non_contiguous_host_input():
    x, w, g = _case(*VARIANTS[0])
    strided = relayout(np.random.default_rng(1), x, "strided")
    np.testing.assert_array_equal(npeca.eca(strided, w, backend="cuda"),
                                  npeca.eca(x, w, backend="cuda"))


def test_device_arrays_in_device_arrays_out():
    from numba import cuda

    x, w, g = _case(*VARIANTS[3])
    kw = VARIANTS[3][2]
    dx_dev, dg_dev = cuda.to_device(x), cuda.to_device(g)
    y = npeca.eca(dx_dev, w, backend="cuda", **kw)
    assert numba_cuda.is_device_array(y)
    np.testing.assert_array_equal(y.copy_to_host(), npeca.eca(x, w, backend="cuda", **kw))
    out = cuda.device_array(x.shape, dtype=x.dtype)
    assert npeca.eca(dx_dev, w, backend="cuda", out=out, **kw) is out
    np.testing.assert_array_equal(out.copy_to_host(), y.copy_to_host())
    grads = npeca.eca_backward(dx_dev, w, dg_dev, backend="cuda", **kw)
    assert numba_cuda.is_device_array(grads.x)
    host = npeca.eca_backward(x, w, g, backend="cuda", **kw)
    np.testing.assert_array_equal(grads.x.copy_to_host(), host.x)
    np.testing.assert_array_equal(grads.weight, host.weight)
    # auto picks the GPU for device input, never for NumPy input
    assert numba_cuda.is_device_array(npeca.eca(dx_dev, w, **kw))


def test_bitwise_reproducible_run_to_run():
    x, w, g = _case((2, 7, 11), np.float32, {}, "11k", 3, seed=3)
    first = npeca.eca_backward(x, w, g, backend="cuda")
    for _ in range(2):
        again = npeca.eca_backward(x, w, g, backend="cuda")
        np.testing.assert_array_equal(again.x, first.x)
        np.testing.assert_array_equal(again.weight, first.weight)


def test_saturated_and_non_finite_inputs():
    x = np.full((1, 4, 3), 60.0, dtype=np.float32)
    x[0, 1, 1] = np.nan
    w = np.ones(3, dtype=np.float32)
    ref = npeca.eca_forward(x, w, backend="numpy")
    got = npeca.eca_forward(x, w, backend="cuda")
    np.testing.assert_array_equal(np.isnan(got.y), np.isnan(ref.y))
    np.testing.assert_array_equal(got.a[np.isfinite(ref.a)], ref.a[np.isfinite(ref.a)])


def test_golden_core_suite_small_cases():
    """The committed golden suite, every case small enough for the simulator."""
    import math

    from npeca.golden import Suite
    from npeca.golden.adapters import get_adapter
    from npeca.golden.verify import verify_case

    suite = Suite(Path(__file__).resolve().parent.parent / "golden" / "core")
    adapter = get_adapter("cuda")
    limit = 200 if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else 10**9
    ran = 0
    for name, case in suite.cases.items():
        if math.prod(case["arrays"]["x"]["shape"]) > limit:
            continue
        result = verify_case(suite, name, adapter)
        if case["dtype"] == "bfloat16":  # no bfloat16 kernels: declined, with the reason
            assert result.status == "SKIP" and "bfloat16" in result.message, result
            continue
        assert result.status == "PASS", (name, result.message,
                                         [o.message for o in result.outputs])
        ran += 1
    assert ran >= 10


def test_capped_grids_still_cover_every_row(monkeypatch):
    """With the grid capped at 2 blocks, every kernel's loop covers the rest: results equal
    those of an uncapped grid, both layouts, forward and backward (with a bias: the
    parameter blocks come after the capped item blocks)."""
    variants = [((5, 6, 3, 2), np.float32, {}, "11k", 3),
                ((5, 3, 2, 6), np.float64, {"channel_axis": -1, "groups": 2, "bias": 0.5},
                 "Ck", 3)]
    for variant in variants:
        x, w, g = _case(*variant)
        kw = variant[2]
        want_f = npeca.eca_forward(x, w, backend="cuda", **kw)
        want_b = npeca.eca_backward(x, w, g, backend="cuda", **kw)
        with monkeypatch.context() as patch:
            patch.setattr(numba_cuda, "MAX_BLOCKS", 2)
            got_f = npeca.eca_forward(x, w, backend="cuda", **kw)
            got_b = npeca.eca_backward(x, w, g, backend="cuda", **kw)
        for u, v in zip(want_f, got_f):
            np.testing.assert_array_equal(u, v)
        for u, v in zip(want_b, got_b):
            if u is not None:
                np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("shape, axis", [((1, 2, 400), 1), ((3, 16, 3), 1), ((1, 40, 5), -1)])
def test_long_rows_are_split_into_chunks_and_short_ones_share_a_block(shape, axis):
    """The plan cuts long rows into chunks (N = 1 must still fill the GPU) and gives short
    rows fewer lanes; the results match the reference either way."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(3)
    g = rng.standard_normal(shape)
    problem = npeca._validate.eca_problem(x, w, channel_axis=axis)
    run = numba_cuda._Run(problem)
    if shape == (1, 4, 200):
        assert run.chunks > 1
    if shape == (3, 16, 3):
        assert run.lanes < numba_cuda.THREADS and run.chunks == 1
    got, want = npeca.eca_forward(x, w, backend="cuda", channel_axis=axis), \
        npeca.eca_forward(x, w, backend="numpy", channel_axis=axis)
    assert_rounded_close(got.y, want.y, scale=float(np.abs(x).max()), what="y")
    assert_rounded_close(got.m, want.m, scale=float(np.abs(x).max()), what="m")
    gb = npeca.eca_backward(x, w, g, backend="cuda", channel_axis=axis)
    wb = npeca.eca_backward(x, w, g, backend="numpy", channel_axis=axis)
    assert_rounded_close(gb.x, wb.x, scale=10.0 * float(np.abs(x).max()), what="dx")
    assert_rounded_close(gb.weight, wb.weight, scale=x.size * 10.0, what="dweight")


def test_every_launch_is_compiled_by_the_ptx_check_and_the_launches_per_call(monkeypatch):
    """Every kernel launch of every variant (mixed grad_out dtypes too) has its argument
    types in launch_signatures(), the list npeca.backends.cuda_ptx compiles for sm_80 and
    sm_90 in CI; forward is 2 launches, backward 3, whatever the variant."""
    launches = []
    monkeypatch.setattr(numba_cuda, "LAUNCHES", launches)
    for variant in VARIANTS:
        x, w, g = _case(*variant)
        kw = variant[2]
        for gd in (np.float16, np.float32, np.float64):
            launches.clear()
            npeca.eca(x, w, backend="cuda", **kw)
            assert len(launches) == 2, launches
            launches.clear()
            npeca.eca_backward(x, w, g.astype(gd), backend="cuda", **kw)
            assert len(launches) == 3, launches
            seen = {(name, kinds) for name, _, _, kinds in launches}
            assert seen <= set(numba_cuda.launch_signatures()), seen
    x, w, g = _case(*VARIANTS[0])
    launches.clear()
    npeca.eca_backward(x, w, g, backend="cuda", bias=0.5)
    assert [name for name, *_ in launches] == ["partial_first", "slope", "dx_params_first"]


def test_allocations_and_copies_per_call(monkeypatch):
    """Device input: nothing is allocated or copied per call once the workspace and the
    weight are on the device, except the results the caller keeps (a new y; m, z, a from
    eca_forward) and the small weight and bias gradients coming back; a changed weight is
    copied once. NumPy input: x goes over once and y (dx) comes back once."""
    from numba import cuda

    counts = {}
    monkeypatch.setattr(numba_cuda, "COUNTS", counts)
    x, w, g = _case((2, 6, 3, 2), np.float32, {}, "11k", 3)
    dx_, dg_ = cuda.to_device(x), cuda.to_device(g)
    y_out, dx_out = (cuda.device_array(x.shape, dtype=x.dtype) for _ in range(2))

    def run(fn):
        counts.clear()
        fn()
        return {k: v for k, v in counts.items() if v}

    run(lambda: npeca.eca_backward(dx_, w, dg_, backend="cuda", out=dx_out))  # warm
    assert run(lambda: npeca.eca(dx_, w, backend="cuda", out=y_out)) == {}
    assert run(lambda: npeca.eca(dx_, w, backend="cuda")) == {"alloc": 1}
    assert run(lambda: npeca.eca_forward(dx_, w, backend="cuda")) == {"alloc": 2}
    assert run(lambda: npeca.eca_backward(dx_, w, dg_, backend="cuda", out=dx_out)) == \
        {"d2h": 1}
    assert run(lambda: npeca.eca(dx_, w * 2, backend="cuda", out=y_out)) == \
        {"alloc": 1, "h2d": 1}
    assert run(lambda: npeca.eca(x, w, backend="cuda")) == {"alloc": 1, "h2d": 2, "d2h": 1}
    assert run(lambda: npeca.eca(x, w, backend="cuda")) == {"h2d": 1, "d2h": 1}
    np.testing.assert_array_equal(npeca.eca(dx_, w, backend="cuda", out=y_out).copy_to_host(),
                                  npeca.eca(x, w, backend="cuda"))


def test_a_weight_changed_in_place_is_seen(monkeypatch):
    """The device copy of the weight is reused only while the weight's values are the
    same: a float64 (C, k) weight (no copy on the way in) changed in place between calls,
    and a shared kernel with C = 1, give the new results (regression: the cache compared
    the caller's array with itself)."""
    rng = np.random.default_rng(9)
    for x, w in ((rng.standard_normal((1, 4, 3)), rng.standard_normal((4, 3))),
                 (rng.standard_normal((2, 1, 5)), rng.standard_normal(3))):
        npeca.eca(x, w, backend="cuda")
        w *= -3.0
        np.testing.assert_allclose(npeca.eca(x, w, backend="cuda"),
                                   npeca.eca(x, w, backend="numpy"), rtol=1e-12, atol=1e-12)
        g = rng.standard_normal(x.shape)
        w *= 0.5
        got = npeca.eca_backward(x, w, g, backend="cuda")
        want = npeca.eca_backward(x, w, g, backend="numpy")
        np.testing.assert_allclose(got.x, want.x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.weight, want.weight, rtol=1e-10, atol=1e-12)


def test_the_grid_cap_holds_for_the_parameter_blocks_too(monkeypatch):
    """With the cap at 2 blocks and a per-channel kernel (C k parameter gradients), no launch
    exceeds 2 blocks and the results are the uncapped ones."""
    launches = []
    x, w, g = _case((2, 6, 3, 2), np.float64, {}, "Ck", 3)
    want = npeca.eca_backward(x, w, g, backend="cuda", bias=0.25)
    monkeypatch.setattr(numba_cuda, "LAUNCHES", launches)
    monkeypatch.setattr(numba_cuda, "MAX_BLOCKS", 2)
    got = npeca.eca_backward(x, w, g, backend="cuda", bias=0.25)
    assert max(grid for _, grid, _, _ in launches) <= 2, launches
    for u, v in zip(want, got):
        np.testing.assert_array_equal(u, v)


def test_out_is_written_in_place(monkeypatch):
    """A contiguous device out= is the kernels' destination, x itself included; a NumPy
    out= receives y straight from the device; a strided device out=, or one that overlaps
    x without being x, is refused."""
    from numba import cuda

    x, w, g = _case(*VARIANTS[0])
    want = npeca.eca(x, w, backend="cuda")
    dev_x = cuda.to_device(x)
    out = cuda.device_array(x.shape, dtype=x.dtype)
    assert npeca.eca(dev_x, w, backend="cuda", out=out) is out
    np.testing.assert_array_equal(out.copy_to_host(), want)
    host_out = np.empty_like(x)
    assert npeca.eca(x, w, backend="cuda", out=host_out) is host_out
    np.testing.assert_array_equal(host_out, want)
    assert npeca.eca(dev_x, w, backend="cuda", out=dev_x) is dev_x  # in place
    np.testing.assert_array_equal(dev_x.copy_to_host(), want)
    big = cuda.device_array(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
    with pytest.raises(npeca.errors.ShapeError, match="must be a C-contiguous GPU array"):
        npeca.eca(cuda.to_device(x), w, backend="cuda", out=big[..., ::2])
    both = cuda.to_device(np.concatenate([x.reshape(-1), x.reshape(-1)]))
    shifted_x, shifted_out = both[:x.size].reshape(x.shape), both[1:x.size + 1].reshape(
        x.shape)
    with pytest.raises(npeca.errors.ParameterError, match="out overlaps x"):
        npeca.eca(shifted_x, w, backend="cuda", out=shifted_out)
    dx_out = cuda.device_array(x.shape, dtype=x.dtype)
    grads = npeca.eca_backward(cuda.to_device(x), w, cuda.to_device(g), backend="cuda",
                               out=dx_out)
    assert grads.x is dx_out
    np.testing.assert_array_equal(dx_out.copy_to_host(),
                                  npeca.eca_backward(x, w, g, backend="cuda").x)


def test_bfloat16_is_refused_with_the_backends_that_take_it():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.ones((1, 4, 3), ml_dtypes.bfloat16)
    with pytest.raises(npeca.errors.DTypeError, match="backend='numba'"):
        npeca.eca(x, np.ones(3), backend="cuda")


def test_non_finite_values_meeting_zero_pads_match_the_reference():
    x = np.ones((1, 3, 2))
    w = np.array([np.inf, 1.0, 0.0])
    np.testing.assert_array_equal(npeca.eca_forward(x, w, backend="cuda").z,
                                  npeca.eca_forward(x, w, backend="numpy").z)
    x = np.array([[[np.inf]]])
    w = np.array([0.0, 1.0, 0.0])
    np.testing.assert_array_equal(
        npeca.eca_backward(x, w, np.ones_like(x), backend="cuda").weight,
        npeca.eca_backward(x, w, np.ones_like(x), backend="numpy").weight)
