"""npeca.testing: the checker passes correct gradients and catches planted wrong ones."""

from __future__ import annotations

import numpy as np
import pytest

import npeca
from npeca import autograd as ag
from npeca.errors import GradcheckError, ParameterError, ShapeError
from npeca.testing import DEFAULT_TOLERANCES, assert_close, check_vjp, gradcheck

RNG = np.random.default_rng(99)
X = RNG.standard_normal((2, 6, 3))
W = RNG.standard_normal(3) / 2


def eca_vjp(cot, x, w):
    g = npeca.eca_backward(x, w, cot[0])
    return g.x, g.weight


def planted_vjp(cot, x, w):
    """The classic mistake: the sigmoid's derivative taken as a instead of a (1 - a)."""
    fwd = npeca.eca_forward(x, w)
    g = cot[0]
    s = x.shape[2]
    da = (g * x).sum(axis=2)
    dz = da * fwd.a  # wrong
    mp = np.pad(fwd.m, ((0, 0), (1, 1)))
    dw = np.array([(dz * mp[:, j:j + x.shape[1]]).sum() for j in range(3)])
    dzp = np.pad(dz, ((0, 0), (1, 1)))
    dm = sum(w[j] * dzp[:, 2 - j:2 - j + x.shape[1]] for j in range(3))
    return g * fwd.a[:, :, None] + dm[:, :, None] / s, dw


def test_correct_gradients_pass_in_both_modes():
    assert gradcheck(lambda x, w: ag.eca_composed(x, w), {"x": X, "weight": W})
    assert gradcheck(lambda x, w: ag.eca(x, w), [X, W], mode="fast", n_projections=5)
    assert check_vjp(npeca.eca, eca_vjp, {"x": X, "weight": W})
    assert check_vjp(npeca.eca, eca_vjp, {"x": X, "weight": W}, mode="fast")


def test_planted_wrong_gradient_fails_with_a_readable_message():
    with pytest.raises(GradcheckError) as info:
        check_vjp(npeca.eca, planted_vjp, {"x": X[:1, :3, :2], "weight": W})
    msg = str(info.value)
    print(msg)  # shown with pytest -s: this is what a user sees
    assert "gradient check failed for output with respect to x" in msg
    assert "worst at d output[flat" in msg and "analytical" in msg and "numerical" in msg
    assert "analytical" in msg.splitlines()[1] and "numerical" in msg.splitlines()[1]
    assert len(msg.splitlines()) > 3  # the two Jacobian blocks, side by side


def test_planted_wrong_gradient_fails_in_fast_mode_too():
    with pytest.raises(GradcheckError, match="random projection <v, J u>"):
        check_vjp(npeca.eca, planted_vjp, {"x": X, "weight": W}, mode="fast")


def test_planted_wrong_vjp_rule_in_a_custom_primitive_is_caught():
    @ag.primitive
    def cube(a):
        return a ** 3

    ag.defvjp(cube, lambda g, ans, a: g * 3 * a)  # should be 3 a**2
    with pytest.raises(GradcheckError, match="with respect to input 0"):
        gradcheck(cube, [np.array([0.5, 2.0])])
    ag.defvjp(cube, lambda g, ans, a: g * 3 * a * a)
    assert gradcheck(cube, [np.array([0.5, 2.0])])


def test_several_outputs_are_named():
    def two(x):
        return x * 2.0, ag.exp(x)

    def bad_vjp(cot, x):
        return (2 * cot[0] + cot[1],)  # d exp(x) / dx taken as 1

    assert gradcheck(two, [np.array([0.1, 0.2])])
    with pytest.raises(GradcheckError, match="for output 1 with respect to input 0"):
        gradcheck(two, [np.array([0.1, 0.2])], vjp=bad_vjp)


