"""The ECA layer's parameters: checking its options, initialising its weights as PyTorch
does, and reading them from PyTorch state dicts (key names, shapes, what is and is not
ECA). :mod:`npeca.layer` holds the layer itself; both check values through
:mod:`npeca._validate`."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ._bfloat16 import round_to
from ._validate import (MAX_CHANNELS, MAX_KERNEL, MAX_PARAMETER_ELEMENTS, channel_axis_value,
                        choice, float_parameter, positive_int, to_numpy)
from .backends import BACKENDS
from .errors import DTypeError, ParameterError, ShapeError, describe
from .kernel_size import kernel_size as _kernel_size_rule

WEIGHT_KEY = "conv.weight"
BIAS_KEY = "conv.bias"


def check_options(channels: Any, kernel_size: Any, gamma: Any, b: Any, min_size: Any,
                  groups: Any, bias: Any, per_channel: Any, channel_axis: Any,
                  backend: Any) -> tuple[int | None, int, int, int]:
    """The layer's size options checked: (channels, kernel_size, groups, channel_axis)."""
    if channels is not None:
        channels = positive_int(channels, "channels", MAX_CHANNELS)
    if kernel_size is None:
        if channels is None:
            raise ParameterError("ECA needs channels (k from the paper's rule) or an "
                                 "explicit kernel_size; got neither. E.g. ECA(256) or "
                                 "ECA(kernel_size=5)")
        kernel_size = _kernel_size_rule(channels, gamma, b, min_size=min_size)
    kernel_size = positive_int(kernel_size, "kernel_size", MAX_KERNEL)
    if kernel_size % 2 == 0:
        raise ParameterError(
            f"kernel_size must be odd so that (k - 1) / 2 channels pad each side; got "
            f"{kernel_size}. Use {kernel_size + 1} (npeca.kernel_size(C) gives the "
            f"paper's odd k)")
    groups = positive_int(groups, "groups")
    if channels is not None and channels % groups:
        raise ParameterError(f"groups must divide channels; got groups = "
                             f"{describe(groups)} for channels = {channels}")
    for flag, name in ((bias, "bias"), (per_channel, "per_channel")):
        if not isinstance(flag, (bool, np.bool_)):
            raise ParameterError(f"{name} must be True or False; got {describe(flag)}")
    if per_channel and channels is None:
        raise ParameterError("per_channel=True needs channels: the weight has one kernel "
                             "per channel, shape (C, 1, k)")
    if per_channel and channels is not None and channels * kernel_size > \
            MAX_PARAMETER_ELEMENTS:
        raise ParameterError(f"per_channel=True with channels = {describe(channels)} and "
                             f"k = {kernel_size} makes more than {MAX_PARAMETER_ELEMENTS} "
                             f"weights; no ECA layer is that large")
    if per_channel and bias:
        raise ParameterError(
            "per_channel=True with bias=True is not supported: ECA's bias is one scalar, "
            "and a per-channel Conv1d(C, C, k, groups=C) bias has C values")
    channel_axis = channel_axis_value(channel_axis)
    if backend is not None:
        choice(backend, "backend", tuple(BACKENDS))
    return channels, kernel_size, groups, channel_axis


def initial_parameters(seed: Any, channels: int | None, kernel_size: int, per_channel: bool,
                       bias: bool, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight, bias) drawn as PyTorch's Conv1d draws them: U(-1/sqrt(k), 1/sqrt(k))."""
    if isinstance(seed, np.random.Generator):
        rng = seed
    else:
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError):
            raise ParameterError(f"seed must be None, an integer >= 0 or a "
                                 f"numpy.random.Generator; got {describe(seed)}") from None
    bound = 1.0 / math.sqrt(kernel_size)  # PyTorch: 1 / sqrt(fan_in), fan_in = 1 * k
    shape = (channels, 1, kernel_size) if per_channel and channels is not None else \
        (1, 1, kernel_size)
    weight = round_to(rng.uniform(-bound, bound, size=shape), dtype)
    return weight, (round_to(rng.uniform(-bound, bound, size=(1,)), dtype) if bias else None)


