"""A residual ECA bottleneck block for inference in plain NumPy, with npeca for the ECA.

The block is ECANet's ``ECABottleneck`` (BangguWu/ECANet, models/eca_resnet.py) and the
ResNet bottleneck of timm's ``ecaresnet*`` models::

    out = relu(bn1(conv1x1(x)))
    out = relu(bn2(conv3x3(out, stride)))
    out = eca(bn3(conv1x1(out)))
    y   = relu(out + (downsample(x) if downsample else x))

with batch norm in inference mode (running statistics). The weights come from a PyTorch-style
state dict (``conv1.weight``, ``bn1.running_mean``, ..., ``eca.conv.weight``), for instance a
slice of a checkpoint read with ``torch.load`` or ``safetensors.numpy.load_file``. The ECA
layer is built by :func:`npeca.checkpoint.load_eca_layers`, so its kernel size comes from the
stored weight.

Run it as a script (``python examples/bottleneck.py``): it builds ResNet-50's first layer2
block with random weights, runs it in NumPy with npeca's ECA, runs the same weights through
PyTorch when torch is installed and prints the largest difference (float32 rounding, about
1e-6), then runs the docstring examples. Or import it::

    from examples.bottleneck import Bottleneck
    block = Bottleneck.from_state_dict(state_dict, prefix="layer1.0.", stride=1)
    y = block(x)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from npeca.checkpoint import load_eca_layers
from npeca.layer import ECA

__all__ = ["conv2d", "batch_norm", "relu", "Bottleneck"]


def conv2d(x: np.ndarray, w: np.ndarray, *, stride: int = 1, padding: int = 0) -> np.ndarray:
    """2-D cross-correlation as ``torch.nn.functional.conv2d`` (no bias, groups = 1).

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
    w : ndarray, shape (C_out, C_in, kh, kw)
    stride, padding : int
        The same along both spatial axes; zero padding.

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out)
        With ``H_out = (H + 2 padding - kh) // stride + 1`` (likewise W).

    Examples
    --------
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> conv2d(x, np.ones((1, 1, 3, 3)), padding=1)[0, 0, :2, :2]  # 3x3 box sums
    array([[10., 18.],
           [27., 45.]])
    """
    kh, kw = w.shape[2:]
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    if kh == kw == 1:  # a 1x1 conv is a matrix product over channels
        return np.einsum("nchw,oc->nohw", x[:, :, ::stride, ::stride], w[:, :, 0, 0])
    # im2col as a view: win[n, c, i, j, u, v] = x[n, c, i * stride + u, j * stride + v]
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwuv,ocuv->nohw", win, w, optimize=True)


def batch_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray,
               var: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Inference-mode batch norm over axis 1: ``(x - mean) / sqrt(var + eps) * weight + bias``."""
    scale = weight / np.sqrt(var + eps)  # (C,)
    shift = bias - mean * scale
    return x * scale[:, None, None] + shift[:, None, None]


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    return np.maximum(x, 0)


def _bn_params(sd: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, ...]:
    return tuple(sd[f"{name}.{p}"] for p in ("weight", "bias", "running_mean", "running_var"))


class Bottleneck:
    """ECANet's residual bottleneck block, inference only, in NumPy.

    Parameters
    ----------
    weights : mapping
        NumPy arrays under PyTorch's names without prefix: ``conv1.weight`` (1x1),
        ``conv2.weight`` (3x3), ``conv3.weight`` (1x1), ``bnI.weight`` / ``.bias`` /
        ``.running_mean`` / ``.running_var`` for I = 1, 2, 3, and optionally
        ``downsample.0.weight`` (1x1 conv) with ``downsample.1.*`` (its batch norm).
    eca : npeca.layer.ECA
        The attention layer applied after bn3.
    stride : int
        Stride of the 3x3 conv and of the downsample conv (not stored in checkpoints).
    eps : float
        Batch-norm epsilon (PyTorch's default 1e-5).

    Examples
    --------
    A block with random weights (identity batch norm), the way a checkpoint would fill it:

    >>> rng = np.random.default_rng(0)
    >>> c, planes = 16, 4
    >>> sd = {"conv1.weight": rng.standard_normal((planes, c, 1, 1)),
    ...       "conv2.weight": rng.standard_normal((planes, planes, 3, 3)),
    ...       "conv3.weight": rng.standard_normal((c, planes, 1, 1)),
    ...       "eca.conv.weight": rng.standard_normal((1, 1, 3))}
    >>> for i, n in (("1", planes), ("2", planes), ("3", c)):
    ...     sd.update({f"bn{i}.weight": np.ones(n), f"bn{i}.bias": np.zeros(n),
    ...                f"bn{i}.running_mean": np.zeros(n), f"bn{i}.running_var": np.ones(n)})
    >>> block = Bottleneck.from_state_dict(sd)
    >>> block.eca
    ECA(kernel_size=3, padding='zeros', gate='sigmoid', bias=False, dtype=float64)
    >>> block(rng.standard_normal((2, c, 8, 8))).shape
    (2, 16, 8, 8)
    """

    def __init__(self, weights: Mapping[str, np.ndarray], eca: ECA, *, stride: int = 1,
                 eps: float = 1e-5) -> None:
        self.conv1, self.conv2, self.conv3 = (np.asarray(weights[f"conv{i}.weight"])
                                              for i in (1, 2, 3))
        self.bn1, self.bn2, self.bn3 = (_bn_params(weights, f"bn{i}") for i in (1, 2, 3))
        self.downsample = None
        if "downsample.0.weight" in weights:
            self.downsample = (np.asarray(weights["downsample.0.weight"]),
                               _bn_params(weights, "downsample.1"))
        self.eca, self.stride, self.eps = eca, stride, eps

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], *, prefix: str = "",
                        attn_name: str = "eca", stride: int = 1, eps: float = 1e-5,
                        padding: str = "zeros") -> "Bottleneck":
        """The block stored under ``prefix`` (e.g. ``"layer1.0."``) in a state dict of
        NumPy arrays. ``attn_name`` is the ECA module's attribute: ``"eca"`` in ECANet,
        ``"se"`` in timm's ecaresnet. ``padding="circular"`` for timm's CecaModule."""
        weights = {k[len(prefix):]: np.asarray(v) for k, v in state_dict.items()
                   if k.startswith(prefix)}
        eca = load_eca_layers(weights, modules=[attn_name], padding=padding)[attn_name]
        return cls(weights, eca, stride=stride, eps=eps)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The block's output for x of shape (N, C, H, W)."""
        out = relu(batch_norm(conv2d(x, self.conv1), *self.bn1, eps=self.eps))
        out = relu(batch_norm(conv2d(out, self.conv2, stride=self.stride, padding=1),
                              *self.bn2, eps=self.eps))
        out = self.eca(batch_norm(conv2d(out, self.conv3), *self.bn3, eps=self.eps))
        residual = x
        if self.downsample is not None:
            w, bn = self.downsample
            residual = batch_norm(conv2d(x, w, stride=self.stride), *bn, eps=self.eps)
        return relu(out + residual)


