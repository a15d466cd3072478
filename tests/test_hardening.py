"""Bad input never hurts: each defect an adversarial pass found, pinned by a test."""

from __future__ import annotations

import io
import warnings
import zipfile

import numpy as np
import pytest

import npeca
from conftest import require
from npeca import ECA, kernel_size, load_eca_layers
from npeca.autograd import Tensor
from npeca.checkpoint import CheckpointError
from npeca.errors import DTypeError, NpecaError, OutOfRangeError, ParameterError, ShapeError
from npeca.testing import assert_close, check_vjp, gradcheck

X = np.random.default_rng(0).standard_normal((2, 8, 3)).astype(np.float32)
W = np.array([0.3, -0.2, 0.5], dtype=np.float32)


# --- numba's cache: a read-only install degrades, it does not fail --------------------------

def test_kernels_compile_uncached_where_no_cache_is_writable(monkeypatch):
    """The decorator falls back to an uncached njit with one warning naming NUMBA_CACHE_DIR
    (.ci/readonly-install runs the real thing as an unprivileged user)."""
    from npeca.backends.numba_cpu import _compile

    calls = []

    def fake_njit(**kw):
        def deco(fn):
            calls.append(kw)
            if kw.get("cache"):
                raise RuntimeError(f"cannot cache function {fn.__name__!r}: no locator "
                                   f"available for file 'x.py'")
            return fn
        return deco

    monkeypatch.setattr(_compile, "njit", fake_njit)
    monkeypatch.setattr(_compile, "_cache_warned", False)
    monkeypatch.setattr(_compile, "BACKGROUND", True)  # restored after: the fallback turns it off
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = _compile.jit()(lambda v: v + 1)
        g = _compile.jit(parallel=True)(lambda v: v + 2)
    assert f(1) == 2 and g(1) == 3
    assert [w for w in caught if "NUMBA_CACHE_DIR" in str(w.message)] == caught[:1]
    assert len(caught) == 1  # once per process
    assert calls[-1] == {"parallel": True, "nogil": True, "error_model": "numpy"}
    assert _compile.BACKGROUND is False  # without a cache a background compile is wasted


# --- masked arrays -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_masked_arrays_are_refused(backend):
    masked = np.ma.masked_array(X, mask=X > 1)
    with pytest.raises(DTypeError, match="masked array"):
        npeca.eca(masked, W, backend=backend)
    with pytest.raises(DTypeError, match="out must be a plain numpy.ndarray"):
        npeca.eca(X, W, backend=backend, out=np.ma.zeros(X.shape, np.float32))
    with pytest.raises(DTypeError, match="grad_out is a masked array"):
        npeca.eca_backward(X, W, np.ma.masked_array(X), backend=backend)


# --- integers too long to print --------------------------------------------------------------

@pytest.mark.parametrize("kw", [{"bias": 10**5000}, {"groups": 10**5000},
                                {"channel_axis": 10**5000}, {"groups": -10**5000}])
def test_huge_integers_get_npeca_errors(kw):
    with pytest.raises(NpecaError, match="about 5001 digits"):
        npeca.eca(X, W, **kw)


def test_kernel_size_takes_huge_integers():
    with pytest.raises(ParameterError, match="about 5001 digits"):
        kernel_size(-10**5000)
    assert kernel_size(17, gamma=10**5000) == 1
    assert kernel_size(17, b=10**5000) % 2 == 1
    assert kernel_size(17, b=-10**5000, min_size=3) == 3


# --- tiny files, huge claims ----------------------------------------------------------------

def test_expanded_torch_tensor_is_refused_before_copying(tmp_path):
    torch = require("torch", "NPECA_REQUIRE_TORCH")
    path = tmp_path / "tiny.pth"
    torch.save({"eca.conv.weight": torch.zeros(1).expand(1, 1, 2**27 + 1)}, path)
    assert path.stat().st_size < 4096
    with pytest.raises(ShapeError, match="far larger than any ECA parameter"):
        load_eca_layers(path)


