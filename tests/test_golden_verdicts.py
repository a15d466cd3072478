"""Golden verdicts that can fail: derived bounds, the mutant catalogue, every output accounted
for, a pinned digest, honest reporting."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npeca import golden
from npeca.cli import main
from npeca.golden import Suite
from npeca.golden.bounds import checkable, error_bounds
from npeca.golden.mutants import MUTANTS, ORDERS, contract_eca, format_kill_table, kill_table
from npeca.golden.verify import check_case, compare, run_case

COMMITTED = Path(__file__).parent / "golden" / "core"
DOCS = Path(__file__).parent.parent / "docs" / "golden.md"
ALL = ("y", "m", "z", "a", "dx", "dweight", "dbias")


@pytest.fixture(scope="module")
def suite() -> Suite:
    return Suite(COMMITTED)


@pytest.fixture(scope="module")
def table(suite):
    """(correct implementations, mutants): the kill table of the committed suite."""
    return kill_table(suite)


@pytest.fixture(scope="module")
def checked(suite):
    """Every case with its arrays, integrity-checked once."""
    out = []
    for name, case in suite.cases.items():
        arrays = suite.arrays(name)
        check_case(case, arrays)
        out.append((case, arrays))
    return out


def _verify(path, *extra):
    return main(["golden", "verify", str(path), "--quiet", *extra])


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "suite"
    shutil.copytree(COMMITTED, dst)
    return dst


def _rewrite_npz(path: Path, case: str, edit) -> None:
    npz = path / "cases" / f"{case}.npz"
    with np.load(npz, allow_pickle=False) as f:
        arrays = {k: f[k].copy() for k in f.files}
    edit(arrays)
    np.savez(npz, **arrays)
    manifest = json.loads((path / "manifest.json").read_text())
    for rel in manifest["files"]:
        manifest["files"][rel] = golden.io.sha256((path / rel).read_bytes())
    (path / "manifest.json").write_text(json.dumps(manifest))


# --- the mutant catalogue: every plausible bug fails, every correct order passes -------------

def test_every_mutant_is_killed_and_every_correct_order_passes(table):
    correct, mutants = table
    assert len(mutants) >= 15
    assert [c.name for c in correct if c.failed] == []
    assert [m.name for m in mutants if not m.failed] == []


# Mutants that are not wrong at bfloat16's precision (docs/golden.md says why for each).
NOT_BUGS_IN_BFLOAT16 = ("sigmoid_clamped", "hard_slope_float32", "slope_in_storage")


def test_every_mutant_is_killed_on_the_bfloat16_cases(suite, table, ml_dtypes):
    """The catalogue on the bfloat16 cases alone: every mutant fails one of them, except the
    three documented as correct within bfloat16's precision, which pass all of them (so the
    page's reason stays true); and every correct order passes them."""
    correct, mutants = table
    assert [c.name for c in correct if c.failed_by_dtype.get("bfloat16")] == []
    survivors = sorted(m.name for m in mutants if not m.failed_by_dtype.get("bfloat16"))
    assert survivors == sorted(NOT_BUGS_IN_BFLOAT16)
    assert sum(c["dtype"] == "bfloat16" for c in suite.cases.values()) >= 9


def test_float16_weight_gradients_are_checked(checked):
    """Regression: a zero or sign-flipped dweight passed the float16 cases (atol 5.06 for
    values up to 2.27)."""
    f16 = [(c, a) for c, a in checked if c["dtype"] == "float16"
           and checkable(a["dweight"], a["bound_dweight"])]
    assert len(f16) >= 3
    for mutant in ("zero_dweight", "negated_dweight"):
        for case, arrays in f16:
            fn = lambda i, p, m=mutant: contract_eca(i, p, mutant=m)  # noqa: E731
            r = run_case(case, arrays, fn, require=ALL)
            assert r.status == "FAIL", (mutant, case["name"])
            assert [o.output for o in r.outputs if o.status == "FAIL"] == ["dweight"]


