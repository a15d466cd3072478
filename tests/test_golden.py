"""Golden vectors: generation, exactness against an arbitrary-precision oracle, formats,
integrity checks, the committed core suite, and verification of other backends."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import require
import npeca.backends
from npeca import golden
from npeca.cli import main
from npeca.errors import ParameterError
from npeca.golden import Suite, dtypes
from npeca.golden.bounds import BOUNDS, error_bounds
from npeca.golden.cases import core_cases
from npeca.golden.schema import READ_VERSIONS, SCHEMA_VERSION

COMMITTED = Path(__file__).parent / "golden" / "core"


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    require("safetensors", "NPECA_REQUIRE_OPTIONAL")
    return golden.generate(tmp_path_factory.mktemp("g") / "core",
                           formats=("npz", "safetensors", "json"), progress=False)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "suite"
    shutil.copytree(src, dst)
    return dst


def _rehash(path: Path) -> None:
    """Recompute every hash in the manifest, as an attacker or a careless edit would."""
    manifest = json.loads((path / "manifest.json").read_text())
    for rel in manifest["files"]:
        manifest["files"][rel] = golden.io.sha256((path / rel).read_bytes())
    (path / "manifest.json").write_text(json.dumps(manifest))


# --- generation and the numpy backend ------------------------------------------------------

@pytest.mark.slow
def test_generated_suite_verifies_with_the_reference(suite_dir, capsys):
    assert main(["golden", "verify", str(suite_dir), "--backend", "numpy", "--quiet"]) == 0
    out = capsys.readouterr().out
    n = len(core_cases())
    assert f"{n} PASS, 0 FAIL, 0 ERROR, 0 SKIP of {n} cases" in out
    assert main(["golden", "verify", str(suite_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {c["status"] for c in doc["cases"]} == {"PASS"}
    outputs = {o["output"] for c in doc["cases"] for o in c["outputs"]}
    assert outputs == {"y", "m", "z", "a", "dx", "dweight", "dbias"}


def test_manifest_covers_what_the_issue_asks(suite_dir):
    m = json.loads((suite_dir / "manifest.json").read_text())
    assert m["schema"] == "npeca-golden" and m["schema_version"] == 3
    assert set(m["generator"]) >= {"npeca", "numpy"}
    cases = {c["name"]: c for c in m["cases"]}
    channels = {c["arrays"]["x"]["shape"][1] for c in cases.values() if
                c["params"]["channel_axis"] == 1}
    assert {1, 2, 7, 8, 16, 31, 32, 127, 128, 255, 256, 511, 512, 2048} <= channels
    for c in cases.values():
        assert set(c) == {"name", "seed", "dtype", "params", "flags", "arrays", "bounds",
                          "files", "notes", "tags"}
        assert set(c["bounds"]) == {o for o in ("y", "m", "z", "a", "dx", "dweight", "dbias")
                                    if o in c["arrays"]}
        assert set(c["params"]) == {"k", "padding", "groups", "gate", "bias", "channel_axis",
                                    "weight_form"}
        assert c["params"]["k"] % 2 == 1
        for rel in c["files"].values():
            assert rel in m["files"] and len(m["files"][rel]) == 64
    ps = [c["params"] for c in cases.values()]
    assert any(p["k"] > cases[n]["arrays"]["x"]["shape"][1] for n, p in zip(cases, ps))
    assert {p["padding"] for p in ps} == {"zeros", "circular"}
    assert {p["gate"] for p in ps} == {"sigmoid", "hard_sigmoid"}
    assert {p["weight_form"] for p in ps} == {"k", "11k", "Ck", "C1k"}
    assert {p["channel_axis"] for p in ps} == {1, -1} and any(p["bias"] for p in ps)
    assert any(p["groups"] > 1 for p in ps)
    assert {c["dtype"] for c in cases.values()} == {"float16", "float32", "float64", "bfloat16"}
    assert {len(c["arrays"]["x"]["shape"]) for c in cases.values()} == {3, 4, 5}
    assert cases["saturated_sigmoid"]["flags"]["saturated"]
    assert not cases["bias"]["flags"]["saturated"]
    assert cases["nan_propagation"]["flags"] == {"nonfinite": True, "saturated": False}


def test_nan_and_inf_propagate_in_the_expected_values(suite_dir):
    s = Suite(suite_dir)
    nan = s.arrays("nan_propagation")
    nan_channels = np.isnan(nan["y"][0]).any(axis=(1, 2))
    assert nan_channels.tolist() == [c in (7, 8, 9) for c in range(16)]  # k = 3 neighbours
    assert not np.isnan(nan["y"][1]).any()
    inf = s.arrays("inf_propagation")
    assert np.isinf(inf["m"][0, 8]) and np.isinf(inf["m"][1, 0])


@pytest.mark.slow
def test_generation_is_deterministic(suite_dir, tmp_path):
    again = golden.generate(tmp_path / "again", formats=("npz", "safetensors", "json"),
                            progress=False)
    assert (again / "manifest.json").read_bytes() == (suite_dir / "manifest.json").read_bytes()


def test_formats_hold_identical_arrays(suite_dir):
    s = Suite(suite_dir)
    for name, case in s.cases.items():
        ref = s.arrays(name, "npz")
        for fmt in case["files"]:
            other = s.arrays(name, fmt)
            assert set(other) == set(ref)
            for k in ref:
                assert other[k].dtype == ref[k].dtype
                np.testing.assert_array_equal(other[k], ref[k], err_msg=f"{name} {fmt} {k}")


def test_json_needs_no_npeca(suite_dir):
    """The JSON files are plain JSON with hex floats: read them with the standard library."""
    m = json.loads((suite_dir / "manifest.json").read_text())
    case = next(c for c in m["cases"] if "json" in c["files"])
    doc = json.loads((suite_dir / case["files"]["json"]).read_text())
    y = doc["arrays"]["y"]
    values = [float.fromhex(v) for v in y["data"]]
    assert len(values) == math.prod(y["shape"]) and y["dtype"] == case["dtype"]


def test_npz_and_safetensors_read_with_their_own_libraries(suite_dir):
    st = require("safetensors.numpy", "NPECA_REQUIRE_OPTIONAL")
    with np.load(suite_dir / "cases" / "bias.npz", allow_pickle=False) as npz:
        x = npz["x"]
    np.testing.assert_array_equal(st.load_file(str(suite_dir / "cases" / "bias.safetensors"))
                                  ["x"], x)


# --- exactness ------------------------------------------------------------------------------

def _oracle(arrays, params, prec=256):
    """ECA in mpmath at ``prec`` bits, loops only, written independently of exact.py."""
    import mpmath as mp

    ctx = mp.mp.clone()
    ctx.prec = prec
    mpf = ctx.mpf
    x, g = arrays["x"], arrays["grad_out"]
    if params["channel_axis"] == -1:
        x, g = np.moveaxis(x, -1, 1), np.moveaxis(g, -1, 1)
    n, c = x.shape[:2]
    xs = [[[mpf(float(v)) for v in x[i, ch].reshape(-1)] for ch in range(c)] for i in range(n)]
    gs = [[[mpf(float(v)) for v in g[i, ch].reshape(-1)] for ch in range(c)] for i in range(n)]
    s = len(xs[0][0])
    k, groups = params["k"], params["groups"]
    cg, p = c // groups, (k - 1) // 2
    w = arrays["weight"].astype(np.float64).reshape(-1, k)
    wt = lambda ch, j: mpf(float(w[ch if w.shape[0] > 1 else 0, j]))  # noqa: E731
    b = mpf(float(arrays["bias"][0])) if "bias" in arrays else mpf(0)

    def src(ch, j):
        base = ch // cg * cg
        t = ch - base + j - p
        if params["padding"] == "circular":
            return base + t % cg
        return base + t if 0 <= t < cg else None

    m = [[ctx.fsum(xs[i][ch]) / s for ch in range(c)] for i in range(n)]
    z = [[b + ctx.fsum(wt(ch, j) * m[i][src(ch, j)] for j in range(k) if src(ch, j) is not None)
          for ch in range(c)] for i in range(n)]
    if params["gate"] == "sigmoid":
        a = [[1 / (1 + ctx.exp(-v)) for v in row] for row in z]
        d = [[ctx.exp(-v) / (1 + ctx.exp(-v)) ** 2 for v in row] for row in z]
    else:
        a = [[min(max(v + 3, mpf(0)), mpf(6)) / 6 for v in row] for row in z]
        d = [[mpf(1) / 6 if -3 < v < 3 else mpf(0) for v in row] for row in z]
    dz = [[ctx.fsum(gv * xv for gv, xv in zip(gs[i][ch], xs[i][ch])) * d[i][ch]
           for ch in range(c)] for i in range(n)]
    dw = [[mpf(0)] * k for _ in range(w.shape[0])]
    dm = [[mpf(0)] * c for _ in range(n)]
    for i in range(n):
        for ch in range(c):
            for j in range(k):
                t = src(ch, j)
                if t is not None:
                    dw[ch if w.shape[0] > 1 else 0][j] += dz[i][ch] * m[i][t]
                    dm[i][t] += wt(ch, j) * dz[i][ch]
    y = [[[a[i][ch] * v for v in xs[i][ch]] for ch in range(c)] for i in range(n)]
    dx = [[[gv * a[i][ch] + dm[i][ch] / s for gv in gs[i][ch]] for ch in range(c)]
          for i in range(n)]
    out = {"m": m, "z": z, "a": a, "dweight": dw, "y": y, "dx": dx}
    if "bias" in arrays:
        out["dbias"] = [ctx.fsum(v for row in dz for v in row)]
    return out, ctx


def _flat(nested):
    if isinstance(nested, list):
        return [v for item in nested for v in _flat(item)]
    return [nested]


def _worst_ulp(stored: np.ndarray, exact: list, ctx, fmt: str) -> float:
    """max |stored - exact| in units of the spacing of format ``fmt`` (the case's dtype, or
    float64 for m, z, a; bfloat16 values arrive in float32 carriers) towards exact."""
    worst = 0.0
    for s_val, v in zip(stored.reshape(-1), exact):
        s_mp = ctx.mpf(float(s_val))
        step = 1 if v > s_mp else -1
        neighbour = dtypes.from_ordered(dtypes.ordered(float(s_val), fmt) + step, fmt)
        ulp = abs(float(neighbour) - float(s_val))
        if ulp == 0 or not math.isfinite(ulp):
            continue
        worst = max(worst, float(abs(s_mp - v) / ctx.mpf(ulp)))
    return worst


def test_stored_values_are_correctly_rounded(capsys):
    """Every stored value of the exact cases small enough for an mpmath oracle is within
    half an ulp of the 256-bit result: correctly rounded."""
    suite = Suite(COMMITTED)
    worst_overall, checked, cases = 0.0, 0, 0
    for name, case in suite.cases.items():
        if case["flags"]["nonfinite"] or math.prod(case["arrays"]["x"]["shape"]) > 400:
            continue
        cases += 1
        arrays = suite.arrays(name)
        exact, ctx = _oracle(arrays, case["params"])
        for out, values in exact.items():
            stored = arrays[out]
            if out in ("y", "dx") and case["params"]["channel_axis"] == -1:
                stored = np.moveaxis(stored, -1, 1)
            flat = _flat(values)
            assert len(flat) == stored.size, (name, out)
            w = _worst_ulp(np.ascontiguousarray(stored), flat, ctx,
                           "float64" if out in ("m", "z", "a") else case["dtype"])
            assert w <= 0.5 + 1e-12, f"{name}.{out}: {w} ulp from the exact value"
            worst_overall = max(worst_overall, w)
            checked += stored.size
    with capsys.disabled():
        print(f"\n[golden exactness] {checked} stored values in {cases} cases checked against "
              f"a 256-bit mpmath oracle; worst error {worst_overall:.6f} ulp")
    assert checked > 1000


# --- the committed suite ---------------------------------------------------------------------

@pytest.mark.slow
def test_committed_core_suite_matches_a_fresh_generation(tmp_path):
    """Regenerate the core suite and compare with the committed one bit for bit: every
    stored value (non-finite cases included) is exact and every bound is computed with
    correctly rounded sums, so the same bits come out on every CPU and any change of the
    math shows up. Same bits means the same digest."""
    committed = Suite(COMMITTED)
    fresh = Suite(golden.generate(tmp_path / "fresh", formats=("npz", "safetensors", "json"),
                                  progress=False))
    assert list(committed.cases) == list(fresh.cases) == [c.name for c in core_cases()]
    for name, case in fresh.cases.items():
        old, new = committed.arrays(name), fresh.arrays(name)
        assert case == committed.cases[name]
        for key in new:
            np.testing.assert_array_equal(old[key], new[key], err_msg=f"{name}.{key}")
    assert fresh.digest == committed.digest


# --- suites of an earlier schema version ----------------------------------------------------

V2_SAMPLE = Path(__file__).parent / "golden" / "v2-sample"  # 3 core cases as written before


def test_the_bound_formulas_are_the_versions_read():
    assert tuple(BOUNDS) == READ_VERSIONS and max(READ_VERSIONS) == SCHEMA_VERSION == 3
    arrays = Suite(V2_SAMPLE).arrays("float16_bias_hard")
    case = Suite(V2_SAMPLE).cases["float16_bias_hard"]
    for bad in (1, 4, True, 3.0, "3"):
        with pytest.raises(ParameterError, match="schema_version must be one of"):
            error_bounds(arrays, case["params"], "float16", schema_version=bad)


def test_a_version_2_suite_verifies_with_the_bounds_it_was_written_with(capsys):
    """A suite written before the underflow term (schema_version 2; the files are those the
    earlier generator wrote) still verifies: its stored bounds are version 2's, which differ
    from version 3's in every case of the sample, so a verifier that used the newest formula
    would refuse it as edited."""
    suite = Suite(V2_SAMPLE)
    assert suite.schema_version == 2 and len(suite.cases) == 3
    for name, case in suite.cases.items():
        arrays = suite.arrays(name)
        v2 = error_bounds(arrays, case["params"], case["dtype"], schema_version=2)
        v3 = error_bounds(arrays, case["params"], case["dtype"], schema_version=3)
        for out, bname in case["bounds"].items():
            np.testing.assert_array_equal(arrays[bname], v2[out], err_msg=f"{name}.{out}")
            assert (v3[out] >= v2[out]).all(), (name, out)  # eta only widens
        assert any((v3[o] != v2[o]).any() for o in case["bounds"]), name
    assert _verify_exit(V2_SAMPLE, "--require", "y,m,z,a,dx,dweight") == 0
    assert "3 PASS, 0 FAIL" in capsys.readouterr().out


def test_every_reader_of_a_version_2_suite_uses_its_formula(tmp_path):
    """export and mutants check a suite's integrity as verify does: with the formula of the
    suite's version (else they refuse a version 2 suite as edited)."""
    from npeca.golden.export import export
    from npeca.golden.mutants import kill_table
    report = export(V2_SAMPLE, "c", tmp_path / "c")
    assert len(report.written) == 3 and not report.skipped
    correct, mutants = kill_table(Suite(V2_SAMPLE))
    assert len(correct) == 4 and all(not row.failed and row.ran == 3 for row in correct)
    assert any(row.failed for row in mutants)


