"""bfloat16 end to end: the single rounding, eca / eca_backward with both CPU backends, torch
bfloat16 tensors, the ECA layer, and what happens without ml_dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npeca
from npeca import _bfloat16
from npeca.errors import DTypeError

from naive import naive_backward, naive_forward, round_bfloat16
from tolerance import ulp_distance


def _naive_bits(values):
    """round_bfloat16 (tests/naive.py, frexp and round: no shared code) as uint16 patterns."""
    r = np.array([round_bfloat16(v) for v in values], dtype=np.float32)
    return (r.view(np.uint32) >> 16).astype(np.uint16)


def _double_rounding_values():
    """Values just off a bfloat16 tie by less than half a float32 ulp: float32 rounds them
    onto the tie, and a second rounding then goes to even, the wrong way for half of them."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0x0080, 0x7F7F, size=400, dtype=np.uint32)  # normal, finite
    bits = np.concatenate([bits, np.arange(1, 0x80, dtype=np.uint32)])  # subnormals too
    b = (bits << 16).view(np.float32).astype(np.float64)
    ulp = ((bits + 1) << 16).view(np.float32).astype(np.float64) - b
    tie = b + ulp / 2
    off = np.maximum(ulp * 2.0 ** -20, 2.0 ** -1074 * 4)  # far below float32's half-ulp
    return np.concatenate([tie + off, tie - off, -(tie + off), tie])


def test_round_bits_is_one_rounding_where_float32_rounds_twice(ml_dtypes):
    v = _double_rounding_values()
    expected = _naive_bits(v.tolist())
    np.testing.assert_array_equal(_bfloat16.round_bits(v), expected)
    # the check bites: the float64 -> float32 -> bfloat16 route, two roundings to nearest,
    # is wrong on a good share of exactly these values (docs/numerics.md quotes the count)
    f32 = v.astype(np.float32).view(np.uint32).astype(np.uint64)
    twice = ((f32 + 0x7FFF + ((f32 >> 16) & 1)) >> 16).astype(np.uint16)
    assert np.count_nonzero(twice != expected) == 783 and v.size == 2108
    # ml_dtypes' astype takes that route
    assert np.array_equal(v.astype(ml_dtypes.bfloat16).view(np.uint16), twice)
    # the textbook case
    assert _bfloat16.round_bits(1 + 2.0 ** -8 + 2.0 ** -30) == 0x3F81  # 1 + 2**-7
    assert np.float64(1 + 2.0 ** -8 + 2.0 ** -30).astype(ml_dtypes.bfloat16) == 1.0


@settings(max_examples=400, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1,
                max_size=40))
def test_round_bits_matches_the_naive_rounding(values):
    got = _bfloat16.round_bits(np.array(values))
    expected = _naive_bits(values)
    nan = np.isnan(np.array(values))
    np.testing.assert_array_equal(got[~nan], expected[~nan])
    # NaN: a quiet NaN of the same sign
    assert all(g == (0xFFC0 if math.copysign(1, v) < 0 else 0x7FC0)
               for g, v in zip(got[nan].tolist(), np.array(values)[nan].tolist()))


def test_every_bfloat16_and_every_midpoint():
    bits = np.arange(0x10000, dtype=np.uint32).astype(np.uint16)
    with np.errstate(invalid="ignore"):  # signalling NaN patterns
        values = _bfloat16.bits_to_float32(bits).astype(np.float64)
    finite = np.isfinite(values)
    np.testing.assert_array_equal(_bfloat16.round_bits(values[finite]), bits[finite])
    pos = bits[(bits < 0x7F7F)].astype(np.uint32)  # positive finite, below the largest
    lo = _bfloat16.bits_to_float32(pos.astype(np.uint16)).astype(np.float64)
    hi = _bfloat16.bits_to_float32((pos + 1).astype(np.uint16)).astype(np.float64)
    mid = (lo + hi) / 2  # exact in float64
    even = np.where(pos % 2 == 0, pos, pos + 1).astype(np.uint16)
    np.testing.assert_array_equal(_bfloat16.round_bits(mid), even)
    # the largest finite plus half an ulp ties to even: infinity
    assert _bfloat16.round_bits(np.ldexp(255.5, 120)) == 0x7F80
    assert _bfloat16.round_bits(np.nextafter(np.ldexp(255.5, 120), 0)) == 0x7F7F