def test_the_docs_print_the_current_kill_table(table):
    page = DOCS.read_text()
    correct, mutants = table
    assert format_kill_table(correct, mutants) in page
    for name in MUTANTS:
        assert f"`{name}`" in page, name


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), order=st.sampled_from(ORDERS))
def test_any_summation_order_passes(checked, seed, order):
    """The bounds hold for the contract in any order of summation, not just one."""
    fn = lambda i, p: contract_eca(i, p, order=order, seed=seed)  # noqa: E731
    for case, arrays in checked:
        r = run_case(case, arrays, fn, require=ALL)
        assert r.status == "PASS", (case["name"], r.message)


def test_bounds_can_reject_except_where_the_gate_saturates(checked):
    """No bound larger than every value it guards, except gradients a saturated gate
    crushes below the rounding of a (reported as not checkable, never as a pass)."""
    unchecked = []
    for case, arrays in checked:
        for out, bname in case["bounds"].items():
            if not checkable(arrays[out], arrays[bname]):
                assert case["flags"]["saturated"] and out in ("dweight", "dbias"), \
                    (case["name"], out)
                unchecked.append(case["name"])
    assert "saturated_sigmoid" in unchecked


def test_stored_bounds_are_the_derived_ones(checked):
    for case, arrays in checked:
        derived = error_bounds(arrays, case["params"], case["dtype"])
        for out, bname in case["bounds"].items():
            np.testing.assert_array_equal(arrays[bname], derived[out])


def test_a_saturated_output_is_reported_not_checkable(capsys):
    assert _verify(COMMITTED) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("saturated_sigmoid "))
    assert "PASS" in row and "dweight: not checkable, gate saturated" in row
    r = golden.verify(COMMITTED, "numpy", progress=False)
    sat = next(c for c in r if c.case == "saturated_sigmoid")
    assert {o.output: o.status for o in sat.outputs}["dweight"] == "UNCHECKABLE"


# --- every output accounted for -----------------------------------------------------------

def _adapter(**outputs):
    def fn(inputs, params):
        ref = contract_eca(inputs, params)
        return {k: (ref[v] if isinstance(v, str) else v) for k, v in outputs.items()}
    return fn


def test_unknown_output_names_are_errors():
    results = golden.verify(COMMITTED, _adapter(y="y", Y="y", dW="dweight"), progress=False)
    assert {r.status for r in results} == {"ERROR"}
    assert "unknown output 'Y'" in results[0].message


def test_required_outputs_and_nothing_compared():
    only_m = golden.verify(COMMITTED, _adapter(m="m"), progress=False)
    assert {r.status for r in only_m} == {"FAIL"}
    assert "required output y not returned" in only_m[0].message
    nothing = golden.verify(COMMITTED, _adapter(), progress=False, require=())
    assert {r.status for r in nothing} == {"FAIL"}
    assert "no output compared" in nothing[0].message
    fwd = golden.verify(COMMITTED, _adapter(y="y"), progress=False, require="y,dx")
    assert {r.status for r in fwd} == {"FAIL"}
    assert "required output dx not returned" in fwd[0].message


def test_the_table_lists_what_was_compared(capsys):
    assert _verify(COMMITTED, "--backend", "golden_adapters:correct") == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("ksize_c16 "))
    assert re.search(r"PASS\s+y\s", row)
    assert _verify(COMMITTED, "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cases"][0]["compared"] == ["y", "m", "z", "a", "dx", "dweight"]


def test_dbias_for_a_case_without_bias_fails():
    fn = _adapter(y="y", dbias=np.zeros(1, np.float32))
    r = golden.verify(COMMITTED, fn, progress=False)
    assert r[0].status == "FAIL" and "no bias" in r[0].message


def test_require_names_are_checked(capsys):
    assert _verify(COMMITTED, "--require", "y,dW") == 2
    assert "unknown output 'dW'" in capsys.readouterr().err


# --- a pinned suite ------------------------------------------------------------------------

