""".ci/docs-browser, the offline browser check of the built site, catches what it guards
against: raw TeX, TeX that was not converted, requests beyond the site, missing files and
links to directories (planted in a small fake site)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import os

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "docs-browser"
GOOD = """<!doctype html><html><body><p>Inline <math><mi>x</mi><mo>=</mo><mn>1</mn></math>
and a <a href="other.html">link</a>.</p><pre><code>\\(raw TeX in code is fine\\)</code></pre>
</body></html>"""
PLANTS = {
    "raw TeX": "<p>a formula left as \\(x = 1\\)</p>",
    "raw dollar TeX": "<details><p>in a fold, $dm_0 = w_0 dz_0$ left as text</p></details>",
    "unconverted": "<math><mi>x</mi><mi>&amp;</mi><mn>1</mn></math>",
    "escape shown": "<math><mtext>min\\_size</mtext></math>",
    "CDN script": '<script src="https://cdn.example.org/mathjax.js"></script>',
    "missing file": '<img src="figures/nothing.png">',
    "directory link": '<a href="sub/">sub</a>',
    "script error": "<script>throw new Error('broken theme script');</script>",
    "broken image": '<img src="bad.png">',
    "missing anchor": '<a href="other.html#no-such-anchor">x</a>',
    "missing anchor here": '<a href="#nowhere">x</a>',
    "sphinx role": "<p>see :func:<code>eca</code></p>",
}


def _site(tmp_path: Path, plant: str = "") -> Path:
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "math.html").write_text(GOOD.replace("</body>", plant + "</body>"))
    (site / "other.html").write_text(GOOD)
    (site / "bad.png").write_bytes(b"not a PNG")  # served with status 200, never decodes
    return site


@pytest.fixture(scope="module")
def chromium():
    if shutil.which("chromium") is None:
        if os.environ.get("NPECA_REQUIRE_OPTIONAL") == "1":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (set NPECA_REQUIRE_OPTIONAL=1 to make this "
                    "a failure)")
    return True


def _run(site: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(site), str(tmp_path / "shots")],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_clean_site_passes_and_every_plant_fails(chromium, tmp_path):
    done = _run(_site(tmp_path / "good"), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "shots" / "math.png").stat().st_size > 1000
    for name, plant in PLANTS.items():
        done = _run(_site(tmp_path / name.replace(" ", "_"), plant), tmp_path)
        assert done.returncode == 1, (name, done.stdout + done.stderr)
        assert "FAIL" in done.stdout, name
