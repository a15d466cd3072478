"""Bad input gets an npeca exception naming the argument, what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import npeca
from npeca import DTypeError, NpecaError, ParameterError, ShapeError

X = np.ones((2, 8, 3, 3))
W = np.full(3, 0.1)


def _raises(exc, pattern, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        npeca.eca(*args, **kwargs)
    grad = kwargs.pop("grad_out", None)
    x = args[0]
    with pytest.raises(exc, match=pattern):
        npeca.eca_backward(*args, np.ones(np.shape(x)) if grad is None else grad, **kwargs)


def test_family_is_builtin_compatible():
    assert issubclass(ShapeError, ValueError) and issubclass(ParameterError, ValueError)
    assert issubclass(DTypeError, TypeError)
    assert issubclass(npeca.BackendUnavailableError, ImportError)
    for cls in (ShapeError, ParameterError, DTypeError, npeca.BackendUnavailableError):
        assert issubclass(cls, NpecaError)


def test_missing_batch_axis():
    with pytest.raises(ShapeError, match=r"3 to 5 dimensions.*\(224, 224\).*x\[None\]"):
        npeca.eca(np.ones((224, 224)), W)


@pytest.mark.parametrize("shape", [(5,), (), (1, 2, 3, 4, 5, 6)])
def test_wrong_ndim(shape):
    _raises(ShapeError, r"x must have 3 to 5 dimensions", np.ones(shape), W)


@pytest.mark.parametrize("shape", [(0, 8, 3), (2, 0, 3), (2, 8, 0), (2, 8, 3, 0)])
def test_zero_size_axes(shape):
    _raises(ShapeError, r"zero-length axis", np.ones(shape), W)


@pytest.mark.parametrize("dtype, word", [(np.int32, "integer"), (np.bool_, "boolean"),
                                         (np.complex128, "complex"), (object, "object"),
                                         (np.uint8, "unsigned")])
def test_bad_x_dtypes(dtype, word):
    _raises(DTypeError, rf"x must have dtype float16, float32, float64 or bfloat16; got {word}",
            X.astype(dtype), W)


def test_bad_weight_dtype_and_ragged_input():
    _raises(DTypeError, r"weight must have dtype.*integer", X, np.ones(3, dtype=np.int64))
    with pytest.raises(DTypeError, match="x must be an array"):
        npeca.eca([[[1.0, 2.0]], [[1.0]]], W)


def test_even_kernel():
    _raises(ShapeError, r"kernel size k must be odd.*k = 4.*npeca.kernel_size", X, np.ones(4))
    _raises(ShapeError, r"k = 2", X, np.ones((1, 1, 2)))


def test_empty_weight():
    _raises(ShapeError, r"weight is empty", X, np.ones(0))


def test_per_channel_weight_must_match_channels():
    _raises(ShapeError, r"\(C, k\) = \(8, k\).*C = 8.*got shape \(7, 3\)", X, np.ones((7, 3)))
    _raises(ShapeError, r"\(1, 1, k\).*\(8, 1, k\).*got shape \(2, 2, 3\)", X,
            np.ones((2, 2, 3)))
    _raises(ShapeError, r"weight must have shape", X, np.ones((1, 1, 1, 3)))


def test_groups():
    _raises(ParameterError, r"groups must divide.*groups = 3 for C = 8", X, W, groups=3)
    for bad in (0, -1, 1.5, True, "2"):
        _raises(ParameterError, r"groups must be an integer >= 1", X, W, groups=bad)


def test_padding_and_gate():
    _raises(ParameterError, r"padding must be one of 'zeros', 'circular'; got 'reflect'", X, W,
            padding="reflect")
    _raises(ParameterError, r"gate must be one of 'sigmoid', 'hard_sigmoid'; got 'relu'", X, W,
            gate="relu")


def test_channel_axis():
    _raises(ParameterError, r"channel_axis must be 1 .* or -1 .*got 2", X, W, channel_axis=2)
    _raises(ParameterError, r"channel_axis must be", X, W, channel_axis=1.0)
    # -3 on a 4-D x is axis 1 and 3 is axis -1: accepted as the same axes
    np.testing.assert_array_equal(npeca.eca(X, W, channel_axis=-3), npeca.eca(X, W))
    np.testing.assert_array_equal(npeca.eca(X, W, channel_axis=3),
                                  npeca.eca(X, W, channel_axis=-1))


def test_bias():
    _raises(ShapeError, r"bias must be a scalar or have shape \(1,\).*got shape \(8,\)", X, W,
            bias=np.ones(8))
    _raises(DTypeError, r"bias must be None or a real scalar", X, W, bias=True)
    _raises(DTypeError, r"bias must have dtype", X, W, bias="0.5")


def test_grad_out_shape_and_dtype():
    with pytest.raises(ShapeError, match=r"grad_out must have the shape of x, \(2, 8, 3, 3\); "
                                         r"got shape \(2, 8, 9\)"):
        npeca.eca_backward(X, W, np.ones((2, 8, 9)))
    with pytest.raises(DTypeError, match=r"grad_out must have dtype"):
        npeca.eca_backward(X, W, np.ones(X.shape, dtype=np.int8))


def test_kernel_size_non_finite_gamma():
    with pytest.raises(ParameterError, match="gamma must be a finite real number"):
        npeca.kernel_size(64, gamma=float("nan"))


_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=6).map(tuple)


@given(x_shape=_shapes, w_shape=_shapes, g_shape=_shapes, groups=st.integers(-1, 5),
       channel_axis=st.integers(-6, 6), bias_shape=st.sampled_from([None, (), (1,), (2,), (1, 1)]))
def test_arbitrary_shapes_raise_only_npeca_errors(x_shape, w_shape, g_shape, groups,
                                                  channel_axis, bias_shape):
    """No IndexError, broadcasting error or numpy message ever reaches the user."""
    bias = None if bias_shape is None else np.zeros(bias_shape)
    kw = dict(bias=bias, groups=groups, channel_axis=channel_axis)
    try:
        y = npeca.eca(np.ones(x_shape), np.ones(w_shape), **kw)
        assert y.shape == x_shape
    except NpecaError:
        pass
    try:
        grads = npeca.eca_backward(np.ones(x_shape), np.ones(w_shape), np.ones(g_shape), **kw)
        assert grads.x.shape == x_shape and grads.weight.shape == w_shape
    except NpecaError:
        pass


def test_huge_integer_bias_and_big_endian_input():
    with pytest.raises(ParameterError, match="bias must fit in a float64"):
        npeca.eca(np.ones((1, 2, 2)), [1.0], bias=10**400)
    x = np.random.default_rng(0).standard_normal((1, 3, 4))
    np.testing.assert_array_equal(npeca.eca(x.astype(">f8"), [0.5]), npeca.eca(x, [0.5]))
