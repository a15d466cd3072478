"""Recycled output memory (npeca/backends/_outputs.py): a block is reused only after nothing
can reach the output it backed, the free list stays within its limit, and the numba backend's
results over recycled blocks are those of a fresh array."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import npeca
from npeca.backends import _outputs
from npeca.errors import ParameterError

BIG = (_outputs.MIN_BYTES // 4 + 1000,)  # float32 elements: just over the threshold


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@pytest.fixture(autouse=True)
def _fresh_pool(monkeypatch):
    """Every test starts with an empty free list and the default limit."""
    monkeypatch.delenv("NPECA_OUTPUT_CACHE_MB", raising=False)
    gc.collect()
    _outputs.release()
    monkeypatch.setattr(_outputs, "_limit", None)  # read again from the environment
    yield
    gc.collect()
    _outputs.release()


def test_a_dropped_output_gives_its_block_to_the_next_one():
    a = _outputs.empty(BIG, np.float32)
    assert a.shape == BIG and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.flags.writeable and a.flags.aligned
    where = _address(a)
    del a
    assert _outputs.held() >= BIG[0] * 4
    b = _outputs.empty(BIG, np.float32)
    assert _address(b) == where
    assert _outputs.held() == 0


def _holders():
    """Ways a user keeps an output's memory reachable after dropping the array itself."""
    yield "a view", lambda a: a[1:]
    yield "a reshaped transpose", lambda a: a.reshape(2, -1).T
    yield "a memoryview", memoryview
    yield "an array over its buffer", lambda a: np.frombuffer(memoryview(a), np.uint8)
    yield "a dtype view", lambda a: a.view(np.int16)
    yield "a list", lambda a: [a]
    yield "np.asarray", np.asarray


@pytest.mark.parametrize("name, hold", list(_holders()), ids=[n for n, _ in _holders()])
def test_a_block_is_never_reused_while_anything_reaches_it(name, hold):
    a = _outputs.empty(BIG, np.float32)
    a[:] = 7.0
    where = _address(a)
    kept = hold(a)
    del a
    gc.collect()
    b = _outputs.empty(BIG, np.float32)
    assert _address(b) != where, name
    b[:] = -1.0
    c = _outputs.empty(BIG, np.float32)  # a second one, while b lives: also elsewhere
    assert _address(c) not in (where, _address(b))
    c[:] = -2.0
    seen = np.ascontiguousarray(np.asarray(kept[0] if isinstance(kept, list) else kept))
    assert (seen.view(np.uint8).view(np.float32) == 7.0).all(), name  # not overwritten
    del kept, seen
    d = _outputs.empty(BIG, np.float32)  # now the first block is free again
    assert _address(d) == where


def test_a_torch_tensor_over_an_output_keeps_its_block():
    torch = pytest.importorskip("torch")
    a = _outputs.empty(BIG, np.float32)
    a[:] = 3.0
    where = _address(a)
    t = torch.from_numpy(a)
    del a
    b = _outputs.empty(BIG, np.float32)
    assert _address(b) != where
    b[:] = 0.0
    assert bool((t == 3.0).all())
    del t
    assert _address(_outputs.empty(BIG, np.float32)) == where


