"""Reading a checkpoint's tensors: safetensors (no torch), PyTorch files through torch's
weights-only loader, npz archives and mappings. Names and shapes first, values on demand, so
that sizes are checked before anything is read."""

from __future__ import annotations

import json
import os
import re
import warnings
from typing import Any, Callable, Mapping

import numpy as np

from .. import _bfloat16 as bfloat16
from .._npy import npy_header
from ..errors import BackendUnavailableError, DTypeError, NpecaError, ParameterError, describe
from ..layer import WEIGHT_KEY

#: File suffixes read with ``torch.load(..., weights_only=True)``.
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")

_WRAPPERS = ("state_dict", "model")  # {"state_dict": ...}: timm / Lightning; {"model": ...}
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel; torch.compile


class CheckpointError(NpecaError, ValueError):
    """A checkpoint cannot be read (unknown format, truncated, corrupt, unsafe to unpickle)
    or holds no ECA layer where one was expected."""


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
    """A BF16 tensor of a (validated) safetensors file: bfloat16 when ml_dtypes is installed,
    else float32 (the same values; NumPy itself has no bfloat16).

    Layout (the safetensors format): 8-byte little-endian header length n, n bytes of JSON
    mapping names to dtype, shape and data offsets relative to the end of the header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        info = json.loads(f.read(n))[name]
        start, stop = info["data_offsets"]
        f.seek(8 + n + start)
        raw = np.frombuffer(f.read(stop - start), dtype="<u2")
    if bfloat16.available():
        return raw.astype(np.uint16).view(bfloat16.dtype()).reshape(info["shape"])
    return bfloat16.bits_to_float32(raw).reshape(info["shape"])


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
    # the unpickler fails on junk with any of many exception types
    except Exception as exc:  # noqa: BLE001
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
    # any failure reading a hostile archive: corrupt, encrypted...
    except Exception as exc:  # noqa: BLE001
        raise failed(exc) from None

    def value(name: str) -> np.ndarray:
        try:
            with np.load(path, allow_pickle=False) as npz:
                return npz[name]
        except Exception as exc:  # noqa: BLE001 - as above, for the member's data
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


