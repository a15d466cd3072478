"""Hypothesis strategies that draw valid ECA problems, in the form ECA adapters take.

:func:`eca_problems` draws every variant npeca supports (zero or circular padding, groups,
sigmoid or hard sigmoid, with or without a bias, channels first or last, the four weight
forms, float16/32/64, one to three spatial axes), including the edge cases ports get wrong:
C = 1, a kernel longer than the channel axis, and circular windows that wrap around the
channels more than twice. Each draw is an :class:`ECAProblemDraw` whose ``inputs`` and
``params`` are exactly the arguments of an adapter (see :mod:`npeca.golden.adapters`)::

    fn(problem.inputs, problem.params) -> {"y": ..., "dx": ..., ...}

Shapes and parameters are drawn by Hypothesis (and shrink towards N = C = k = 1, one
spatial axis of size 1, no groups, no bias); the values are drawn from a NumPy generator
seeded by Hypothesis: x = loc + scale * N(0, 1) (loc in {0, 1, -2, 4}, scale in {1, 1/4,
4}, so that some hard-sigmoid logits pass the clamp at +-3), grad_out ~ N(0, 1), weights
N(0, 1) / sqrt(k) and a bias in [-1, 1]: logits of moderate size, and rounding-error bounds
that stay small against the values they guard. :func:`npeca.testing.check_backend` runs a
backend on these problems and judges it against npeca's reference.

Needs the ``hypothesis`` package (``pip install hypothesis``).

Example
-------
>>> import npeca
>>> from hypothesis import given, settings
>>> from npeca.testing.strategies import eca_problems
>>> @settings(max_examples=20, deadline=None)
... @given(eca_problems(dtypes=("float64",), weight_forms=("k",), channel_axes=(1,)))
... def test_mean_pool(problem):
...     fwd = npeca.eca_forward(problem.inputs["x"], problem.inputs["weight"],
...                             bias=problem.inputs.get("bias"), padding=problem.padding,
...                             groups=problem.groups, gate=problem.gate)
...     spatial = tuple(range(2, problem.inputs["x"].ndim))
...     assert abs(fwd.m - problem.inputs["x"].mean(axis=spatial)).max() < 1e-12
>>> test_mean_pool()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .. import _bfloat16
from ..errors import BackendUnavailableError, ParameterError

try:
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - exercised by the test without hypothesis
    raise BackendUnavailableError(
        "npeca.testing.strategies and npeca.testing.check_backend need the hypothesis "
        "package: pip install hypothesis") from None

__all__ = ["ECAProblemDraw", "eca_problems", "make_inputs", "DTYPES", "ALL_DTYPES",
           "WEIGHT_FORMS", "PADDINGS", "GATES", "CHANNEL_AXES"]

DTYPES = ("float64", "float32", "float16")  # drawn by default
#: every dtype a problem may have: bfloat16 too, on request (it needs ml_dtypes)
ALL_DTYPES = DTYPES + ("bfloat16",)


def _dtype_name(dtype: Any) -> str:
    """A dtype's name, "bfloat16" included without importing ml_dtypes."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise ParameterError(f"dtype must be one of {', '.join(ALL_DTYPES)}; got "
                             f"{dtype!r}") from None
WEIGHT_FORMS = ("k", "11k", "Ck", "C1k")
PADDINGS = ("zeros", "circular")
GATES = ("sigmoid", "hard_sigmoid")
CHANNEL_AXES = (1, -1)

#: |logit| the ``saturate`` draws push beyond: sigmoid(17) rounds to 1 in float32.
_SATURATED_LOC = 24.0


def _weight_shape(form: str, c: int, k: int) -> tuple[int, ...]:
    return {"k": (k,), "11k": (1, 1, k), "Ck": (c, k), "C1k": (c, 1, k)}[form]


