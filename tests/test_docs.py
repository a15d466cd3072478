"""Every ```python block of the documentation that is not a doctest runs here (the doctest
blocks run through pytest's --doctest-glob), so the pages cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
NOT_RUN = {  # (page, first line) -> why the block cannot run in the tests
    ("interop.md", "import timm"): "needs timm and a download of pretrained weights",
    ("golden.md", "import pytest"): "a test module of the reader's project, importing their "
                                    "adapter; tests/test_conformance.py runs the same module",
}


def _blocks():
    for page in sorted(DOCS.glob("*.md")):
        for i, match in enumerate(re.finditer(r"```python\n(.*?)```", page.read_text(), re.S)):
            code = match.group(1)
            if ">>>" not in code:
                yield pytest.param(page.name, code, id=f"{page.name}-{i}")


@pytest.mark.parametrize("page, code", list(_blocks()))
def test_docs_code_block_runs(page, code, tmp_path, monkeypatch, request):
    first = code.strip().splitlines()[0]
    if (page, first) in NOT_RUN:
        assert "not run" in (DOCS / page).read_text()  # the page says so next to the block
        return
    if "import torch" in code:
        request.getfixturevalue("torch")  # skipped without torch, failed under CI
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(DOCS.parent))  # `from examples...` as on the page
    exec(compile(code, f"{page} code block", "exec"), {"__name__": "docs_block"})
