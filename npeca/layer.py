"""The ECA layer object: parameters shaped as PyTorch stores them, forward, backward, state dict.

:class:`ECA` holds what ``torch.nn.Conv1d(1, 1, k, bias=False)`` holds inside the official
``eca_layer`` and timm's ``EcaModule`` / ``CecaModule``: one weight of shape (1, 1, k), and
optionally one bias of shape (1,). Its state dict uses PyTorch's key names (``conv.weight``,
``conv.bias``), so the entries of a PyTorch state dict under ``layer1.0.eca.``, with that
prefix removed, load as they are (:func:`npeca.checkpoint.load_eca_layers` does this for a
whole checkpoint). The math is :func:`npeca.eca`; the layer adds parameters, initialisation,
the forward cache and gradients.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Mapping, NamedTuple

import numpy as np

from . import api
from .backends import BACKENDS
from ._validate import (GATES, MAX_CHANNELS, MAX_KERNEL, MAX_PARAMETER_ELEMENTS, PADDINGS,
                        channel_axis_value, choice, float_dtype, float_parameter, positive_int,
                        to_numpy)
from .errors import AutogradError, DTypeError, ParameterError, ShapeError, describe
from .kernel_size import kernel_size as _kernel_size_rule

__all__ = ["ECA", "IncompatibleKeys"]

WEIGHT_KEY = "conv.weight"
BIAS_KEY = "conv.bias"


class IncompatibleKeys(NamedTuple):
    """What :meth:`ECA.load_state_dict` with ``strict=False`` left out, as PyTorch reports it."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class ECA:
    """Efficient Channel Attention as a layer, with PyTorch's parameter names and shapes.

    Parameters
    ----------
    channels : int, optional
        Number of channels C. Without ``kernel_size``, k comes from the paper's rule
        ``npeca.kernel_size(channels, gamma, b, min_size=min_size)``. When given, inputs
        must have exactly this many channels. Required for ``per_channel=True``.
    kernel_size : int, optional
        An explicit odd k (the official ECANet models hand-pick k per stage). With only
        ``kernel_size`` and a shared kernel the layer works for any number of channels.
    gamma, b : float, optional
        Constants of the kernel-size rule (paper: 2 and 1).
    min_size : int, optional
        Lower bound of the rule; 1 is the paper's rule, 3 reproduces timm's ``EcaModule``.
    padding : {"zeros", "circular"}
        Zero padding (the paper, timm's ``EcaModule``) or circular (timm's ``CecaModule``).
    groups : int
        Contiguous channel groups the convolution never crosses.
    gate : {"sigmoid", "hard_sigmoid"}
        The gate applied to the logits.
    bias : bool
        Whether the convolution has a bias (one scalar, ``conv.bias`` of shape (1,)).
    per_channel : bool
        One kernel per channel (the paper's ECA-NS), weight of shape (C, 1, k) as the
        official ``eca_ns.py`` stores it in ``Conv1d(C, C, k, groups=C)``. No bias.
    channel_axis : {1, -1}
        Where the channels are in the input: 1 (N, C, *spatial) or -1 (N, *spatial, C).
    dtype : dtype
        dtype of the parameters (float16, float32 or float64; default float32 as PyTorch).
        The output has the dtype of the input; the computation is float64 inside.
    backend : str, optional
        Passed to the ECA functions as ``backend=`` when set (None: npeca's default).
    seed : int or numpy.random.Generator, optional
        Source of the initial weights. None draws fresh entropy.

    Attributes
    ----------
    weight : numpy.ndarray
        (1, 1, k), or (C, 1, k) per channel.
    bias : numpy.ndarray or None
        (1,) when ``bias=True``.
    weight_grad, bias_grad : numpy.ndarray or None
        Set by :meth:`backward` (overwritten, not accumulated); None before.

    Notes
    -----
    The initial weights are drawn like PyTorch's ``Conv1d.reset_parameters``:
    ``kaiming_uniform_(a=sqrt(5))`` is uniform on :math:`[-1/\\sqrt{\\mathrm{fan\\_in}},
    1/\\sqrt{\\mathrm{fan\\_in}}]` and so is the bias, with fan_in = k for ``Conv1d(1, 1, k)``
    and for the depthwise ``Conv1d(C, C, k, groups=C)`` alike. The distribution is PyTorch's;
    the random stream is NumPy's, so the values differ from ``torch.manual_seed``'s.

    :meth:`forward` keeps a reference to its input (not a copy) and a copy of the
    parameters for :meth:`backward`; do not modify the input in place in between.

    Examples
    --------
    >>> import numpy as np
    >>> from npeca.layer import ECA
    >>> layer = ECA(256, seed=0)  # k from the rule: kernel_size(256) = 5
    >>> layer
    ECA(channels=256, kernel_size=5, padding='zeros', gate='sigmoid', bias=False, dtype=float32)
    >>> x = np.random.default_rng(1).standard_normal((2, 256, 7, 7)).astype(np.float32)
    >>> y = layer(x)
    >>> dx = layer.backward(np.ones_like(y))
    >>> y.shape, dx.shape, layer.weight_grad.shape
    ((2, 256, 7, 7), (2, 256, 7, 7), (1, 1, 5))
    >>> sorted(layer.state_dict())
    ['conv.weight']
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        kernel_size: int | None = None,
        gamma: float = 2,
        b: float = 1,
        min_size: int = 1,
        padding: str = "zeros",
        groups: int = 1,
        gate: str = "sigmoid",
        bias: bool = False,
        per_channel: bool = False,
        channel_axis: int = 1,
        dtype: Any = np.float32,
        backend: str | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> None:
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

        self.channels = channels
        self.kernel_size = kernel_size
        self.padding = choice(padding, "padding", PADDINGS)
        self.groups = groups
        self.gate = choice(gate, "gate", GATES)
        self.per_channel = bool(per_channel)
        self.channel_axis = int(channel_axis)
        self.dtype = float_dtype(dtype)
        self.backend = backend

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
        self.weight = rng.uniform(-bound, bound, size=shape).astype(self.dtype)
        self.bias = rng.uniform(-bound, bound, size=(1,)).astype(self.dtype) if bias else None

        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None
        self._cache: tuple[Any, np.ndarray, np.ndarray | None] | None = None

    # --- construction from weights ----------------------------------------------------------

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, padding: str = "zeros",
                        groups: int = 1, gate: str = "sigmoid", channel_axis: int = 1,
                        dtype: Any = None, backend: str | None = None,
                        name: str = "") -> "ECA":
        """A layer shaped by a state dict's own weights: k (and C, per channel) from its shape.

        Parameters
        ----------
        state_dict : mapping
            ``conv.weight`` of shape (1, 1, k) (shared) or (C, 1, k) (per channel), and
            optionally ``conv.bias`` of shape (1,); arrays or torch tensors. No other keys.
        padding, groups, gate, channel_axis, backend
            As for :class:`ECA`; a checkpoint does not record them.
        dtype : dtype, optional
            Parameter dtype; default: the weight's own (bfloat16 becomes float32).
        name : str, optional
            Prefix for the keys in error messages (e.g. ``"layer1.0.eca."``).

        Returns
        -------
        ECA

        Raises
        ------
        ParameterError
            A missing ``conv.weight`` or an unexpected key.
        ShapeError, DTypeError
            A weight that is not an ECA kernel (naming the key and its shape), an even k,
            a non-float tensor.

        Examples
        --------
        >>> import numpy as np
        >>> from npeca.layer import ECA
        >>> sd = {"conv.weight": np.full((1, 1, 7), 0.1, dtype=np.float32)}
        >>> ECA.from_state_dict(sd, padding="circular")
        ECA(kernel_size=7, padding='circular', gate='sigmoid', bias=False, dtype=float32)
        """
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
        layer = cls(channels, kernel_size=k, padding=padding, groups=groups, gate=gate,
                    bias=has_bias, per_channel=per_channel, channel_axis=channel_axis,
                    dtype=w.dtype if dtype is None else dtype, backend=backend, seed=0)
        layer.load_state_dict(state_dict, _name=name)
        return layer

    # --- forward and backward ---------------------------------------------------------------

    def _kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"channel_axis": self.channel_axis, "padding": self.padding,
                              "groups": self.groups, "gate": self.gate}
        if self.backend is not None:
            kw["backend"] = self.backend
        return kw

    def _check_channels(self, x: Any) -> None:
        if self.channels is None:
            return
        try:
            shape = np.shape(x)
        # ragged nested lists: the ECA functions say what is wrong
        except Exception:  # noqa: BLE001
            return
        if 3 <= len(shape) <= 5 and shape[self.channel_axis] != self.channels:
            what = (f"{self.channels} kernels (per_channel)" if self.per_channel else
                    f"{self.channels} channels")
            raise ShapeError(
                f"this ECA layer was built for {what}; x has {shape[self.channel_axis]} "
                f"channels on axis {self.channel_axis} (shape {shape}). Build it with "
                f"ECA({shape[self.channel_axis]}, ...), or with kernel_size= only for a "
                f"shared kernel that fits any C")

    def forward(self, x: Any) -> np.ndarray:
        """y = gate(bias + w ⋆ mean(x)) * x, shaped and typed like x; caches for backward."""
        self._check_channels(x)
        weight = self.weight.copy()
        bias = None if self.bias is None else self.bias.copy()
        y = api.eca(x, weight, bias=bias, **self._kwargs())
        self._cache = (x, weight, bias)
        return y

    __call__ = forward

    def backward(self, grad_out: Any) -> np.ndarray:
        """dL/dx for upstream ``grad_out`` = dL/dy of the last :meth:`forward`.

        Stores dL/dweight in ``weight_grad`` (shape of ``weight``) and dL/dbias in
        ``bias_grad`` (shape (1,), or None without bias), overwriting earlier values.
        """
        if self._cache is None:
            raise AutogradError("ECA.backward() needs a forward() first: it differentiates "
                                "the last forward call")
        x, weight, bias = self._cache
        grads = api.eca_backward(x, weight, grad_out, bias=bias, **self._kwargs())
        self.weight_grad = grads.weight
        self.bias_grad = grads.bias
        return grads.x

    # --- parameters and state ---------------------------------------------------------------

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """``[("conv.weight", weight), ("conv.bias", bias)]`` (the live arrays), as PyTorch
        names them."""
        named = [(WEIGHT_KEY, self.weight)]
        if self.bias is not None:
            named.append((BIAS_KEY, self.bias))
        return named

    def parameters(self) -> list[np.ndarray]:
        """The live parameter arrays, weight then bias: updating them in place updates the
        layer."""
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of the parameters under PyTorch's keys: ``conv.weight`` (1, 1, k) or
        (C, 1, k), and ``conv.bias`` (1,) when the layer has a bias."""
        return OrderedDict((k, v.copy()) for k, v in self.named_parameters())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        *, _name: str = "") -> IncompatibleKeys:
        """Copy parameters from ``state_dict`` (arrays or torch tensors) into this layer.

        Parameters
        ----------
        state_dict : mapping
            Keys as :meth:`state_dict` writes them. Values are cast to the layer's dtype.
        strict : bool
            True: the keys must be exactly this layer's keys. False: missing keys keep their
            current values and unexpected keys are ignored (both are reported). Shapes
            must match either way, as in PyTorch.

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``.

        Raises
        ------
        ParameterError
            Missing or unexpected keys with ``strict=True``.
        ShapeError, DTypeError
            A value of the wrong shape or a non-float value, naming the key. Nothing is
            copied when anything is wrong.

        Examples
        --------
        >>> import numpy as np
        >>> from npeca.layer import ECA
        >>> layer = ECA(kernel_size=3, seed=0)
        >>> layer.load_state_dict({"conv.weight": np.array([[[0.0, 1.0, 0.0]]])})
        IncompatibleKeys(missing_keys=[], unexpected_keys=[])
        >>> layer.weight.tolist()
        [[[0.0, 1.0, 0.0]]]
        """
        if not isinstance(state_dict, Mapping):
            raise DTypeError(f"state_dict must be a mapping of key to array; got "
                             f"{type(state_dict).__name__}")
        own = dict(self.named_parameters())
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
                            f"{self.kernel_size} in this layer). Build the layer from the "
                            f"weights with ECA.from_state_dict(state_dict)")
                raise ShapeError(f"{_name + key} has shape {arr.shape}; this layer's is "
                                 f"{current.shape}{hint}")
            new[key] = np.array(float_parameter(arr, _name + key, self.dtype), copy=True)
        self.weight = new.get(WEIGHT_KEY, self.weight)
        if BIAS_KEY in new:
            self.bias = new[BIAS_KEY]
        return IncompatibleKeys(missing, unexpected)

    def __repr__(self) -> str:
        parts = []
        if self.channels is not None:
            parts.append(f"channels={self.channels}")
        parts.append(f"kernel_size={self.kernel_size}")
        if self.per_channel:
            parts.append("per_channel=True")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        parts += [f"padding={self.padding!r}", f"gate={self.gate!r}",
                  f"bias={self.bias is not None}"]
        if self.channel_axis != 1:
            parts.append(f"channel_axis={self.channel_axis}")
        parts.append(f"dtype={self.dtype}")
        if self.backend is not None:
            parts.append(f"backend={self.backend!r}")
        return f"ECA({', '.join(parts)})"


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
