"""Backend selection, the fallback warning, ``out=`` and in-place calls, on every backend."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import npeca
import npeca.backends as backends
from npeca import BackendUnavailableError, DTypeError, ParameterError, ShapeError

try:
    import numba  # noqa: F401
    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency
    HAVE_NUMBA = False

BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")


@pytest.fixture
def no_numba(monkeypatch):
    """A process in which the numba backend cannot be imported, with a fresh warning flag."""
    monkeypatch.setitem(sys.modules, "npeca.backends.numba_cpu", None)  # import -> ImportError
    monkeypatch.setattr(backends, "_loaded", {})  # forget the modules imported so far
    monkeypatch.setattr(backends, "_numba_failure", None)
    monkeypatch.setattr(backends, "_warned", False)


def _data(shape=(2, 8, 5, 5), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(dtype), rng.standard_normal(3),
            rng.standard_normal(shape).astype(dtype))


# --- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["numba_cpu", "NUMPY", "", None, 1, ("numpy",)])
def test_unknown_backend_names_list_the_options(bad):
    x, w, g = _data()
    with pytest.raises(ParameterError, match=r"backend must be one of 'auto', 'numpy', "
                                             r"'numba', 'cuda'; got"):
        npeca.eca(x, w, backend=bad)
    with pytest.raises(ParameterError, match="backend must be one of"):
        npeca.eca_backward(x, w, g, backend=bad)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU may be present")
def test_cuda_without_a_gpu_is_unavailable_and_auto_stays_on_the_cpu():
    x, w, _ = _data()
    with pytest.raises(BackendUnavailableError, match="backend='cuda'"):
        npeca.eca(x, w, backend="cuda")
    assert backends.select_backend("auto").__name__ != "npeca.backends.numba_cuda"


def test_cpu_backends_refuse_gpu_arrays():
    class FakeCUDAArray:  # what the checks look at: the type name, shape and dtype
        shape, dtype, ndim, size = (2, 8, 5, 5), np.dtype(np.float32), 4, 400

    with pytest.raises(ParameterError, match="x is a GPU array, but backend='numba' computes "
                                             "on the CPU; use backend='cuda'"):
        npeca.eca(FakeCUDAArray(), np.ones(3), backend="numba")
    with pytest.raises(DTypeError, match="out must be a GPU array like x"):
        npeca.eca(FakeCUDAArray(), np.ones(3), out=np.empty((2, 8, 5, 5), np.float32))


def test_get_backend_returns_modules_with_one_interface():
    for name in BACKENDS + ["auto"]:
        module = backends.get_backend(name)
        assert callable(module.forward) and callable(module.backward)
    assert backends.get_backend("numpy").__name__ == "npeca.backends.numpy_backend"


@needs_numba
def test_auto_answers_from_the_reference_until_the_kernels_are_compiled(monkeypatch):
    """The first auto call of a kind (here float64 channels-last backward, which no other
    test runs before this one in a fresh process) starts a background compile and is answered
    by the reference; once it is done, auto picks numba. Huge inputs never wait."""
    from npeca._validate import eca_problem
    numba_cpu = backends.get_backend("numba")
    monkeypatch.setattr(numba_cpu._compile, "BACKGROUND", True)  # the tests' default is off
    x = np.ones((1, 32, 32, backends.AUTO_MIN_SIZE // 1024), np.float64)
    x.flags.writeable = False  # a read-only x: its own kind of call, fresh in every process
    g = np.ones_like(x)
    problem = eca_problem(x, np.ones(3), channel_axis=-1)
    first = backends.select_backend("auto", problem, "backward", g)
    assert first.__name__ == "npeca.backends.numpy_backend"
    assert numba_cpu.wait_until_ready(timeout=600)
    assert backends.select_backend("auto", problem, "backward", g).__name__ == \
        "npeca.backends.numba_cpu"
    assert backends.select_backend("numba", problem).__name__ == "npeca.backends.numba_cpu"
    small = eca_problem(np.ones((1, 8, 4, 4)), np.ones(3))
    assert backends.select_backend("auto", small).__name__ == "npeca.backends.numpy_backend"
    huge = eca_problem(np.broadcast_to(np.float32(1), (1, 4, backends.AUTO_WAIT_SIZE // 4)),
                       np.ones(3))
    assert backends.select_backend("auto", huge).__name__ == "npeca.backends.numba_cpu"


_BACKGROUND_IMPORT = r"""
import os, sys, warnings
import numpy as np, npeca
from npeca import backends
from npeca._validate import eca_problem
x = np.random.default_rng(0).standard_normal((1, 64, 32, 32))
w = np.array([0.2, 0.5, 0.3])
first = npeca.eca(x, w)  # numba is imported in a thread meanwhile; the reference answers
assert np.array_equal(first, npeca.eca(x, w, backend="numpy"))
assert isinstance(backends._importer, __import__("threading").Thread)
backends._importer.join(300)
if sys.argv[1] == "broken":  # the import failed in the thread: the next call says why, once
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        again = npeca.eca(x, w)
        npeca.eca(x, w)
    assert np.array_equal(again, first), "the reference answers"
    assert len(seen) == 1 and "numba could not be imported" in str(seen[0].message), seen
