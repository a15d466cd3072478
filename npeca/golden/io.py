"""Writing and reading golden suites: atomic directories, SHA-256 checked, never unpickled.

A suite is a directory holding ``manifest.json`` and ``cases/<name>.<ext>`` for each case and
format: ``.npz`` (NumPy's zip of ``.npy`` files, written with fixed timestamps so that the
bytes are reproducible), ``.safetensors`` and, for small cases, ``.json`` with every float
written as a hex string (``float.hex``). The format is specified in docs/golden.md.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .._bfloat16 import bits_to_float32
from .._npy import npy_header
from ..errors import BackendUnavailableError, NpecaError, ParameterError
from ._atomic import (_identity, _signals_held, _signals_unwind, refuse_cwd,
                      replace_directory)
from .dtypes import BFLOAT16, carrier, round_float64
from .schema import (ARRAY_ORDER, BOUND_PREFIX, FORMATS, SCHEMA, SCHEMA_VERSION,
                     GoldenIntegrityError, check_manifest, digest)

JSON_MAX_ELEMENTS = 1024  # cases with more elements in x skip the JSON format
MANIFEST_MAX_BYTES = 64 * 2 ** 20
CONTRACT = ("per output, |actual - expected| <= bound_<output> element by element (NaN and "
            "Inf must match exactly); bounds from a rounding-error analysis of a backend that "
            "stores every tensor in the case's dtype and accumulates in that dtype (float32 "
            "for float16 and bfloat16 cases), in any summation order; see docs/golden.md")


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise GoldenIntegrityError(f"the key {str(dup)[:40]!r} appears twice in one object; "
                                   f"readers would disagree on its value")
    return dict(pairs)


def load_json(data: bytes | str) -> Any:
    """JSON as the suite's readers must see it: duplicate keys refused, depth limited."""
    return json.loads(data, object_pairs_hook=_no_duplicates)


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


# --- encoders ------------------------------------------------------------------------------

def _specs(arrays: Mapping[str, np.ndarray], specs: Mapping[str, dict] | None
           ) -> Mapping[str, dict]:
    """The manifest's array specs, or (None) each array's own dtype name."""
    return specs if specs is not None else {k: {"dtype": str(v.dtype)}
                                            for k, v in arrays.items()}


def _stored(arr: np.ndarray, spec: Mapping) -> np.ndarray:
    """An array as a file stores it: bfloat16 carriers as their uint16 bit patterns."""
    if spec["dtype"] == BFLOAT16:
        return (np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32) >> 16
                ).astype("<u2")
    return np.ascontiguousarray(arr)


def _npz_bytes(arrays: Mapping[str, np.ndarray], specs: Mapping[str, dict] | None = None
               ) -> bytes:
    specs = _specs(arrays, specs)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member = io.BytesIO()
            np.lib.format.write_array(member, _stored(arr, specs[name]), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


_SAFETENSORS_DTYPES = {"float16": "F16", "float32": "F32", "float64": "F64", BFLOAT16: "BF16"}


def _safetensors_bytes(arrays: Mapping[str, np.ndarray], specs: Mapping[str, dict] | None = None
                       ) -> bytes:
    specs = _specs(arrays, specs)
    if any(spec["dtype"] == BFLOAT16 for spec in specs.values()):
        return _safetensors_written(arrays, specs)
    try:
        from safetensors.numpy import save
    except ImportError:
        raise BackendUnavailableError(
            "the safetensors format needs the safetensors package: pip install safetensors "
            "(or pip install 'npeca[golden]')") from None
    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                metadata={"format": SCHEMA})