CASES = [
    dict(shape=(2, 12, 3, 5)),
    dict(shape=(2, 5, 7, 6), channel_axis=-1, padding="circular", bias=0.25),
    dict(shape=(1, 8, 9), groups=2, gate="hard_sigmoid", per_channel=True),
    dict(shape=(3, 16, 4, 4), bias=-0.5, scale=30.0),  # saturated gates
]


def _problem(ml_dtypes, shape, channel_axis=1, padding="zeros", groups=1, gate="sigmoid",
             bias=None, per_channel=False, scale=1.0):
    rng = np.random.default_rng(sum(shape))
    bf = ml_dtypes.bfloat16
    x = (scale * rng.standard_normal(shape)).astype(bf)
    c = shape[channel_axis]
    w = rng.standard_normal((c, 3) if per_channel else (3,)).astype(bf)
    g = rng.standard_normal(shape).astype(bf)
    b = None if bias is None else np.array([bias], dtype=bf)
    kw = dict(bias=b, channel_axis=channel_axis, padding=padding, groups=groups, gate=gate)
    return x, w, g, kw


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_forward_and_backward_against_the_naive_loops(ml_dtypes, backend, case):
    x, w, g, kw = _problem(ml_dtypes, **CASES[case])
    y = npeca.eca(x, w, backend=backend, **kw)
    y_naive = naive_forward(x, w, **kw)[0]
    assert y.dtype == x.dtype and y.shape == x.shape
    # float64 inside, one rounding: at most one bfloat16 ulp apart (a float64 value
    # straddling a rounding boundary), and in practice equal
    assert ulp_distance(y, y_naive).max() <= 1
    assert np.mean(ulp_distance(y, y_naive) == 0) > 0.99
    grads = npeca.eca_backward(x, w, g, backend=backend, **kw)
    dx, dw, db = naive_backward(x, w, g, **kw)
    assert grads.x.dtype == x.dtype and grads.weight.dtype == w.dtype
    assert ulp_distance(grads.x, dx).max() <= 1
    assert ulp_distance(grads.weight, dw).max() <= 1
    if db is not None:
        assert grads.bias.dtype == db.dtype and ulp_distance(grads.bias, db).max() <= 1


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_out_and_in_place(ml_dtypes, backend):
    x, w, g, kw = _problem(ml_dtypes, (2, 8, 6, 6))
    expected = npeca.eca(x, w, backend=backend)
    out = np.empty_like(x)
    assert npeca.eca(x, w, backend=backend, out=out) is out
    np.testing.assert_array_equal(out.view(np.uint16), expected.view(np.uint16))
    x2 = x.copy()
    npeca.eca(x2, w, backend=backend, out=x2)
    np.testing.assert_array_equal(x2.view(np.uint16), expected.view(np.uint16))
    with pytest.raises(DTypeError, match="out must have the dtype of x, bfloat16; got dtype "
                                         "float32"):
        npeca.eca(x, w, backend=backend, out=np.empty(x.shape, np.float32))


def test_torch_bfloat16_tensors(ml_dtypes, torch):
    x, w, _, _ = _problem(ml_dtypes, (2, 8, 5))
    tx = torch.from_numpy(x.astype(np.float32)).bfloat16()  # the same values
    tw = torch.from_numpy(w.astype(np.float32)).bfloat16().requires_grad_()
    y = npeca.eca(tx, tw)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y.view(np.uint16), npeca.eca(x, w).view(np.uint16))
    # a strided tensor is read through its strides
    ty = tx.transpose(1, 2).contiguous().transpose(1, 2)
    np.testing.assert_array_equal(npeca.eca(ty, tw).view(np.uint16), y.view(np.uint16))