def _relabelled(source: Path, tmp_path: Path, version) -> Path:
    """A copy of the suite ``source`` whose manifest names ``version`` as its schema."""
    path = _copy(source, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = version
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("source,relabel", [(V2_SAMPLE, 3), (COMMITTED, 2)])
def test_a_suite_relabelled_to_the_other_version_is_refused(tmp_path, capsys, source,
                                                           relabel):
    assert _verify_exit(_relabelled(source, tmp_path, relabel)) == 2
    err = capsys.readouterr().err
    assert "the bound derived from the case's inputs" in err and "edited" in err


# --- integrity: every damaged suite is refused ----------------------------------------------

def _verify_exit(path, *extra):
    return main(["golden", "verify", str(path), "--quiet", *extra])


def test_wrong_value_with_a_valid_hash_fails_the_comparison(tmp_path, capsys):
    path = _copy(COMMITTED, tmp_path)
    npz = path / "cases" / "bias.npz"
    with np.load(npz, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["y"] = arrays["y"].copy()
    arrays["y"][0, 3, 1, 1] += 1e-3
    np.savez(npz, **arrays)
    _rehash(path)
    assert _verify_exit(path) == 2  # consistent hashes, but y disagrees with the inputs
    assert "case bias: expected y[0, 3, 1, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("version", [1, 4, 99, 3.0, 2.0, True, "3", None, [3]])
def test_a_schema_version_not_read_is_refused(tmp_path, capsys, version):
    assert _verify_exit(_relabelled(V2_SAMPLE, tmp_path, version)) == 2
    err = capsys.readouterr().err
    assert "schema_version" in err and "is not supported by this npeca (it reads versions " \
        "2, 3)" in err and "Traceback" not in err


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete", "hash", "schema",
                                    "manifest_json", "pickle", "escape_path"])