def read_state_dict(state_dict: Any, name: str
                    ) -> tuple[np.ndarray, bool, int | None, int, bool]:
    """An ECA module's state dict read: (weight, per_channel, channels, k, has_bias), with
    errors that name the key (``name`` is the module's prefix)."""
    if not isinstance(state_dict, Mapping):
        raise DTypeError(f"state_dict must be a mapping of key to array; got "
                         f"{type(state_dict).__name__}")
    if not isinstance(name, str):
        raise ParameterError(f"name must be a string (a key prefix); got {describe(name)}")
    wkey, bkey = name + WEIGHT_KEY, name + BIAS_KEY
    unexpected = [str(k) for k in state_dict if k not in (WEIGHT_KEY, BIAS_KEY)]
    if unexpected:
        mlp = (" (conv2 is the second convolution of timm's EcaModule(use_mlp=True), "
               "attn_layer='ecam': an MLP experiment that is not ECA and that npeca does "
               "not implement)" if "conv2.weight" in unexpected else "")
        raise ParameterError(
            f"unexpected key(s) {', '.join(repr(name + k) for k in unexpected)} next to "
            f"{describe(wkey)}: an ECA module holds only conv.weight and optionally "
            f"conv.bias, so "
            f"this module is not plain ECA{mlp}")
    if WEIGHT_KEY not in state_dict:
        raise ParameterError(f"missing key {describe(wkey)}: the ECA convolution's "
                             f"weight, shape "
                             f"(1, 1, k)")
    w = float_parameter(state_dict[WEIGHT_KEY], wkey)
    per_channel, channels, k = _kernel_shape(w.shape, wkey)
    has_bias = BIAS_KEY in state_dict
    if has_bias:
        bshape = np.shape(to_numpy(state_dict[BIAS_KEY], bkey))
        if bshape != (1,):
            per = (" A per-channel bias is not part of ECA (its bias is one scalar)"
                   if per_channel else "")
            raise ShapeError(f"{bkey} must have shape (1,), the one bias of "
                             f"Conv1d(1, 1, k, bias=True); got shape {bshape}.{per}")
        if per_channel:
            raise ShapeError(f"{bkey}: a bias with per-channel kernels {w.shape} is not "
                             f"supported (ECA-NS has no bias)")
    return w, per_channel, channels, k, has_bias


def checked_parameters(own: dict[str, np.ndarray], state_dict: Any, strict: bool, _name: str,
                       dtype: np.dtype, kernel_size: int
                       ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """The values of ``state_dict`` for the layer's parameters ``own``, checked and cast to
    ``dtype`` (nothing is copied into the layer when anything is wrong), and the missing and
    unexpected keys."""
    if not isinstance(state_dict, Mapping):
        raise DTypeError(f"state_dict must be a mapping of key to array; got "
                         f"{type(state_dict).__name__}")
    missing = [k for k in own if k not in state_dict]
    unexpected = [str(k) for k in state_dict if k not in own]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append("missing key(s) " + ", ".join(repr(_name + k) for k in missing))
        if unexpected:
            parts.append("unexpected key(s) " + ", ".join(repr(_name + k)
                                                         for k in unexpected))
        hint = ""
        if BIAS_KEY in missing:
            hint = " The layer has bias=True; build it with bias=False, or pass strict=False"
        elif BIAS_KEY in unexpected:
            hint = (" The state dict has a bias; build the layer with bias=True (or use "
                    "ECA.from_state_dict), or pass strict=False to ignore it")
        raise ParameterError(f"load_state_dict: {'; '.join(parts)}. This layer's keys: "
                             f"{', '.join(map(repr, own))}.{hint}")
    new = {}
    for key, current in own.items():
        if key not in state_dict:
            continue
        arr = float_parameter(state_dict[key], _name + key)
        if arr.shape != current.shape:
            hint = ""
            if key == WEIGHT_KEY and arr.ndim == 3:
                hint = (f" (kernel_size {arr.shape[-1]} in the state dict, "
                        f"{kernel_size} in this layer). Build the layer from the "
                        f"weights with ECA.from_state_dict(state_dict)")
            raise ShapeError(f"{_name + key} has shape {arr.shape}; this layer's is "
                             f"{current.shape}{hint}")
        new[key] = np.array(float_parameter(arr, _name + key, dtype), copy=True)
    return new, missing, unexpected


def _kernel_shape(shape: tuple[int, ...], key: str) -> tuple[bool, int | None, int]:
    """``(per_channel, channels, k)`` from an ECA conv weight's shape, or ShapeError."""
    expected = ("(1, 1, k) as Conv1d(1, 1, k) stores ECA's kernel, or (C, 1, k) for "
                "per-channel kernels (ECA-NS, Conv1d(C, C, k, groups=C)), with k odd")
    if len(shape) != 3 or shape[1] != 1 or shape[0] < 1:
        if len(shape) == 3 and shape[0] == 1 and shape[1] > 1:
            why = (f" A (1, {shape[1]}, k) weight reads {shape[1]} input channels, as the "
                   f"second convolution of timm's EcaModule(use_mlp=True) does: not ECA.")
        elif len(shape) == 3 and shape[0] == shape[1] and shape[0] > 1:
            why = " A (C, C, k) weight is a full Conv1d over channels, not ECA."
        elif len(shape) == 4:
            why = " A 4-D weight is a Conv2d, not ECA's 1-D convolution."
        else:
            why = ""
        raise ShapeError(f"{key} has shape {tuple(shape)}, which is not an ECA kernel; "
                         f"expected {expected}.{why}")
    k = int(shape[2])
    if k == 0:
        raise ShapeError(f"{key} has shape {tuple(shape)}: an empty kernel (k = 0)")
    if k % 2 == 0:
        raise ShapeError(
            f"{key} has shape {tuple(shape)}: kernel size k = {k} is even. ECA needs an odd k "
            f"so that (k - 1) / 2 channels pad each side; a Conv1d with even k and padding "
            f"k // 2 returns C + 1 values, so this checkpoint comes from a broken layer")
    per_channel = shape[0] != 1
    return per_channel, (int(shape[0]) if per_channel else None), k
