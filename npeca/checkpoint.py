"""Load the ECA layers of a trained network from its checkpoint, without running the network.

:func:`load_eca_layers` reads a ``.safetensors`` file (with the ``safetensors`` package, no
torch), a PyTorch ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` file (with torch's weights-only
loader, which refuses arbitrary pickled objects), a ``.npz`` archive, or a mapping of arrays
or tensors, finds every ECA convolution in it and returns one ready :class:`~npeca.layer.ECA`
per module, with k taken from the stored weight's shape (never recomputed from C: the
official ECANet models hand-pick k per stage).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ._npy import npy_header
from ._validate import check_parameter_size
from .errors import BackendUnavailableError, DTypeError, NpecaError, ParameterError, describe
from .layer import BIAS_KEY, ECA, WEIGHT_KEY

__all__ = ["CheckpointError", "load_eca_layers", "DEFAULT_NAMES", "TORCH_SUFFIXES"]

#: Attribute names under which known networks keep their ECA module: ``eca`` (official
#: ECANet ResNets), ``se`` (timm's ecaresnet*), ``attn_last`` (timm's eca_nfnet_* and
#: nf_ecaresnet*), ``attn`` (timm's byobnet models such as eca_resnet33ts).
DEFAULT_NAMES = ("eca", "se", "attn", "attn_last")

#: File suffixes read with ``torch.load(..., weights_only=True)``.
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")

MAX_TOTAL_ELEMENTS = 1 << 24  # all ECA parameters of one checkpoint together
_WRAPPERS = ("state_dict", "model")  # {"state_dict": ...}: timm / Lightning; {"model": ...}
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel; torch.compile
_SUFFIX = "." + WEIGHT_KEY


class CheckpointError(NpecaError, ValueError):
    """A checkpoint cannot be read (unknown format, truncated, corrupt, unsafe to unpickle)
    or holds no ECA layer where one was expected."""


# --- reading ------------------------------------------------------------------------------

class _Tensors:
    """Names, shapes and values of a checkpoint's tensors; values are read only on demand."""

    def __init__(self, names: list[str], shape: Callable[[str], tuple[int, ...]],
                 value: Callable[[str], Any], origin: str) -> None:
        self.names, self.shape, self.value, self.origin = names, shape, value, origin


def _mapping_tensors(state: Mapping[str, Any], origin: str) -> _Tensors:
    def shape(name: str) -> tuple[int, ...]:
        v = state[name]
        s = getattr(v, "shape", None)
        if s is not None:
            try:
                return tuple(int(d) for d in s)
            except (TypeError, ValueError):
                raise CheckpointError(f"{name} in {origin} has a shape attribute that is not "
                                      f"a tuple of integers ({describe(s)})") from None
        try:
            return np.shape(v)
        except ValueError as exc:  # ragged nested lists
            raise CheckpointError(f"{name} in {origin} is not a rectangular array ({exc})") \
                from None
    return _Tensors(list(state), shape, lambda name: state[name], origin)


def _natural_key(name: str) -> list[Any]:
    """Sort ``layer1.10`` after ``layer1.9``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def _bf16_from_file(path: str, name: str) -> np.ndarray:
    """A BF16 tensor of a (validated) safetensors file as float32: NumPy has no bfloat16.

    Layout (the safetensors format): 8-byte little-endian header length n, n bytes of JSON
    mapping names to dtype, shape and data offsets relative to the end of the header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        info = json.loads(f.read(n))[name]
        start, stop = info["data_offsets"]
        f.seek(8 + n + start)
        raw = np.frombuffer(f.read(stop - start), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def _read_safetensors(path: str, stack: list[Any]) -> _Tensors:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise BackendUnavailableError(
            f"reading {path} needs the safetensors package (torch is not needed): "
            f"pip install safetensors") from None
    try:
        handle = safe_open(path, framework="numpy")
        f = handle.__enter__()
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file; it may be "
                              f"truncated or corrupt ({exc})") from None
    stack.append(handle)

    def value(name: str) -> Any:
        dtype = f.get_slice(name).get_dtype()
        if dtype == "BF16":
            return _bf16_from_file(path, name)
        try:
            return f.get_tensor(name)
        except (TypeError, AttributeError) as exc:  # a dtype NumPy lacks, e.g. F8_E4M3
            raise DTypeError(f"{name} in {path} has safetensors dtype {dtype}, which NumPy "
                             f"cannot represent ({exc})") from None

    names = sorted(f.keys(), key=_natural_key)
    return _Tensors(names, lambda name: tuple(f.get_slice(name).get_shape()), value, path)