def make_inputs(dtype: Any, shape: Sequence[int], params: Mapping[str, Any], seed: int, *,
                scale: float = 1.0, loc: float = 0.0, saturate: bool = False
                ) -> dict[str, np.ndarray]:
    """The inputs of one problem, from a seed (what :func:`eca_problems` draws).

    ``x = loc + scale * N(0, 1)`` of ``shape`` (in its own layout: channels last when
    ``params["channel_axis"]`` is -1), the weight ``N(0, 1) / sqrt(k)`` in
    ``params["weight_form"]``, a bias ``U(-1, 1)`` of shape (1,) when ``params["bias"]``,
    and ``grad_out ~ N(0, 1)``, all of ``dtype`` (each value rounded once to it; bfloat16:
    ml_dtypes arrays). With ``saturate`` the weight is made positive and at least 0.75 and
    ``x`` is centred on +-24, so that most logits are beyond +-17 (a sigmoid that rounds
    to 0 or 1).
    """
    name = _dtype_name(dtype)
    dt = _bfloat16.dtype("strategies") if name == "bfloat16" else np.dtype(name)
    shape = tuple(int(d) for d in shape)
    k = int(params["k"])
    c = shape[-1] if params["channel_axis"] == -1 else shape[1]
    rng = np.random.default_rng(seed)
    x = loc + scale * rng.standard_normal(shape)
    weight = rng.standard_normal(_weight_shape(params["weight_form"], c, k)) / np.sqrt(k)
    bias = rng.uniform(-1.0, 1.0, size=(1,))
    grad_out = rng.standard_normal(shape)
    if saturate:
        weight = np.abs(weight) + 0.75
        x += _SATURATED_LOC * (1.0 if rng.integers(2) else -1.0)
    inputs = {"x": _bfloat16.round_to(x, dt), "weight": _bfloat16.round_to(weight, dt)}
    if params["bias"]:
        inputs["bias"] = _bfloat16.round_to(bias, dt)
    inputs["grad_out"] = _bfloat16.round_to(grad_out, dt)
    return inputs


