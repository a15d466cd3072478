"""The conformance kit for backend authors, used as they would: a callable verified in one
line, the pytest plugin run from another directory (correct and planted-wrong backends), and
golden_cases in an author's own test module."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import npeca
from npeca import golden
from npeca.errors import ParameterError
from npeca.testing import GoldenCase, golden_cases, resolve_backend
from npeca.testing._golden import GoldenCaseFailure

SUITE = Path(__file__).parent / "golden" / "core"
CIRCULAR = {"k_exceeds_c_circular", "k_wraps_twice_circular", "channels_last_1d", "circular",
            "groups4_circular", "per_channel_c1k_groups", "hard_sigmoid_bias_circular",
            "float64_everything", "bfloat16_channels_last_everything",
            "bfloat16_k_wraps_twice_circular"}

BACKENDS = textwrap.dedent('''
    import npeca

    def good(inputs, params):
        return {"y": npeca.eca(inputs["x"], inputs["weight"], bias=inputs.get("bias"),
                               channel_axis=params["channel_axis"], padding=params["padding"],
                               groups=params["groups"], gate=params["gate"])}

    def zero_padded(inputs, params):  # planted bug: ignores circular padding
        p = dict(params, padding="zeros")
        return good(inputs, p)

    def declines_float16(inputs, params):
        if inputs["x"].dtype.name == "float16":
            raise NotImplementedError("no float16 here")
        return good(inputs, params)
''')


def good(inputs, params):
    return {"y": npeca.eca(inputs["x"], inputs["weight"], bias=inputs.get("bias"),
                           channel_axis=params["channel_axis"], padding=params["padding"],
                           groups=params["groups"], gate=params["gate"])}


def zero_padded(inputs, params):
    return good(inputs, dict(params, padding="zeros"))


def test_circular_cases_are_the_ones_listed():
    names = {n for n, c in golden.Suite(SUITE).cases.items() if c["params"]["padding"] ==
             "circular"}
    assert names == CIRCULAR


def test_verify_accepts_a_callable():
    assert {r.status for r in golden.verify(SUITE, good, progress=False)} == {"PASS"}
    results = golden.verify(SUITE, zero_padded, progress=False)
    failed = {r.case for r in results if r.status == "FAIL"}
    assert failed == CIRCULAR  # caught on exactly the cases the bug touches
    assert all(r.status == "PASS" for r in results if r.case not in CIRCULAR)


def test_golden_case_check_raises_the_verdict():
    case = next(c.values[0] for c in golden_cases(SUITE) if c.id == "circular")
    assert isinstance(case, GoldenCase) and case.params["padding"] == "circular"
    case.check(good)
    with pytest.raises(GoldenCaseFailure) as info:
        case.check(zero_padded)
    assert isinstance(info.value, AssertionError)
    text = str(info.value)
    assert text.startswith("golden case circular: FAIL")
    assert "y: " in text and "beyond their bound" in text and "expected" in text


def test_golden_cases_refuses_a_wrong_digest():
    with pytest.raises(golden.GoldenIntegrityError, match="digest"):
        golden_cases(SUITE, expect_digest="0" * 64)


def test_resolve_backend_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParameterError) as info:
        resolve_backend("no_such_module_xyz:fn")
    assert "no module named 'no_such_module_xyz'" in str(info.value)
    assert str(tmp_path) in str(info.value) and "sys.path" in str(info.value)
    (tmp_path / "author_mod.py").write_text("VALUE = 3\ndef fn(i, p):\n    return {}\n"
                                            "import nonexistent_dependency_xyz\n")
    with pytest.raises(ParameterError, match="importing author_mod failed.*"
                                             "nonexistent_dependency_xyz"):
        resolve_backend("author_mod:fn")
    (tmp_path / "author_ok.py").write_text("VALUE = 3\ndef fn(i, p):\n    return {}\n")
    assert callable(resolve_backend("author_ok:fn"))  # found in the current directory
    with pytest.raises(ParameterError, match="has no attribute 'missing'"):
        resolve_backend("author_ok:missing")
    with pytest.raises(ParameterError, match="not callable"):
        resolve_backend("author_ok:VALUE")
    with pytest.raises(ParameterError, match="callable"):
        resolve_backend(3)
    assert resolve_backend(good) is good


def _pytest(args, cwd):
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-o", "addopts=", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def author_dir(tmp_path):
    (tmp_path / "author_eca.py").write_text(BACKENDS)
    return tmp_path


def test_plugin_passes_a_correct_backend(author_dir):
    run = _pytest(["--npeca-golden", str(SUITE), "--npeca-backend", "author_eca:good", "-v"],
                  author_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "52 passed" in run.stdout
    assert "manifest.json::ksize_c2048 PASSED" in run.stdout  # the case name is the id
    assert "npeca golden suite:" in run.stdout and "backend author_eca:good" in run.stdout


def test_plugin_fails_a_wrong_backend_with_the_verdict(author_dir):
    run = _pytest(["--npeca-golden", str(SUITE), "--npeca-backend", "author_eca:zero_padded"],
                  author_dir)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{len(CIRCULAR)} failed, {52 - len(CIRCULAR)} passed" in run.stdout
    for name in CIRCULAR:
        assert f"manifest.json::{name}" in run.stdout
    assert "golden case groups4_circular: FAIL" in run.stdout
    assert "beyond their bound" in run.stdout
    assert "Traceback" not in run.stdout  # the verdict, not a stack


def test_plugin_skips_declined_cases(author_dir):
    run = _pytest(["--npeca-golden", str(SUITE), "--npeca-backend",
                   "author_eca:declines_float16", "-rs"], author_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "skipped" in run.stdout and "no float16 here" in run.stdout


def test_plugin_usage_errors(author_dir):
    run = _pytest(["--npeca-golden", str(SUITE)], author_dir)
    assert run.returncode == 4 and "--npeca-backend" in run.stderr
    run = _pytest(["--npeca-golden", str(author_dir), "--npeca-backend", "numpy"], author_dir)
    assert run.returncode == 4 and "manifest.json" in run.stderr
    run = _pytest(["--npeca-golden", str(SUITE), "--npeca-backend", "nope_mod:fn"], author_dir)
    assert run.returncode == 4 and "looked in the current directory" in run.stderr


def test_plugin_is_inert_without_its_option(author_dir):
    (author_dir / "test_other.py").write_text("def test_one():\n    assert True\n")
    run = _pytest([], author_dir)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


@pytest.mark.slow
def test_golden_cases_in_an_authors_test_module(author_dir):
    (author_dir / "test_author.py").write_text(textwrap.dedent(f'''
        import pytest
        from npeca.testing import golden_cases
        from author_eca import good, zero_padded

        CASES = golden_cases({str(SUITE)!r})

        @pytest.mark.parametrize("case", CASES)
        def test_good(case):
            case.check(good)

        @pytest.mark.parametrize("case", CASES)
        def test_bad(case):
            case.check(zero_padded)
    '''))
    run = _pytest(["-q", "-rN"], author_dir)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{len(CIRCULAR)} failed, {104 - len(CIRCULAR)} passed" in run.stdout
    assert "test_bad[circular]" in run.stdout and "test_good[circular]" not in run.stdout
    assert "golden case circular: FAIL" in run.stdout


def test_export_replaces_only_an_earlier_export(tmp_path, capsys):
    from npeca.cli import main
    from npeca.golden.export import MARKER, export

    out = tmp_path / "c"
    report = export(SUITE, "c", out)
    assert (out / MARKER).is_file() and len(report.written) == 52 and not report.skipped
    with pytest.raises(ParameterError, match="already exists"):
        export(SUITE, "c", out)
    export(SUITE, "c", out, force=True)  # exactly an earlier export: replaced
    stamp = out / "mine.txt"
    stamp.write_text("x")  # a file of the user's inside it: no longer only an export
    with pytest.raises(ParameterError, match="not exactly an export"):
        export(SUITE, "c", out, force=True)
    assert stamp.read_text() == "x"
    stamp.unlink()
    (out / "cases.c").write_text("/* edited */\n")  # a changed file: refused as well
    with pytest.raises(ParameterError, match="not exactly an export"):
        export(SUITE, "c", out, force=True)
    assert (out / "cases.c").read_text() == "/* edited */\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    export(SUITE, "c", empty)  # an existing empty directory is fine without --force
    with pytest.raises(ParameterError, match="inside"):
        export(SUITE, "c", SUITE / "cases" / "c-export")
    assert not (SUITE / "cases" / "c-export").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    assert main(["golden", "export", str(SUITE), str(other), "--format", "c", "--force"]) == 2
    assert "not exactly an export" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "precious" and len(list(other.iterdir())) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    with pytest.raises(ParameterError, match="format must be one of"):
        export(SUITE, "rust", tmp_path / "r")


def test_export_refuses_an_edited_suite(tmp_path):
    import json
    import shutil

    import numpy as np

    from npeca.golden.export import export
    from npeca.golden.io import _npz_bytes, sha256

    suite = tmp_path / "suite"
    shutil.copytree(SUITE, suite)
    case = suite / "cases" / "bias.npz"
    with np.load(case, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["y"] = arrays["y"] * 2  # a wrong expected value, every hash made to match
    case.write_bytes(_npz_bytes(arrays))
    manifest = json.loads((suite / "manifest.json").read_text())
    manifest["files"]["cases/bias.npz"] = sha256(case.read_bytes())
    (suite / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    golden.Suite(suite)  # the suite itself opens: only the values are wrong
    with pytest.raises(golden.GoldenIntegrityError, match="disagrees with the reference"):
        export(suite, "c", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_plugin_fails_a_run_that_checked_nothing(author_dir):
    (author_dir / "declines.py").write_text(
        "def everything(inputs, params):\n    raise NotImplementedError('not yet')\n")
    run = _pytest(["--npeca-golden", str(SUITE), "--npeca-backend", "declines:everything"],
                  author_dir)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "52 skipped" in run.stdout and "ran no golden case" in run.stdout


@pytest.mark.slow
def test_plugin_pins_the_digest_and_the_format(author_dir):
    digest = golden.Suite(SUITE).digest
    run = _pytest(["--npeca-golden", str(SUITE), "--npeca-backend", "author_eca:good",
                   "--npeca-expect-digest", digest, "-q"], author_dir)
    assert run.returncode == 0 and "52 passed" in run.stdout, run.stdout + run.stderr
    run = _pytest(["--npeca-golden", str(SUITE), "--npeca-backend", "author_eca:good",
                   "--npeca-expect-digest", "0" * 64], author_dir)
    assert run.returncode == 4 and "not the one pinned" in run.stderr
    only_npz = author_dir / "npz-suite"
    golden.generate(only_npz, formats=("npz",), progress=False)
    run = _pytest(["--npeca-golden", str(only_npz), "--npeca-backend", "author_eca:good",
                   "--npeca-format", "json"], author_dir)
    assert run.returncode == 4 and "no json files" in run.stderr


def test_plugin_takes_a_relative_suite_path_with_dotdot(author_dir):
    sub = author_dir / "sub"
    sub.mkdir()
    rel = os.path.relpath(SUITE, sub)
    assert ".." in rel
    run = _pytest(["--npeca-golden", rel, "--npeca-backend", "numpy", "-q"], sub)
    assert run.returncode == 0 and "52 passed" in run.stdout, run.stdout + run.stderr


def test_plugin_stops_at_once_when_the_backend_is_unavailable(author_dir, monkeypatch):
    (author_dir / "gone.py").write_text(
        "from npeca.errors import BackendUnavailableError\n"
        "def eca(inputs, params):\n    raise BackendUnavailableError('no GPU here')\n")
    run = _pytest(["--npeca-golden", str(SUITE), "--npeca-backend", "gone:eca"], author_dir)
    assert run.returncode == 4, run.stdout + run.stderr
    out = run.stdout + run.stderr
    assert "no GPU here" in out and len(out.splitlines()) < 40  # one message, not 52 stacks


def test_golden_case_check_outside_pytest_does_not_raise_skip(monkeypatch):
    def declines(inputs, params):
        raise NotImplementedError("nope")

    case = golden_cases(SUITE)[0].values[0]
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert case.check(declines) is None  # a plain script: no pytest Skipped exception
    assert case.run(declines).status == "SKIP"