def _npz_claiming(shape, path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("eca.conv.weight.npy", header.getvalue() + b"\0" * 64)


def test_npz_with_a_huge_declared_weight_is_refused_unread(tmp_path):
    path = tmp_path / "big.npz"
    _npz_claiming((1, 1, 2**29 + 1), path)
    with pytest.raises(ShapeError, match="far larger"):
        load_eca_layers(path)


def test_layers_refuse_implausible_sizes():
    with pytest.raises(ParameterError, match="<= 65535"):
        ECA(kernel_size=2**33 + 1)
    with pytest.raises(ParameterError, match="no ECA layer is that large"):
        ECA(10**9, kernel_size=3, per_channel=True)


# --- messages that said the wrong thing -------------------------------------------------------

def test_pickled_code_is_reported_as_refused(tmp_path):
    torch = require("torch", "NPECA_REQUIRE_TORCH")
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "ran"),))

    path = tmp_path / "evil.pth"
    torch.save({"eca.conv.weight": torch.zeros(1, 1, 3), "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="refuses: unpickling it could run arbitrary "
                                              "code, and nothing was run"):
        load_eca_layers(path)
    assert not (tmp_path / "ran").exists()


def test_empty_module_name_and_bad_shape_attribute():
    with pytest.raises(CheckpointError, match="empty module name"):
        load_eca_layers({".conv.weight": np.zeros((1, 1, 3))})

    class Odd:
        shape = "abc"

    with pytest.raises(NpecaError, match="not a tuple of integers"):
        load_eca_layers({"eca.conv.weight": Odd()})


# --- npeca.testing --------------------------------------------------------------------------

@pytest.mark.parametrize("call, error", [
    (lambda: assert_close([[1.0, 2.0], [3.0]], [1.0]), DTypeError),
    (lambda: assert_close(np.ones(2), np.ones(2), rtol="1e-3"), ParameterError),
    (lambda: assert_close(np.ones(2), np.ones(2), atol=-1.0), ParameterError),
    (lambda: gradcheck(lambda x: x * 2, [np.ones(2)], mode="fast", seed=-1), ParameterError),
    (lambda: gradcheck(lambda x: x * 2, [np.ones(2)], seed="a"), ParameterError),
    (lambda: gradcheck(lambda x: x * 2, 5), DTypeError),
    (lambda: check_vjp(lambda x: x, lambda c, x: c, [[[1.0], [1.0, 2.0]]]), DTypeError),
])
def test_testing_tools_raise_npeca_errors(call, error):
    with pytest.raises(error):
        call()


# --- the autograd Tensor and NumPy ----------------------------------------------------------

def test_tensor_works_with_numpy():
    t = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    (t * t).sum().backward()
    np.testing.assert_allclose(t.grad, [[2.0, 4.0], [6.0, 8.0]])
    assert np.asarray(t).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert len(t) == 2 and [r.data.tolist() for r in t] == [[1.0, 2.0], [3.0, 4.0]]
    assert list(Tensor([1.0, 2.0]))[1].item() == 2.0
    with pytest.raises(OutOfRangeError):
        t[2]
    with pytest.raises(IndexError):  # what iteration protocols expect
        t[0, 5]
    with pytest.raises(ShapeError, match="one element"):
        Tensor([1.0, 2.0]).item()
    with pytest.raises(DTypeError):
        len(Tensor(1.0))


# --- the layer ------------------------------------------------------------------------------

def test_layer_options_match_the_functions():
    with pytest.raises(ParameterError, match="channel_axis"):
        ECA(16, channel_axis=1.0)
    assert ECA(16, dtype=None).dtype == np.float32
    layer = ECA(kernel_size=3)
    with pytest.raises(ParameterError, match="does not fit in float32"):
        layer.load_state_dict({"conv.weight": np.array([[[1e300, 0.0, 0.0]]])})
    assert np.isfinite(layer.weight).all()  # nothing was copied


# --- the reference: the same bits for the same math -----------------------------------------

def test_shared_and_repeated_kernels_give_the_same_bits():
    """Regression: circular padding, one channel per group, k >= 9: a (k,) kernel and the
    same kernel tiled to (C, k) differed by an ulp (NumPy summed a broadcast product in
    another order)."""
    rng = np.random.default_rng(1)
    for _ in range(100):
        c, k = int(rng.integers(1, 12)), 9 + 2 * int(rng.integers(0, 4))
        x, w = rng.standard_normal((2, c, 3)), rng.standard_normal(k)
        kw = {"padding": "circular", "groups": c, "backend": "numpy"}
        y = npeca.eca(x, w, **kw)
        g = npeca.eca_backward(x, w, x, **kw)
        for ww in (w.reshape(1, 1, k), np.tile(w, (c, 1))):
            np.testing.assert_array_equal(npeca.eca(x, ww, **kw), y)
            np.testing.assert_array_equal(npeca.eca_backward(x, ww, x, **kw).x, g.x)


# --- found by a second adversarial review ---------------------------------------------------

def test_gradients_take_one_tensor_or_any_iterable():
    x = Tensor([1.0, 2.0], requires_grad=True)
    from npeca import autograd as ag

    assert ag.gradients((x * x).sum(), x)[0].data.tolist() == [2.0, 4.0]
    assert ag.gradients((x * x).sum(), (t for t in [x]))[0].data.tolist() == [2.0, 4.0]
    assert ag.grad(lambda v: (v * v).sum(), argnums=np.int64(0))(np.ones(2)).data.tolist() \
        == [2.0, 2.0]


def test_compressed_pth_and_many_expanded_weights_are_refused(tmp_path):
    torch = require("torch", "NPECA_REQUIRE_TORCH")
    src = tmp_path / "src.pth"
    torch.save({"eca.conv.weight": torch.ones(1, 1, 3), "junk": torch.zeros(2**16)}, src)
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            out.writestr(info.filename, z.read(info.filename))
    with pytest.raises(CheckpointError, match="compressed members"):
        load_eca_layers(bomb)
    many = tmp_path / "many.pth"
    torch.save({f"l{i}.eca.conv.weight": torch.zeros(1).expand(2**16, 1, 63) for i in range(8)},
               many)
    with pytest.raises(CheckpointError, match="no network's ECA layers are that large"):
        load_eca_layers(many)


def test_odd_npz_headers_get_checkpoint_errors(tmp_path):
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("eca.conv.weight.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr':(}     \n")
    with pytest.raises(CheckpointError):
        load_eca_layers(path)


def test_huge_kernels_and_huge_inputs_get_npeca_errors():
    x = np.ones((1, 2**20, 1), np.float32)
    with pytest.raises(ShapeError, match="handful of taps"):
        npeca.eca(x, np.ones(2**20 + 1, np.float32), backend="numpy")
    from npeca.errors import OutOfMemoryError

    with pytest.raises(OutOfMemoryError, match="not enough memory"):
        npeca.eca(np.broadcast_to(np.float32(1), (1, 3, 2**40)), W, backend="numpy")


@pytest.mark.parametrize("call", [
    lambda ag: ag.moveaxis(ag.Tensor([1.0]), "a", 0),
    lambda ag: ag.pad(ag.Tensor([1.0]), 1, axis=5),
    lambda ag: ag.pad(ag.Tensor([1.0]), 10**12),
    lambda ag: ag.pad(ag.Tensor(np.ones(0)), 1, mode="circular"),
    lambda ag: ag.broadcast_to(ag.Tensor([1.0, 2.0]), shape=(2**40, 2)),
    lambda ag: ag.correlate1d(ag.Tensor([1.0]), 1.0),
    lambda ag: ag.Tensor(1.0, requires_grad=np.array([1, 1])),
    lambda ag: ag.vjp(lambda v: v, np.ones(2), argnums=0.0),
    lambda ag: ag.gradients(ag.sum(ag.Tensor([1.0], requires_grad=True)), 5),
])
def test_autograd_arguments_get_npeca_errors(call):
    from npeca import autograd as ag

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NpecaError):
            call(ag)