@dataclass(frozen=True, eq=False, repr=False)
class ECAProblemDraw:
    """One drawn ECA problem: ``inputs`` and ``params`` exactly as an adapter takes them.

    ``inputs`` holds ``x``, ``weight`` (in ``params["weight_form"]``), ``grad_out`` and,
    when ``params["bias"]``, ``bias`` of shape (1,), all NumPy arrays of ``dtype``.
    ``params`` holds ``k``, ``padding``, ``groups``, ``gate``, ``bias``, ``channel_axis``
    and ``weight_form``. The repr is a :meth:`build` call that recreates the problem, so a
    falsifying example Hypothesis prints can be pasted back into Python.
    """

    dtype: str
    shape: tuple[int, ...]
    params: Mapping[str, Any]
    seed: int
    inputs: Mapping[str, np.ndarray]
    scale: float = 1.0
    loc: float = 0.0
    saturate: bool = False

    @classmethod
    def build(cls, dtype: Any, shape: Sequence[int], *, k: int, padding: str = "zeros",
              groups: int = 1, gate: str = "sigmoid", bias: bool = False,
              channel_axis: int = 1, weight_form: str = "k", seed: int = 0,
              scale: float = 1.0, loc: float = 0.0, saturate: bool = False
              ) -> "ECAProblemDraw":
        """The problem of x's ``shape`` with these parameters, values from ``seed``
        (see :func:`make_inputs`)."""
        params = {"k": int(k), "padding": padding, "groups": int(groups), "gate": gate,
                  "bias": bool(bias), "channel_axis": int(channel_axis),
                  "weight_form": weight_form}
        dt = _dtype_name(dtype)
        _check_params(dt, tuple(shape), params)
        inputs = make_inputs(dt, shape, params, seed, scale=scale, loc=loc, saturate=saturate)
        return cls(dt, tuple(int(d) for d in shape), params, int(seed), inputs, float(scale),
                   float(loc), bool(saturate))

    # convenient views -----------------------------------------------------------------
    @property
    def channels(self) -> int:
        """C, the number of channels."""
        return self.shape[-1] if self.params["channel_axis"] == -1 else self.shape[1]

    @property
    def spatial(self) -> tuple[int, ...]:
        """The spatial sizes of x."""
        return self.shape[1:-1] if self.params["channel_axis"] == -1 else self.shape[2:]

    @property
    def k(self) -> int:
        return self.params["k"]

    @property
    def padding(self) -> str:
        return self.params["padding"]

    @property
    def groups(self) -> int:
        return self.params["groups"]

    @property
    def gate(self) -> str:
        return self.params["gate"]

    @property
    def channel_axis(self) -> int:
        return self.params["channel_axis"]

    @property
    def weight_form(self) -> str:
        return self.params["weight_form"]

    @property
    def size(self) -> int:
        """Elements of x."""
        return int(np.prod(self.shape))

    def kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`npeca.eca` (and eca_forward / eca_backward) for it."""
        return {"bias": self.inputs.get("bias"), "channel_axis": self.channel_axis,
                "padding": self.padding, "groups": self.groups, "gate": self.gate}

    def __repr__(self) -> str:
        p = self.params
        extra = "".join([f", scale={self.scale!r}" if self.scale != 1.0 else "",
                         f", loc={self.loc!r}" if self.loc != 0.0 else "",
                         ", saturate=True" if self.saturate else ""])
        return (f"ECAProblemDraw.build({self.dtype!r}, {self.shape}, k={p['k']}, "
                f"padding={p['padding']!r}, groups={p['groups']}, gate={p['gate']!r}, "
                f"bias={p['bias']}, channel_axis={p['channel_axis']}, "
                f"weight_form={p['weight_form']!r}, seed={self.seed}{extra})")

    def describe(self) -> str:
        """One line for humans: shapes, dtype and parameters."""
        p = self.params
        layout = "channels-last" if p["channel_axis"] == -1 else "channels-first"
        w = self.inputs["weight"].shape
        return (f"{self.dtype} x{self.shape} ({layout}, C={self.channels}), k={p['k']} "
                f"weight{w} ({p['weight_form']}), padding={p['padding']}, "
                f"groups={p['groups']}, gate={p['gate']}, "
                f"{'bias' if p['bias'] else 'no bias'}"
                + (", saturated logits" if self.saturate else ""))


def _check_params(dt: str, shape: tuple, params: Mapping[str, Any]) -> None:
    if dt not in ALL_DTYPES:
        raise ParameterError(f"dtype must be one of {', '.join(ALL_DTYPES)}; got {dt}")
    if not 3 <= len(shape) <= 5 or any(int(d) < 1 for d in shape):
        raise ParameterError(f"shape must be (N, C, *spatial) or (N, *spatial, C) with 1 to 3 "
                             f"spatial axes, every size >= 1; got {shape}")
    c = shape[-1] if params["channel_axis"] == -1 else shape[1]
    if params["k"] < 1 or params["k"] % 2 == 0:
        raise ParameterError(f"k must be odd and >= 1; got {params['k']}")
    if params["groups"] < 1 or c % params["groups"]:
        raise ParameterError(f"groups {params['groups']} must divide C = {c}")
    for key, options in (("padding", PADDINGS), ("gate", GATES),
                         ("channel_axis", CHANNEL_AXES), ("weight_form", WEIGHT_FORMS)):
        if params[key] not in options:
            raise ParameterError(f"{key} must be one of {options}; got {params[key]!r}")


def _choices(name: str, value: Sequence, allowed: Sequence) -> tuple:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = (value,)
    value = tuple(value)
    bad = [v for v in value if v not in allowed]
    if not value or bad:
        raise ParameterError(f"{name} must be a non-empty subset of {allowed}; got {value!r}")
    return value


def _positive(name: str, value: Any, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ParameterError(f"{name} must be an integer >= {lo}; got {value!r}")
    return int(value)


# long: one keyword check per variant the strategy draws, then the draw itself
def eca_problems(*, dtypes: Sequence[Any] = DTYPES, max_batch: int = 2,
                 max_channels: int = 8, spatial_dims: Sequence[int] = (1, 2, 3),
                 max_side: int = 4, max_kernel: int | None = None,
                 paddings: Sequence[str] = PADDINGS, max_groups: int | None = None,
                 gates: Sequence[str] = GATES, bias: Sequence[bool] = (False, True),
                 channel_axes: Sequence[int] = CHANNEL_AXES,
                 weight_forms: Sequence[str] = WEIGHT_FORMS,
                 scales: Sequence[float] = (1.0, 0.25, 4.0),
                 locs: Sequence[float] = (0.0, 1.0, -2.0, 4.0),
                 saturated: bool = False) -> st.SearchStrategy[ECAProblemDraw]:
    """A strategy of valid ECA problems (:class:`ECAProblemDraw`).

    Parameters
    ----------
    dtypes : sequence of {"float64", "float32", "float16", "bfloat16"}
        The dtypes to draw (every input of a problem has the same dtype); by default the
        first three. bfloat16 problems hold ml_dtypes arrays and are judged by the
        bfloat16 contract (stored in bfloat16, accumulated in float32).
    max_batch : int
        N is drawn from 1 to ``max_batch``.
    max_channels : int
        C is drawn from 1 to ``max_channels``; groups from the divisors of C (at most
        ``max_groups``, default any).
    spatial_dims : sequence of {1, 2, 3}
        How many spatial axes x may have; each has a size from 1 to ``max_side``.
    max_kernel : int, optional
        k is odd, from 1 to ``4 * C / groups + 3``: the half-window ``(k - 1) / 2`` reaches
        past ``2 * C / groups``, so circular windows wrap around their group more than
        twice (ports that wrap an index once, ``(t + C) % C``, fail there); at most
        ``max_kernel`` when given.
    paddings, gates, channel_axes, weight_forms : sequences
        The variants to draw, each a subset of the allowed values.
    bias : sequence of bool
        ``(False, True)``: with and without a bias; ``(True,)``: always one.
    scales, locs : sequences of float
        x is ``loc + scale * N(0, 1)`` for a drawn ``loc`` and ``scale``.
    saturated : bool
        Also draw problems whose logits are mostly beyond +-17, where the sigmoid rounds to
        0 or 1 in float32 (about one draw in four).

    Notes
    -----
    Shrinking goes towards the first value of each choice and the smallest sizes.
    """
    dts = _choices("dtypes", tuple(_dtype_name(d) for d in
                                   ((dtypes,) if isinstance(dtypes, str) else dtypes)),
                   ALL_DTYPES)
    max_batch = _positive("max_batch", max_batch)
    max_channels = _positive("max_channels", max_channels)
    max_side = _positive("max_side", max_side)
    dims = _choices("spatial_dims", spatial_dims, (1, 2, 3))
    if max_kernel is not None:
        max_kernel = _positive("max_kernel", max_kernel)
    if max_groups is not None:
        max_groups = _positive("max_groups", max_groups)
    paddings = _choices("paddings", paddings, PADDINGS)
    gates = _choices("gates", gates, GATES)
    biases = _choices("bias", (bias,) if isinstance(bias, bool) else bias, (False, True))
    axes = _choices("channel_axes", channel_axes, CHANNEL_AXES)
    forms = _choices("weight_forms", weight_forms, WEIGHT_FORMS)
    scales = tuple(float(s) for s in scales)
    locs = tuple(float(v) for v in locs)
    if not scales or not locs or not all(np.isfinite(scales + locs)):
        raise ParameterError("scales and locs must be non-empty sequences of finite numbers")

    @st.composite
    def problems(draw: Any) -> ECAProblemDraw:
        dtype = draw(st.sampled_from(dts))
        # sampled_from draws sizes about uniformly (st.integers favours 1 and the maximum,
        # and C = 1 hides every bug of the channel convolution); both shrink towards 1
        n = draw(st.sampled_from(range(1, max_batch + 1)))
        c = draw(st.sampled_from(range(1, max_channels + 1)))
        divisors = [g for g in range(1, c + 1)
                    if c % g == 0 and (max_groups is None or g <= max_groups)]
        groups = draw(st.sampled_from(divisors))
        ndim = draw(st.sampled_from(dims))
        spatial = tuple(draw(st.sampled_from(range(1, max_side + 1))) for _ in range(ndim))
        k_top = 4 * (c // groups) + 3
        if max_kernel is not None:
            k_top = min(k_top, max_kernel)
        k = draw(st.sampled_from(range(1, k_top + 1, 2)))
        params = {"k": k, "padding": draw(st.sampled_from(paddings)), "groups": groups,
                  "gate": draw(st.sampled_from(gates)), "bias": draw(st.sampled_from(biases)),
                  "channel_axis": draw(st.sampled_from(axes)),
                  "weight_form": draw(st.sampled_from(forms))}
        shape = (n, *spatial, c) if params["channel_axis"] == -1 else (n, c, *spatial)
        scale = draw(st.sampled_from(scales))
        loc = draw(st.sampled_from(locs))
        saturate = draw(st.integers(0, 3).map(lambda v: v == 3)) if saturated else False
        seed = draw(st.integers(0, 2 ** 32 - 1))
        inputs = make_inputs(dtype, shape, params, seed, scale=scale, loc=loc,
                             saturate=saturate)
        return ECAProblemDraw(dtype, shape, params, seed, inputs, scale, loc, saturate)

    return problems()
