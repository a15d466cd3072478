"""The catalogue of golden cases: what each suite covers and how its inputs are drawn."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..kernel_size import kernel_size
from .dtypes import round_float64


@dataclass(frozen=True)
class CaseSpec:
    """One golden case: shapes, dtype and every ECA keyword, plus how x is drawn."""

    name: str
    shape: tuple[int, ...]  # x's shape, in its own layout (channels last if channel_axis=-1)
    dtype: str = "float32"
    channel_axis: int = 1
    k: int | None = None  # None: kernel_size(C)
    weight_form: str = "11k"  # "k", "11k", "Ck", "C1k"
    padding: str = "zeros"
    groups: int = 1
    gate: str = "sigmoid"
    bias: bool = False
    loc: float = 0.0  # x ~ loc + scale * N(0, 1)
    scale: float = 1.0
    special: str | None = None  # "nan" or "inf": planted non-finite values in x
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def channels(self) -> int:
        return self.shape[-1] if self.channel_axis == -1 else self.shape[1]

    @property
    def kernel(self) -> int:
        return kernel_size(self.channels) if self.k is None else self.k

    @property
    def seed(self) -> int:
        """A seed derived from the name, stable across runs and platforms."""
        return zlib.crc32(self.name.encode()) & 0x7FFFFFFF

    def params(self) -> dict[str, Any]:
        return {"k": self.kernel, "padding": self.padding, "groups": self.groups,
                "gate": self.gate, "bias": self.bias, "channel_axis": self.channel_axis,
                "weight_form": self.weight_form}


def draw_inputs(spec: CaseSpec, seed: int) -> dict[str, np.ndarray]:
    """x, weight, bias (when used) and grad_out for ``spec``, from ``seed``."""
    rng = np.random.default_rng(seed)

    def rounded(v: np.ndarray) -> np.ndarray:  # to the case's format, in its carrier dtype
        return round_float64(v, spec.dtype)

    c, k = spec.channels, spec.kernel
    x = rounded(spec.loc + spec.scale * rng.standard_normal(spec.shape))
    wshape = {"k": (k,), "11k": (1, 1, k), "Ck": (c, k), "C1k": (c, 1, k)}[spec.weight_form]
    weight = rounded(rng.standard_normal(wshape) / np.sqrt(k))
    if spec.special == "saturate":  # all-positive kernel on a large positive mean: z >> 0
        weight = rounded(np.abs(weight.astype(np.float64)) + 0.25)
    inputs = {"x": x, "weight": weight}
    if spec.bias:
        inputs["bias"] = rounded(rng.uniform(-1, 1, size=(1,)))
    inputs["grad_out"] = rounded(rng.standard_normal(spec.shape))
    if spec.special in ("nan", "inf"):
        xc = np.moveaxis(inputs["x"], spec.channel_axis, 1)  # a view: writes land in x
        value = np.nan if spec.special == "nan" else np.inf
        xc[0, c // 2].reshape(-1)[0] = value  # one element of the middle channel, sample 0
        if spec.special == "inf":
            xc[-1, 0].reshape(-1)[-1] = -np.inf
    return inputs


def _boundaries() -> list[CaseSpec]:
    cs = (1, 2, 7, 8, 16, 31, 32, 127, 128, 255, 256, 511, 512, 2048)
    return [CaseSpec(f"ksize_c{c}", (2, c, 2, 2), notes=f"k = psi({c}) = {kernel_size(c)}",
                     tags=("kernel-size",)) for c in cs]


def core_cases() -> list[CaseSpec]:
    """The core suite: every boundary and variant once, small enough to commit."""
    cases = _boundaries()
    cases += [
        CaseSpec("k_exceeds_c_zeros", (2, 3, 4), k=7, notes="k = 7 > C = 3"),
        CaseSpec("k_exceeds_c_circular", (2, 3, 4), k=7, padding="circular",
                 notes="circular padding wraps more than once"),
        CaseSpec("k_wraps_twice_circular", (2, 2, 5), k=9, padding="circular",
                 notes="p = 4 = 2C: the circular window wraps twice"),
        CaseSpec("spatial1d", (3, 16, 7)),
        CaseSpec("spatial3d", (2, 8, 2, 3, 4)),
        CaseSpec("channels_last_2d", (2, 5, 5, 32), channel_axis=-1),
        CaseSpec("channels_last_1d", (2, 6, 16), channel_axis=-1, padding="circular"),
        CaseSpec("circular", (2, 32, 3, 3), k=5, padding="circular"),
        CaseSpec("groups4_zeros", (2, 32, 3, 3), k=5, groups=4),
        CaseSpec("groups4_circular", (2, 32, 3, 3), k=5, groups=4, padding="circular"),
        CaseSpec("per_channel_ck", (2, 16, 3, 3), weight_form="Ck", notes="ECA-NS"),
        CaseSpec("per_channel_c1k_groups", (2, 16, 3, 3), k=5, weight_form="C1k", groups=2,
                 padding="circular"),
        CaseSpec("weight_k", (2, 16, 4), weight_form="k"),
        CaseSpec("bias", (2, 16, 3, 3), bias=True),
        CaseSpec("hard_sigmoid", (2, 16, 3, 3), gate="hard_sigmoid", scale=3.0),
        CaseSpec("hard_sigmoid_clamped", (2, 16, 3, 3), gate="hard_sigmoid", scale=10.0,
                 notes="logits beyond -3 and 3: the gate clamps and its derivative is 0"),
        CaseSpec("hard_sigmoid_bias_circular", (2, 16, 5), gate="hard_sigmoid", bias=True,
                 padding="circular", scale=3.0),
        CaseSpec("float16", (2, 16, 3, 3), dtype="float16"),
        CaseSpec("float16_bias_hard", (2, 8, 6), dtype="float16", bias=True,
                 gate="hard_sigmoid", scale=8.0),
        CaseSpec("float16_large_logits", (2, 16, 1), dtype="float16", scale=12.0,
                 notes="logits up to about +-30: exp(-z) overflows float16 for z < -11"),
        CaseSpec("float16_long_sums", (1, 16, 16, 32), dtype="float16", loc=200.0,
                 notes="512-term sums near 100,000: past float16's 65504, so they need the "
                       "float32 accumulation the contract asks for"),
        CaseSpec("bfloat16", (2, 16, 3, 3), dtype="bfloat16"),
        CaseSpec("bfloat16_bias_hard", (2, 8, 6), dtype="bfloat16", bias=True,
                 gate="hard_sigmoid", scale=8.0),
        CaseSpec("bfloat16_large_logits", (2, 16, 1), dtype="bfloat16", scale=12.0,
                 notes="logits up to about +-30, the gate between 1e-13 and 1 - 1e-13"),
        CaseSpec("bfloat16_long_sums", (1, 16, 16, 32), dtype="bfloat16", loc=200.0,
                 notes="512-term sums near 100,000: bfloat16's 8 bits lose whole terms "
                       "there, so they need the float32 accumulation the contract asks for"),
        CaseSpec("bfloat16_channels_last_everything", (2, 4, 3, 12), dtype="bfloat16",
                 channel_axis=-1, weight_form="C1k", groups=3, padding="circular", bias=True),
        CaseSpec("bfloat16_k_wraps_twice_circular", (2, 2, 5), dtype="bfloat16", k=9,
                 padding="circular", notes="p = 4 = 2C: the circular window wraps twice"),
        CaseSpec("bfloat16_saturated_sigmoid", (2, 16, 4), dtype="bfloat16", loc=60.0,
                 special="saturate"),
        CaseSpec("bfloat16_nan_propagation", (2, 16, 3, 3), dtype="bfloat16", special="nan"),
        CaseSpec("bfloat16_inf_propagation", (2, 16, 3, 3), dtype="bfloat16", special="inf"),
        CaseSpec("float64", (2, 16, 3, 3), dtype="float64"),
        CaseSpec("float64_hard_sigmoid", (2, 16, 3), dtype="float64", gate="hard_sigmoid",
                 scale=3.0, notes="the hard sigmoid's 1/6 at float64 precision"),
        CaseSpec("float64_everything", (2, 4, 3, 12), dtype="float64", channel_axis=-1,
                 weight_form="Ck", groups=3, padding="circular", bias=True),
        CaseSpec("large_logits", (2, 16, 1), scale=12.0,
                 notes="logits between about -30 and 30, neither near 0 nor saturated"),
        CaseSpec("saturated_sigmoid", (2, 16, 3, 3), loc=60.0, special="saturate",
                 notes="logits far beyond 20: a rounds to 1 in float32"),
        CaseSpec("saturated_sigmoid_float64", (2, 16, 4), dtype="float64", loc=60.0,
                 special="saturate"),
        CaseSpec("nan_propagation", (2, 16, 3, 3), special="nan",
                 notes="one NaN in x[0, 8]: NaN spreads to channels 7..9 of sample 0"),
        CaseSpec("inf_propagation", (2, 16, 3, 3), special="inf",
                 notes="+Inf in x[0, 8] and -Inf in x[1, 0]"),
    ]
    return cases


def full_cases() -> list[CaseSpec]:
    """The full suite: the core plus the cross product of the main variants, larger sizes."""
    cases = core_cases()
    for dtype in ("float16", "float32", "float64", "bfloat16"):
        for padding in ("zeros", "circular"):
            for gate in ("sigmoid", "hard_sigmoid"):
                for form in ("k", "11k", "Ck", "C1k"):
                    for axis in (1, -1):
                        shape = (2, 24, 3, 2) if axis == 1 else (2, 3, 2, 24)
                        layout = "cf" if axis == 1 else "cl"
                        name = f"grid_{dtype}_{padding}_{gate}_{form}_{layout}"
                        cases.append(CaseSpec(name, shape, dtype=dtype, channel_axis=axis,
                                              weight_form=form, padding=padding, gate=gate,
                                              groups=2, k=5, bias=form in ("k", "Ck"),
                                              scale=3.0 if gate == "hard_sigmoid" else 1.0,
                                              tags=("grid",)))
    cases += [
        CaseSpec("large_resnet_stage", (2, 256, 14, 14), tags=("large",)),
        CaseSpec("large_c2048", (2, 2048, 4, 4), tags=("large",)),
        CaseSpec("large_spatial", (1, 64, 32, 32), tags=("large",)),
    ]
    return cases


SUITES = {"core": core_cases, "full": full_cases}


def suite(name: str) -> list[CaseSpec]:
    """The cases of a named suite."""
    return SUITES[name]()


__all__ = ["CaseSpec", "SUITES", "suite", "draw_inputs"]
