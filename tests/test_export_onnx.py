"""The golden suite exported in ONNX's backend-test layout: the layout, the checker (every
core case passes, planted bugs fail), skipped cases in the marker, the shared graph in the
onnxruntime adapter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from npeca import golden
from npeca.errors import BackendUnavailableError
from npeca.golden import Suite
from npeca.golden.bounds import nonfinite_reach
from npeca.golden.export import MARKER, export

COMMITTED = Path(__file__).parent / "golden" / "core"
ONNX_DTYPES = {"float16": 10, "float32": 1, "float64": 11, "bfloat16": 16}


@pytest.fixture(scope="module")
def onnx():
    require("onnxruntime", "NPECA_REQUIRE_OPTIONAL")
    return require("onnx", "NPECA_REQUIRE_OPTIONAL")


@pytest.fixture(scope="module")
def suite() -> Suite:
    return Suite(COMMITTED)


@pytest.fixture(scope="module")
def exported(onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "onnx"
    report = export(COMMITTED, "onnx", out)
    return report


def _tensor(onnx, path: Path) -> np.ndarray:
    from onnx import numpy_helper
    return numpy_helper.to_array(onnx.load_tensor(str(path)))


def _one_case(src: Path, name: str, dst: Path) -> Path:
    """A copy of one exported case, alone in its own export directory."""
    shutil.copytree(src / f"test_{name}", dst / f"test_{name}")
    (dst / "NPECA_EXPORT").write_text(json.dumps({"written": [name], "skipped": []}))
    return dst


def test_every_case_is_written_in_the_backend_test_layout(onnx, suite, exported):
    from onnx import numpy_helper

    out = exported.path
    assert exported.skipped == []
    assert exported.written == list(suite.cases)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER] + [f"test_{n}" for n in suite.cases])
    for name, case in suite.cases.items():
        arrays = suite.arrays(name)
        folder = out / f"test_{name}"
        model = onnx.load(str(folder / "model.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 18)], name
        assert all(n.domain == "" for n in model.graph.node), name
        assert not model.graph.initializer, name  # everything the model reads is test data
        want = ["x", "weight"] + (["bias"] if case["params"]["bias"] else [])
        assert [vi.name for vi in model.graph.input] == want, name
        assert [vi.name for vi in model.graph.output] == ["y"], name
        data = folder / "test_data_set_0"
        assert sorted(p.name for p in data.iterdir()) == sorted(
            [f"input_{i}.pb" for i in range(len(want))] + ["output_0.pb"]), name
        for i, vi in enumerate(list(model.graph.input) + list(model.graph.output)):
            kind = "input" if i < len(want) else "output"
            path = data / f"{kind}_{i if kind == 'input' else 0}.pb"
            tensor = onnx.load_tensor(str(path))
            assert tensor.name == vi.name, (name, path.name)
            ttype = vi.type.tensor_type
            assert ttype.elem_type == tensor.data_type == ONNX_DTYPES[case["dtype"]], name
            assert [d.dim_value for d in ttype.shape.dim] == list(tensor.dims), name
            value = numpy_helper.to_array(tensor)
            if case["dtype"] == "bfloat16":  # ml_dtypes' bfloat16, against the carrier
                assert value.dtype.name == "bfloat16", name
                value = value.astype(np.float32)
            assert value.dtype == arrays[vi.name].dtype, name
            np.testing.assert_array_equal(value, arrays[vi.name])  # NaN where NaN, bit-exact
        bounds = folder / "npeca_bounds"
        bound = _tensor(onnx, bounds / "output_0.pb")
        assert bound.dtype == np.float64
        np.testing.assert_array_equal(bound, arrays[case["bounds"]["y"]])
        if case["flags"]["nonfinite"]:
            mask = _tensor(onnx, bounds / "nan_ok_0.pb")
            assert mask.dtype == bool
            np.testing.assert_array_equal(mask, nonfinite_reach(arrays, case["params"])["y"])
            assert mask.any() and not mask.all()
        else:
            assert not (bounds / "nan_ok_0.pb").exists()
        tol = json.loads((folder / "data.json").read_text())
        assert tol["rtol"] == 0 and tol["atol"] == np.nanmax(
            np.where(np.isfinite(bound), bound, np.nan))
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == "onnx" and marker["written"] == list(suite.cases)
    assert marker["skipped"] == []


def test_onnx_own_loader_finds_every_case(onnx, suite, exported):
    """ONNX's backend-test loader sees model.onnx, test_data_set_0 and data.json's tolerance,
    and ignores npeca_bounds and the marker file."""
    from onnx.backend.test.loader import load_model_tests

    tests = load_model_tests(data_dir=str(exported.path.parent), kind=exported.path.name)
    assert sorted(t.name for t in tests) == sorted(f"test_{n}" for n in suite.cases)
    assert all(t.model_dir and t.rtol == 0 and t.atol > 0 for t in tests)


def test_checker_passes_every_core_case(onnx, suite, exported):
    from npeca.golden.export_onnx import check_onnx_export

    results = check_onnx_export(exported.path)
    assert [r[0] for r in results] == list(suite.cases)
    bad = [r for r in results if r[1] != "PASS"]
    assert not bad


def test_checker_cli(onnx, exported, tmp_path):
    done = subprocess.run([sys.executable, "-m", "npeca.golden.export_onnx", "check",
                           str(exported.path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "52 PASS, 0 FAIL, 0 ERROR, 0 SKIP of 52 cases" in done.stdout


@pytest.mark.parametrize("what", ["missing", "file", "empty"])
def test_checker_cli_refuses_what_is_not_an_export(onnx, tmp_path, capsys, what):
    from npeca.golden.export_onnx import _main

    target = tmp_path / "x"
    if what == "file":
        target.write_text("not a directory")
    elif what == "empty":
        target.mkdir()
    assert _main(["check", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert {"missing": "no such directory", "file": "not a directory",
            "empty": "no test_<case> folder"}[what] in err


def test_a_perturbed_expected_output_fails(onnx, exported, tmp_path, capsys):
    """One element of y moved just beyond its bound: the checker fails the case, names the
    element, and the CLI exits 1."""
    from onnx import numpy_helper

    from npeca.golden.export_onnx import _main, check_onnx_export

    out = _one_case(exported.path, "bias", tmp_path / "e")
    path = out / "test_bias" / "test_data_set_0" / "output_0.pb"
    y = _tensor(onnx, path)
    bound = _tensor(onnx, out / "test_bias" / "npeca_bounds" / "output_0.pb")
    i = (1, 5, 2, 0)
    moved = y.copy()
    v = moved[i]
    while abs(float(v) - float(y[i])) <= bound[i]:  # the next float32 beyond the bound
        v = np.nextafter(v, np.float32(np.inf))
    moved[i] = v
    path.write_bytes(numpy_helper.from_array(moved, "y").SerializeToString())
    (result,) = check_onnx_export(out)
    assert result[:2] == ("bias", "FAIL")
    assert "1 of 288 elements beyond their bound; worst at (1, 5, 2, 0)" in result[2]
    assert _main(["check", str(out)]) == 1
    assert "0 PASS, 1 FAIL" in capsys.readouterr().out


def test_bfloat16_cases_are_judged_by_the_reference_evaluator(onnx, exported, tmp_path):
    """onnxruntime has no CPU bfloat16 Pad or Sigmoid: the checker runs onnx's reference
    evaluator on those cases, says so, and still fails a y moved beyond its bound."""
    from onnx import helper

    from npeca.golden.export_onnx import check_onnx_export

    out = _one_case(exported.path, "bfloat16", tmp_path / "e")
    (result,) = check_onnx_export(out)
    assert result[:2] == ("bfloat16", "PASS") and "run by onnx.reference" in result[2]
    path = out / "test_bfloat16" / "test_data_set_0" / "output_0.pb"
    y = _tensor(onnx, path).astype(np.float64)
    bound = _tensor(onnx, out / "test_bfloat16" / "npeca_bounds" / "output_0.pb")
    i = (1, 5, 2, 0)
    bits = np.ascontiguousarray(y.astype(np.float32)).view(np.uint32) >> 16
    while abs(float((np.uint32(bits[i]) << 16).view(np.float32)) - y[i]) <= bound[i]:
        bits[i] += 1  # sign and magnitude: one bfloat16 further from zero
    path.write_bytes(helper.make_tensor("y", 16, list(y.shape),
                                        bits.astype("<u2").tobytes(), raw=True)
                     .SerializeToString())
    (result,) = check_onnx_export(out)
    assert result[:2] == ("bfloat16", "FAIL")
    assert "1 of 288 elements beyond their bound; worst at (1, 5, 2, 0)" in result[2]


def _replace_gate(onnx, model, new_nodes):
    """The model with its gate (the nodes between z and a) replaced by ``new_nodes``."""
    gate = {"a", "z_plus_3", "relu6"}
    nodes = list(model.graph.node)
    first = min(i for i, n in enumerate(nodes) if n.output[0] in gate)
    kept = [n for n in nodes if n.output[0] not in gate]
    del model.graph.node[:]
    model.graph.node.extend(kept[:first] + new_nodes + kept[first:])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("case, gate", [
    ("circular", "Tanh"),  # a wrong operator
    ("float64_hard_sigmoid", "HardSigmoid"),  # alpha = 1/6 as a float attribute: 3e-8 off
])
def test_a_model_with_a_wrong_gate_fails(onnx, exported, tmp_path, case, gate):
    from onnx import helper

    from npeca.golden.export_onnx import check_onnx_export

    out = _one_case(exported.path, case, tmp_path / "e")
    path = out / f"test_{case}" / "model.onnx"
    attrs = {"alpha": 1.0 / 6.0, "beta": 0.5} if gate == "HardSigmoid" else {}
    model = _replace_gate(onnx, onnx.load(str(path)),
                          [helper.make_node(gate, ["z"], ["a"], **attrs)])
    path.write_bytes(model.SerializeToString())
    (result,) = check_onnx_export(out)
    assert result[:2] == (case, "FAIL"), result
    assert "beyond their bound" in result[2]


def test_hard_sigmoid_operator_is_within_float32_bounds(onnx, exported, tmp_path):
    """Why the export writes relu6(z + 3) / 6 with Add, Clip and Div: ONNX's HardSigmoid
    passes float32 (above, it fails float64)."""
    from onnx import helper

    from npeca.golden.export_onnx import check_onnx_export

    out = _one_case(exported.path, "hard_sigmoid", tmp_path / "e")
    path = out / "test_hard_sigmoid" / "model.onnx"
    model = _replace_gate(onnx, onnx.load(str(path)), [
        helper.make_node("HardSigmoid", ["z"], ["a"], alpha=1.0 / 6.0, beta=0.5)])
    path.write_bytes(model.SerializeToString())
    assert check_onnx_export(out)[0][1] == "PASS"


def test_damaged_exports_are_errors_not_crashes(onnx, exported, tmp_path):
    from npeca.golden.export_onnx import check_onnx_export

    out = tmp_path / "e"
    for name in ("bias", "circular", "nan_propagation", "float16", "weight_k"):
        _one_case(exported.path, name, out)
    (out / "test_bias" / "test_data_set_0" / "input_2.pb").unlink()  # the bias
    (out / "test_circular" / "model.onnx").write_bytes(b"\x08garbage")
    (out / "test_nan_propagation" / "npeca_bounds" / "nan_ok_0.pb").write_bytes(
        (out / "test_nan_propagation" / "npeca_bounds" / "output_0.pb").read_bytes())
    f16 = out / "test_float16" / "test_data_set_0"
    (f16 / "input_0.pb").write_bytes((f16 / "input_1.pb").read_bytes())  # weight as x
    (out / "test_weight_k" / "npeca_bounds" / "output_0.pb").unlink()
    got = {name: (status, message) for name, status, message in check_onnx_export(out)}
    assert {n: s for n, (s, _) in got.items()} == dict.fromkeys(
        ["bias", "circular", "float16", "nan_propagation", "weight_k"], "ERROR")
    assert "test data" in got["bias"][1] and "model.onnx" in got["circular"][1]
    assert "nan_ok_0.pb" in got["nan_propagation"][1]
    assert "input_0.pb holds 'weight'" in got["float16"][1]
    assert "test data" in got["weight_k"][1]


def test_skipped_cases_are_listed_in_the_marker(onnx, suite, tmp_path, monkeypatch, capsys):
    """A case the builder cannot express is left out, listed with its reason in
    NPECA_EXPORT, and reported SKIP (not a failure) by the checker."""
    from npeca.golden import export_onnx

    real = export_onnx.eca_model

    def picky(x_shape, weight_shape, dtype, params, **kw):
        if np.dtype(dtype) == np.float64:
            raise NotImplementedError("this target has no float64")
        return real(x_shape, weight_shape, dtype, params, **kw)

    monkeypatch.setattr(export_onnx, "eca_model", picky)
    report = export(COMMITTED, "onnx", tmp_path / "onnx")
    f64 = [n for n, c in suite.cases.items() if c["dtype"] == "float64"]
    assert report.skipped == [(n, "this target has no float64") for n in f64]
    marker = json.loads((report.path / MARKER).read_text())
    assert marker["skipped"] == [{"case": n, "reason": "this target has no float64"}
                                 for n in f64]
    assert marker["written"] == [n for n in suite.cases if n not in f64]
    assert not any((report.path / f"test_{n}").exists() for n in f64)
    results = export_onnx.check_onnx_export(report.path)
    assert [r[1] for r in results] == ["PASS"] * (52 - len(f64)) + ["SKIP"] * len(f64)
    assert export_onnx._main(["check", str(report.path)]) == 0
    assert f"{52 - len(f64)} PASS, 0 FAIL, 0 ERROR, {len(f64)} SKIP" in capsys.readouterr().out


def test_without_onnx_the_export_says_what_to_install(suite, tmp_path, monkeypatch, capsys):
    from npeca.golden import export_onnx

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(BackendUnavailableError, match="pip install onnx"):
        export_onnx.write_onnx(suite, tmp_path)
    assert export_onnx._main(["check", str(tmp_path)]) == 1
    assert "pip install onnx" in capsys.readouterr().err


def test_the_onnxruntime_adapter_shares_the_graph_and_passes_the_core_suite(onnx, suite):
    results = golden.verify(COMMITTED, "onnxruntime", progress=False)
    bad = [(r.case, r.status, r.message) for r in results if r.status in ("FAIL", "ERROR")]
    assert not bad
    for r in results:  # float32 always runs; other dtypes only where a kernel is lacking
        if r.status == "SKIP":
            assert suite.cases[r.case]["dtype"] != "float32" and "kernel" in r.message
        else:
            assert r.status == "PASS" and r.compared == ["y", "m", "z", "a"], r


def test_checker_reports_missing_cases_and_a_missing_marker(tmp_path):
    import shutil

    from npeca.golden.export import export
    from npeca.golden.export_onnx import check_onnx_export
    from npeca.golden.schema import EXPORT_MARKER

    out = tmp_path / "onnx"
    export(COMMITTED, "onnx", out)
    shutil.rmtree(out / "test_circular")
    results = {name: (status, msg) for name, status, msg in check_onnx_export(out)}
    assert results["circular"][0] == "ERROR" and "missing" in results["circular"][1]
    (out / EXPORT_MARKER).unlink()
    results = {name: (status, msg) for name, status, msg in check_onnx_export(out)}
    assert results[EXPORT_MARKER][0] == "ERROR"