def _demo() -> None:
    """ResNet-50's first layer2 block (256 -> 512 channels, stride 2, downsample) with random
    weights and batch-norm statistics, run in NumPy with npeca's ECA and, when torch is
    installed, in PyTorch with the same weights; prints both and their difference."""
    import time

    import npeca

    rng = np.random.default_rng(0)
    inplanes, planes, out = 256, 128, 512
    k = npeca.kernel_size(out)
    sd: dict[str, np.ndarray] = {
        "conv1.weight": rng.standard_normal((planes, inplanes, 1, 1)) / 16,
        "conv2.weight": rng.standard_normal((planes, planes, 3, 3)) / 34,
        "conv3.weight": rng.standard_normal((out, planes, 1, 1)) / 11,
        "downsample.0.weight": rng.standard_normal((out, inplanes, 1, 1)) / 16,
        "eca.conv.weight": rng.standard_normal((1, 1, k)) / np.sqrt(k)}
    for name, n in (("bn1", planes), ("bn2", planes), ("bn3", out), ("downsample.1", out)):
        sd.update({f"{name}.weight": rng.uniform(0.5, 1.5, n), f"{name}.bias":
                   rng.normal(0, 0.1, n), f"{name}.running_mean": rng.normal(0, 0.1, n),
                   f"{name}.running_var": rng.uniform(0.5, 1.5, n)})
    sd = {key: v.astype(np.float32) for key, v in sd.items()}
    x = rng.standard_normal((1, inplanes, 28, 28)).astype(np.float32)
    block = Bottleneck.from_state_dict(sd, stride=2)
    start = time.perf_counter()
    y = block(x)
    took = time.perf_counter() - start
    print(f"ECABottleneck 256 -> 512 channels, stride 2, k = psi(512) = {k}: "
          f"x {x.shape} -> y {y.shape} {y.dtype} in NumPy + npeca, {took * 1e3:.0f} ms")
    print(f"  ECA layer: {block.eca}")
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("  torch is not installed: pip install torch to compare with PyTorch")
        return
    t = {key: torch.from_numpy(v) for key, v in sd.items()}

    def bn(v: Any, name: str) -> Any:
        return F.batch_norm(v, t[f"{name}.running_mean"], t[f"{name}.running_var"],
                            t[f"{name}.weight"], t[f"{name}.bias"], training=False, eps=1e-5)

    with torch.no_grad():
        xt = torch.from_numpy(x)
        h = F.relu(bn(F.conv2d(xt, t["conv1.weight"]), "bn1"))
        h = F.relu(bn(F.conv2d(h, t["conv2.weight"], stride=2, padding=1), "bn2"))
        h = bn(F.conv2d(h, t["conv3.weight"]), "bn3")
        m = h.mean(dim=(2, 3))[:, None, :]  # ECA as ECANet's eca_layer writes it
        a = torch.sigmoid(F.conv1d(m, t["eca.conv.weight"], padding=(k - 1) // 2))
        h = h * a[:, 0, :, None, None]
        res = bn(F.conv2d(xt, t["downsample.0.weight"], stride=2), "downsample.1")
        expected = F.relu(h + res).numpy()
    diff = float(np.abs(y - expected).max())
    print(f"  PyTorch {torch.__version__} on the same weights: max |numpy - torch| = "
          f"{diff:.2e} (largest |y| {float(np.abs(expected).max()):.2f}; float32 rounding)")


if __name__ == "__main__":
    import doctest

    _demo()
    failures, tests = doctest.testmod()
    print(f"docstring examples: {tests - failures} of {tests} passed")
