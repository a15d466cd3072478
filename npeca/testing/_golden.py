"""A golden suite's cases as test parameters: one test per case, named after it, failing with
npeca's verdict."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..errors import NpecaError


class GoldenCaseFailure(NpecaError, AssertionError):
    """A backend failed a golden case; the message is npeca's verdict."""


def resolve_backend(backend: str | Callable) -> Callable:
    """An adapter ``fn(inputs, params) -> dict`` from a callable (returned as it is), a
    backend name ("numpy", "numba", "cuda", "torch", "onnxruntime") or
    ``"package.module:function"``, imported from sys.path and then the current directory
    (the error says where it looked). See :mod:`npeca.golden.adapters`."""
    from ..golden.adapters import get_adapter
    return get_adapter(backend)  # a callable passes through


@dataclass(frozen=True)
class GoldenCase:
    """One case of a golden suite, checked (manifest, hashes) when the suite was opened.

    ``check(backend)`` runs the backend on the case and raises :class:`GoldenCaseFailure`
    with the verdict when it fails or errs (under pytest, a case the backend does not
    support is skipped). ``run(backend)`` returns the :class:`~npeca.golden.CaseResult`.
    """

    suite: Any  # npeca.golden.Suite
    name: str
    fmt: str | None = None

    def __repr__(self) -> str:
        return f"GoldenCase({self.name!r})"

    @property
    def params(self) -> dict:
        """The case's parameters (k, padding, groups, gate, bias, channel_axis, weight_form)."""
        return dict(self.suite.cases[self.name]["params"])

    @property
    def dtype(self) -> str:
        return str(self.suite.cases[self.name]["dtype"])

    def run(self, backend: str | Callable, require: str | Iterable[str] = ("y",)):
        """Run ``backend`` on this case and judge what it returns (a CaseResult)."""
        from ..golden.verify import parse_require, verify_case
        return verify_case(self.suite, self.name, resolve_backend(backend), self.fmt,
                           parse_require(require))

    def check(self, backend: str | Callable, require: str | Iterable[str] = ("y",)) -> None:
        """Raise :class:`GoldenCaseFailure` unless ``backend`` passes this case."""
        result = self.run(backend, require)
        if result.status == "SKIP":
            _skip(f"{self.name}: {result.message}")
            return
        if result.status != "PASS":
            raise GoldenCaseFailure(verdict(result))


def verdict(result) -> str:
    """A failed case's verdict as a few readable lines."""
    failed = [o for o in result.outputs if o.status == "FAIL"]
    shown = "; ".join(f"{o.output}: {o.message}" for o in failed)
    notes = result.message
    if failed and notes.startswith(shown):  # the failed outputs get a line each below
        notes = notes[len(shown):].lstrip("; ")
    lines = [f"golden case {result.case}: {result.status}" + (f" ({notes})" if notes else "")]
    for o in result.outputs:
        if o.status == "FAIL":
            lines.append(f"  {o.output}: {o.message}")
        else:
            lines.append(f"  {o.output}: {o.status} (worst {o.max_ratio:.3g} of its bound)")
    return "\n".join(lines)


def _skip(reason: str) -> None:
    """Skip the running pytest test; outside a pytest test a declined case is no failure
    (``run`` gives its result)."""
    if "PYTEST_CURRENT_TEST" not in os.environ:
        return
    import pytest
    pytest.skip(reason)


def golden_cases(path: str | os.PathLike, fmt: str | None = None,
                 expect_digest: str | None = None) -> list:
    """The cases of the golden suite at ``path``, for ``@pytest.mark.parametrize``: one
    ``pytest.param(GoldenCase, id=case name)`` each (plain :class:`GoldenCase` objects when
    pytest is not installed). The suite is opened and checked once, here.

    >>> import pytest
    >>> from npeca.testing import golden_cases
    >>> cases = golden_cases("tests/golden/core")
    >>> len(cases), cases[0].id
    (52, 'ksize_c1')
    >>> cases[0].values[0].check("numpy")  # passes: returns None

    In a test module::

        @pytest.mark.parametrize("case", golden_cases("golden-suite"))
        def test_my_eca(case):
            case.check(my_adapter, require="y,dx,dweight")
    """
    from ..errors import ParameterError
    from ..golden import Suite

    suite = Suite(path)
    if expect_digest is not None and str(expect_digest).strip().lower() != suite.digest:
        from ..golden import GoldenIntegrityError
        raise GoldenIntegrityError(f"suite digest is {suite.digest}, expected "
                                   f"{expect_digest}: the suite is not the one pinned")
    if fmt is not None and not any(suite.has_format(n, fmt) for n in suite.cases):
        raise ParameterError(f"the suite at {path} has no {fmt} files")
    cases = [GoldenCase(suite, name, fmt) for name in suite.cases]
    try:
        import pytest
    except ImportError:
        return cases
    return [pytest.param(c, id=c.name) for c in cases]


__all__ = ["GoldenCase", "GoldenCaseFailure", "golden_cases", "resolve_backend", "verdict"]