def test_layer_and_state_dict_in_bfloat16(ml_dtypes, torch):
    layer = npeca.ECA(16, kernel_size=5, bias=True, dtype="bfloat16", seed=1)
    assert layer.weight.dtype == ml_dtypes.bfloat16 and layer.bias.dtype == ml_dtypes.bfloat16
    assert npeca.ECA(16, dtype=ml_dtypes.bfloat16).dtype == layer.dtype
    w = torch.tensor([[[0.5, -1.25, 2.0, 0.1, 3.0]]], dtype=torch.bfloat16)
    layer2 = npeca.ECA.from_state_dict({"conv.weight": w})
    assert layer2.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(layer2.weight.view(np.uint16),
                                  w.view(torch.int16).numpy().view(np.uint16))
    x = np.random.default_rng(0).standard_normal((1, 16, 3, 3)).astype(np.float32)
    assert layer2(x).dtype == np.float32  # the output follows x
    # casting a float32 state dict into a bfloat16 layer rounds once and refuses overflow
    layer.load_state_dict({"conv.weight": np.float32([[[1 + 2 ** -8 + 2 ** -20] * 5]]),
                           "conv.bias": np.float32([0.0])})
    assert layer.weight.view(np.uint16)[0, 0, 0] == 0x3F81
    with pytest.raises(npeca.errors.ParameterError, match="does not fit in bfloat16"):
        layer.load_state_dict({"conv.weight": np.float64([[[1e39] * 5]]),
                               "conv.bias": np.float32([0.0])})


def test_without_ml_dtypes_the_error_says_what_to_install(monkeypatch, torch):
    monkeypatch.setattr(_bfloat16, "_cached", [None])
    with pytest.raises(DTypeError, match=r"pip install 'npeca\[bfloat16\]'"):
        npeca.ECA(8, dtype="bfloat16")
    tx = torch.ones((1, 4, 3), dtype=torch.bfloat16)
    with pytest.raises(DTypeError, match=r"x is a torch.bfloat16 tensor: bfloat16 needs the "
                                         r"ml_dtypes package"):
        npeca.eca(tx, np.zeros(3))
    # a bfloat16 state dict still loads, as float32 (the same values)
    layer = npeca.ECA.from_state_dict({"conv.weight": torch.ones((1, 1, 3),
                                                                 dtype=torch.bfloat16)})
    assert layer.dtype == np.float32


def test_the_numba_kernels_round_to_bfloat16_once():
    """The LLVM rounding of the numba kernels (npeca/backends/numba_cpu/_simd.py, used where
    a bfloat16 y or dx is written) against round_bits, through the row-scaling intrinsic
    with a = 1: ties and their neighbours, values just off a tie (where rounding through
    float32 goes wrong), overflow, subnormals, infinities and NaN; whole vectors and the
    scalar tail alike (an odd count)."""
    numba = pytest.importorskip("numba")
    from npeca.backends.numba_cpu._simd import scale_row

    @numba.njit
    def scale(dst, src, a):
        scale_row(dst, src, 0, src.size, a)

    finite = _bfloat16.bits_to_float32(np.arange(0, 0x7F80, dtype=np.uint16)).astype(
        np.float64)
    ties = (finite[:-1] + finite[1:]) / 2
    special = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e39, 3.5e38, 1e-50, 2.0 ** -134,
               math.ldexp(255.5, 120), np.nextafter(math.ldexp(255.5, 120), 0), 5e-324]
    v = np.concatenate([ties, ties + np.abs(ties) * 2.0 ** -30, ties - np.abs(ties) * 2.0 ** -30,
                        np.nextafter(ties, 0), finite, special])
    v = np.concatenate([v, -v, [1.5]])  # odd: the scalar tail runs too
    got = np.empty(v.size, np.uint16)
    scale(got, v, 1.0)
    np.testing.assert_array_equal(got, _bfloat16.round_bits(v))
    # and widening: bfloat16 patterns in, float64 out, exact
    wide = np.empty(0x7F80, np.float64)
    scale(wide, np.arange(0, 0x7F80, dtype=np.uint16), 1.0)
    np.testing.assert_array_equal(wide, finite)


