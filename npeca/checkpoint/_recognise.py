"""Recognising ECA modules among a checkpoint's tensors: by module name (the official
ECANet's ``eca``, timm's ``se``, ``attn``, ``attn_last``) or by shape, (1, 1, k) alone in
its module."""

from __future__ import annotations

from ..layer import BIAS_KEY, WEIGHT_KEY
from ._formats import _Tensors

#: Attribute names under which known networks keep their ECA module: ``eca`` (official
#: ECANet ResNets), ``se`` (timm's ecaresnet*), ``attn_last`` (timm's eca_nfnet_* and
#: nf_ecaresnet*), ``attn`` (timm's byobnet models such as eca_resnet33ts).
DEFAULT_NAMES = ("eca", "se", "attn", "attn_last")

_SUFFIX = "." + WEIGHT_KEY


def _prefix(module: str) -> str:
    return module + "." if module else ""


def _is_eca_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[0] == 1 and shape[1] == 1


def _find_modules(tensors: _Tensors, names: tuple[str, ...]) -> list[tuple[str, bool]]:
    """``(module path, matched by name)`` for every ECA convolution, in checkpoint order."""
    found = []
    for key in tensors.names:
        if key != WEIGHT_KEY and not key.endswith(_SUFFIX):
            continue
        module = key[: -len(_SUFFIX)] if key != WEIGHT_KEY else ""
        by_name = module.rsplit(".", 1)[-1] in names if module else False
        if by_name or _is_eca_shape(tensors.shape(key)):
            found.append((module, by_name))
    return found


def _module_keys(tensors: _Tensors, module: str) -> list[str]:
    """The keys that belong to ``module`` (for the top level only its conv's)."""
    if not module:
        return [k for k in (WEIGHT_KEY, BIAS_KEY) if k in tensors.names]
    prefix = _prefix(module)
    return [k for k in tensors.names if k.startswith(prefix)]