def _read_torch(path: str) -> Any:
    try:
        import torch
    except ImportError:
        raise BackendUnavailableError(
            f"reading the PyTorch checkpoint {path} needs torch: pip install torch (or "
            f"'npeca[torch]'). To load without torch, convert it once to safetensors where "
            f"torch is available: safetensors.torch.save_file(state_dict, 'model.safetensors')"
        ) from None
    import pickle
    import zipfile

    if zipfile.is_zipfile(path):  # torch.save's format: members stored, never compressed
        try:
            with zipfile.ZipFile(path) as archive:
                packed = [i.filename for i in archive.infolist()
                          if i.compress_type != zipfile.ZIP_STORED]
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(f"could not read {path} as a PyTorch checkpoint; it may be "
                                  f"truncated or corrupt ({exc})") from None
        if packed:
            raise CheckpointError(f"{path} holds compressed members ({packed[0]}, ...); "
                                  f"torch.save stores them uncompressed, and a compressed one "
                                  f"could expand to any size: refusing to read it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns before it fails on non-torch files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"(?i)unsupported global:? (?:GLOBAL )?([\w.]+)", text)
        if found or "weights only load failed" in text.lower():
            what = f"a pickled {found.group(1)}" if found else "pickled objects"
            raise CheckpointError(
                f"{path} contains {what} (not a tensor), which the safe weights-only loader "
                f"refuses: unpickling it could run arbitrary code, and nothing was run. If "
                f"you trust the file, load it once with weights_only=False and save only the "
                f"state dict (names to tensors), e.g. torch.save(model.state_dict(), "
                f"'weights.pth'), or convert it to safetensors") from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint, or it is corrupt (the "
                              f"weights-only unpickler stopped at an unsupported opcode)"
                              ) from None
    except Exception as exc:  # the unpickler fails on junk with any of many exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"could not read {path} as a PyTorch checkpoint; it may be "
                              f"truncated or corrupt ({first})") from None


def _read_npz(path: str) -> _Tensors:
    """A .npz archive's arrays, their shapes read from the .npy headers and each array read
    only when asked for (after its shape was checked), never unpickled."""
    import zipfile

    def failed(exc: BaseException) -> CheckpointError:
        return CheckpointError(f"could not read {path} as a .npz archive of arrays; it may be "
                               f"truncated, corrupt or hold pickled objects ({exc})")

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":  # a lone .npy behind a .npz name
                raise CheckpointError(f"{path} is a single .npy array, not a .npz archive of "
                                      f"named arrays") from None
        raise failed(ValueError("not a zip archive")) from None
    except OSError as exc:
        raise failed(exc) from None
    shapes = {}
    try:
        with archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    shape, dtype = npy_header(member)
                if dtype.hasobject:
                    raise failed(ValueError(f"{info.filename} holds pickled objects"))
                shapes[info.filename[:-4]] = shape
    except CheckpointError:
        raise
    except Exception as exc:  # any failure reading a hostile archive: corrupt, encrypted...
        raise failed(exc) from None

    def value(name: str) -> np.ndarray:
        try:
            with np.load(path, allow_pickle=False) as npz:
                return npz[name]
        except Exception as exc:  # as above, for the member's data
            raise failed(exc) from None

    return _Tensors(list(shapes), lambda name: shapes[name], value, path)


def _unwrap(obj: Any, key: str | None, origin: str) -> Mapping[str, Any]:
    """The state dict inside a checkpoint: ``obj[key]``, or the first of
    ``obj["state_dict"]`` / ``obj["model"]`` that is a mapping, or ``obj`` itself."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{origin} holds a {type(obj).__name__}, not a state dict (a "
                              f"mapping from parameter names to tensors)")
    if key is not None:
        inner = obj.get(key)
        if not isinstance(inner, Mapping):
            top = ", ".join(repr(k) for k in list(obj)[:10])
            raise CheckpointError(f"{origin} has no mapping under key {describe(key)}; its "
                                  f"top-level "
                                  f"keys are {top}")
        return inner
    for wrapper in _WRAPPERS:
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            return inner
    return obj


def _strip_prefixes(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """Drop a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix that every
    key carries."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _open(source: Any, key: str | None, stack: list[Any]) -> _Tensors:
    if isinstance(source, Mapping):
        origin = "the state dict"
        state = _unwrap(source, key, origin)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no checkpoint file at {describe(path)}")
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".safetensors":
            if key is not None:
                raise ParameterError("key= selects a state dict inside a PyTorch checkpoint; "
                                     "a safetensors file holds one flat set of tensors")
            return _read_safetensors(path, stack)
        if suffix in TORCH_SUFFIXES:
            state = _unwrap(_read_torch(path), key, path)
        elif suffix == ".npz":
            if key is not None:
                raise ParameterError("key= selects a state dict inside a PyTorch checkpoint; "
                                     "a .npz archive holds one flat set of arrays")
            tensors = _read_npz(path)
            _check_keys(tensors.names, path)
            return tensors
        else:
            raise CheckpointError(
                f"unknown checkpoint format {suffix or '(no extension)'!r} for {path}; "
                f"supported: .safetensors, {', '.join(TORCH_SUFFIXES)} (PyTorch) and .npz")
        origin = path
    else:
        raise DTypeError(f"load_eca_layers takes a file path or a mapping of names to arrays; "
                         f"got {type(source).__name__}")
    _check_keys(list(state), origin)
    return _mapping_tensors(_strip_prefixes(state), origin)