@pytest.mark.parametrize("shape", [(4, 64, 24, 24), (3, 256, 7, 7), (1, 2048, 2, 2)])
def test_numba_reads_and_writes_bfloat16_directly(ml_dtypes, monkeypatch, shape):
    """Channels-first bfloat16 goes to the kernels as its 16-bit patterns (nothing staged:
    the stager is made to fail), large enough for the parallel schedules, and agrees with
    the reference to one bfloat16 ulp (float64 sums in another order), nearly always
    exactly; the backward too."""
    from npeca.backends.numba_cpu import _schedule

    def refuse(*args, **kwargs):
        raise AssertionError("bfloat16 was staged through float64")

    monkeypatch.setattr(_schedule._Stager, "load", refuse)
    rng = np.random.default_rng(5)
    bf = ml_dtypes.bfloat16
    x = (3 * rng.standard_normal(shape)).astype(bf)
    g = rng.standard_normal(shape).astype(bf)
    w = rng.standard_normal(5).astype(bf)
    for got, ref in ((npeca.eca(x, w, backend="numba"), npeca.eca(x, w, backend="numpy")),
                     (npeca.eca_backward(x, w, g, backend="numba").x,
                      npeca.eca_backward(x, w, g, backend="numpy").x)):
        assert got.dtype == bf
        d = ulp_distance(got, ref)
        assert d.max() <= 1 and np.mean(d == 0) > 0.999


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_byte_swapped_bfloat16_is_read_as_its_values(ml_dtypes, backend):
    """Big-endian bfloat16 (dtype kind "V", so the float byte-order checks miss it) is
    brought to native order first: the same results as native input."""
    x, w, g, kw = _problem(ml_dtypes, (2, 6, 4))

    def big_endian(a):  # the same values, bytes swapped and the dtype saying so (made by
        # hand: astype to a swapped ml_dtypes dtype does not swap in every version)
        return a.view(np.uint16).byteswap().view(a.dtype.newbyteorder(">"))
    swapped = big_endian(x)
    assert not swapped.dtype.isnative
    want = npeca.eca(x, w, backend=backend)
    got = npeca.eca(swapped, big_endian(w), backend=backend)
    assert got.dtype == x.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    layer = npeca.ECA(6, dtype=x.dtype.newbyteorder(">"), seed=0)
    assert layer.dtype.isnative and np.array_equal(
        layer.weight.view(np.uint16), npeca.ECA(6, dtype="bfloat16", seed=0).weight.view(
            np.uint16))


def test_torch_bfloat16_tensors_that_hold_no_dense_cpu_data_are_refused(ml_dtypes, torch):
    from npeca.checkpoint import load_eca_layers

    sparse = torch.randn(1, 4, 3).bfloat16().to_sparse()
    with pytest.raises(DTypeError, match="x is a torch.sparse_coo torch.bfloat16 tensor"):
        npeca.eca(sparse, np.zeros(3))
    meta = torch.empty(1, 1, 3, dtype=torch.bfloat16, device="meta")
    with pytest.raises(DTypeError, match="on meta"):
        load_eca_layers({"eca.conv.weight": meta})
    with pytest.raises(DTypeError, match="on meta"):
        npeca.eca(np.ones((1, 4, 3), np.float32), meta)


def test_a_bfloat16_npz_checkpoint_gets_a_useful_message(ml_dtypes, tmp_path):
    """NumPy saves bfloat16 as a nameless 2-byte type; the error says so, not "integer"."""
    from npeca.checkpoint import load_eca_layers

    layer = npeca.ECA(8, dtype="bfloat16", seed=0)
    np.savez(tmp_path / "m.npz", **{"eca." + k: v for k, v in layer.state_dict().items()})
    with pytest.raises(DTypeError, match="save bfloat16 weights with safetensors"):
        load_eca_layers(tmp_path / "m.npz")
