"""Load the ECA layers of a trained network from its checkpoint, without running the network.

:func:`load_eca_layers` reads a ``.safetensors`` file (with the ``safetensors`` package, no
torch), a PyTorch ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` file (with torch's weights-only
loader, which refuses arbitrary pickled objects), a ``.npz`` archive, or a mapping of arrays
or tensors, finds every ECA convolution in it and returns one ready :class:`~npeca.layer.ECA`
per module, with k taken from the stored weight's shape (never recomputed from C: the
official ECANet models hand-pick k per stage).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

from .._validate import check_parameter_size
from ..errors import NpecaError, ParameterError, describe
from ..layer import BIAS_KEY, ECA, WEIGHT_KEY
from ._formats import TORCH_SUFFIXES, CheckpointError, _open, _Tensors
from ._recognise import DEFAULT_NAMES, _find_modules, _module_keys, _prefix

__all__ = ["CheckpointError", "load_eca_layers", "DEFAULT_NAMES", "TORCH_SUFFIXES"]

MAX_TOTAL_ELEMENTS = 1 << 24  # all ECA parameters of one checkpoint together

CheckpointError.__module__ = __name__  # its public home: npeca.checkpoint.CheckpointError


def load_eca_layers(
    source: Any,
    *,
    padding: str | None = "zeros",
    gate: str = "sigmoid",
    dtype: Any = None,
    channel_axis: int = 1,
    backend: str | None = None,
    modules: Iterable[str] | None = None,
    names: Iterable[str] = DEFAULT_NAMES,
    key: str | None = None,
) -> dict[str, ECA]:
    """Every ECA layer of a checkpoint, ready to run: module path -> :class:`~npeca.layer.ECA`.

    Parameters
    ----------
    source : str, os.PathLike or mapping
        A ``.safetensors`` file (needs the ``safetensors`` package, not torch), a PyTorch
        file ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` (needs torch; read with
        ``weights_only=True``), a ``.npz`` archive, or a mapping of names to NumPy arrays or
        torch tensors. A checkpoint wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``
        is unwrapped, and a ``module.`` prefix on every key (DataParallel) is dropped.
    padding : {"zeros", "circular"} or None
        The convolution's padding, which a checkpoint does not record: "zeros" (None is the
        same) for the official ECANet and timm's ``EcaModule``, "circular" for timm's
        ``CecaModule`` (``attn_layer='ceca'``).
    gate : {"sigmoid", "hard_sigmoid"}
        The gate, also not recorded in checkpoints.
    dtype : dtype, optional
        Parameter dtype of the layers (float16, float32, float64 or ``"bfloat16"``);
        default: as stored. A bfloat16 checkpoint stays bfloat16 when ml_dtypes is
        installed (``pip install 'npeca[bfloat16]'``) and becomes float32 otherwise (the
        same values: every bfloat16 is a float32).
    channel_axis : {1, -1}
        Channel axis of the inputs the layers will see.
    backend : str, optional
        Passed on to every layer.
    modules : iterable of str, optional
        Load exactly these module paths (each must hold ``<path>.conv.weight``) instead of
        searching.
    names : iterable of str
        When searching: a ``<path>.conv.weight`` whose module's own name is one of these is
        ECA and must have an ECA shape; any other ``<path>.conv.weight`` of shape (1, 1, k)
        is taken too (e.g. ECANet's MobileNetV2, ``features.3.conv.4.conv.weight``).
        Default :data:`DEFAULT_NAMES`: ``eca``, ``se``, ``attn``, ``attn_last``.
    key : str, optional
        Take the state dict from this top-level key of a PyTorch checkpoint (e.g.
        ``"state_dict_ema"`` in timm's training checkpoints).

    Returns
    -------
    dict
        Module path (e.g. ``"layer1.0.eca"``, ``"stages.0.0.attn_last"``; ``""`` for a
        checkpoint of a lone ECA module) -> ECA layer, in checkpoint order (natural order of
        names for safetensors files). k comes from each weight's shape, a per-channel
        (C, 1, k) weight gives a per-channel layer for C channels, and a ``conv.bias`` of
        shape (1,) gives a layer with bias. Shared-kernel layers work for any C.

    Raises
    ------
    CheckpointError
        (a ``ValueError``) an unknown extension, a truncated or corrupt file, a pickle with
        objects other than tensors, a source with no ECA convolution, or a module in
        ``modules`` that the checkpoint lacks.
    ShapeError, DTypeError, ParameterError
        An ECA weight that is not an ECA kernel (even k, wrong shape, a non-float dtype) or
        an ECA module with extra parameters; the message names the key and the shape.
    BackendUnavailableError
        (an ``ImportError``) safetensors or torch is needed for the file and missing.
    FileNotFoundError
        No file at ``source``.

    Examples
    --------
    A state dict as timm's ecaresnet stores it (``*.se.conv.weight``), here as NumPy arrays:

    >>> import numpy as np
    >>> from npeca.checkpoint import load_eca_layers
    >>> rng = np.random.default_rng(0)
    >>> sd = {"layer1.0.conv1.weight": rng.standard_normal((64, 64, 1, 1)),
    ...       "layer1.0.se.conv.weight": rng.standard_normal((1, 1, 3)),
    ...       "layer2.0.se.conv.weight": rng.standard_normal((1, 1, 5))}
    >>> layers = load_eca_layers(sd)
    >>> layers
    {'layer1.0.se': ECA(kernel_size=3, ...), 'layer2.0.se': ECA(kernel_size=5, ...)}
    >>> layers["layer2.0.se"](rng.standard_normal((1, 512, 4, 4))).shape
    (1, 512, 4, 4)
    """
    padding = "zeros" if padding is None else padding
    names, modules = _selection_arguments(names, modules, key)
    # check the layer options before reading anything: a typo is not the checkpoint's fault
    ECA(kernel_size=1, padding=padding, gate=gate, channel_axis=channel_axis,
        dtype=np.float32 if dtype is None else dtype, backend=backend, seed=0)
    options = {"padding": padding, "gate": gate, "channel_axis": channel_axis, "dtype": dtype,
               "backend": backend}
    stack: list[Any] = []
    try:
        tensors = _open(source, key, stack)
        found = _named_modules(tensors, modules, names) if modules is not None else \
            _find_modules(tensors, names)
        layers: dict[str, ECA] = {}
        loaded = 0
        for module, by_name in found:
            keys = _module_keys(tensors, module)
            prefix = _prefix(module)
            sub_names = [k[len(prefix):] for k in keys]
            if not by_name and any(n not in (WEIGHT_KEY, BIAS_KEY) for n in sub_names):
                continue  # a (1, 1, k) conv inside a module with other parameters: not ECA
            loaded += _checked_size(tensors, keys, loaded)
            sub = {n: tensors.value(k) for n, k in zip(sub_names, keys)}
            layers[module] = _layer(sub, tensors, module, by_name and modules is None,
                                    isinstance(source, Mapping), options)
        if not layers:
            raise _nothing_found(tensors, names)
        return layers
    finally:
        for handle in stack:
            handle.__exit__(None, None, None)


def _selection_arguments(names: Any, modules: Any, key: Any
                         ) -> tuple[tuple[str, ...], list[str] | None]:
    """``names`` as a tuple and ``modules`` as a list (or None), with clear errors."""
    if isinstance(names, str):
        names = (names,)
    if isinstance(modules, str):
        modules = [modules]
    if names is None:
        raise ParameterError("names must be a string or a list of strings (the default "
                             "DEFAULT_NAMES searches the usual module names); got None")
    for label, value in (("names", names), ("modules", modules)):
        if value is not None and not isinstance(value, (list, tuple, set, frozenset)):
            raise ParameterError(f"{label} must be a string or a list of strings; got "
                                 f"{type(value).__name__}")
    if key is not None and not isinstance(key, str):
        raise ParameterError(f"key must be a string naming the state dict inside the "
                             f"checkpoint; got {type(key).__name__}")
    names = tuple(names)
    if not all(isinstance(n, str) and n for n in names):
        raise ParameterError(f"names must be non-empty strings; got {describe(names)}")
    return names, None if modules is None else list(modules)


def _named_modules(tensors: _Tensors, modules: list[str], names: tuple[str, ...]
                   ) -> list[tuple[str, bool]]:
    """The modules the caller listed, each of which must hold ``<module>.conv.weight``."""
    found = []
    for module in modules:
        module = str(module).rstrip(".")
        if _prefix(module) + WEIGHT_KEY not in tensors.names:
            have = [m for m, _ in _find_modules(tensors, names)]
            raise CheckpointError(
                f"{tensors.origin} has no key {_prefix(module) + WEIGHT_KEY!r} for "
                f"module {describe(module)}; ECA modules found there: "
                f"{', '.join(map(repr, have)) or 'none'}")
        found.append((module, True))
    return found


def _checked_size(tensors: _Tensors, keys: list[str], loaded: int) -> int:
    """The number of values in ``keys``, checked before any is read (a tiny file may claim
    gigabytes), also against the running total of the checkpoint."""
    size = 0
    for k in keys:
        check_parameter_size(tensors.shape(k), k)
        size += math.prod(tensors.shape(k))
    if loaded + size > MAX_TOTAL_ELEMENTS:
        raise CheckpointError(
            f"{tensors.origin}: the ECA layers found so far hold {loaded + size} values, more "
            f"than {MAX_TOTAL_ELEMENTS}; no network's ECA layers are that large")
    return size


def _layer(sub: dict[str, Any], tensors: _Tensors, module: str, hint_names: bool,
           from_mapping: bool, options: dict[str, Any]) -> ECA:
    """The ECA layer of one module's state dict; errors name the file and, for a module
    recognised by its name only, how to leave it out."""
    prefix = _prefix(module)
    try:
        return ECA.from_state_dict(sub, name=prefix, **options)
    except NpecaError as exc:
        hint = ""
        if hint_names and len(tensors.shape(prefix + WEIGHT_KEY)) != 3:
            hint = (f" If {describe(module)} is not an ECA module, leave "
                    f"{module.rsplit('.', 1)[-1]!r} out of names= or list the ECA "
                    f"modules with modules=[...]")
        where = "" if from_mapping else f"{tensors.origin}: "
        stop = "." if hint and not str(exc).endswith(".") else ""
        raise type(exc)(f"{where}{exc}{stop}{hint}") from None


def _nothing_found(tensors: _Tensors, names: tuple[str, ...]) -> CheckpointError:
    more = ", ..." if len(tensors.names) > 5 else ""
    return CheckpointError(
        f"no ECA convolution in {tensors.origin}: looked for '<module>.conv.weight' "
        f"under a module named {', '.join(names)}, or of shape (1, 1, k) in a module "
        f"without other parameters; it has {len(tensors.names)} tensor(s) "
        f"({', '.join(repr(k) for k in tensors.names[:5])}{more}). Pass "
        f"modules=[...] to name the ECA modules")
