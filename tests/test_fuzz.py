"""Every public entry point, fed arbitrary objects: a result or an npeca error, nothing else.

No numba TypingError, no bare ValueError / TypeError / IndexError / KeyError / MemoryError /
RecursionError, no warning, no traceback from the command line.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import npeca
from npeca import ECA, autograd as ag, load_eca_layers
from npeca.cli import main
from npeca.errors import NpecaError
from npeca.testing import assert_close, check_vjp, gradcheck

DTYPES = ["float16", "float32", "float64", ">f4", "<f8", "int8", "int64", "uint16", "bool",
          "complex64", "U3", "S2"]

# Integers too long to print (Hypothesis cannot print them in its strategies' reprs either,
# hence built on demand).
huge = st.sampled_from([1, -1]).map(lambda sign: sign * 10**5000)
odd_objects = st.one_of(huge, st.sampled_from([
    None, True, 0, 1, -1, 3, 2**63, 1.5, float("nan"), float("inf"),
    "", "zeros", "circular", "sigmoid", "numba", b"x", [], [[1.0], [1.0, 2.0]], {}, {"a": 1},
    object(), np.float32(1.0), np.array([object()], dtype=object), slice(None), Ellipsis,
    np.ma.masked_array(np.ones((1, 2, 2)), mask=[[[1, 0], [0, 0]]]),
]))


def arrays():
    return st.one_of(
        hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=5,
                                                               max_side=3)),
        hnp.arrays(np.float32, hnp.array_shapes(min_dims=3, max_dims=5, min_side=1,
                                                max_side=4),
                   elements=st.floats(-1e6, 1e6, width=32)).map(lambda a: a[..., ::-1]),
        hnp.arrays(np.float64, hnp.array_shapes(min_dims=3, max_dims=5, max_side=4)),
    )


anything = st.one_of(odd_objects, arrays(), st.integers(), st.floats(), st.text(max_size=4),
                     st.lists(st.floats(allow_nan=False), max_size=3))
weights = st.one_of(anything, st.sampled_from([np.array([0.2, 0.5, -0.1]),
                                               np.ones((1, 1, 3), np.float32),
                                               np.ones(1, np.float16)]))
keywords = st.fixed_dictionaries({}, optional={
    "bias": st.one_of(anything, st.just(0.1)),
    "channel_axis": st.one_of(anything, st.sampled_from([1, -1])),
    "padding": st.one_of(anything, st.sampled_from(["zeros", "circular"])),
    "groups": st.one_of(anything, st.sampled_from([1, 2])),
    "gate": st.one_of(anything, st.sampled_from(["sigmoid", "hard_sigmoid"])),
    "backend": st.one_of(anything, st.sampled_from(["auto", "numpy", "numba", "cuda"])),
    "out": anything,
})


def _quietly(call, allowed=()) -> None:
    """Run ``call``: it may return or raise an NpecaError (or one of ``allowed``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            call()
        except (NpecaError, *allowed):
            pass


SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(x=st.one_of(anything, arrays()), w=weights, g=st.one_of(anything, arrays()),
       kw=keywords, which=st.sampled_from(["eca", "eca_forward", "eca_backward"]))
def test_eca_functions(x, w, g, kw, which):
    fn = getattr(npeca, which)
    if which == "eca_backward":
        _quietly(lambda: fn(x, w, g, **kw))
    else:
        _quietly(lambda: fn(x, w, **kw))


@SETTINGS
@given(args=st.lists(anything, max_size=3), kw=st.fixed_dictionaries({}, optional={
    "gamma": anything, "b": anything, "min_size": anything}))
def test_kernel_size(args, kw):
    _quietly(lambda: npeca.kernel_size(*args[:1] or [16], **kw))


layer_keywords = st.fixed_dictionaries({}, optional={
    "kernel_size": st.one_of(anything, st.sampled_from([1, 3, 5])), "gamma": anything,
    "b": anything, "min_size": anything, "padding": anything, "groups": anything,
    "gate": anything, "bias": anything, "per_channel": anything, "channel_axis": anything,
    "dtype": st.one_of(anything, st.sampled_from([None, "float16", np.float64, "int8"])),
    "backend": anything, "seed": anything})


@SETTINGS
@given(channels=st.one_of(anything, st.sampled_from([None, 4, 16])), kw=layer_keywords,
       x=st.one_of(anything, arrays()), state=st.one_of(anything, st.dictionaries(
           st.sampled_from(["conv.weight", "conv.bias", "x"]), anything, max_size=2)),
       method=st.sampled_from(["forward", "backward", "load", "from", "repr"]))
def test_layer(channels, kw, x, state, method):
    def run():
        if method == "from":
            ECA.from_state_dict(state)
            return
        layer = ECA(channels, **kw)
        if method == "forward":
            layer(x)
        elif method == "backward":
            layer.forward(np.ones((1, channels if isinstance(channels, int) and
                                   0 < channels < 64 else 4, 2), np.float32))
            layer.backward(x)
        elif method == "load":
            layer.load_state_dict(state)
        else:
            repr(layer)
    _quietly(run)


@SETTINGS
@given(source=st.one_of(anything, st.dictionaries(
           st.sampled_from(["eca.conv.weight", "conv.weight", ".conv.weight", "a.se.conv.bias",
                            "state_dict"]), anything, max_size=3)),
       kw=st.fixed_dictionaries({}, optional={
           "padding": anything, "gate": anything, "dtype": anything, "channel_axis": anything,
           "backend": anything, "modules": anything, "names": anything, "key": anything}))
def test_load_eca_layers(source, kw):
    if isinstance(source, str):
        source = os.path.join(tempfile.gettempdir(), "npeca-fuzz-missing", source or "x")
    _quietly(lambda: load_eca_layers(source, **kw), allowed=(FileNotFoundError,))


@SETTINGS
@given(a=st.one_of(anything, arrays()), b=st.one_of(anything, arrays()),
       op=st.sampled_from(["new", "add", "mul", "getitem", "sum", "reshape", "item", "len",
                           "iter", "array", "backward", "pow"]))
def test_tensor(a, b, op):
    def run():
        t = ag.Tensor(a, requires_grad=True)
        if op == "add":
            t + b
        elif op == "mul":
            b * t
        elif op == "getitem":
            t[b]
        elif op == "sum":
            t.sum(axis=b)
        elif op == "reshape":
            t.reshape(b)
        elif op == "item":
            t.item()
        elif op == "len":
            len(t)
        elif op == "iter":
            list(t)
        elif op == "array":
            np.asarray(t)
        elif op == "backward":
            (t * t).sum().backward(b)
        elif op == "pow":
            t ** b
    _quietly(run)


@SETTINGS
@given(a=st.one_of(anything, arrays()), b=st.one_of(anything, arrays()),
       kw=st.fixed_dictionaries({}, optional={"rtol": anything, "atol": anything,
                                             "dtype": anything, "equal_nan": anything,
                                             "name": anything}),
       which=st.sampled_from(["assert_close", "gradcheck", "check_vjp"]),
       gkw=st.fixed_dictionaries({}, optional={"eps": anything, "mode": anything,
                                              "n_projections": anything, "seed": anything,
                                              "max_print": anything}))
def test_testing_tools(a, b, kw, which, gkw):
    def run():
        if which == "assert_close":
            assert_close(a, b, **kw)
        elif which == "gradcheck":
            gradcheck(lambda v: v * 2.0, {"v": a} if isinstance(b, str) else [a], **gkw)
        else:
            check_vjp(lambda v: v * 2.0, lambda c, v: (c[0] * 2.0,), [a], **gkw)
    _quietly(run)


WORDS = ["golden", "verify", "digest", "mutants", "kernel-size", "demo", "--seed", "-1", "0",
         "17", "1e400", "inf", "x" * 5000, "9" * 5000, "--backend", "numba", "torch", "a:b",
         "--format", "csv", "json", "--require", "Y", "y,dx", "--expect-digest", "zz",
         "--gamma", "--b", "--json", "--verbose", "--quiet", "/nonexistent", "", "--version"]


@SETTINGS
@given(argv=st.lists(st.sampled_from(WORDS), max_size=6))
def test_cli(argv):
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        old = os.getcwd()
        os.chdir(tmp)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                try:
                    code = main(argv)
                except SystemExit as exc:  # argparse: usage errors and --help / --version
                    code = exc.code
        finally:
            os.chdir(old)
    assert code in (0, 1, 2)


def test_fuzz_catches_a_planted_leak(monkeypatch):
    """A bare exception from an entry point fails the check these tests use."""
    monkeypatch.setattr(npeca.api, "eca_problem", lambda *a, **k: int("x"))
    with pytest.raises(ValueError):
        _quietly(lambda: npeca.eca(np.ones((1, 2, 2)), np.ones(3)))