def _safetensors_written(arrays: Mapping[str, np.ndarray], specs: Mapping[str, dict]) -> bytes:
    """The safetensors layout written out here, for cases with BF16 tensors (NumPy cannot
    hand the safetensors package a bfloat16 array): an 8-byte little-endian header length,
    the JSON header padded with spaces to a multiple of 8, then the tensors' bytes in order,
    little-endian, without gaps."""
    header: dict[str, Any] = {"__metadata__": {"format": SCHEMA}}
    blobs, at = [], 0
    for name, arr in arrays.items():
        stored = _stored(arr, specs[name])
        data = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[specs[name]["dtype"]],
                        "shape": list(arr.shape), "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def _json_bytes(arrays: Mapping[str, np.ndarray], specs: Mapping[str, dict] | None = None
                ) -> bytes:
    specs = _specs(arrays, specs)
    doc = {"format": f"{SCHEMA}-json", "arrays": {
        name: {"dtype": specs[name]["dtype"], "shape": list(arr.shape),
               "data": [float(v).hex() for v in arr.reshape(-1)]}
        for name, arr in arrays.items()}}
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


ENCODERS: dict[str, Callable[..., bytes]] = {
    "npz": _npz_bytes, "safetensors": _safetensors_bytes, "json": _json_bytes}


# --- decoders: each checks names, shapes and dtypes against the manifest before allocating --

def _from_npz(data: bytes, specs: Mapping[str, dict]) -> dict[str, np.ndarray]:
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
        if names != sorted(f"{k}.npy" for k in specs):
            raise GoldenIntegrityError(f"members {names} do not match the manifest's arrays")
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise GoldenIntegrityError(f"{info.filename} is compressed; a suite's npz "
                                           f"members are stored (docs/golden.md)")
            key = info.filename[:-4]
            spec = specs[key]
            dt = np.dtype("<u2") if spec["dtype"] == BFLOAT16 else np.dtype(spec["dtype"])
            if info.file_size > math.prod(spec["shape"]) * dt.itemsize + 2 ** 16:
                raise GoldenIntegrityError(f"{info.filename} is larger than its array")
            with zf.open(info) as member:
                try:
                    shape, dtype = npy_header(member)
                except ValueError as exc:
                    raise GoldenIntegrityError(f"{info.filename}: {exc}") from None
            if dtype.hasobject:
                raise GoldenIntegrityError(f"{info.filename}: refusing a pickle-bearing "
                                           f"(object) array")
            if list(shape) != spec["shape"] or dtype != dt:
                raise GoldenIntegrityError(f"{info.filename} holds {dtype}{list(shape)}, the "
                                           f"manifest says {dt}{spec['shape']}")
            with zf.open(info) as member:
                out[key] = _carried(np.lib.format.read_array(member, allow_pickle=False),
                                    spec)
    return out


def _carried(arr: np.ndarray, spec: Mapping) -> np.ndarray:
    """A stored array in memory: bfloat16 bit patterns as float32 carriers."""
    return bits_to_float32(arr) if spec["dtype"] == BFLOAT16 else arr


def _from_safetensors(data: bytes, specs: Mapping[str, dict]) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load
    except ImportError:
        raise BackendUnavailableError(
            "reading .safetensors needs the safetensors package: pip install safetensors") \
            from None
    if any(spec["dtype"] == BFLOAT16 for spec in specs.values()):
        return _from_safetensors_bf16(data, specs)
    return load(data)  # offsets are checked against the buffer: no allocation beyond it


def _from_safetensors_bf16(data: bytes, specs: Mapping[str, dict]) -> dict[str, np.ndarray]:
    """A case with BF16 tensors, parsed by the safetensors package (which checks the header
    and the offsets against the buffer), each tensor checked against the manifest."""
    from safetensors import deserialize
    names = {"F16": "float16", "F32": "float32", "F64": "float64", "BF16": BFLOAT16}
    out = {}
    for key, info in deserialize(bytes(data)):
        spec = specs.get(key)
        label = str(info["dtype"])  # "BF16" (safetensors 0.8) or "bfloat16" (older)
        dtype = names.get(label.upper(), label.lower())
        if spec is None or dtype != spec["dtype"] or list(info["shape"]) != spec["shape"]:
            raise GoldenIntegrityError(f"tensor {str(key)[:40]!r} ({dtype}{info['shape']}) "
                                       f"does not match the manifest")
        raw = np.dtype("<u2") if dtype == BFLOAT16 else np.dtype(dtype).newbyteorder("<")
        arr = np.frombuffer(bytes(info["data"]), dtype=raw).astype(raw.newbyteorder("="))
        out[key] = _carried(arr.reshape(spec["shape"]), spec)
    return out


