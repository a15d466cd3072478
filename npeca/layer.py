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

from collections import OrderedDict
from typing import Any, Mapping, NamedTuple

import numpy as np

from . import api
from ._layer_params import (BIAS_KEY, WEIGHT_KEY, check_options, checked_parameters,
                            initial_parameters, read_state_dict)
from ._validate import GATES, PADDINGS, choice, float_dtype
from .errors import AutogradError, ShapeError

__all__ = ["ECA", "IncompatibleKeys"]



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
        dtype of the parameters (float16, float32, float64 or ``"bfloat16"``, which needs
        ml_dtypes; default float32 as PyTorch).
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
    ``kaiming_uniform_(a=sqrt(5))`` is uniform on
    $[-1/\\sqrt{\\mathrm{fan\\_in}}, 1/\\sqrt{\\mathrm{fan\\_in}}]$ and so is the bias,
    with fan_in = k for ``Conv1d(1, 1, k)`` and for the depthwise
    ``Conv1d(C, C, k, groups=C)`` alike. The distribution is PyTorch's; the random stream
    is NumPy's, so the values differ from ``torch.manual_seed``'s.

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
        channels, kernel_size, groups, channel_axis = check_options(
            channels, kernel_size, gamma, b, min_size, groups, bias, per_channel, channel_axis,
            backend)
        self.channels = channels
        self.kernel_size = kernel_size
        self.padding = choice(padding, "padding", PADDINGS)
        self.groups = groups
        self.gate = choice(gate, "gate", GATES)
        self.per_channel = bool(per_channel)
        self.channel_axis = int(channel_axis)
        self.dtype = float_dtype(dtype)
        self.backend = backend

        self.weight, self.bias = initial_parameters(seed, channels, kernel_size, per_channel,
                                                    bias, self.dtype)
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
            Parameter dtype; default: the weight's own (a torch bfloat16 tensor stays
            bfloat16 when ml_dtypes is installed, else becomes float32).
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
        w, per_channel, channels, k, has_bias = read_state_dict(state_dict, name)
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
        new, missing, unexpected = checked_parameters(
            dict(self.named_parameters()), state_dict, strict, _name, self.dtype,
            self.kernel_size)
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
