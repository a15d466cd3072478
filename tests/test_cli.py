"""The ``npeca`` command and the package's import-time promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

import npeca
from npeca.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"npeca {npeca.__version__}"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "kernel-size" in out and "demo" in out


def test_kernel_size_table(capsys):
    assert main(["kernel-size", "16", "64", "128", "256", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert rows == [["16", "3", "3"], ["64", "3", "3"], ["128", "5", "5"], ["256", "5", "5"],
                    ["2", "1", "3"]]


def test_kernel_size_bad_input(capsys):
    assert main(["kernel-size", "0"]) == 2
    assert "channels must be an integer >= 1; got 0" in capsys.readouterr().err


def test_demo_passes_its_gradient_check(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "k = 3" in out and "PASS" in out


def test_console_script_and_module_entry_points():
    done = subprocess.run([sys.executable, "-m", "npeca", "demo", "--seed", "3"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "relative error" in done.stdout


def test_import_does_not_load_numba_or_cuda():
    code = ("import sys, npeca; npeca.eca(__import__('numpy').ones((1, 2, 2)), [1.0]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('numba', 'torch', 'llvmlite')];"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_public_functions_have_numpy_docstrings():
    for name in ("eca", "eca_forward", "eca_backward", "kernel_size"):
        doc = getattr(npeca, name).__doc__
        for section in ("Parameters", "Returns", "Notes", "Examples"):
            assert f"\n    {section}\n    ---" in doc, (name, section)


def test_demo_rejects_negative_seed(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--seed", "-1"])
    assert exc.value.code == 2
    assert "must be an integer >= 0" in capsys.readouterr().err


def test_golden_generate_refuses_json_alone_before_any_work(tmp_path, capsys):
    assert main(["golden", "generate", str(tmp_path / "g"), "--format", "json"]) == 2
    assert "json alone" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
