"""Properties of ECA that hold exactly, whatever the reference's internals."""

from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st

import npeca
from strategies import LAYOUTS, Case, eca_cases, relayout


@given(eca_cases(gates=("sigmoid",), allow_bias=False))
def test_zero_weight_and_bias_halve_the_input(case: Case):
    """sigmoid(0) = 1/2 exactly, and halving is exact in float64, rounded once after."""
    zero = np.zeros_like(case.weight)
    expected = (case.x.astype(np.float64) / 2).astype(case.x.dtype)
    np.testing.assert_array_equal(npeca.eca(case.x, zero, **case.kwargs), expected)
    np.testing.assert_array_equal(npeca.eca(case.x, zero, bias=0.0, **case.kwargs), expected)


@given(eca_cases())
def test_output_never_exceeds_input_in_magnitude(case: Case):
    """Both gates lie in [0, 1] and rounding is monotone."""
    y = npeca.eca(case.x, case.weight, **case.kwargs)
    assert np.all(np.abs(y) <= np.abs(case.x))


@given(eca_cases(paddings=("circular",)), st.integers(-20, 20))
def test_circular_padding_commutes_with_rolling_channels(case: Case, shift: int):
    kw = dict(case.kwargs, groups=1)
    axis = kw["channel_axis"]
    w = case.weight
    if case.weight_form in ("Ck", "C1k"):  # per-channel kernels travel with their channel
        w = np.roll(w, shift, axis=0)
    rolled = npeca.eca(np.roll(case.x, shift, axis=axis), w, **kw)
    np.testing.assert_array_equal(rolled, np.roll(npeca.eca(case.x, case.weight, **kw), shift,
                                                  axis=axis))


@given(eca_cases(layouts=("contiguous",)), st.sampled_from(LAYOUTS[1:]))
def test_results_do_not_depend_on_memory_layout(case: Case, layout: str):
    other = relayout(np.random.default_rng(1), case.x, layout, case.kwargs["channel_axis"])
    np.testing.assert_array_equal(npeca.eca(other, case.weight, **case.kwargs),
                                  npeca.eca(case.x, case.weight, **case.kwargs))
    g1 = npeca.eca_backward(other, case.weight, case.grad_out, **case.kwargs)
    g2 = npeca.eca_backward(case.x, case.weight, case.grad_out, **case.kwargs)
    np.testing.assert_array_equal(g1.x, g2.x)
    np.testing.assert_array_equal(g1.weight, g2.weight)


@given(eca_cases(layouts=("contiguous",)))
def test_channels_last_is_channels_first_transposed(case: Case):
    kw = dict(case.kwargs)
    x = case.x
    if kw["channel_axis"] == -1:
        x = np.moveaxis(x, -1, 1)
    first = npeca.eca(x, case.weight, **dict(kw, channel_axis=1))
    last = npeca.eca(np.moveaxis(x, 1, -1), case.weight, **dict(kw, channel_axis=-1))
    np.testing.assert_array_equal(np.moveaxis(last, -1, 1), first)
    assert last.flags.c_contiguous and first.flags.c_contiguous


@given(eca_cases(weight_forms=("k",)))
def test_weight_forms_are_equivalent(case: Case):
    """(k,), (1, 1, k), and (C, k) / (C, 1, k) with identical rows give the same result."""
    c = case.x.shape[case.kwargs["channel_axis"]]
    k = case.weight.shape[0]
    y = npeca.eca(case.x, case.weight, **case.kwargs)
    for w in (case.weight.reshape(1, 1, k), np.tile(case.weight, (c, 1)),
              np.tile(case.weight, (c, 1)).reshape(c, 1, k)):
        np.testing.assert_array_equal(npeca.eca(case.x, w, **case.kwargs), y)


def test_groups_are_independent_ecas():
    """ECA with G groups equals G separate ECAs, one per block of C/G channels."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 12, 3, 2))
    w = rng.standard_normal(5)
    for padding in ("zeros", "circular"):
        y = npeca.eca(x, w, groups=3, padding=padding)
        parts = [npeca.eca(x[:, 4 * i:4 * i + 4], w, padding=padding) for i in range(3)]
        np.testing.assert_array_equal(y, np.concatenate(parts, axis=1))


def test_nan_and_inf_propagate_per_ieee():
    x = np.ones((1, 8, 4))
    w = np.array([0.5, 1.0, 0.5])
    x[0, 3, 1] = np.nan
    y = npeca.eca(x, w)
    # channel 3's mean is NaN; with k = 3 its neighbours 2 and 4 read it too
    assert np.isnan(y[0, 2:5]).all()
    assert np.isfinite(y[0, [0, 1, 5, 6, 7]]).all()
    x = np.ones((1, 8, 4))
    x[0, 5, 0] = np.inf
    fwd = npeca.eca_forward(x, w)
    assert fwd.m[0, 5] == np.inf and fwd.a[0, 4] == 1.0 and fwd.a[0, 6] == 1.0
    assert np.isinf(fwd.y[0, 5, 0]) and np.isfinite(fwd.y[0, 5, 1:]).all()
    # sigmoid saturates without overflow warnings for huge logits
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        big = npeca.eca_forward(np.full((1, 3, 2), 1e300), np.ones(1))
    assert big.a.tolist() == [[1.0, 1.0, 1.0]]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        small = npeca.eca_forward(np.full((1, 3, 2), -700.0), np.ones(1))
    assert np.allclose(small.a, np.exp(-700.0), rtol=1e-14, atol=0)  # relative accuracy kept


def test_every_channel_count_up_to_4096_runs_with_its_kernel_size():
    rng = np.random.default_rng(0)
    for c in range(1, 4097):
        k = npeca.kernel_size(c)
        x = rng.standard_normal((1, c, 1))
        y = npeca.eca(x, np.full(k, 1.0 / k))
        assert y.shape == x.shape