def test_gradcheck_refuses_what_it_cannot_check():
    x = np.ones(2)
    with pytest.raises(ParameterError, match="n_projections"):
        gradcheck(lambda v: v * 2, [x], mode="fast", n_projections=10**400)
    with pytest.raises(DTypeError, match="real numbers"):
        check_vjp(lambda v: v * 1j, lambda c, v: (c[0],), [x])
    with pytest.raises(DTypeError, match="callable"):
        gradcheck(3, [x])
    with pytest.raises(DTypeError, match="np.sin"):
        gradcheck(lambda v: np.sin(v), [x])
    with pytest.raises(npeca.errors.GradcheckError, match="fn returns float32"):
        check_vjp(lambda v: (v * 2).astype(np.float32), lambda c, v: (2 * c[0],),
                  [np.array([1.0, 2.0])])


def test_layer_and_inputs_edge_cases():
    with pytest.raises(DTypeError):
        ECA(8)([[[1.0]], [[1.0, 2.0]]])
    with pytest.raises(ParameterError, match="name must be a string"):
        ECA.from_state_dict({"conv.weight": np.ones((1, 1, 3))}, name=5)
    layer = ECA(kernel_size=3)
    layer.load_state_dict({"conv.weight": np.array([[[1.0, 2.0, 3.0]]], ">f4")})
    assert layer.weight.tolist() == [[[1.0, 2.0, 3.0]]]
    with pytest.raises(DTypeError, match="non-native byte order"):
        npeca.eca(np.ones((1, 3, 2), ">f4"), W, out=np.ones((1, 3, 2), ">f4"))

    class FakeGPU:
        __cuda_array_interface__ = {}

    with pytest.raises(DTypeError, match="__cuda_array_interface__"):
        npeca.eca(FakeGPU(), W)


def test_cli_survives_a_console_that_cannot_print_the_path(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    proc = subprocess.run([sys.executable, "-m", "npeca.cli", "golden", "digest",
                           str(tmp_path / "s\u00fcite")], env=env, capture_output=True,
                          text=True, errors="replace")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "s\\xfcite" in proc.stderr
