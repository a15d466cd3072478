"""The NumPy reference against the independent loop implementation in tests/naive.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import npeca
from naive import naive_backward, naive_forward
from strategies import Case, eca_cases, make_weight
from tolerance import assert_rounded_close


def _naive_kwargs(case: Case) -> dict:
    kw = dict(case.kwargs)
    kw.setdefault("bias", None)
    return kw


def _scales(case: Case):
    x = np.abs(case.x.astype(np.float64)).max()
    g = np.abs(case.grad_out.astype(np.float64)).max()
    w = np.abs(case.weight.astype(np.float64)).sum()
    n, c = case.x.shape[0], case.x.shape[case.kwargs["channel_axis"]]
    s = case.x.size // (n * c)
    return {
        "y": x, "m": x, "z": w * x + 1.0, "a": 1.0,
        "dx": g + w * g * x * s, "dw": n * c * s * g * x * x + 1.0, "db": n * c * s * g * x + 1.0,
    }


@given(eca_cases())
def test_forward_matches_naive(case: Case):
    out = npeca.eca_forward(case.x, case.weight, **case.kwargs)
    y, m, z, a = naive_forward(case.x, case.weight, **_naive_kwargs(case))
    sc = _scales(case)
    assert out.y.shape == case.x.shape and out.y.dtype == case.x.dtype
    assert_rounded_close(out.y, y, scale=sc["y"], what="y")
    for name, ref, exp in (("m", out.m, m), ("z", out.z, z), ("a", out.a, a)):
        assert ref.dtype == np.float64 and ref.shape == exp.shape
        assert_rounded_close(ref, exp, scale=sc[name], rel64=1e-13, max_ulp=0, what=name)
    np.testing.assert_array_equal(npeca.eca(case.x, case.weight, **case.kwargs), out.y)


@given(eca_cases())
def test_backward_matches_naive(case: Case):
    grads = npeca.eca_backward(case.x, case.weight, case.grad_out, **case.kwargs)
    dx, dw, db = naive_backward(case.x, case.weight, case.grad_out, **_naive_kwargs(case))
    sc = _scales(case)
    assert_rounded_close(grads.x, dx, scale=sc["dx"], what="dx")
    assert grads.weight.shape == case.weight.shape
    assert_rounded_close(grads.weight, dw, scale=sc["dw"], what="dweight")
    if "bias" in case.kwargs:
        assert_rounded_close(grads.bias, db, scale=sc["db"], what="dbias")
    else:
        assert grads.bias is None


@pytest.mark.parametrize("c", [16, 128, 256])
def test_channel_counts_where_even_kernel_versions_crash(c):
    """k = psi(C) is 3, 5, 5 here; the widely copied version keeps an even k and its
    convolution returns C + 1 values. The reference must run and match the naive loops."""
    rng = np.random.default_rng(c)
    k = npeca.kernel_size(c)
    assert k % 2 == 1
    x = rng.standard_normal((2, c, 3, 3))
    w = make_weight(rng, "11k", c, k, np.float64)
    y, *_ = naive_forward(x, w)
    assert_rounded_close(npeca.eca(x, w), y, scale=np.abs(x).max(), what="y")
    g = rng.standard_normal(x.shape)
    dx, dw, _ = naive_backward(x, w, g)
    grads = npeca.eca_backward(x, w, g)
    assert_rounded_close(grads.x, dx, scale=10.0, what="dx")
    assert_rounded_close(grads.weight, dw, scale=1e3, what="dw")


def test_kernel_longer_than_channels_matches_naive():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 5))
    for padding in ("zeros", "circular"):
        w = rng.standard_normal(9)  # k = 9 > C = 3: circular wraps more than once
        y, *_ = naive_forward(x, w, padding=padding)
        assert_rounded_close(npeca.eca(x, w, padding=padding), y, scale=10.0, what=padding)
        g = rng.standard_normal(x.shape)
        dx, dw, _ = naive_backward(x, w, g, padding=padding)
        grads = npeca.eca_backward(x, w, g, padding=padding)
        assert_rounded_close(grads.x, dx, scale=10.0, what="dx " + padding)
        assert_rounded_close(grads.weight, dw, scale=100.0, what="dw " + padding)


def test_mixed_dtypes_follow_their_inputs():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 6)).astype(np.float16)
    w = rng.standard_normal((1, 1, 3)).astype(np.float32)
    b = np.array([0.25], dtype=np.float64)
    grads = npeca.eca_backward(x, w, np.ones_like(x), bias=b)
    assert npeca.eca(x, w, bias=b).dtype == np.float16
    assert grads.x.dtype == np.float16
    assert grads.weight.dtype == np.float32 and grads.weight.shape == (1, 1, 3)
    assert grads.bias.dtype == np.float64 and grads.bias.shape == (1,)
    assert npeca.eca_backward(x, w, x, bias=0.5).bias.shape == ()