def test_digest_pins_the_suite(tmp_path, capsys):
    assert main(["golden", "digest", str(COMMITTED)]) == 0
    digest = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest in DOCS.read_text()  # the docs show the committed suite's digest
    readme = (DOCS.parent.parent / "README.md").read_text()
    assert f"--expect-digest {digest}" in readme
    assert _verify(COMMITTED, "--expect-digest", digest) == 0
    path = _copy(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["cases"] = manifest["cases"][:5]  # cutting cases
    manifest["files"] = {r: h for r, h in manifest["files"].items()
                         if any(r in c["files"].values() for c in manifest["cases"])}
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert _verify(path) == 0  # a consistent smaller suite is still a suite...
    capsys.readouterr()
    assert _verify(path, "--expect-digest", digest) == 2  # ...but not the pinned one
    assert "not the one pinned" in capsys.readouterr().err


@pytest.mark.slow
def test_generate_prints_the_digest(tmp_path, capsys):
    assert main(["golden", "generate", str(tmp_path / "s"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"digest {Suite(tmp_path / 's').digest}" in out


def test_looser_stored_bounds_are_refused(tmp_path, capsys):
    path = _copy(tmp_path)
    _rewrite_npz(path, "bias", lambda a: a.__setitem__("bound_y", a["bound_y"] * 1e6))
    assert _verify(path) == 2
    assert "bound_y[0, 0, 0, 0]" in capsys.readouterr().err
    _rewrite_npz(path, "bias", lambda a: a.__setitem__("bound_y", np.full_like(a["bound_y"],
                                                                              np.inf)))
    assert _verify(path) == 2
    assert "looser than the bound derived" in capsys.readouterr().err


def test_edited_expected_values_are_refused(tmp_path, capsys):
    path = _copy(tmp_path)

    def edit(a):
        a["y"] = a["y"] * np.float32(1.01)
        a["bound_y"] = a["bound_y"] * 1e9

    _rewrite_npz(path, "ksize_c16", edit)
    assert _verify(path) == 2
    assert "disagrees with the reference" in capsys.readouterr().err


# --- symbolic links are never followed ------------------------------------------------------

def test_symlinked_case_file_is_refused_unread(tmp_path, capsys):
    path = _copy(tmp_path)
    outside = tmp_path / "outside.npz"
    shutil.move(path / "cases" / "bias.npz", outside)
    (path / "cases" / "bias.npz").symlink_to(outside)
    assert _verify(path) == 2
    err = capsys.readouterr().err
    assert "cases/bias.npz is a symbolic link" in err


def test_symlink_to_a_system_file_prints_no_hash(tmp_path, capsys):
    import hashlib

    path = _copy(tmp_path)
    target = Path("/etc/hostname") if Path("/etc/hostname").is_file() else Path(__file__)
    (path / "cases" / "bias.npz").unlink()
    (path / "cases" / "bias.npz").symlink_to(target)
    assert _verify(path) == 2
    captured = capsys.readouterr()
    assert hashlib.sha256(target.read_bytes()).hexdigest() not in captured.err + captured.out


def test_symlinked_cases_folder_and_manifest_are_refused(tmp_path, capsys):
    path = _copy(tmp_path)
    shutil.move(path / "cases", tmp_path / "elsewhere")
    (path / "cases").symlink_to(tmp_path / "elsewhere")
    assert _verify(path) == 2
    assert "cases is a symbolic link" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    shutil.copytree(COMMITTED / "cases", other / "cases")
    (other / "manifest.json").symlink_to(COMMITTED / "manifest.json")
    assert _verify(other) == 2
    assert "manifest.json is a symbolic link" in capsys.readouterr().err


# --- malformed manifests: one line and exit 2, never a traceback ----------------------------

def _manifest() -> dict:
    return json.loads((COMMITTED / "manifest.json").read_text())


@pytest.mark.parametrize("edit", ["deep", "files_list_in_case", "bound_without_array",
                                  "empty_params", "no_cases", "huge_shape", "bool_k",
                                  "bad_name", "unknown_key"])
def test_malformed_manifests_exit_2(tmp_path, capsys, edit):
    path = _copy(tmp_path)
    m = _manifest()
    text = None
    case = m["cases"][0]
    if edit == "deep":
        text = "[" * 100_000 + "]" * 100_000
    elif edit == "files_list_in_case":
        case["files"] = list(case["files"].values())
    elif edit == "bound_without_array":
        case["bounds"]["dbias"] = "bound_dbias"
    elif edit == "empty_params":
        case["params"] = {}
    elif edit == "no_cases":
        m["cases"] = []
    elif edit == "huge_shape":
        case["arrays"]["x"]["shape"] = [2**40, 1, 2, 2]
    elif edit == "bool_k":
        case["params"]["k"] = True
    elif edit == "bad_name":
        case["name"] = "../evil"
    elif edit == "unknown_key":
        case["tolerances"] = {}
    (path / "manifest.json").write_text(text if text is not None else json.dumps(m))
    assert _verify(path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json" in err, err


def _mutations():
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=False), st.text(max_size=8))
    value = st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
        max_leaves=6)
    return st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["set", "delete", "add"]),
                              value), min_size=1, max_size=3)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=40)
