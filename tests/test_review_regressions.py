"""Inputs an adversarial review found escaping as raw Python/NumPy errors or wrong answers;
each now gets an npeca error or the right result."""

from __future__ import annotations

import numpy as np
import pytest

import npeca
from npeca import autograd as ag
from npeca.cli import main
from npeca.testing import assert_close


def test_kernel_size_numpy_floats_and_huge_constants():
    assert npeca.kernel_size(100, gamma=np.float32(2), b=np.float16(1)) == npeca.kernel_size(100)
    assert npeca.kernel_size(3, 10**400) == 1  # t = floor(small / huge) = 0 -> 1
    assert npeca.kernel_size(3, 1, 2**200) - 2**200 == 1  # floor(log2 3 + 2**200) = 2**200 + 1


def test_huge_integer_bias_and_big_endian_input():
    with pytest.raises(npeca.ParameterError, match="bias must fit in a float64"):
        npeca.eca(np.ones((1, 2, 2)), [1.0], bias=10**400)
    x = np.random.default_rng(0).standard_normal((1, 3, 4))
    np.testing.assert_array_equal(npeca.eca(x.astype(">f8"), [0.5]), npeca.eca(x, [0.5]))


@pytest.mark.parametrize("a, e", [(np.array([1 + 1j]), np.array([1 + 0j])),
                                  (np.array(["a"]), np.array(["b"]))])
def test_assert_close_refuses_non_real_input(a, e):
    with pytest.raises(npeca.DTypeError, match="real numbers"):
        assert_close(a, e)


def test_assert_close_reads_tensors_and_checks_dtype():
    with pytest.raises(npeca.errors.GradcheckError):
        assert_close(ag.Tensor([1.0]), ag.Tensor([2.0]))
    with pytest.raises(npeca.ParameterError, match="dtype"):
        assert_close(np.ones(2), np.ones(2), dtype="bogus")


@pytest.mark.parametrize("call, error", [
    (lambda: ag.Tensor([[1.0], [1.0, 2.0]]), npeca.DTypeError),
    (lambda: ag.eca([[[1.0], [1.0, 2.0]]], np.ones(3)), npeca.DTypeError),
    (lambda: ag.Tensor(np.ones(3)) + ag.Tensor(np.ones(4)), npeca.ShapeError),
    (lambda: ag.grad(lambda x: 1.0)(np.ones(3)), npeca.errors.AutogradError),
    (lambda: ag.gradients(ag.sum(ag.Tensor(np.ones(2), requires_grad=True) * 2), [[1.0]]),
     npeca.DTypeError),
    (lambda: ag.grad(lambda x: ag.sum(x), argnums=3)(np.ones(2)), npeca.ParameterError),
    (lambda: ag.pad(np.ones(3), -1), npeca.ParameterError),
    (lambda: ag.correlate1d(np.ones(6), np.ones(3), groups=0), npeca.ParameterError),
    (lambda: ag.moveaxis(ag.Tensor(1.0), 0, 0), npeca.ShapeError),
    (lambda: ag.Tensor(np.ones(2)) ** "2", npeca.DTypeError),
    (lambda: npeca.ECA(4, seed=-1), npeca.ParameterError),
    (lambda: npeca.ECA(4, seed="a"), npeca.ParameterError),
])
def test_autograd_and_layer_errors(call, error):
    with pytest.raises(error):
        call()


def test_constant_tensor_exponent():
    x = ag.Tensor(np.array([2.0]), requires_grad=True)
    (g,) = ag.gradients(ag.sum(x ** ag.Tensor(3.0)), [x])
    assert g.data.tolist() == [12.0]


def test_demo_rejects_negative_seed(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--seed", "-1"])
    assert exc.value.code == 2
    assert "must be an integer >= 0" in capsys.readouterr().err


def test_checkpoint_argument_and_content_errors(tmp_path):
    from npeca.checkpoint import CheckpointError, load_eca_layers

    np.save(tmp_path / "w.npy", np.ones((1, 1, 3)))
    (tmp_path / "w.npy").rename(tmp_path / "w.npz")
    with pytest.raises(CheckpointError, match="single .npy array"):
        load_eca_layers(tmp_path / "w.npz")
    with pytest.raises(CheckpointError, match="not a rectangular array"):
        load_eca_layers({"a.eca.conv.weight": [[1.0, 2.0], [3.0]]})
    sd = {"a.eca.conv.weight": np.ones((1, 1, 3))}
    for kw in ({"modules": 5}, {"names": 5}, {"key": [1]}):
        with pytest.raises(npeca.ParameterError):
            load_eca_layers(sd, **kw)


def test_gradcheck_argument_errors():
    from npeca.testing import check_vjp, gradcheck

    with pytest.raises(npeca.ParameterError, match="eps"):
        gradcheck(lambda x: x * 2.0, [np.ones(2)], eps=0)
    with pytest.raises(npeca.ParameterError, match="n_projections"):
        gradcheck(lambda x: x * 2.0, [np.ones(2)], mode="fast", n_projections="3")
    with pytest.raises(npeca.DTypeError, match="not an array of real numbers"):
        check_vjp(lambda x: x, lambda cot, x: ("a",), [np.ones(2)])
