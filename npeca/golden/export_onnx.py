"""A golden suite in ONNX's backend-test layout. The graph of each case is
:func:`npeca.golden.onnx_graph.eca_model`, the one the onnxruntime adapter runs.
:func:`write_onnx` writes, per case, the layout of ``onnx/backend/test/data/node/*``::

    test_<case>/model.onnx                      inputs x, weight[, bias]; output y
    test_<case>/test_data_set_0/input_0.pb      x        (TensorProto, the case's dtype)
    test_<case>/test_data_set_0/input_1.pb      weight   (the case's weight form)
    test_<case>/test_data_set_0/input_2.pb      bias     (shape (1,); cases with a bias)
    test_<case>/test_data_set_0/output_0.pb     y        (expected, the case's dtype)
    test_<case>/npeca_bounds/output_0.pb        bound of y: |y - expected| <= bound (float64)
    test_<case>/npeca_bounds/nan_ok_0.pb        bool: NaN also accepted here (cases with a
                                                NaN or infinite input only)
    test_<case>/data.json                       {"rtol": 0, "atol": largest bound of y}

ONNX's own loader and runner read ``model.onnx``, ``test_data_set_*`` and the tolerance in
``data.json`` (one atol per case: coarser than the per-element bounds, never stricter); the
exact bounds sit beside them unseen. :func:`check_onnx_export` (and ``python -m
npeca.golden.export_onnx check DIR``) judges onnxruntime on such a directory at the stored
bounds, with :func:`npeca.golden.verify.compare`. See docs/golden.md.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError
from .onnx_graph import _ONNX_TYPES, _onnx, eca_model

BOUNDS_DIR = "npeca_bounds"
DATA_SET = "test_data_set_0"

# --- export ---------------------------------------------------------------------------------

def _save_tensor(path: Path, array: np.ndarray, name: str, dtype: str | None = None) -> None:
    """One TensorProto file; ``dtype="bfloat16"``: the float32 carrier written as BFLOAT16
    (its 16-bit patterns as raw little-endian data)."""
    _, helper, numpy_helper = _onnx()
    if dtype == "bfloat16":
        bits = (np.ascontiguousarray(array, dtype=np.float32).view(np.uint32) >> 16)
        tensor = helper.make_tensor(name, _ONNX_TYPES["bfloat16"], list(array.shape),
                                    bits.astype("<u2").tobytes(), raw=True)
    else:
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), name)
    path.write_bytes(tensor.SerializeToString())


def write_onnx(suite, out: Path) -> list[tuple[str, str]]:
    """Write every case of ``suite`` (a :class:`~npeca.golden.io.Suite`) into the existing
    empty directory ``out`` in ONNX's backend-test layout (see the module's docstring);
    return (case, reason) for the cases ONNX cannot express (none of the core suite)."""
    from .bounds import nonfinite_reach

    onnx, _, _ = _onnx()
    out = Path(out)
    skipped: list[tuple[str, str]] = []
    for name, case in suite.cases.items():
        params = dict(case["params"])
        arrays = suite.arrays(name)
        try:
            model = eca_model(arrays["x"].shape, arrays["weight"].shape, case["dtype"], params,
                              name=f"eca_{name}")
        except NotImplementedError as exc:
            skipped.append((name, str(exc) or "not expressible in ONNX"))
            continue
        onnx.checker.check_model(model, full_check=True)
        folder = out / f"test_{name}"
        data, bounds = folder / DATA_SET, folder / BOUNDS_DIR
        data.mkdir(parents=True)
        bounds.mkdir()
        (folder / "model.onnx").write_bytes(model.SerializeToString())
        for i, vi in enumerate(model.graph.input):
            _save_tensor(data / f"input_{i}.pb", arrays[vi.name], vi.name, case["dtype"])
        _save_tensor(data / "output_0.pb", arrays["y"], "y", case["dtype"])
        _save_tensor(bounds / "output_0.pb", arrays[case["bounds"]["y"]], "y")
        if case["flags"]["nonfinite"]:
            reach = nonfinite_reach(arrays, params)["y"]
            _save_tensor(bounds / "nan_ok_0.pb", reach.astype(bool), "y")
        (folder / "data.json").write_text(json.dumps(_runner_tolerance(
            arrays[case["bounds"]["y"]])) + "\n")
    return skipped


def _runner_tolerance(bound: np.ndarray) -> dict:
    """rtol and atol for ONNX's own runner (its ``data.json``): atol = the largest finite
    bound of y, rtol = 0; coarser than the per-element bounds, never stricter."""
    finite = bound[np.isfinite(bound)]
    atol = float(finite.max()) if finite.size else 0.0
    return {"rtol": 0.0, "atol": atol}


# --- checking an export ---------------------------------------------------------------------

def _load_array(path: Path) -> np.ndarray:
    onnx, _, numpy_helper = _onnx()
    return numpy_helper.to_array(onnx.load_tensor(str(path)))


def _why(what: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{what}: {type(exc).__name__}: {text[:300]}"


def _check_case(folder: Path, ort: Any) -> tuple[str, str]:
    """(status, message) for one ``test_<case>`` folder."""
    from .verify import compare

    onnx, _, _ = _onnx()
    if not (folder / "model.onnx").is_file():
        return "ERROR", "no model.onnx"
    try:
        model = onnx.load(str(folder / "model.onnx"))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, ValidationError, ...
        return "ERROR", _why("model.onnx", exc)
    data, bounds = folder / DATA_SET, folder / BOUNDS_DIR
    names_in = [vi.name for vi in model.graph.input]
    names_out = [vi.name for vi in model.graph.output]
    if names_out[:1] != ["y"]:
        return "ERROR", f"the model's first output is {names_out[:1]}, not ['y']"
    feeds = {}
    try:
        for i, want in enumerate(names_in):
            tensor = onnx.load_tensor(str(data / f"input_{i}.pb"))
            if tensor.name != want:
                return "ERROR", (f"{DATA_SET}/input_{i}.pb holds {tensor.name!r}; the model's "
                                 f"input {i} is {want!r}")
            feeds[want] = _load_array(data / f"input_{i}.pb")
        wanted = {f"input_{i}.pb" for i in range(len(names_in))}
        extra = sorted(p.name for p in data.glob("input_*.pb") if p.name not in wanted)
        if extra:
            return "ERROR", f"{DATA_SET}/{extra[0]}: the model has {len(names_in)} inputs"
        expected = _load_array(data / "output_0.pb")
        bf16 = onnx.load_tensor(str(data / "output_0.pb")).data_type == _ONNX_TYPES["bfloat16"]
        bound = _load_array(bounds / "output_0.pb")
        nan_path = bounds / "nan_ok_0.pb"
        nan_ok = _load_array(nan_path) if nan_path.exists() else None
    # a missing file (OSError), protobuf's DecodeError, ...
    except Exception as exc:  # noqa: BLE001
        return "ERROR", _why("test data", exc)
    if bf16 and expected.dtype.name != "bfloat16":  # onnx < 1.19: BFLOAT16 read as float32
        return "SKIP", (f"onnx {onnx.__version__} reads BFLOAT16 tensors as float32, so this "
                        f"bfloat16 case cannot be judged here; it needs onnx >= 1.19")
    if expected.dtype.name not in _ONNX_TYPES:
        return "ERROR", f"{DATA_SET}/output_0.pb holds {expected.dtype}, not a float type"
    if bound.shape != expected.shape or bound.dtype != np.float64:
        return "ERROR", (f"{BOUNDS_DIR}/output_0.pb: {bound.dtype} of shape {bound.shape}; "
                         f"y needs float64 of shape {expected.shape}")
    if nan_ok is not None and (nan_ok.shape != expected.shape or nan_ok.dtype != bool):
        return "ERROR", (f"{BOUNDS_DIR}/nan_ok_0.pb: {nan_ok.dtype} of shape {nan_ok.shape}; "
                         f"y needs bool of shape {expected.shape}")
    runner = "onnxruntime"
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
        (y,) = session.run(["y"], feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
        if "NOT_IMPLEMENTED" not in str(exc) or not bf16:
            return "ERROR", _why("onnxruntime", exc)
        # onnxruntime's CPU provider has no bfloat16 Pad or Sigmoid: onnx's own reference
        # evaluator runs the graph instead (NumPy, each operator in its declared dtype)
        runner = "onnx.reference (onnxruntime has no CPU bfloat16 kernel for this graph)"
        try:
            from onnx.reference import ReferenceEvaluator
            with np.errstate(all="ignore"):  # IEEE inf and NaN in the non-finite cases
                (y,) = ReferenceEvaluator(model).run(["y"], feeds)
        except Exception as exc2:  # noqa: BLE001 - the evaluator's own errors
            return "ERROR", _why("onnx.reference", exc2)
    result = compare(y, expected, bound, "y", expected.dtype, nan_ok)
    if result.status == "PASS":
        via = "" if runner == "onnxruntime" else f", run by {runner}"
        return "PASS", f"y within its bound (worst err/bound {result.max_ratio:.3g}){via}"
    if result.status == "UNCHECKABLE":
        return "FAIL", "y: not checkable (its bound exceeds every expected value)"
    return "FAIL", f"y: {result.message}"


def check_onnx_export(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """Run onnxruntime on every ``test_<case>`` folder of an ONNX export and judge ``y`` at
    the stored bounds: a list of (case, status, message), status PASS, FAIL (beyond the
    bound), ERROR (a model, file or run that failed, a case the marker lists whose folder is
    missing, or no marker at all) or SKIP (a case the export left out, from its
    ``NPECA_EXPORT`` marker). Raises ``FileNotFoundError`` / ``NotADirectoryError``
    for a missing path and :class:`~npeca.errors.BackendUnavailableError` without onnx or
    onnxruntime."""
    from .schema import EXPORT_MARKER as MARKER

    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such directory")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    _onnx()
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("checking an ONNX export needs onnxruntime: pip install "
                                      "onnxruntime") from None
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("test_"))
    results = []
    skipped: list[tuple[str, str]] = []
    marker = root / MARKER
    written: list[str] = []
    if not marker.is_file():
        if folders:  # (no folders either: the caller says that this is no export)
            results.append((MARKER, "ERROR", f"no {MARKER} file: not an export of npeca's, "
                                             f"or damaged (the cases it should hold are "
                                             f"unknown)"))
    else:
        try:
            info = json.loads(marker.read_text())
            skipped = [(str(s["case"]), str(s["reason"])) for s in info.get("skipped", [])]
            written = [str(n) for n in info.get("written", [])]
            order = {n: i for i, n in enumerate(written)}
            folders.sort(key=lambda p: (order.get(p.name[5:], len(order)), p.name))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            results.append((MARKER, "ERROR", f"unreadable marker file: {exc}"))
    present = {p.name[len("test_"):] for p in folders}
    results += [(name, "ERROR", f"listed in {MARKER} but test_{name} is missing")
                for name in written if name not in present]
    for folder in folders:
        status, message = _check_case(folder, ort)
        results.append((folder.name[len("test_"):], status, message))
    results += [(name, "SKIP", reason) for name, reason in skipped]
    return results


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m npeca.golden.export_onnx",
        description="Check an ONNX export of a golden suite with onnxruntime.")
    sub = parser.add_subparsers(dest="command", required=True)
    chk = sub.add_parser("check", help="run every test_<case>/model.onnx on its test data and "
                                       "judge y at the exported bounds")
    chk.add_argument("dir", help="a directory written by `npeca golden export ... --format "
                                 "onnx`")
    args = parser.parse_args(argv)
    try:
        results = check_onnx_export(args.dir)
    except (OSError, BackendUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not any(status != "SKIP" for _, status, _ in results):
        print(f"error: {args.dir} holds no test_<case> folder; is it an ONNX export?",
              file=sys.stderr)
        return 1
    width = max(len(name) for name, _, _ in results)
    for name, status, message in results:
        print(f"{name:<{width}}  {status:<5}  {message}")
    counts = {s: sum(r[1] == s for r in results) for s in ("PASS", "FAIL", "ERROR", "SKIP")}
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(results)} cases")
    return 1 if counts["FAIL"] or counts["ERROR"] else 0


__all__ = ["write_onnx", "check_onnx_export"]


if __name__ == "__main__":
    sys.exit(_main())