@given(edits=_mutations())
def test_mutated_manifests_never_crash(tmp_path_factory, edits):
    """Any mutation of a valid manifest (a value replaced, a key removed or added, at any
    depth) ends with exit 0, 1 or 2, never an exception."""
    path = tmp_path_factory.mktemp("m")
    small = _manifest()
    small["cases"] = small["cases"][:2]
    small["files"] = {r: h for r, h in small["files"].items()
                      if any(r in c["files"].values() for c in small["cases"])}
    for c in small["cases"]:
        for rel in c["files"].values():
            (path / rel).parent.mkdir(exist_ok=True)
            shutil.copy(COMMITTED / rel, path / rel)
    for index, action, value in edits:
        paths = [p for p in _paths(small) if p]
        where = paths[index % len(paths)]
        parent = small
        for key in where[:-1]:
            parent = parent[key]
        last = where[-1]
        if action == "set":
            parent[last] = value
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[f"extra{index}"] = value
        else:
            parent.append(value)
    (path / "manifest.json").write_text(json.dumps(small))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["golden", "verify", str(path), "--quiet", "--require", ""]) in (0, 1, 2)


# --- honest reporting -----------------------------------------------------------------------

def test_ran_no_case_only_when_no_case_ran(capsys):
    assert _verify(COMMITTED, "--backend", "golden_adapters:flipped_kernel") == 1
    assert "ran no case" not in capsys.readouterr().err
    assert _verify(COMMITTED, "--backend", "golden_adapters:unsupported") == 1
    assert "ran no case" in capsys.readouterr().err


def test_no_warning_leaks_from_verify():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = golden.verify(COMMITTED, _adapter(y=np.zeros(1)), progress=False)
        golden.verify(COMMITTED, "numpy", progress=False)
    assert {r.status for r in results} == {"FAIL"}


def test_ulp_counted_in_the_case_dtype():
    e = np.array([0, 1, 1], dtype=np.float32)
    bound = np.array([1.0, 1e-9, 1e-9])
    r = compare(np.array([7e-39, 1, 1], dtype=np.float32), e, bound, "y", "float32")
    assert r.status == "PASS" and r.worst_ulp == int(np.float32(7e-39) / np.float32(2**-149))
    m = compare(np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.ones(2), "m", "float32")
    assert m.status == "PASS"  # float64 intermediates are fine for a float32 case


def test_wrong_dtype_is_a_failure_that_says_so():
    r = compare(np.ones(2, np.float32), np.ones(2), np.ones(2), "y", "float64")
    assert r.status == "FAIL" and "returned float32, the case's dtype is float64" in r.message
    r = compare(np.ones(2, np.float16), np.ones(2), np.ones(2), "m", "float32")
    assert r.status == "FAIL" and "float16" in r.message


def test_non_finite_expected_values_are_exact(checked):
    """Regression: inf_propagation's finite values came from the float64 reference (np.exp
    differs by an ulp between CPUs); now every stored value is exact, non-finite ones as
    IEEE makes them, and they agree with the reference's non-finite positions."""
    for case, arrays in checked:
        if case["flags"]["nonfinite"]:
            assert not np.isfinite(arrays["y"]).all()
            assert np.isfinite(arrays["a"]).sum() > 0


# --- found by an adversarial review --------------------------------------------------------

