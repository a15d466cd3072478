"""The kernel-size rule psi(C) of the paper (Eq. 12), and timm's variant (min_size = 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npeca import ParameterError, kernel_size


def _float_rule(c, gamma=2.0, b=1.0, min_size=1):
    """The rule evaluated in float64: exact for these C because log2 C stays far from the
    odd integers where the floor changes, except at powers of two where log2 is exact."""
    t = math.floor((math.log2(c) + b) / gamma)
    return max(t if t % 2 else t + 1, min_size)


# (C, paper k, timm k) worked out by hand: t = floor((log2 C + 1) / 2), k = t or t + 1.
HAND_TABLE = [
    (1, 1, 3), (2, 1, 3), (7, 1, 3), (8, 3, 3), (16, 3, 3), (31, 3, 3), (32, 3, 3),
    (64, 3, 3), (127, 3, 3), (128, 5, 5), (255, 5, 5), (256, 5, 5), (511, 5, 5),
    (512, 5, 5), (1024, 5, 5), (2047, 5, 5), (2048, 7, 7), (8191, 7, 7), (8192, 7, 7),
]


@pytest.mark.parametrize("c, paper, timm", HAND_TABLE)
def test_hand_table(c, paper, timm):
    assert kernel_size(c) == paper
    assert kernel_size(c, min_size=3) == timm


def test_every_c_up_to_4096_is_odd_and_follows_the_formula():
    for c in range(1, 4097):
        k = kernel_size(c)
        assert k % 2 == 1 and k >= 1
        assert k == _float_rule(c)
        assert kernel_size(c, min_size=3) == max(k, 3)


def test_even_t_ranges_are_bumped_to_odd():
    """t is even exactly for C in 8..31, 128..511, 2048..8191 (docs/math.md)."""
    for lo, hi, t in ((8, 31, 2), (128, 511, 4), (2048, 8191, 6)):
        for c in (lo, lo + 1, (lo + hi) // 2, hi):
            assert math.floor((math.log2(c) + 1) / 2) == t
            assert kernel_size(c) == t + 1


def test_exact_where_float64_log2_rounds_up():
    """log2(2**51 - 1) is 51 - 6.4e-16, which float64 rounds to exactly 51.0, so the float
    rule says t = 26 (k = 27); the exact t is 25 (k = 25)."""
    c = 2**51 - 1
    assert math.log2(c) == 51.0  # the float64 trap this test is about
    assert kernel_size(c) == 25
    assert kernel_size(2**51) == 27
    assert kernel_size(2**200 - 1) == 101 and kernel_size(2**200) == 101
    assert kernel_size(2**201 - 1) == 101 and kernel_size(2**201) == 101


def test_other_constants():
    assert kernel_size(64, gamma=1, b=0) == 7  # t = 6 -> 7
    assert kernel_size(64, gamma=3, b=0) == 3  # t = 2 -> 3
    assert kernel_size(100, gamma=2.5, b=1.5) == _float_rule(100, 2.5, 1.5)
    assert kernel_size(1, b=-10) == 1  # negative t: min_size floors it
    assert kernel_size(4, min_size=9) == 9


def test_integer_types_accepted():
    assert kernel_size(np.int64(256)) == 5
    assert kernel_size(np.uint16(16)) == 3


@pytest.mark.parametrize("bad", [0, -4, 16.0, 16.5, "16", None, True, np.float64(8)])
def test_bad_channels(bad):
    with pytest.raises(ParameterError, match="channels"):
        kernel_size(bad)


@pytest.mark.parametrize("gamma", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        kernel_size(64, gamma=gamma)


@pytest.mark.parametrize("b", [float("nan"), float("-inf"), None])
def test_bad_b(b):
    with pytest.raises(ValueError, match="b must"):
        kernel_size(64, b=b)


@pytest.mark.parametrize("min_size", [0, -1, 2, 4, 3.0])
def test_bad_min_size(min_size):
    with pytest.raises(ValueError, match="min_size"):
        kernel_size(64, min_size=min_size)


def test_numpy_float_and_huge_constants():
    assert kernel_size(100, gamma=np.float32(2), b=np.float16(1)) == kernel_size(100)
    assert kernel_size(3, 10**400) == 1  # t = floor(small / huge) = 0 -> 1
    assert kernel_size(3, 1, 2**200) - 2**200 == 1  # floor(log2 3 + 2**200) = 2**200 + 1