elif sys.argv[1] == "ready fails":  # numba imported; starting its kernels' load failed
    assert backends._numba_failure is None, backends._numba_failure
    assert backends.get_backend("numba").__name__ == "npeca.backends.numba_cpu"
else:
    numba_cpu = backends.get_backend("numba")
    assert numba_cpu.wait_until_ready(timeout=600)
    assert backends.select_backend("auto", eca_problem(x, w)) is numba_cpu
print("ok")
"""


@needs_numba
@pytest.mark.parametrize("numba_state", ["working", "broken", "ready fails"])
def test_auto_imports_numba_in_a_background_thread(numba_state):
    """The first "auto" call of a process does not wait for numba to import (a few tenths of
    a second even with every kernel cached): the reference answers while a thread imports
    it; later calls use numba, or, if the import failed, warn once and use the reference."""
    code = _BACKGROUND_IMPORT
    if numba_state == "broken":
        code = "import sys; sys.modules['numba'] = None\n" + code
    elif numba_state == "ready fails":  # not an import failure: numba stays usable
        code = ("import threading, npeca.backends.numba_cpu as m\n"
                "real = m.ready\n"
                "def boom(*a, **k):\n"
                "    if threading.current_thread().name == 'npeca-import-numba':\n"
                "        raise RuntimeError(\"can't start new thread\")\n"
                "    return real(*a, **k)\n"
                "m.ready = boom\n") + code
    env = dict(os.environ, NPECA_BACKGROUND_COMPILE="1")
    done = subprocess.run([sys.executable, "-c", code, numba_state], capture_output=True,
                          text=True, timeout=900, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def test_import_and_small_or_numpy_calls_do_not_load_numba():
    code = ("import sys, numpy as np, npeca, npeca.backends;"
            "npeca.eca(np.ones((1, 4, 8)), np.ones(3));"
            "npeca.eca(np.ones((2, 64, 32, 32)), np.ones(3), backend='numpy');"
            "npeca.eca_backward(np.ones((2, 64, 32, 32)), np.ones(3), np.ones((2, 64, 32, 32)),"
            " backend='numpy');"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')];"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# --- numba missing ----------------------------------------------------------------------------

def test_auto_falls_back_to_numpy_with_one_warning_naming_the_reason(no_numba):
    x = np.random.default_rng(0).standard_normal((1, 16, 64, 64))
    w = np.full(3, 0.3)
    with pytest.warns(RuntimeWarning, match=r"numba could not be imported \(\w*Error: .*"
                                            r"pip install numba") as record:
        y = npeca.eca(x, w)
    assert record[0].filename == __file__  # points at the caller, not at npeca
    np.testing.assert_array_equal(y, npeca.eca(x, w, backend="numpy"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        npeca.eca(x, w)
        npeca.eca_backward(x, w, x)


def test_explicit_numba_without_numba_raises_with_the_install_hint(no_numba):
    x, w, g = _data()
    with pytest.raises(BackendUnavailableError, match=r"backend='numba' needs numba.*"
                                                      r"pip install numba"):
        npeca.eca(x, w, backend="numba")
    with pytest.raises(ImportError):  # the family stays catchable as ImportError
        npeca.eca_backward(x, w, g, backend="numba")


# --- out= and in place ------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_out_receives_the_result_and_is_returned(backend, dtype, channel_axis):
    x, w, g = _data(dtype=dtype)
    kw = dict(backend=backend, channel_axis=channel_axis, bias=0.2)
    expected = npeca.eca(x, w, **kw)
    for out in (np.empty_like(x), np.empty(x.shape[::-1], dtype).T,  # C- and F-ordered
                np.empty((4,) + x.shape[1:], dtype)[::2]):  # strided
        assert npeca.eca(x, w, out=out, **kw) is out
        np.testing.assert_array_equal(out, expected)
        fwd = npeca.eca_forward(x, w, out=out, **kw)
        assert fwd.y is out
    grads = npeca.eca_backward(x, w, g, **kw)
    out = np.empty_like(x)
    got = npeca.eca_backward(x, w, g, out=out, **kw)
    assert got.x is out
    np.testing.assert_array_equal(out, grads.x)
    np.testing.assert_array_equal(got.weight, grads.weight)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "fortran", "float16"])
def test_in_place_gives_the_same_result(backend, layout):
    dtype = np.float16 if layout == "float16" else np.float64
    x, w, g = _data(shape=(3, 16, 9, 7), dtype=dtype)
    if layout == "fortran":
        x, g = np.asfortranarray(x), np.asfortranarray(g)
    expected = npeca.eca(x, w, backend=backend)
    grads = npeca.eca_backward(x, w, g, backend=backend)
    x1 = x.copy(order="A")
    assert npeca.eca(x1, w, backend=backend, out=x1) is x1
    np.testing.assert_array_equal(x1, expected)
    for target in ("x", "grad_out"):
        x2, g2 = x.copy(order="A"), g.copy(order="A")
        out = x2 if target == "x" else g2
        got = npeca.eca_backward(x2, w, g2, backend=backend, out=out)
        assert got.x is out
        np.testing.assert_array_equal(out, grads.x)
        np.testing.assert_array_equal(got.weight, grads.weight)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_out_is_refused_clearly(backend):
    x, w, g = _data()
    kw = dict(backend=backend)
    with pytest.raises(ShapeError, match=r"out must have the shape of x, \(2, 8, 5, 5\); "
                                         r"got shape \(2, 8, 5\)"):
        npeca.eca(x, w, out=np.empty((2, 8, 5), np.float32), **kw)
    with pytest.raises(DTypeError, match="out must have the dtype of x, float32; got dtype "
                                         "float64"):
        npeca.eca(x, w, out=np.empty(x.shape), **kw)
    with pytest.raises(DTypeError, match="out must be a numpy.ndarray.*got list"):
        npeca.eca(x, w, out=x.tolist(), **kw)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ParameterError, match="out is read-only"):
        npeca.eca(x, w, out=ro, **kw)
    big = np.zeros((3,) + x.shape[1:], np.float32)
    big[:2] = x
    with pytest.raises(ParameterError, match="out overlaps x in memory without being the same "
                                             "array; pass out=x itself"):
        npeca.eca(big[:2], w, out=big[1:], **kw)
    with pytest.raises(ParameterError, match="out overlaps grad_out.*out=x or grad_out"):
        gbig = np.zeros_like(big)
        npeca.eca_backward(x, w, gbig[:2], out=gbig[1:], **kw)
    flipped = x[:, ::-1]  # the same memory, other order: not in place, an overlap
    with pytest.raises(ParameterError, match="out overlaps x"):
        npeca.eca(x, w, out=flipped, **kw)


def test_interleaved_views_that_share_no_element_are_allowed():
    buf = np.zeros((2, 8, 5, 10), np.float32)
    x, out = buf[..., ::2], buf[..., 1::2]
    x[...] = 1.0
    npeca.eca(x, np.ones(3), out=out)
    np.testing.assert_array_equal(out, npeca.eca(x, np.ones(3)))


@needs_numba
def test_bad_input_through_numba_gives_npeca_errors_not_numba_typing_errors():
    x, w, g = _data()
    cases = [
        (DTypeError, dict(x=x.astype(np.int32))),
        (ShapeError, dict(x=x[0, 0])),
        (ShapeError, dict(weight=np.ones(4))),
        (ShapeError, dict(weight=np.ones((7, 3)))),
        (ParameterError, dict(groups=3)),
        (ParameterError, dict(padding="reflect")),
        (ParameterError, dict(gate="relu")),
        (ShapeError, dict(bias=np.ones(2))),
        (ParameterError, dict(channel_axis=2)),
    ]
    for exc, change in cases:
        args = dict(x=x, weight=w)
        args.update({k: v for k, v in change.items() if k in ("x", "weight")})
        kw = {k: v for k, v in change.items() if k not in ("x", "weight")}
        with pytest.raises(exc):
            npeca.eca(args["x"], args["weight"], backend="numba", **kw)
    with pytest.raises(ShapeError, match="grad_out must have the shape of x"):
        npeca.eca_backward(x, w, g[:1], backend="numba")
    with pytest.raises(DTypeError, match="grad_out must have dtype"):
        npeca.eca_backward(x, w, g.astype(np.int64), backend="numba")


@pytest.mark.parametrize("backend", ["numba"])
def test_non_finite_values_meeting_zero_pads_match_the_reference(backend):
    """inf * 0 at a zero-padded tap is NaN (IEEE, as the reference and torch.conv1d)."""
    x = np.ones((1, 3, 2))
    w = np.array([np.inf, 1.0, 0.0])
    ref = npeca.eca_forward(x, w, backend="numpy")
    got = npeca.eca_forward(x, w, backend=backend)
    np.testing.assert_array_equal(got.z, ref.z)
    np.testing.assert_array_equal(got.y, ref.y)
    x = np.array([[[np.inf]]])
    w = np.array([0.0, 1.0, 0.0])
    ref_g = npeca.eca_backward(x, w, np.ones_like(x), backend="numpy")
    got_g = npeca.eca_backward(x, w, np.ones_like(x), backend=backend)
    np.testing.assert_array_equal(got_g.weight, ref_g.weight)
    np.testing.assert_array_equal(got_g.x, ref_g.x)