def _flags_edit(tmp_path, edit):
    path = _copy(tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    (path / "manifest.json").write_text(json.dumps(m))
    return path


def test_force_refuses_anything_but_exactly_a_suite(tmp_path, capsys):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "important.py").write_text("x")
    shutil.copy(COMMITTED / "manifest.json", proj / "manifest.json")
    assert main(["golden", "generate", str(proj), "--force", "--quiet"]) == 2
    assert (proj / "src" / "important.py").read_text() == "x"
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "thesis.tex").write_text("x")
    (linked / "manifest.json").symlink_to(COMMITTED / "manifest.json")
    assert main(["golden", "generate", str(linked), "--force", "--quiet"]) == 2
    assert (linked / "thesis.tex").read_text() == "x"
    suite = _copy(tmp_path)
    (suite / "cases" / "my-notes.txt").write_text("x")
    assert main(["golden", "generate", str(suite), "--force", "--quiet"]) == 2
    assert (suite / "cases" / "my-notes.txt").read_text() == "x"
    assert "not exactly a golden suite" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["manifest.json", "cases/bias.npz"])
def test_a_fifo_is_refused_without_blocking(tmp_path, capsys, where):
    import os

    path = _copy(tmp_path)
    (path / where).unlink()
    os.mkfifo(path / where)
    assert _verify(path) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_compressed_members_and_oversized_cases_are_refused(tmp_path, capsys):
    import zipfile

    path = _copy(tmp_path)
    npz = path / "cases" / "bias.npz"
    with zipfile.ZipFile(npz) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    with zipfile.ZipFile(npz, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["cases/bias.npz"] = golden.io.sha256(npz.read_bytes())
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert _verify(path) == 2
    assert "is compressed" in capsys.readouterr().err

    def huge(m):
        case = m["cases"][0]
        case["params"]["k"] = 4095
        for arr in ("x", "grad_out", "y", "dx", "bound_y", "bound_dx"):
            case["arrays"][arr]["shape"] = [1, 4096, 1]
    assert _verify(_flags_edit(tmp_path / "b", huge)) == 2
    assert "more than this verifier handles" in capsys.readouterr().err


def test_flags_tighter_bounds_and_duplicate_keys_are_refused(tmp_path, capsys):
    def flip(m):
        m["cases"][0]["flags"]["saturated"] = True
    assert _verify(_flags_edit(tmp_path / "a", flip)) == 2
    assert "do not match its arrays" in capsys.readouterr().err
    path = _copy(tmp_path / "b")
    _rewrite_npz(path, "bias", lambda a: a.__setitem__("bound_y", a["bound_y"] / 2))
    assert _verify(path) == 2
    assert "is not the bound derived" in capsys.readouterr().err
    path = _copy(tmp_path / "c")
    text = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(text.replace('"suite": "core",',
                                                     '"suite": "core", "suite": "full",'))
    assert _verify(path) == 2
    assert "appears twice" in capsys.readouterr().err


def test_nan_is_accepted_only_within_the_reach_of_a_non_finite_input(checked):
    from npeca.golden.bounds import nonfinite_reach

    case, arrays = next((c, a) for c, a in checked if c["name"] == "inf_propagation")
    reach = nonfinite_reach(arrays, case["params"])["dx"]
    assert reach.any() and not reach.all()

    def nan_within(inputs, params):
        out = contract_eca(inputs, params)
        out["dx"] = np.where(reach, np.nan, out["dx"]).astype(out["dx"].dtype)
        return out

    def nan_beyond(inputs, params):
        out = contract_eca(inputs, params)
        out["dx"] = np.where(reach, out["dx"], np.nan).astype(out["dx"].dtype)
        return out

    assert run_case(case, arrays, nan_within, require=ALL).status == "PASS"
    r = run_case(case, arrays, nan_beyond, require=ALL)
    assert r.status == "FAIL" and "dx" in r.message


def test_bounds_survive_values_near_the_float64_limit():
    x = np.full((1, 2, 2), 1.5e308)
    arrays = {"x": x, "weight": np.ones(3), "grad_out": np.ones_like(x), "m": np.ones((1, 2)),
              "z": np.ones((1, 2)), "a": np.full((1, 2), 0.7), "y": x, "dx": x,
              "dweight": np.ones(3)}
    params = {"k": 3, "padding": "zeros", "groups": 1, "gate": "sigmoid", "bias": False,
              "channel_axis": 1, "weight_form": "k"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bounds = error_bounds(arrays, params, "float64")
    assert np.isinf(bounds["m"]).all()


@pytest.mark.slow
def test_backend_exits_imports_and_formats(tmp_path, monkeypatch, capsys):
    import sys

    def exits(inputs, params):
        sys.exit(0)

    assert {r.status for r in golden.verify(COMMITTED, exits, progress=False)} == {"ERROR"}
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('no CUDA device')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _verify(COMMITTED, "--backend", "broken_mod:f") == 2
    assert "RuntimeError: no CUDA device" in capsys.readouterr().err
    npz_only = tmp_path / "npz"
    assert main(["golden", "generate", str(npz_only), "--format", "npz", "--quiet"]) == 0
    capsys.readouterr()
    assert _verify(npz_only, "--format", "json") == 2
    assert "has no json files" in capsys.readouterr().err


def test_json_report_is_valid_json(capsys):
    def nan_y(inputs, params):
        out = contract_eca(inputs, params)
        return {"y": np.full_like(out["y"], np.nan)}

    results = golden.verify(COMMITTED, nan_y, progress=False)
    text = json.dumps(golden.to_json(results), allow_nan=False)  # no Infinity, no NaN
    assert '"max_abs": null' in text


def test_wider_intermediates_are_accepted():
    def wide(inputs, params):
        out = contract_eca(inputs, params)
        wider = np.promote_types(out["m"].dtype, np.float32)  # float16 cases: float32 m
        return {**out, "m": out["m"].astype(wider), "z": out["z"].astype(np.float64)}

    results = golden.verify(COMMITTED, wide, progress=False, require=ALL)
    assert {r.status for r in results} == {"PASS"}, [r.message for r in results][:3]


def test_signals_wait_for_the_swap():
    import os
    import signal

    from npeca.golden.io import _signals_held

    seen = []
    old = signal.signal(signal.SIGHUP, lambda *a: seen.append("hup"))
    try:
        with _signals_held():
            os.kill(os.getpid(), signal.SIGHUP)
            assert seen == []  # held while the renames run
        assert seen == ["hup"]  # delivered right after
    finally:
        signal.signal(signal.SIGHUP, old)


@pytest.mark.parametrize("shape_cf", [(1, 3, 3), (2, 5, 5), (2, 4, 7)])
def test_channels_last_bounds_are_the_channels_first_bounds_moved(shape_cf):
    """y's and dx's bounds follow x's layout, also when x is (N, S, C) with S == C, where the
    (N, C, S) shape of the computation equals x's shape (a bound once landed on the wrong
    element there)."""
    from npeca.golden.verify import reference_outputs

    rng = np.random.default_rng(3)
    x_cf = rng.standard_normal(shape_cf) * 0.5 - 1.0
    c = shape_cf[1]
    params_cf = {"k": 3, "padding": "zeros", "groups": 1, "gate": "hard_sigmoid",
                 "bias": False, "channel_axis": 1, "weight_form": "Ck"}
    w = rng.standard_normal((c, 3)) * 0.5
    cf = {"x": x_cf, "weight": w, "grad_out": rng.standard_normal(shape_cf)}
    cl = {"x": np.moveaxis(cf["x"], 1, -1).copy(), "weight": w,
          "grad_out": np.moveaxis(cf["grad_out"], 1, -1).copy()}
    params_cl = dict(params_cf, channel_axis=-1)
    cf.update(reference_outputs(params_cf, cf))
    cl.update(reference_outputs(params_cl, cl))
    b_cf = error_bounds(cf, params_cf, "float64")
    b_cl = error_bounds(cl, params_cl, "float64")
    for name in ("y", "dx"):
        np.testing.assert_array_equal(b_cl[name], np.moveaxis(b_cf[name], 1, -1))
    for name in ("m", "z", "a", "dweight"):
        np.testing.assert_array_equal(b_cl[name], b_cf[name])