def _check_keys(keys: list[Any], origin: str) -> None:
    bad = [k for k in keys if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"{origin}: state dict keys must be strings; got "
                              f"{describe(bad[0])}")
    nameless = [k for k in keys if k.startswith("." + WEIGHT_KEY)]
    if nameless:
        raise CheckpointError(f"{origin}: key {describe(nameless[0])} has an empty module name "
                              f"before {'.' + WEIGHT_KEY!r}; a lone ECA module's weight is "
                              f"{WEIGHT_KEY!r}, a nested one's '<module>.{WEIGHT_KEY}'")


# --- finding the ECA modules ----------------------------------------------------------------

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
        Parameter dtype of the layers; default: as stored (bfloat16 becomes float32).
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
    # check the layer options before reading anything: a typo is not the checkpoint's fault
    ECA(kernel_size=1, padding=padding, gate=gate, channel_axis=channel_axis,
        dtype=np.float32 if dtype is None else dtype, backend=backend, seed=0)
    stack: list[Any] = []
    try:
        tensors = _open(source, key, stack)
        if modules is not None:
            if isinstance(modules, str):
                modules = [modules]
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
        else:
            found = _find_modules(tensors, names)
        layers: dict[str, ECA] = {}
        loaded = 0
        for module, by_name in found:
            keys = _module_keys(tensors, module)
            prefix = _prefix(module)
            sub_names = [k[len(prefix):] for k in keys]
            if not by_name and any(n not in (WEIGHT_KEY, BIAS_KEY) for n in sub_names):
                continue  # a (1, 1, k) conv inside a module with other parameters: not ECA
            for k in keys:  # before any value is read: a tiny file may claim gigabytes
                check_parameter_size(tensors.shape(k), k)
                loaded += math.prod(tensors.shape(k))
            if loaded > MAX_TOTAL_ELEMENTS:
                raise CheckpointError(
                    f"{tensors.origin}: the ECA layers found so far hold {loaded} values, more "
                    f"than {MAX_TOTAL_ELEMENTS}; no network's ECA layers are that large")
            sub = {n: tensors.value(k) for n, k in zip(sub_names, keys)}
            try:
                layers[module] = ECA.from_state_dict(
                    sub, padding=padding, gate=gate, channel_axis=channel_axis, dtype=dtype,
                    backend=backend, name=prefix)
            except NpecaError as exc:
                hint = ""
                if (by_name and modules is None
                        and len(tensors.shape(prefix + WEIGHT_KEY)) != 3):
                    hint = (f" If {describe(module)} is not an ECA module, leave "
                            f"{module.rsplit('.', 1)[-1]!r} out of names= or list the ECA "
                            f"modules with modules=[...]")
                where = "" if isinstance(source, Mapping) else f"{tensors.origin}: "
                stop = "." if hint and not str(exc).endswith(".") else ""
                raise type(exc)(f"{where}{exc}{stop}{hint}") from None
        if not layers:
            more = ", ..." if len(tensors.names) > 5 else ""
            raise CheckpointError(
                f"no ECA convolution in {tensors.origin}: looked for '<module>.conv.weight' "
                f"under a module named {', '.join(names)}, or of shape (1, 1, k) in a module "
                f"without other parameters; it has {len(tensors.names)} tensor(s) "
                f"({', '.join(repr(k) for k in tensors.names[:5])}{more}). Pass "
                f"modules=[...] to name the ECA modules")
        return layers
    finally:
        for handle in stack:
            handle.__exit__(None, None, None)
