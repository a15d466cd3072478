"""Writing and reading golden suites: atomic directories, SHA-256 checked, never unpickled.

A suite is a directory holding ``manifest.json`` and ``cases/<name>.<ext>`` for each case and
format: ``.npz`` (NumPy's zip of ``.npy`` files, written with fixed timestamps so that the
bytes are reproducible), ``.safetensors`` and, for small cases, ``.json`` with every float
written as a hex string (``float.hex``). The format is specified in docs/golden.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import BackendUnavailableError, NpecaError, ParameterError

SCHEMA = "npeca-golden"
SCHEMA_VERSION = 1
FORMATS = ("npz", "safetensors", "json")
JSON_MAX_ELEMENTS = 1024  # cases with more elements in x skip the JSON format
ARRAY_ORDER = ("x", "weight", "bias", "grad_out", "y", "m", "z", "a", "dx", "dweight", "dbias")


class GoldenIntegrityError(NpecaError, ValueError):
    """A suite that cannot be trusted: bad schema, missing, truncated or tampered file."""


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


# --- encoders ------------------------------------------------------------------------------

def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def _safetensors_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    try:
        from safetensors.numpy import save
    except ImportError:
        raise BackendUnavailableError(
            "the safetensors format needs the safetensors package: pip install safetensors "
            "(or pip install 'npeca[golden]')") from None
    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                metadata={"format": SCHEMA})


def _json_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    doc = {"format": f"{SCHEMA}-json", "arrays": {
        name: {"dtype": str(arr.dtype), "shape": list(arr.shape),
               "data": [float(v).hex() for v in arr.reshape(-1)]}
        for name, arr in arrays.items()}}
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


ENCODERS: dict[str, Callable[[Mapping[str, np.ndarray]], bytes]] = {
    "npz": _npz_bytes, "safetensors": _safetensors_bytes, "json": _json_bytes}


# --- decoders ------------------------------------------------------------------------------

def _from_npz(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise GoldenIntegrityError(f"refusing a pickle-bearing array ({exc})") from None
        raise


def _from_safetensors(data: bytes) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load
    except ImportError:
        raise BackendUnavailableError(
            "reading .safetensors needs the safetensors package: pip install safetensors") \
            from None
    return load(data)


def _from_json(data: bytes) -> dict[str, np.ndarray]:
    doc = json.loads(data)
    return {name: np.array([float.fromhex(v) for v in spec["data"]], dtype=np.float64)
            .astype(spec["dtype"]).reshape(spec["shape"])
            for name, spec in doc["arrays"].items()}


DECODERS = {"npz": _from_npz, "safetensors": _from_safetensors, "json": _from_json}


# --- writing a suite -----------------------------------------------------------------------

def write_suite(out_dir: str | os.PathLike, manifest: dict[str, Any],
                case_arrays: Callable[[], Any], formats: tuple[str, ...], *,
                force: bool = False) -> Path:
    """Write a suite into a temporary directory beside ``out_dir`` and rename it into place.

    ``case_arrays()`` yields ``(case_entry, arrays)`` pairs; each entry (a dict that ends up
    in the manifest) gets its ``files`` filled in. An interrupted run leaves only the hidden
    temporary directory, which is removed on the way out, never a half-written suite.
    """
    out = Path(out_dir).absolute()
    if out.exists() and not force:
        raise ParameterError(f"{out} already exists; remove it or pass --force to replace it")
    if out.exists():
        _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; a suite is as readable as its files
    try:
        (tmp / "cases").mkdir()
        hashes: dict[str, str] = {}
        for entry, arrays in case_arrays():
            ordered = {k: arrays[k] for k in ARRAY_ORDER if k in arrays}
            entry["files"] = {}
            for fmt in formats:
                if fmt == "json" and arrays["x"].size > JSON_MAX_ELEMENTS:
                    continue
                rel = f"cases/{entry['name']}.{fmt}"
                data = ENCODERS[fmt](ordered)
                (tmp / rel).write_bytes(data)
                entry["files"][fmt] = rel
                hashes[rel] = sha256(data)
            manifest["cases"].append(entry)
        manifest["files"] = dict(sorted(hashes.items()))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():  # --force: swap the old suite out, the new one in, then delete
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "suite")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_replaceable(out: Path) -> None:
    """--force replaces only an earlier golden suite, never another directory."""
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    if not out.is_dir():
        raise ParameterError(f"{out} exists and is not a directory; refusing to replace it")
    if resolved == cwd or resolved in cwd.parents:
        raise ParameterError(f"refusing to replace {out}: it is the current directory or "
                             f"one of its parents")
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        is_suite = isinstance(manifest, dict) and manifest.get("schema") == SCHEMA
    except (OSError, ValueError, UnicodeDecodeError):
        is_suite = False
    if not is_suite:
        raise ParameterError(f"refusing to replace {out}: it is not a golden suite (no "
                             f"manifest.json of schema {SCHEMA!r}); remove it yourself if "
                             f"you mean it")


# --- reading a suite -----------------------------------------------------------------------

def _check_structure(manifest: dict) -> None:
    """The manifest's shape: every key a reader relies on, with the right type."""
    def bad(what: str) -> GoldenIntegrityError:
        return GoldenIntegrityError(f"manifest.json: {what}")

    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in files.items()):
        raise bad("files must map relative paths to SHA-256 hex digests")
    cases = manifest.get("cases")
    if not isinstance(cases, list):
        raise bad("cases must be a list")
    names = set()
    for case in cases:
        if not isinstance(case, dict) or not isinstance(case.get("name"), str):
            raise bad("every case must be an object with a name")
        if case["name"] in names:
            raise bad(f"case name {case['name']!r} appears twice")
        names.add(case["name"])
        for key, kind in (("params", dict), ("arrays", dict), ("tolerances", dict),
                          ("files", dict), ("flags", dict)):
            if not isinstance(case.get(key), kind):
                raise bad(f"case {case['name']}: {key} must be an object")
        for arr in case["arrays"].values():
            if not (isinstance(arr, dict) and isinstance(arr.get("shape"), list)
                    and isinstance(arr.get("dtype"), str)):
                raise bad(f"case {case['name']}: every array needs a shape list and a dtype")
        for out, tol in case["tolerances"].items():
            if not (isinstance(tol, dict) and all(
                    isinstance(tol.get(t), (int, float)) and not isinstance(tol.get(t), bool)
                    for t in ("rtol", "atol"))):
                raise bad(f"case {case['name']}: tolerance of {out} needs numbers rtol, atol")
        if "x" not in case["arrays"]:
            raise bad(f"case {case['name']}: no array x")