def _from_json(data: bytes, specs: Mapping[str, dict]) -> dict[str, np.ndarray]:
    doc = load_json(data)
    arrays = doc.get("arrays") if isinstance(doc, dict) else None
    if not isinstance(arrays, dict) or sorted(arrays) != sorted(specs):
        raise GoldenIntegrityError("its arrays do not match the manifest's")
    out = {}
    for name, spec in specs.items():
        values = arrays[name].get("data") if isinstance(arrays[name], dict) else None
        if not isinstance(values, list) or len(values) != math.prod(spec["shape"]) or \
                not all(isinstance(v, str) for v in values):
            raise GoldenIntegrityError(f"{name}: data must list {math.prod(spec['shape'])} "
                                       f"hex strings")
        wide = np.array([float.fromhex(v) for v in values], dtype=np.float64)
        arr = round_float64(wide, spec["dtype"]).reshape(spec["shape"])
        if not np.array_equal(arr.astype(np.float64).reshape(-1), wide, equal_nan=True):
            raise GoldenIntegrityError(f"{name}: a value is not representable in "
                                       f"{spec['dtype']}")
        out[name] = arr
    return out


DECODERS = {"npz": _from_npz, "safetensors": _from_safetensors, "json": _from_json}


# --- writing a suite: claim the name, build beside it, swap in without a window -------------

