"""Generate a golden suite: draw inputs, compute expected values exactly, write atomically."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .. import reference
from .._validate import eca_problem
from .._version import __version__
from .cases import BACKWARD, TOLERANCES, CaseSpec, draw_inputs, suite
from .exact import DIGITS, exact_eca
from .io import FORMATS, SCHEMA, SCHEMA_VERSION, write_suite
from .progress import Progress
from ..errors import ParameterError

SATURATION = 17.0  # sigmoid(17) = 1 - 4.1e-8 rounds to 1 in float32
KINK_MARGIN = 1e-3  # hard_sigmoid cases keep every logit this far from -3 and 3


def _kwargs(spec: CaseSpec, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"bias": inputs.get("bias"), "channel_axis": spec.channel_axis,
            "padding": spec.padding, "groups": spec.groups, "gate": spec.gate}


def _expected(spec: CaseSpec, inputs: dict[str, np.ndarray]) -> tuple[dict, bool]:
    """Expected outputs and whether they are exact (finite inputs) or from the reference."""
    kw = _kwargs(spec, inputs)
    if spec.special in ("nan", "inf"):
        problem = eca_problem(inputs["x"], inputs["weight"], **kw)
        fwd = reference.forward(problem)
        grads = reference.backward(problem, inputs["grad_out"])
        out = {"y": fwd.y, "m": fwd.m, "z": fwd.z, "a": fwd.a, "dx": grads.x,
               "dweight": grads.weight}
        if grads.bias is not None:
            out["dbias"] = grads.bias
        return out, False
    w = inputs["weight"]
    w2 = w.reshape(spec.channels, spec.kernel) if spec.weight_form in ("Ck", "C1k") else \
        w.reshape(spec.kernel)
    bias = None if "bias" not in inputs else float(inputs["bias"][0])
    out = exact_eca(inputs["x"], w2, inputs["grad_out"], bias=bias,
                    channel_axis=spec.channel_axis, padding=spec.padding, groups=spec.groups,
                    gate=spec.gate)
    out["dweight"] = out["dweight"].reshape(w.shape)
    return out, True


def _draw(spec: CaseSpec) -> tuple[int, dict[str, np.ndarray]]:
    """Inputs for spec; hard_sigmoid cases move to the next seed until no logit sits on a
    kink, where the derivative is undefined and backends may legitimately differ."""
    seed = spec.seed
    for _ in range(100):
        inputs = draw_inputs(spec, seed)
        if spec.gate != "hard_sigmoid":
            return seed, inputs
        z = reference.forward(eca_problem(inputs["x"], inputs["weight"],
                                          **_kwargs(spec, inputs))).z
        if np.all(np.abs(np.abs(z) - 3.0) > KINK_MARGIN):
            return seed, inputs
        seed += 1
    raise RuntimeError(f"{spec.name}: no seed keeps the logits off the hard_sigmoid kinks")


def _term_scales(spec: CaseSpec, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """For each output, the size of the terms that make it up (not of the result, which
    may cancel to ~0 or be crushed by a saturated gate): the absolute part of the tolerance
    is a multiple of this, the error a correct backend in the case's dtype can make."""
    f = {k: np.nan_to_num(np.abs(v.astype(np.float64)), nan=0.0, posinf=0.0)
         for k, v in inputs.items()}
    x = np.moveaxis(f["x"], spec.channel_axis, 1).reshape(f["x"].shape[0], spec.channels, -1)
    g = np.moveaxis(f["grad_out"], spec.channel_axis, 1).reshape(x.shape)
    slope = 0.25 if spec.gate == "sigmoid" else 1.0 / 6.0  # the gate's largest derivative
    wsum = float(f["weight"].reshape(-1, spec.kernel).sum(axis=1).max())
    xmax = float(x.max())
    da = (g * x).sum(axis=2)  # |da| bounds, (N, C)
    dz = slope * float(da.max())
    return {
        "y": xmax, "m": xmax, "z": wsum * xmax + float(f.get("bias", np.zeros(1)).max()),
        "a": 1.0,
        "dx": float(g.max()) + wsum * dz / x.shape[2],
        "dweight": slope * float(da.sum()) * xmax,
        "dbias": slope * float(da.sum()),
    }


def _tolerances(spec: CaseSpec, inputs: dict[str, np.ndarray],
                expected: dict[str, np.ndarray]) -> dict[str, dict]:
    scales = _term_scales(spec, inputs)
    tol = {}
    for name in expected:
        rtol, arel = TOLERANCES[spec.dtype]["backward" if name in BACKWARD else "forward"]
        tol[name] = {"rtol": rtol, "atol": arel * scales[name]}
    return tol


def build_case(spec: CaseSpec) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest entry and all arrays (inputs and expected outputs) of one case."""
    seed, inputs = _draw(spec)
    expected, exact = _expected(spec, inputs)
    arrays = {**inputs, **expected}
    z = expected["z"]
    entry = {
        "name": spec.name,
        "seed": seed,
        "dtype": spec.dtype,
        "params": spec.params(),
        "flags": {
            "exact": exact,
            "nonfinite": spec.special in ("nan", "inf"),
            "saturated": bool(np.nanmax(np.abs(z)) >= SATURATION),
        },
        "notes": spec.notes,
        "tags": list(spec.tags),
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        "tolerances": _tolerances(spec, inputs, expected),
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
                     f"nearest-even per stored value (cases with flags.exact = false: the "
                     f"float64 reference)"),
        "formats": list(formats),
        "cases": [],
    }

    def cases() -> Iterator[tuple[dict, dict]]:
        with Progress(len(specs), "generate", progress) as bar:
            for spec in specs:
                yield build_case(spec)
                bar.step(spec.name)

    return write_suite(out_dir, manifest, cases, tuple(formats), force=force)