class Suite:
    """A golden suite on disk whose manifest and every file hash have been checked.

    Construction reads ``manifest.json``, checks the schema name and version, and hashes
    every listed file, raising :class:`GoldenIntegrityError` on any problem. Arrays are then
    decoded from the very bytes that were hashed.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise GoldenIntegrityError(f"{self.path} is not a golden suite: no manifest.json")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise GoldenIntegrityError(f"manifest.json is not valid JSON: {exc}") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("schema") != SCHEMA:
            raise GoldenIntegrityError(f"manifest.json: schema must be {SCHEMA!r}")
        version = self.manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise GoldenIntegrityError(
                f"manifest.json: schema_version {version!r} is not supported by this npeca "
                f"(it reads version {SCHEMA_VERSION}); upgrade npeca or regenerate the suite")
        _check_structure(self.manifest)
        self._bytes: dict[str, bytes] = {}
        for rel, digest in self.manifest["files"].items():
            file = self.path / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute() or not file.is_file():
                raise GoldenIntegrityError(f"{rel}: listed in the manifest but missing")
            data = file.read_bytes()
            if sha256(data) != digest:
                raise GoldenIntegrityError(
                    f"{rel}: SHA-256 mismatch (file changed, truncated or corrupted): expected "
                    f"{digest}, got {sha256(data)}")
            self._bytes[rel] = data
        self.cases = {c["name"]: c for c in self.manifest["cases"]}
        for c in self.cases.values():
            for fmt, rel in c.get("files", {}).items():
                if rel not in self._bytes:
                    raise GoldenIntegrityError(f"case {c['name']}: {fmt} file {rel} has no hash "
                                               f"in the manifest")

    def has_format(self, name: str, fmt: str | None) -> bool:
        """Whether case ``name`` has a file in format ``fmt`` (any format for None)."""
        return fmt is None or fmt in self.cases[name]["files"]

    def arrays(self, name: str, fmt: str | None = None) -> dict[str, np.ndarray]:
        """The arrays of case ``name`` decoded from format ``fmt`` (default: npz, else the
        first available), checked against the manifest's shapes and dtypes."""
        case = self.cases[name]
        files = case["files"]
        fmt = fmt or next((f for f in ("npz", "safetensors", "json") if f in files), None)
        if fmt not in files:
            raise GoldenIntegrityError(f"case {name}: no {fmt} file in this suite")
        try:
            arrays = DECODERS[fmt](self._bytes[files[fmt]])
        except GoldenIntegrityError:
            raise
        except BackendUnavailableError:
            raise
        except Exception as exc:
            raise GoldenIntegrityError(f"case {name}: cannot decode {files[fmt]}: {exc}") from None
        for key, spec in case["arrays"].items():
            arr = arrays.get(key)
            if arr is None or list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                got = None if arr is None else (list(arr.shape), str(arr.dtype))
                raise GoldenIntegrityError(f"case {name}: array {key} should be {spec}; got {got}")
        return arrays
