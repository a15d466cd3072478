"""pytest plugin (registered through the ``pytest11`` entry point): verify a backend against a
golden suite with pytest, one test per case::

    pytest --npeca-golden DIR --npeca-backend package.module:function [--npeca-require y,dx]

Without ``--npeca-golden`` the plugin does nothing beyond adding its options (loading it
imports the npeca package and NumPy, a fraction of a second).
With it and no test paths on the command line, only the golden cases run; test paths given
as well are collected beside them. Each case is a test whose id is the case's name and whose
failure message is npeca's verdict; a case the backend declines (``NotImplementedError``) is
skipped with its reason, and a run in which every case was skipped fails, as ``npeca golden
verify`` does. ``--npeca-expect-digest HEX`` pins the suite. Disable the plugin with
``-p no:npeca``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("npeca", "npeca golden suite")
    group.addoption("--npeca-golden", metavar="DIR", default=None,
                    help="run every case of the golden suite in DIR as a test")
    group.addoption("--npeca-backend", metavar="SPEC", default=None,
                    help="the backend to verify: package.module:function (an adapter "
                         "fn(inputs, params) -> dict, imported from sys.path and the current "
                         "directory) or numpy, numba, cuda, torch, onnxruntime")
    group.addoption("--npeca-require", metavar="OUTPUTS", default="y",
                    help="comma-separated outputs every case must return to pass "
                         "(default y)")
    group.addoption("--npeca-expect-digest", metavar="HEX", default=None,
                    help="refuse a suite whose digest (npeca golden digest) differs")
    group.addoption("--npeca-format", metavar="FMT", default=None,
                    choices=("npz", "safetensors", "json"),
                    help="which case files to read (default npz)")


def pytest_configure(config: pytest.Config) -> None:
    directory = config.getoption("npeca_golden")
    if directory is None:
        if config.getoption("npeca_backend") is not None:
            raise pytest.UsageError("--npeca-backend needs --npeca-golden DIR (the suite)")
        return
    spec = config.getoption("npeca_backend")
    if spec is None:
        raise pytest.UsageError("--npeca-golden needs --npeca-backend package.module:function "
                                "(or numpy, numba, cuda, torch, onnxruntime)")
    from ..errors import NpecaError
    from ..golden import Suite
    from ..golden.verify import parse_require
    from ._golden import resolve_backend

    fmt = config.getoption("npeca_format")
    want = config.getoption("npeca_expect_digest")
    try:
        suite = Suite(directory)
        if want is not None and str(want).strip().lower() != suite.digest:
            raise pytest.UsageError(f"npeca: the suite's digest is {suite.digest}, expected "
                                    f"{want}: the suite is not the one pinned")
        if fmt is not None and not any(suite.has_format(n, fmt) for n in suite.cases):
            raise pytest.UsageError(f"npeca: the suite has no {fmt} files (it holds "
                                    f"{', '.join(suite.manifest['formats'])})")
        adapter = resolve_backend(spec)
        require = parse_require(config.getoption("npeca_require"))
    except NpecaError as exc:
        raise pytest.UsageError(f"npeca: {exc}") from None
    manifest = Path(os.path.abspath(Path(directory) / "manifest.json"))
    config.stash[_KEY] = _Golden(suite, adapter, spec, require, fmt, manifest)
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        config.args.append(str(manifest))
    else:  # no paths given: run the suite alone, not the project's tests
        config.args[:] = [str(manifest)]


class _Golden:
    def __init__(self, suite, adapter, spec, require, fmt, manifest: Path) -> None:
        self.suite, self.adapter, self.spec = suite, adapter, spec
        self.require, self.fmt, self.manifest = require, fmt, manifest
        self.ran = 0  # cases that passed or failed (not skipped)


_KEY = pytest.StashKey[_Golden]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    golden = parent.config.stash.get(_KEY, None)
    if golden is not None and Path(os.path.abspath(file_path)) == golden.manifest:
        return GoldenSuiteFile.from_parent(parent, path=file_path)
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    golden = session.config.stash.get(_KEY, None)
    if golden is not None and golden.ran == 0 and exitstatus == 0 and \
            not session.config.getoption("collectonly"):
        # as `npeca golden verify`: a run that checked nothing is not a pass
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"npeca: backend {golden.spec} ran no golden case (every "
                                f"selected case was skipped): failing the run", red=True)


def pytest_report_header(config: pytest.Config) -> str | None:
    golden = config.stash.get(_KEY, None)
    if golden is None:
        return None
    return (f"npeca golden suite: {golden.manifest.parent} ({len(golden.suite.cases)} cases, "
            f"digest {golden.suite.digest[:16]}...), backend {golden.spec}, require "
            f"{','.join(golden.require)}")


class GoldenSuiteFile(pytest.File):
    """The suite's manifest, collected as one test per case."""

    def collect(self):
        golden = self.config.stash[_KEY]
        for name in golden.suite.cases:
            yield GoldenCaseItem.from_parent(self, name=name)


class GoldenCaseItem(pytest.Item):
    """One golden case run on the backend under test."""

    def runtest(self) -> None:
        from ..errors import BackendUnavailableError
        from ..golden.verify import verify_case
        from ._golden import GoldenCaseFailure, verdict

        golden = self.config.stash[_KEY]
        try:
            result = verify_case(golden.suite, self.name, golden.adapter, golden.fmt,
                                 golden.require)
        except BackendUnavailableError as exc:  # no case can run: stop, as the CLI does
            pytest.exit(f"npeca: backend {golden.spec}: {exc}", returncode=4)
        if result.status == "SKIP":
            pytest.skip(f"{self.name}: {result.message}")
        golden.ran += 1
        if result.status != "PASS":
            raise GoldenCaseFailure(verdict(result))

    def repr_failure(self, excinfo, style=None):
        from ..errors import NpecaError
        from ..golden import GoldenIntegrityError
        from ._golden import GoldenCaseFailure

        if isinstance(excinfo.value, GoldenCaseFailure):
            return str(excinfo.value)
        if isinstance(excinfo.value, GoldenIntegrityError):
            return f"the suite, not the backend: {excinfo.value}"
        if isinstance(excinfo.value, NpecaError):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"golden case {self.name}"