def test_small_outputs_are_ordinary_arrays():
    a = _outputs.empty((_outputs.MIN_BYTES // 8 - 1,), np.float64)
    assert a.base is None and a.flags.owndata
    assert _outputs.empty((0, 5), np.float32).shape == (0, 5)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16"])
def test_every_output_dtype_and_shape(dtype):
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dtype = ml_dtypes.bfloat16
    shape = (3, 17, 41, 67)
    a = _outputs.empty(shape, dtype)
    assert a.shape == shape and a.dtype == np.dtype(dtype) and a.flags.c_contiguous
    a[...] = 1.5
    assert float(a.astype(np.float64).sum()) == 1.5 * a.size


def test_the_free_list_stays_within_its_limit(monkeypatch):
    monkeypatch.setattr(_outputs, "_limit", 3 * _outputs.MIN_BYTES)
    arrays = [_outputs.empty((_outputs.MIN_BYTES,), np.uint8) for _ in range(6)]
    del arrays
    assert _outputs.held() == 3 * _outputs.MIN_BYTES  # the three newest kept
    huge = _outputs.empty((4 * _outputs.MIN_BYTES,), np.uint8)  # larger than the limit
    del huge
    assert _outputs.held() == 3 * _outputs.MIN_BYTES
    assert npeca.backends.release_memory() == 3 * _outputs.MIN_BYTES  # the public name
    assert _outputs.held() == 0
    assert npeca.backends.release_memory() == 0


def test_a_lowered_limit_drops_a_lone_block_that_no_longer_fits(monkeypatch):
    """One free block (the usual state: filing it skips the sum of the list) is dropped too
    when the limit has become smaller than it since it was kept, or MAX_FREE is 0."""
    a = _outputs.empty((2 * _outputs.MIN_BYTES,), np.uint8)
    del a
    assert _outputs.held() == 2 * _outputs.MIN_BYTES
    monkeypatch.setattr(_outputs, "_limit", _outputs.MIN_BYTES)
    assert _outputs.held() == 0
    b = _outputs.empty((_outputs.MIN_BYTES,), np.uint8)
    del b
    assert _outputs.held() == _outputs.MIN_BYTES
    monkeypatch.setattr(_outputs, "MAX_FREE", 0)  # no block may be kept at all
    c = _outputs.empty((_outputs.MIN_BYTES,), np.uint8)
    del c
    assert _outputs.held() == 0


def test_the_environment_sets_the_limit(monkeypatch):
    monkeypatch.setenv("NPECA_OUTPUT_CACHE_MB", "0")
    a = _outputs.empty(BIG, np.float32)
    assert a.base is None  # recycling off: plain np.empty
    monkeypatch.setattr(_outputs, "_limit", None)
    monkeypatch.setenv("NPECA_OUTPUT_CACHE_MB", "12")
    assert _outputs.limit() == 12 << 20
    monkeypatch.setattr(_outputs, "_limit", None)
    for bad in ("lots", "-5", "1.5"):
        monkeypatch.setattr(_outputs, "_limit", None)
        monkeypatch.setenv("NPECA_OUTPUT_CACHE_MB", bad)
        with pytest.raises(ParameterError, match=f"NPECA_OUTPUT_CACHE_MB.*whole number.*{bad}"):
            _outputs.empty(BIG, np.float32)


def test_the_default_limit_comes_from_the_machine():
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < _outputs._usable_memory() <= memory
    assert _outputs.limit() == min(1 << 30, _outputs._usable_memory() // 32)


@pytest.mark.parametrize("bad", ["4GB", "1_000", "+7", "-5", "1.5", "\u0663", "9" * 12])
def test_a_bad_limit_in_the_environment_fails_at_import(bad):
    out = subprocess.run([sys.executable, "-c", "import npeca"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "NPECA_OUTPUT_CACHE_MB": bad})
    assert out.returncode != 0
    assert "ParameterError" in out.stderr and "NPECA_OUTPUT_CACHE_MB" in out.stderr, out.stderr


def test_dead_outputs_are_bounded_without_another_call(monkeypatch):
    """Blocks are filed (and the bounds applied) when their outputs die, not only at the
    next large output."""
    monkeypatch.setattr(_outputs, "_limit", 3 * _outputs.MIN_BYTES)
    arrays = [_outputs.empty((_outputs.MIN_BYTES,), np.uint8) for _ in range(6)]
    del arrays
    assert not _outputs._returned
    assert sum(e[0] for e in _outputs._free) == 3 * _outputs.MIN_BYTES
    monkeypatch.setattr(_outputs, "_limit", 1 << 40)
    sizes = [(_outputs.MIN_BYTES + i * 8192,) for i in range(3 * _outputs.MAX_FREE)]
    arrays = [_outputs.empty(shape, np.uint8) for shape in sizes]
    del arrays
    assert len(_outputs._free) == _outputs.MAX_FREE  # the newest, of sizes never asked again
    assert not _outputs._live


def test_an_output_behaves_like_an_array_over_foreign_memory():
    import copy
    import pickle
    a = _outputs.empty(BIG, np.float32)
    a[:] = 2.0
    a.flags.writeable = False
    a.flags.writeable = True  # numpy allows it: the holder exports a writeable buffer
    holder = a
    while isinstance(holder, np.ndarray):
        holder = holder.base
    twins = [copy.copy(holder), copy.deepcopy(holder)]
    try:
        twins.append(pickle.loads(pickle.dumps(holder)))
    except pickle.PicklingError:  # ctypes cannot pickle an array type made at run time
        pass
    for twin in twins:
        twin_array = np.frombuffer(twin, np.float32, count=BIG[0])
        assert twin_array.__array_interface__["data"][0] != _address(a)  # a copy, no alias
        assert (twin_array == 2.0).all()


def test_threads_never_share_a_block():
    """Each thread fills its outputs with its own number and checks them after the others
    have allocated and dropped theirs: an output handed out twice would be overwritten."""
    errors = []

    def work(me: int) -> None:
        for _ in range(300):
            a = _outputs.empty(BIG, np.float32)
            b = _outputs.empty(BIG, np.float32)
            a[:] = me
            b[:] = -me
            if not ((a == me).all() and (b == -me).all()):
                errors.append(me)

    threads = [threading.Thread(target=work, args=(i + 1,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


numba_cpu = pytest.importorskip("npeca.backends.numba_cpu",
                                reason="numba not installed")


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_numba_outputs_over_recycled_blocks_are_right(channel_axis):
    """y and dL/dx over a recycled block equal those written into a fresh array, and an
    output the user keeps is never overwritten by a later call."""
    rng = np.random.default_rng(5)
    shape = (2, 64, 48, 48) if channel_axis == 1 else (2, 48, 48, 64)
    kw = dict(channel_axis=channel_axis, backend="numba")
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    w = rng.standard_normal(3)
    expected = []
    for x in xs:
        y = np.empty_like(x)
        npeca.eca(x, w, out=y, **kw)
        dx = np.empty_like(x)
        npeca.eca_backward(x, w, x, out=dx, **kw)
        expected.append((y, dx))
    kept = npeca.eca(xs[0], w, **kw)
    assert kept.base is not None  # from the pool (x is 1.2 MB)
    for _ in range(3):
        for x, (y, dx) in zip(xs, expected):
            np.testing.assert_array_equal(npeca.eca(x, w, **kw), y)
            np.testing.assert_array_equal(npeca.eca_backward(x, w, x, **kw).x, dx)
        np.testing.assert_array_equal(kept, expected[0][0])


def test_a_forked_child_allocates_outputs():
    script = r"""
import os, numpy as np
from npeca.backends import _outputs
a = _outputs.empty((1 << 20,), np.float32); del a
pid = os.fork()
if pid == 0:
    b = _outputs.empty((1 << 20,), np.float32); b[:] = 1; del b
    c = _outputs.empty((1 << 20,), np.float32)
    os._exit(0 if c.shape == (1 << 20,) else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "0", out.stderr