def test_opaque_pytorch_backend(torch):
    """The checker on a PyTorch function: forward and vjp wrapped around torch autograd."""
    def forward(x, w):
        return torch.sigmoid(torch.tensor(x) * torch.tensor(w)).numpy()

    def vjp(cot, x, w):
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        y = torch.sigmoid(xt * wt)
        gx, gw = torch.autograd.grad(y, (xt, wt), torch.tensor(cot[0]))
        return gx.numpy(), gw.numpy()

    x, w = RNG.standard_normal((3, 4)), RNG.standard_normal(4)
    assert check_vjp(forward, vjp, {"x": x, "w": w})


def test_gradcheck_input_errors():
    with pytest.raises(ParameterError, match="float64"):
        gradcheck(lambda x: x, [np.ones(2, dtype=np.float32)])
    with pytest.raises(ParameterError, match="mode must be"):
        gradcheck(lambda x: x, [np.ones(2)], mode="slow")
    with pytest.raises(ShapeError, match=r"gradient for x has shape \(3,\)"):
        check_vjp(lambda x: x, lambda cot, x: (np.ones(3),), {"x": np.ones(2)})
    with pytest.raises(ParameterError, match="returned 2 gradients for 1 inputs"):
        check_vjp(lambda x: x, lambda cot, x: (x, x), [np.ones(2)])
    with pytest.raises(ParameterError, match="Pass vjp="):
        gradcheck(lambda x: np.asarray(x.data), [np.ones(2)])


def test_assert_close_tolerance_table_and_messages():
    for dtype, (rtol, atol) in DEFAULT_TOLERANCES.items():
        one = np.ones(4, dtype=dtype)
        assert_close(one * (1 + 0.5 * rtol), np.ones(4))
        with pytest.raises(GradcheckError):
            assert_close(one * (1 + 4 * rtol) + 4 * atol, np.ones(4), dtype=dtype)
    with pytest.raises(GradcheckError, match=r"y: 1 of 3 elements differ.*index \(2,\): actual "
                                             r"3.5, expected 3.0"):
        assert_close(np.array([1.0, 2.0, 3.5]), np.array([1.0, 2.0, 3.0]), name="y")
    with pytest.raises(ShapeError, match="shape"):
        assert_close(np.ones(2), np.ones(3))
    assert_close(np.array([np.nan, np.inf]), np.array([np.nan, np.inf]))
    with pytest.raises(GradcheckError):
        assert_close(np.array([np.nan]), np.array([np.nan]), equal_nan=False)
    with pytest.raises(GradcheckError):
        assert_close(np.array([np.inf]), np.array([-np.inf]))
    assert_close(np.array([1.0]), np.array([1.5]), rtol=0.5, atol=0)
    # float16 results judged against a float64 expectation use the float16 row
    assert_close(np.float16([0.1]), np.array([0.1]))


@pytest.mark.parametrize("a, e", [(np.array([1 + 1j]), np.array([1 + 0j])),
                                  (np.array(["a"]), np.array(["b"]))])
def test_assert_close_refuses_non_real_input(a, e):
    with pytest.raises(npeca.DTypeError, match="real numbers"):
        assert_close(a, e)


def test_assert_close_reads_tensors_and_checks_dtype():
    with pytest.raises(GradcheckError):
        assert_close(ag.Tensor([1.0]), ag.Tensor([2.0]))
    with pytest.raises(ParameterError, match="dtype"):
        assert_close(np.ones(2), np.ones(2), dtype="bogus")


def test_gradcheck_argument_errors():
    with pytest.raises(ParameterError, match="eps"):
        gradcheck(lambda x: x * 2.0, [np.ones(2)], eps=0)
    with pytest.raises(ParameterError, match="n_projections"):
        gradcheck(lambda x: x * 2.0, [np.ones(2)], mode="fast", n_projections="3")
    with pytest.raises(npeca.DTypeError, match="not an array of real numbers"):
        check_vjp(lambda x: x, lambda cot, x: ("a",), [np.ones(2)])