def test_damaged_suites_are_refused(tmp_path, capsys, damage):
    path = _copy(COMMITTED, tmp_path)
    target = path / "cases" / "bias.npz"
    manifest = json.loads((path / "manifest.json").read_text())
    if damage == "flip_byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "delete":
        target.unlink()
    elif damage == "hash":
        manifest["files"]["cases/bias.npz"] = "0" * 64
        (path / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "schema":
        manifest["schema_version"] = 99
        (path / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "manifest_json":
        (path / "manifest.json").write_text("{not json")
    elif damage == "pickle":
        with np.load(target, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        arrays["x"] = np.array([{"evil": 1}], dtype=object)
        np.savez(target, **arrays, allow_pickle=True)
        _rehash(path)
    elif damage == "escape_path":
        manifest["files"]["../outside.npz"] = "0" * 64
        (path / "manifest.json").write_text(json.dumps(manifest))
    assert _verify_exit(path) == 2
    err = capsys.readouterr().err
    assert "error" in err
    expected = {"flip_byte": "SHA-256 mismatch", "truncate": "SHA-256 mismatch",
                "delete": "missing", "hash": "SHA-256 mismatch", "schema": "schema_version 99",
                "manifest_json": "not valid JSON", "pickle": "pickle",
                "escape_path": "no case uses"}[damage]
    assert expected in err


def test_generation_is_atomic(tmp_path, monkeypatch):
    calls = []

    def failing(spec):
        calls.append(spec.name)
        if len(calls) == 5:
            raise KeyboardInterrupt  # an interrupted run
        return real(spec)

    real = golden.generate.__globals__["build_case"]
    monkeypatch.setitem(golden.generate.__globals__, "build_case", failing)
    with pytest.raises(KeyboardInterrupt):
        golden.generate(tmp_path / "suite", progress=False)
    assert list(tmp_path.iterdir()) == []  # no suite, no temporary directory left behind


@pytest.mark.slow
def test_existing_directory_needs_force(tmp_path, capsys):
    out = tmp_path / "suite"
    assert main(["golden", "generate", str(out), "--quiet"]) == 0
    assert main(["golden", "generate", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["golden", "generate", str(out), "--quiet", "--force"]) == 0
    assert Suite(out).cases
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite"]


def test_bad_generate_arguments(tmp_path, capsys):
    assert main(["golden", "generate", str(tmp_path / "s"), "--format", "csv"]) == 2
    assert "formats must be" in capsys.readouterr().err


# --- other backends ---------------------------------------------------------------------------

def test_module_function_backends(capsys):
    assert _verify_exit(COMMITTED, "--backend", "golden_adapters:correct") == 0
    assert _verify_exit(COMMITTED, "--backend", "golden_adapters:flipped_kernel") == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "y" in out
    assert _verify_exit(COMMITTED, "--backend", "golden_adapters:sum_not_mean") == 1
    assert _verify_exit(COMMITTED, "--backend", "golden_adapters:unsupported") == 1
    assert "ran no case" in capsys.readouterr().err
    assert _verify_exit(COMMITTED, "--backend", "golden_adapters:nope") == 2
    assert _verify_exit(COMMITTED, "--backend", "tensorflow") == 2


def test_flipped_kernel_passes_only_symmetric_cases():
    """The convolution/correlation mix-up is invisible only where the kernel is length 1,
    the gate is saturated (a = 1 whatever the kernel), or circular padding over C <= 2
    channels makes tap j and tap k - 1 - j read the same channel."""
    results = golden.verify(COMMITTED, "golden_adapters:flipped_kernel", progress=False)
    suite = Suite(COMMITTED)
    for r in results:
        if r.status == "PASS":
            case = suite.cases[r.case]
            p, shape = case["params"], case["arrays"]["x"]["shape"]
            c = shape[-1] if p["channel_axis"] == -1 else shape[1]
            assert p["k"] == 1 or case["flags"]["saturated"] or (
                p["padding"] == "circular" and c // p["groups"] <= 2), r.case
    assert sum(r.status == "FAIL" for r in results) >= 25


def test_torch_passes_the_core_suite(torch):
    results = golden.verify(COMMITTED, "torch", progress=False)
    bad = [(r.case, r.status, r.message or (r.worst and r.worst.message)) for r in results
           if r.status != "PASS"]
    assert not bad


def test_onnxruntime_passes_the_core_suite():
    require("onnxruntime", "NPECA_REQUIRE_OPTIONAL")
    require("onnx", "NPECA_REQUIRE_OPTIONAL")
    results = golden.verify(COMMITTED, "onnxruntime", progress=False)
    statuses = {r.case: r.status for r in results}
    assert all(s in ("PASS", "SKIP") for s in statuses.values()), statuses
    suite = Suite(COMMITTED)
    assert all(statuses[n] == "PASS" for n, c in suite.cases.items() if c["dtype"] == "float32")


def test_docs_worked_example_runs_as_documented(tmp_path, monkeypatch, capsys, torch):
    """docs/golden.md's my_eca.py, extracted and run with the command the page shows."""
    import re
    import sys

    page = (Path(__file__).parent.parent / "docs" / "golden.md").read_text()
    code = re.search(r"```python\n# my_eca.py\n(.*?)```", page, re.S).group(1)
    (tmp_path / "my_eca.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_eca", None)
    assert _verify_exit(COMMITTED, "--backend", "my_eca:paper_eca") == 0
    out = capsys.readouterr().out
    summary = re.search(r"\n(\d+ PASS, \d+ FAIL, \d+ ERROR, \d+ SKIP of \d+ cases)\n```", page)
    assert summary.group(1) in out


def test_numba_passes_the_core_suite():
    results = golden.verify(COMMITTED, "numba", progress=False)
    bad = [(r.case, r.status, r.message or (r.worst and r.worst.message)) for r in results
           if r.status != "PASS"]
    assert not bad and len(results) == len(core_cases())


@pytest.mark.slow
def test_force_replaces_only_a_golden_suite(tmp_path, monkeypatch, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["golden", "generate", str(precious), "--force", "--quiet"]) == 2
    assert "not exactly a golden suite" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
    suite = tmp_path / "suite"
    assert main(["golden", "generate", str(suite), "--quiet"]) == 0
    monkeypatch.chdir(suite)
    assert main(["golden", "generate", ".", "--force", "--quiet"]) == 2
    assert "current directory" in capsys.readouterr().err
    assert (suite / "manifest.json").is_file()
    assert oct(suite.stat().st_mode & 0o777) != oct(0o700)  # readable like its files


@pytest.mark.parametrize("edit", ["files_list", "cases_dict", "case_str", "no_bounds",
                                  "tol_str", "absolute_path", "duplicate"])
def test_malformed_manifests_are_refused(tmp_path, capsys, edit):
    path = _copy(COMMITTED, tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    if edit == "files_list":
        m["files"] = list(m["files"])
    elif edit == "cases_dict":
        m["cases"] = {"a": 1}
    elif edit == "case_str":
        m["cases"][0] = "oops"
    elif edit == "no_bounds":
        del m["cases"][0]["bounds"]
    elif edit == "tol_str":
        m["cases"][0]["bounds"]["y"] = 1e-5
    elif edit == "absolute_path":
        m["files"]["/etc/hostname"] = "0" * 64
    elif edit == "duplicate":
        m["cases"].append(m["cases"][0])
    (path / "manifest.json").write_text(json.dumps(m))
    assert _verify_exit(path) == 2
    assert "manifest.json" in capsys.readouterr().err or edit == "absolute_path"


def test_json_format_skips_cases_without_json(capsys):
    assert _verify_exit(COMMITTED, "--format", "json") == 0
    assert "SKIP" in capsys.readouterr().out


@pytest.mark.parametrize("backend", [":", ":f", ".x:f"])
def test_malformed_module_backends(backend, capsys):
    assert _verify_exit(COMMITTED, "--backend", backend) == 2


# --- nothing of the user's is ever deleted -----------------------------------------------------

def _hooked(monkeypatch, action, at=2):
    """generate() on three small cases, running ``action`` while the second is built."""
    calls = []
    real = golden.generate.__globals__["build_case"]

    def build(spec):
        calls.append(spec.name)
        if len(calls) == at:
            action()
        return real(spec)

    monkeypatch.setitem(golden.generate.__globals__, "build_case", build)
    monkeypatch.setitem(golden.generate.__globals__, "suite",
                        lambda name: core_cases()[:3])


def test_a_directory_filled_during_the_run_is_left_alone(tmp_path, monkeypatch, capsys):
    """Regression: `generate out & mkdir out; echo thesis > out/precious.txt` lost the file."""
    out = tmp_path / "out"

    def user_writes():
        assert out.is_dir()  # the run claimed the name at its start
        (out / "precious.txt").write_text("thesis")

    _hooked(monkeypatch, user_writes)
    assert main(["golden", "generate", str(out), "--quiet"]) == 2
    assert "changed while the suite was being written" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "thesis"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


def test_a_directory_replacing_the_claim_is_left_alone(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"

    def user_replaces():
        out.rmdir()
        out.mkdir()
        (out / "precious.txt").write_text("thesis")

    _hooked(monkeypatch, user_replaces)
    assert main(["golden", "generate", str(out), "--quiet"]) == 2
    assert (out / "precious.txt").read_text() == "thesis"


def test_of_two_runs_into_one_new_directory_exactly_one_succeeds(tmp_path, monkeypatch,
                                                                    capsys):
    out = tmp_path / "out"
    second = []
    _hooked(monkeypatch, lambda: second.append(
        main(["golden", "generate", str(out), "--quiet"])))
    assert main(["golden", "generate", str(out), "--quiet"]) == 0
    assert second == [2]
    assert len(Suite(out).cases) == 3


def test_force_rechecks_the_old_suite_at_the_swap(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    _hooked(monkeypatch, lambda: None)
    assert main(["golden", "generate", str(out), "--quiet"]) == 0

    def user_swaps_in_data():
        shutil.rmtree(out)
        out.mkdir()
        (out / "precious.txt").write_text("thesis")

    _hooked(monkeypatch, user_swaps_in_data)
    assert main(["golden", "generate", str(out), "--quiet", "--force"]) == 2
    assert "no longer the golden suite" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "thesis"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signals_remove_the_temporary_directory(tmp_path, signame):
    import signal
    import subprocess
    import sys
    import time

    def default_sigint():  # a shell's background job inherits SIGINT ignored; and no
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # signal stays blocked from the parent
        signal.pthread_sigmask(signal.SIG_SETMASK, [])

    # A numba compile that earlier tests left running in this process's background holds the
    # GIL for seconds at a time: the loop below then saw the temporary directory only after
    # the child had finished its 7 s, and signalled a process that had exited with 0.
    npeca.backends._join_importer()  # backend="auto" imports numba in the background too
    if "npeca.backends.numba_cpu" in sys.modules:
        assert sys.modules["npeca.backends.numba_cpu"].wait_until_ready(timeout=600)
    # A stall of this process between seeing the directory and signalling (another thread
    # holding the GIL) can let the child finish first (it exits 0 and leaves a complete
    # suite): such a try shows nothing, and the run is tried again, at most 3 times.
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "npeca.cli", "golden", "generate",
                                 str(tmp_path / "out"), "--quiet"], stderr=subprocess.PIPE,
                                preexec_fn=default_sigint)
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".out.tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob(".out.tmp-*")), "the run never started writing"
        proc.send_signal(getattr(signal, signame))
        proc.wait(timeout=60)
        if proc.returncode == 0 and (tmp_path / "out").is_dir():
            shutil.rmtree(tmp_path / "out")  # finished before the signal came: again
            continue
        assert proc.returncode != 0
        assert list(tmp_path.iterdir()) == []  # neither the temporary directory nor the claim
        return
    pytest.fail("the child finished before the signal in each of 3 tries")


def test_exact_values_overflow_to_infinity_as_ieee_says():
    """An exact value at or beyond the midpoint past a format's largest finite number
    rounds to infinity, in every format (regression: the neighbour past inf is a NaN
    pattern, and comparing with it crashed)."""
    from fractions import Fraction

    import npeca
    from npeca.golden.exact import exact_eca, round_to

    assert round_to(Fraction(65519), "float16") == 65504.0
    assert round_to(Fraction(65520), "float16") == np.inf  # the midpoint: ties to even
    assert round_to(-Fraction(70000), "float16") == -np.inf
    big = Fraction(2) ** 128
    assert round_to(big - Fraction(2) ** 119, "bfloat16") == np.inf
    largest = float(Fraction(255, 128) * 2 ** 127)  # bfloat16's largest finite value
    assert round_to(big - Fraction(2) ** 119 - 1, "bfloat16") == largest
    assert round_to(big, "float32") == np.inf and round_to(-big * 2, "bfloat16") == -np.inf
    x = np.ones((1, 3, 2), np.float16)
    g = np.full(x.shape, 65000.0, np.float16)
    out = exact_eca(x, np.ones(3), g, bias=None, channel_axis=1, padding="zeros", groups=1,
                    gate="sigmoid")
    ref = npeca.eca_backward(x, np.ones(3), g, backend="numpy")
    np.testing.assert_array_equal(np.isinf(out["dx"]), np.isinf(ref.x))
    assert np.isinf(out["dx"]).any()
