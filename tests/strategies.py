"""Hypothesis strategies for ECA problems: every variant, dtype, layout and weight form."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

DTYPES = (np.float16, np.float32, np.float64)
WEIGHT_FORMS = ("k", "11k", "Ck", "C1k")
LAYOUTS = ("contiguous", "strided", "fortran", "reversed", "swapped")


@dataclass
class Case:
    """One ECA problem: arrays plus the keywords of npeca.eca."""

    x: np.ndarray
    weight: np.ndarray
    grad_out: np.ndarray
    kwargs: dict = field(default_factory=dict)
    weight_form: str = "k"
    layout: str = "contiguous"

    def __repr__(self) -> str:  # keep Hypothesis' falsifying examples readable
        return (f"Case(x={self.x.shape} {self.x.dtype} {self.layout}, weight={self.weight.shape}"
                f" ({self.weight_form}), kwargs={self.kwargs})")


def make_weight(rng: np.random.Generator, form: str, c: int, k: int, dtype) -> np.ndarray:
    shape = {"k": (k,), "11k": (1, 1, k), "Ck": (c, k), "C1k": (c, 1, k)}[form]
    return (rng.standard_normal(shape) / np.sqrt(k)).astype(dtype)


def relayout(rng: np.random.Generator, a: np.ndarray, layout: str,
             channel_axis: int = 1) -> np.ndarray:
    """The same values as ``a`` in another memory layout (a non-contiguous view or a copy).
    "swapped": the other layout's memory order, a view of a C-contiguous array: channels
    last in memory for ``channel_axis`` 1 (a PyTorch ``channels_last`` tensor's ``.numpy()``),
    channels first for -1."""
    if layout == "swapped":  # always a new array, also where size-1 axes make a view of a
        other = -1 if channel_axis == 1 else 1  # contiguous in both orders
        return np.moveaxis(np.moveaxis(a, channel_axis, other).copy(order="C"), other,
                           channel_axis)
    if layout == "strided":  # every other element of a bigger buffer along each axis
        big = np.empty(tuple(2 * d for d in a.shape), dtype=a.dtype)
        big[...] = rng.standard_normal(big.shape)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "reversed":  # negative strides
        flipped = np.ascontiguousarray(a[..., ::-1])
        return flipped[..., ::-1]
    return np.ascontiguousarray(a)


@st.composite
def eca_cases(draw, dtypes=DTYPES, max_batch=3, max_cg=8, max_side=4, gates=("sigmoid",
              "hard_sigmoid"), paddings=("zeros", "circular"), max_k=9, weight_forms=WEIGHT_FORMS,
              layouts=LAYOUTS, allow_bias=True):
    """A random but reproducible ECA problem covering every keyword."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, max_cg))
    n = draw(st.integers(1, max_batch))
    spatial = tuple(draw(st.lists(st.integers(1, max_side), min_size=1, max_size=3)))
    k = draw(st.sampled_from([kk for kk in (1, 3, 5, 7, 9) if kk <= max_k]))
    channels_last = draw(st.booleans())
    form = draw(st.sampled_from(weight_forms))
    layout = draw(st.sampled_from(layouts))
    scale = draw(st.sampled_from([0.5, 1.0, 4.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = (n, *spatial, c) if channels_last else (n, c, *spatial)
    x = relayout(rng, (scale * rng.standard_normal(shape) + rng.standard_normal()).astype(dtype),
                 layout, -1 if channels_last else 1)
    kwargs = {
        "channel_axis": -1 if channels_last else 1,
        "padding": draw(st.sampled_from(paddings)),
        "groups": groups,
        "gate": draw(st.sampled_from(gates)),
    }
    if allow_bias and draw(st.booleans()):
        kwargs["bias"] = draw(st.sampled_from([
            float(rng.uniform(-1, 1)),
            np.array([rng.uniform(-1, 1)], dtype=dtype),
        ]))
    weight = make_weight(rng, form, c, k, dtype)
    grad_out = rng.standard_normal(shape).astype(dtype)
    return Case(x=x, weight=weight, grad_out=grad_out, kwargs=kwargs, weight_form=form,
                layout=layout)
