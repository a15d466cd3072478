"""The manifest of a golden suite: its exact structure, checked before anything is read.

Every key a reader relies on is checked for presence, type and range, unknown keys are
refused, and array shapes are checked against the case's parameters, so that a malformed
or hostile manifest ends in one :class:`GoldenIntegrityError` line, never in a traceback or
in an allocation the files cannot back.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from ..errors import NpecaError

SCHEMA = "npeca-golden"
SCHEMA_VERSION = 3  # what a new suite is written as
# What this npeca reads: 2 and 3 differ only in the error-bound formula (3 has the underflow
# term, npeca.golden.bounds.BOUNDS), and each suite is checked with the formula it names.
READ_VERSIONS = (2, 3)
FORMATS = ("npz", "safetensors", "json")
DTYPES = ("float16", "float32", "float64", "bfloat16")  # as npeca.golden.dtypes.DTYPES
INPUTS = ("x", "weight", "bias", "grad_out")
OUTPUTS = ("y", "m", "z", "a", "dx", "dweight", "dbias")
EXPORT_MARKER = "NPECA_EXPORT"  # the file at the top of every export (npeca golden export)
INTERMEDIATES = ("m", "z", "a")  # stored in float64, judged with the case dtype's contract
BOUND_PREFIX = "bound_"
ARRAY_ORDER = INPUTS + OUTPUTS + tuple(BOUND_PREFIX + o for o in OUTPUTS)
MAX_ELEMENTS = 2 ** 22  # per array: a suite's arrays are small; refuse absurd claims early
MAX_WINDOWS = 2 ** 20  # N * C * k: the verifier's working arrays stay within a few 100 MB
MAX_KERNEL = 4095
SATURATION = 17.0  # flags.saturated: some |z| >= 17 (sigmoid(17) = 1 - 4.1e-8, 1 in float32)
TOP_KEYS = ("schema", "schema_version", "suite", "generator", "rounding", "contract",
            "formats", "files", "cases")
CASE_KEYS = ("name", "seed", "dtype", "params", "flags", "notes", "tags", "arrays", "bounds",
             "files")
PARAM_KEYS = ("k", "padding", "groups", "gate", "bias", "channel_axis", "weight_form")
FLAG_KEYS = ("nonfinite", "saturated")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class GoldenIntegrityError(NpecaError, ValueError):
    """A suite that cannot be trusted: bad schema, missing, truncated or tampered file."""


def _fail(what: str) -> GoldenIntegrityError:
    return GoldenIntegrityError(f"manifest.json: {what}")


def _keys(obj: Any, keys: tuple[str, ...], where: str) -> dict:
    if not isinstance(obj, dict):
        raise _fail(f"{where} must be an object; got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    extra = sorted(str(k) for k in obj if k not in keys)
    if missing:
        raise _fail(f"{where} lacks the key {missing[0]!r}")
    if extra:
        raise _fail(f"{where} has the unknown key {extra[0][:40]!r}")
    return obj


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        shown = repr(value) if isinstance(value, (int, float)) and abs(value) < 1e30 else \
            type(value).__name__
        raise _fail(f"{where} must be an integer in [{lo}, {hi}]; got {shown}")
    return value


def _choice(value: Any, where: str, options: tuple) -> Any:
    if not any(value == o and type(value) is type(o) for o in options):
        shown = repr(value)[:40] if isinstance(value, (str, int, bool)) else type(value).__name__
        raise _fail(f"{where} must be one of {', '.join(map(repr, options))}; got {shown}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"{where} must be a string; got {type(value).__name__}")
    return value


def _shape(spec: Any, where: str) -> list[int]:
    spec = _keys(spec, ("shape", "dtype"), where)
    shape = spec["shape"]
    if not isinstance(shape, list) or len(shape) > 5:
        raise _fail(f"{where}.shape must be a list of at most 5 sizes")
    for i, d in enumerate(shape):
        _int(d, f"{where}.shape[{i}]", 1, MAX_ELEMENTS)
    if math.prod(shape) > MAX_ELEMENTS:
        raise _fail(f"{where} has {math.prod(shape)} elements, more than {MAX_ELEMENTS}")
    return shape


def check_case(case: Any, formats: list[str]) -> None:
    """Refuse a case entry that is not exactly what the generator writes."""
    name = case.get("name") if isinstance(case, dict) else None
    where = f"case {name!r}" if isinstance(name, str) else "a case"
    _keys(case, CASE_KEYS, where)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(f"{where}: name must be 1 to 100 letters, digits, '_' or '-'")
    _int(case["seed"], f"{where}.seed", 0, 2 ** 63 - 1)
    dtype = _choice(case["dtype"], f"{where}.dtype", DTYPES)
    p = _keys(case["params"], PARAM_KEYS, f"{where}.params")
    k = _int(p["k"], f"{where}.params.k", 1, MAX_KERNEL)
    if k % 2 == 0:
        raise _fail(f"{where}.params.k must be odd; got {k}")
    groups = _int(p["groups"], f"{where}.params.groups", 1, MAX_ELEMENTS)
    _choice(p["padding"], f"{where}.params.padding", ("zeros", "circular"))
    _choice(p["gate"], f"{where}.params.gate", ("sigmoid", "hard_sigmoid"))
    has_bias = _choice(p["bias"], f"{where}.params.bias", (True, False))
    axis = _choice(p["channel_axis"], f"{where}.params.channel_axis", (1, -1))
    form = _choice(p["weight_form"], f"{where}.params.weight_form", ("k", "11k", "Ck", "C1k"))
    for flag in _keys(case["flags"], FLAG_KEYS, f"{where}.flags").items():
        _choice(flag[1], f"{where}.flags.{flag[0]}", (True, False))
    _str(case["notes"], f"{where}.notes")
    if not isinstance(case["tags"], list) or not all(isinstance(t, str) for t in case["tags"]):
        raise _fail(f"{where}.tags must be a list of strings")

    outputs = [o for o in OUTPUTS if o != "dbias" or has_bias]
    names = [i for i in INPUTS if i != "bias" or has_bias] + outputs + \
        [BOUND_PREFIX + o for o in outputs]
    arrays = _keys(case["arrays"], tuple(names), f"{where}.arrays")
    shapes = {n: _shape(arrays[n], f"{where}.arrays.{n}") for n in names}
    x = shapes["x"]
    if not 3 <= len(x) <= 5:
        raise _fail(f"{where}: x must have 3 to 5 dimensions; got {len(x)}")
    n, c = x[0], x[-1] if axis == -1 else x[1]
    if n * c * k > MAX_WINDOWS:
        raise _fail(f"{where}: N * C * k = {n * c * k} is more than this verifier handles "
                    f"({MAX_WINDOWS})")
    if c % groups:
        raise _fail(f"{where}: groups {groups} does not divide C = {c}")
    want = {"x": x, "grad_out": x, "y": x, "dx": x, "m": [n, c], "z": [n, c], "a": [n, c],
            "weight": {"k": [k], "11k": [1, 1, k], "Ck": [c, k], "C1k": [c, 1, k]}[form],
            "bias": [1], "dbias": [1]}
    want["dweight"] = want["weight"]
    for o in outputs:
        want[BOUND_PREFIX + o] = want[o]
    for arr in names:
        if shapes[arr] != want[arr]:
            raise _fail(f"{where}: {arr} has shape {shapes[arr]}, expected {want[arr]}")
        wide = arr in ("m", "z", "a") or arr.startswith(BOUND_PREFIX)
        _choice(arrays[arr]["dtype"], f"{where}.arrays.{arr}.dtype",
                ("float64",) if wide else (dtype,))
    bounds = _keys(case["bounds"], tuple(outputs), f"{where}.bounds")
    for o in outputs:
        _choice(bounds[o], f"{where}.bounds.{o}", (BOUND_PREFIX + o,))
    files = case["files"]
    if not isinstance(files, dict) or not files:
        raise _fail(f"{where}.files must be a non-empty object")
    for fmt, rel in files.items():
        _choice(fmt, f"{where}.files key", tuple(formats))
        _choice(rel, f"{where}.files.{fmt}", (f"cases/{name}.{fmt}",))


def check_manifest(manifest: Any) -> None:
    """Refuse anything but a manifest of a schema version this npeca reads (READ_VERSIONS),
    exactly as written."""
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise _fail(f"schema must be {SCHEMA!r}")
    version = manifest.get("schema_version")
    if version not in READ_VERSIONS or type(version) is not int:
        shown = repr(version)[:40] if isinstance(version, (int, str)) else type(version).__name__
        raise GoldenIntegrityError(
            f"manifest.json: schema_version {shown} is not supported by this npeca (it reads "
            f"versions {', '.join(map(str, READ_VERSIONS))}); use the npeca that wrote the "
            f"suite, or regenerate it")
    _keys(manifest, TOP_KEYS, "the manifest")
    _str(manifest["suite"], "suite")
    for key in ("rounding", "contract"):
        _str(manifest[key], key)
    generator = manifest["generator"]
    if not isinstance(generator, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in generator.items()):
        raise _fail("generator must map names to version strings")
    formats = manifest["formats"]
    if not isinstance(formats, list) or not formats or len(set(map(str, formats))) != \
            len(formats):
        raise _fail("formats must be a non-empty list without repeats")
    for f in formats:
        _choice(f, "formats[]", FORMATS)
    cases = manifest["cases"]
    if not isinstance(cases, list) or not cases:
        raise _fail("cases must be a non-empty list")
    seen: set[str] = set()
    listed: set[str] = set()
    for case in cases:
        check_case(case, formats)
        if case["name"] in seen:
            raise _fail(f"case name {case['name']!r} appears twice")
        seen.add(case["name"])
        listed.update(case["files"].values())
    files = manifest["files"]
    if not isinstance(files, dict):
        raise _fail("files must map relative paths to SHA-256 hex digests")
    for rel, digest in files.items():
        if rel not in listed:
            raise _fail(f"files lists {str(rel)[:80]!r}, which no case uses")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise _fail(f"files[{rel!r}] must be a SHA-256 digest (64 lowercase hex digits)")
    missing = sorted(listed - set(files))
    if missing:
        raise _fail(f"{missing[0]} has no SHA-256 in files")


def digest(manifest: dict) -> str:
    """The SHA-256 that pins a suite: over the canonical JSON of its manifest (sorted keys,
    no spaces, ASCII) without ``generator``, the versions that wrote it. The manifest holds
    every file's SHA-256, so the digest covers every case, array and bound."""
    canonical = {k: v for k, v in manifest.items() if k != "generator"}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


__all__ = ["SATURATION", "SCHEMA", "SCHEMA_VERSION", "READ_VERSIONS", "FORMATS", "DTYPES",
           "INPUTS", "OUTPUTS",
           "INTERMEDIATES", "EXPORT_MARKER",
           "BOUND_PREFIX",
           "ARRAY_ORDER", "GoldenIntegrityError", "check_manifest", "check_case", "digest"]