def _is_suite(path: Path) -> bool:
    """Whether ``path`` is a real directory holding a golden suite and nothing else:
    ``manifest.json`` of this schema, ``cases/`` with exactly the files the manifest lists,
    every hash right. Only such a directory is ever replaced: a copied manifest beside other
    files, or files added to a suite, make it something else."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode) or \
                sorted(os.listdir(path)) != ["cases", "manifest.json"] or \
                not stat.S_ISDIR(os.lstat(path / "cases").st_mode):
            return False
        suite = Suite(path)
        listed = {rel.split("/", 1)[1] for rel in suite.manifest["files"]}
        return set(os.listdir(path / "cases")) == listed
    except (OSError, NpecaError):
        return False


def write_suite(out_dir: str | os.PathLike, manifest: dict[str, Any],
                case_arrays: Callable[[], Any], formats: tuple[str, ...], *,
                force: bool = False) -> Path:
    """Write a suite into a temporary directory beside ``out_dir`` and rename it into place.

    Without ``force``, ``out_dir`` is claimed at the start by creating it empty (of two
    concurrent runs exactly one succeeds) and the finished suite replaces that empty
    directory only if it is still empty. With ``force``, an existing ``out_dir`` must be an
    earlier golden suite; at the end it is moved aside and checked again there (it must
    still be that same directory, still a suite) before the new suite takes its place, so
    nothing else is ever deleted. An error, Ctrl-C, SIGTERM or SIGHUP removes the temporary
    directory and the claim, and leaves everything else as it was.
    """
    out = Path(out_dir).absolute()
    previous = _identity(out)
    claimed = None
    if previous is not None:
        if not force:
            raise ParameterError(f"{out} already exists; remove it or pass --force to "
                                 f"replace an earlier golden suite there")
        _check_replaceable(out)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(out)
        except FileExistsError:
            raise ParameterError(f"{out} appeared just now (another run writing there?); "
                                 f"nothing was written") from None
        claimed = _identity(out)
    with _signals_unwind():
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; a suite is as readable as its files
            _write_into(tmp, manifest, case_arrays, formats)
            with _signals_held():
                if claimed is not None:
                    _replace_claim(tmp, out)
                else:
                    replace_directory(tmp, out, previous, _is_suite, "the golden suite")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if claimed is not None and _identity(out) == claimed:
                with contextlib.suppress(OSError):
                    os.rmdir(out)  # only while it is still our empty claim
            raise
    return out


def _write_into(tmp: Path, manifest: dict[str, Any], case_arrays: Callable[[], Any],
                formats: tuple[str, ...]) -> None:
    (tmp / "cases").mkdir()
    hashes: dict[str, str] = {}
    for entry, arrays in case_arrays():
        ordered = {k: arrays[k] for k in ARRAY_ORDER if k in arrays}
        entry["files"] = {}
        for fmt in formats:
            if fmt == "json" and arrays["x"].size > JSON_MAX_ELEMENTS:
                continue
            rel = f"cases/{entry['name']}.{fmt}"
            data = ENCODERS[fmt](ordered, entry["arrays"])
            (tmp / rel).write_bytes(data)
            entry["files"][fmt] = rel
            hashes[rel] = sha256(data)
        manifest["cases"].append(entry)
    manifest["files"] = dict(sorted(hashes.items()))
    check_manifest(manifest)  # what we write, we can read
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _replace_claim(tmp: Path, out: Path) -> None:
    """rename() replaces an empty directory atomically and refuses a non-empty one."""
    try:
        os.rename(tmp, out)
    except OSError as exc:
        raise ParameterError(f"{out} changed while the suite was being written ({exc.strerror});"
                             f" it was left as it is and nothing was written") from None


def _check_replaceable(out: Path) -> None:
    """--force replaces only an earlier golden suite, never another directory."""
    if out.is_symlink() or not out.is_dir():
        raise ParameterError(f"{out} exists and is not a directory (a file or a symbolic "
                             f"link); refusing to replace it")
    refuse_cwd(out)
    if not _is_suite(out):
        raise ParameterError(f"refusing to replace {out}: it is not exactly a golden suite (a "
                             f"directory holding manifest.json of schema {SCHEMA!r} and the "
                             f"case files it lists, every hash right, and nothing else); "
                             f"remove it yourself if you mean it")


# --- reading a suite: no symbolic link followed, every byte hashed before use ---------------

def _read_regular(dir_fd: int | None, name: str, shown: str, limit: int) -> bytes:
    """The bytes of a regular file, opened without following a symbolic link."""
    try:
        # O_NONBLOCK: a FIFO opens at once (and is refused below) instead of blocking
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        raise GoldenIntegrityError(f"{shown}: listed in the manifest but missing") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise GoldenIntegrityError(f"{shown} is a symbolic link; a suite's files must be "
                                       f"regular files (not followed)") from None
        raise GoldenIntegrityError(f"{shown}: cannot open ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise GoldenIntegrityError(f"{shown} is not a regular file")
        os.set_blocking(f.fileno(), True)
        if st.st_size > limit:
            raise GoldenIntegrityError(f"{shown} is {st.st_size} bytes, more than its "
                                       f"arrays can fill ({limit})")
        return f.read(limit + 1)


def _file_limit(case: dict, fmt: str) -> int:
    """The most bytes a case file of ``fmt`` may hold for the arrays the manifest declares."""
    elements = sum(math.prod(a["shape"]) for a in case["arrays"].values())
    per = 32 if fmt == "json" else 8
    return elements * per + 2 ** 20


class Suite:
    """A golden suite on disk whose manifest and every file hash have been checked.

    Construction reads ``manifest.json``, checks it against the schema (structure, types,
    shapes, unknown keys), refuses symbolic links inside the suite without following them,
    and hashes every listed file, raising :class:`GoldenIntegrityError` on any problem.
    Arrays are then decoded from the very bytes that were hashed.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise GoldenIntegrityError(f"{self.path} is not a golden suite: not a directory")
        if not (self.path / "manifest.json").exists() and \
                not (self.path / "manifest.json").is_symlink():
            raise GoldenIntegrityError(f"{self.path} is not a golden suite: no manifest.json")
        raw = _read_regular(None, str(self.path / "manifest.json"), "manifest.json",
                            MANIFEST_MAX_BYTES)
        try:
            self.manifest = load_json(raw)
        except GoldenIntegrityError as exc:
            raise GoldenIntegrityError(f"manifest.json: {exc}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise GoldenIntegrityError(f"manifest.json is not valid JSON: {exc}") from None
        except RecursionError:
            raise GoldenIntegrityError("manifest.json is nested too deeply to be a "
                                       "manifest") from None
        check_manifest(self.manifest)
        self.digest = digest(self.manifest)
        self.schema_version: int = self.manifest["schema_version"]  # names its bound formula
        self.cases = {c["name"]: c for c in self.manifest["cases"]}
        self._bytes: dict[str, bytes] = {}
        cases_dir = self.path / "cases"
        try:
            dir_fd = os.open(cases_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            if cases_dir.is_symlink():
                raise GoldenIntegrityError("cases is a symbolic link; a suite's folders must "
                                           "be real directories (not followed)") from None
            raise GoldenIntegrityError(f"cases: cannot open ({exc.strerror})") from None
        try:
            for c in self.cases.values():
                for fmt, rel in c["files"].items():
                    data = _read_regular(dir_fd, rel.split("/", 1)[1], rel,
                                         _file_limit(c, fmt))
                    want = self.manifest["files"][rel]
                    if sha256(data) != want:
                        raise GoldenIntegrityError(
                            f"{rel}: SHA-256 mismatch (file changed, truncated or corrupted): "
                            f"expected {want}, got {sha256(data)}")
                    self._bytes[rel] = data
        finally:
            os.close(dir_fd)

    def has_format(self, name: str, fmt: str | None) -> bool:
        """Whether case ``name`` has a file in format ``fmt`` (any format for None)."""
        return fmt is None or fmt in self.cases[name]["files"]

    def arrays(self, name: str, fmt: str | None = None) -> dict[str, np.ndarray]:
        """The arrays of case ``name`` decoded from format ``fmt`` (default: npz, else the
        first available), checked against the manifest's names, shapes and dtypes."""
        case = self.cases[name]
        files = case["files"]
        fmt = fmt or next((f for f in FORMATS if f in files), None)
        if fmt is None or fmt not in files:
            raise GoldenIntegrityError(f"case {name}: no {fmt} file in this suite")
        try:
            arrays = DECODERS[fmt](self._bytes[files[fmt]], case["arrays"])
        except (GoldenIntegrityError, BackendUnavailableError):
            raise
        # any decoder failure on hashed bytes: a damaged suite
        except Exception as exc:  # noqa: BLE001
            raise GoldenIntegrityError(f"case {name}: cannot decode {files[fmt]}: "
                                       f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if sorted(arrays) != sorted(case["arrays"]):
            raise GoldenIntegrityError(f"case {name}: {files[fmt]} holds {sorted(arrays)}, the "
                                       f"manifest lists {sorted(case['arrays'])}")
        for key, spec in case["arrays"].items():
            arr = arrays[key]
            if list(arr.shape) != spec["shape"] or arr.dtype != carrier(spec["dtype"]):
                raise GoldenIntegrityError(f"case {name}: array {key} should be {spec}; got "
                                           f"{[list(arr.shape), str(arr.dtype)]}")
        return arrays


__all__ = ["SCHEMA", "SCHEMA_VERSION", "FORMATS", "BOUND_PREFIX", "CONTRACT",
           "GoldenIntegrityError", "Suite", "digest", "sha256", "write_suite"]
