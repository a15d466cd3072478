"""Generate a golden suite: draw inputs, compute expected values exactly, write atomically."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .._version import __version__
from .bounds import error_bounds
from .cases import CaseSpec, draw_inputs, suite
from .exact import DIGITS, exact_eca
from .io import BOUND_PREFIX, CONTRACT, FORMATS, SCHEMA, SCHEMA_VERSION, write_suite
from .schema import SATURATION
from .progress import Progress
from .verify import reference_outputs
from ..errors import ParameterError



def _expected(spec: CaseSpec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Expected outputs, each the exact value rounded once (NaN and Inf as IEEE makes them)."""
    w = inputs["weight"]
    w2 = w.reshape(spec.channels, spec.kernel) if spec.weight_form in ("Ck", "C1k") else \
        w.reshape(spec.kernel)
    out = exact_eca(inputs["x"], w2, inputs["grad_out"], bias=inputs.get("bias"),
                    channel_axis=spec.channel_axis, padding=spec.padding, groups=spec.groups,
                    gate=spec.gate, dtype=spec.dtype)
    out["dweight"] = out["dweight"].reshape(w.shape)
    return out


def _on_a_kink(spec: CaseSpec, arrays: dict[str, np.ndarray]) -> bool:
    """Whether some hard_sigmoid logit could be on either side of a kink at -3 or 3 within
    twice its error bound: there the derivative is 1/6 or 0 and a verdict cannot decide."""
    if spec.gate != "hard_sigmoid":
        return False
    z = np.abs(arrays["z"])
    e_z = error_bounds(arrays, spec.params(), spec.dtype)["z"]
    return bool(np.any(np.abs(z - 3.0) <= 2 * e_z))


def _draw(spec: CaseSpec) -> tuple[int, dict[str, np.ndarray]]:
    """Inputs for spec; hard_sigmoid cases move to the next seed until no logit sits near a
    kink (judged on the float64 reference here, and checked again on the exact values)."""
    seed = spec.seed
    for _ in range(100):
        inputs = draw_inputs(spec, seed)
        if not _on_a_kink(spec, {**inputs, **reference_outputs(spec.params(), inputs,
                                                                spec.dtype)}):
            return seed, inputs
        seed += 1
    raise RuntimeError(f"{spec.name}: no seed keeps the logits off the hard_sigmoid kinks")


def build_case(spec: CaseSpec) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest entry and all arrays (inputs, expected outputs, bounds) of one case."""
    seed, inputs = _draw(spec)
    expected = _expected(spec, inputs)
    arrays = {**inputs, **expected}
    if _on_a_kink(spec, arrays):
        raise RuntimeError(f"{spec.name}: an exact logit is too close to a hard_sigmoid kink")
    bounds = error_bounds(arrays, spec.params(), spec.dtype)
    arrays.update({BOUND_PREFIX + name: b for name, b in bounds.items()})
    z = expected["z"]
    entry = {
        "name": spec.name,
        "seed": seed,
        "dtype": spec.dtype,
        "params": spec.params(),
        "flags": {
            "nonfinite": spec.special in ("nan", "inf"),
            "saturated": bool(np.nanmax(np.abs(z)) >= SATURATION),
        },
        "notes": spec.notes,
        "tags": list(spec.tags),
        # wide arrays (m, z, a, bounds) are float64; the others are of the case's format
        # (a bfloat16 case holds them in float32 carriers: npeca.golden.dtypes)
        "arrays": {k: {"shape": list(v.shape),
                       "dtype": "float64" if v.dtype == np.float64 else spec.dtype}
                   for k, v in arrays.items()},
        "bounds": {name: BOUND_PREFIX + name for name in bounds},
    }
    return entry, arrays


def generate(out_dir: str | os.PathLike, *, suite_name: str = "core",
             formats: tuple[str, ...] = ("npz", "json"), force: bool = False,
             progress: bool | None = None) -> Path:
    """Write the golden suite ``suite_name`` to ``out_dir`` and return its path.

    Parameters
    ----------
    out_dir : path
        Where the suite goes. It is written beside it first and renamed into place.
    suite_name : {"core", "full"}
        Which catalogue to write.
    formats : tuple of {"npz", "safetensors", "json"}
        File formats per case (JSON only for cases with at most 1024 elements in x).
    force : bool
        Replace an existing ``out_dir``.
    progress : bool, optional
        Draw a progress bar on stderr (default: when stderr is a terminal).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from npeca.golden import generate, Suite
    >>> path = generate(pathlib.Path(tempfile.mkdtemp()) / "suite", progress=False)
    >>> len(Suite(path).cases) > 30
    True
    """
    if isinstance(formats, str):
        raise ParameterError(f"formats must be a tuple of format names such as ('npz', "
                             f"'json'); got the string {formats!r}")
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ParameterError(f"formats must be a non-empty subset of {', '.join(FORMATS)}; "
                             f"got {', '.join(formats) or 'nothing'}")
    if set(formats) == {"json"}:
        raise ParameterError("formats: json alone cannot hold the suite (JSON is written only "
                             "for cases with at most 1024 elements in x); add npz or "
                             "safetensors, e.g. npz,json")
    if suite_name not in ("core", "full"):
        raise ParameterError(f"suite must be 'core' or 'full'; got {suite_name!r}")
    specs = suite(suite_name)
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "suite": suite_name,
        "generator": {"npeca": __version__, "numpy": np.__version__,
                      "python": platform.python_version()},
        "rounding": (f"exact rational arithmetic, sigmoid to {DIGITS} digits, one rounding to "
                     f"nearest-even per stored value; NaN and Inf as IEEE 754 makes them"),
        "contract": CONTRACT,
        "formats": list(formats),
        "cases": [],
    }

    def cases() -> Iterator[tuple[dict, dict]]:
        with Progress(len(specs), "generate", progress) as bar:
            for spec in specs:
                yield build_case(spec)
                bar.step(spec.name)

    return write_suite(out_dir, manifest, cases, tuple(formats), force=force)
