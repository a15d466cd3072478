"""docs/golden.md is a complete spec: the hex-float grammar it gives covers every string the
JSON writer emits, and nothing looser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from npeca.golden.io import _json_bytes

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "golden.md").read_text()
SUITE = ROOT / "tests" / "golden" / "core"

# the grammar of docs/golden.md, production by production
HEX13 = "[0-9a-f]{13}"
EXPONENT = (r"(?:\+(?:10[01][0-9]|102[0-3]|[1-9]?[0-9]{1,2})"
            r"|-(?:10[01][0-9]|102[0-2]|[1-9]?[0-9]{1,2}))")
NORMAL = rf"-?0x1\.{HEX13}p{EXPONENT}"
ZERO = r"-?0x0\.0p\+0"
SUBNORMAL = rf"-?0x0\.{HEX13}p-1022"
VALUE = re.compile(rf"(?:{NORMAL}|{ZERO}|{SUBNORMAL}|nan|inf|-inf)\Z")

PRODUCTIONS = [
    'value     = normal | zero | subnormal | "nan" | "inf" | "-inf"',
    'normal    = ["-"] "0x1." hex13 "p" sign exponent',
    'zero      = ["-"] "0x0.0p+0"',
    'subnormal = ["-"] "0x0." hex13 "p-1022"',
    'hex13     = 13 characters of "0123456789abcdef"',
    'sign      = "+" | "-"',
    'exponent  = 1 to 4 decimal digits, from 1022 down to 0 after "-", 0 to 1023 after "+"',
]

EDGES = np.array([0.0, -0.0, 1.5, -1.5, 5e-324, -5e-324, 2.0 ** -1022, 2.0 ** -1074 * 3,
                  np.finfo(np.float64).max, -np.finfo(np.float64).max,
                  np.finfo(np.float64).tiny, 1.0, 2.0 ** 1023, 2.0 ** -1021,
                  np.nan, np.inf, -np.inf])


def test_the_doc_states_the_grammar_the_test_checks():
    for line in PRODUCTIONS:
        assert line in DOC, line


def _strings(data: bytes) -> list[str]:
    doc = json.loads(data)
    return [v for a in doc["arrays"].values() for v in a["data"]]


def test_every_string_in_the_committed_suite_is_in_the_grammar():
    seen = set()
    for path in sorted((SUITE / "cases").glob("*.json")):
        for v in _strings(path.read_bytes()):
            assert VALUE.match(v), (path.name, v)
            seen.add("zero" if v.lstrip("-") == "0x0.0p+0" else v if v in ("nan", "inf",
                     "-inf") else "normal")
    assert {"zero", "normal", "nan", "inf"} <= seen  # the suite exercises these forms


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_form_the_writer_emits_is_in_the_grammar(dtype):
    with np.errstate(over="ignore"):
        edges = EDGES.astype(dtype)
    info = np.finfo(dtype)
    extra = np.array([info.max, -info.max, info.tiny, info.smallest_subnormal,
                      -info.smallest_subnormal, info.eps], dtype=dtype)
    values = np.concatenate([edges, extra])
    strings = _strings(_json_bytes({"x": values}))
    for v, s in zip(values, strings):
        assert VALUE.match(s), s
        back = float.fromhex(s)
        assert (np.isnan(back) and np.isnan(v)) or (back == float(v) and
                                                     np.signbit(back) == np.signbit(v))
    if dtype == np.float64:
        assert any(re.fullmatch(SUBNORMAL, s) for s in strings)
    assert "-0x0.0p+0" in strings and "0x0.0p+0" in strings


@pytest.mark.parametrize("bad", ["0x1.8p+0", "0X1.8000000000000P+0", "1.5", "NaN", "Infinity",
                                 "0x1.8000000000000p+1024", "0x0.0p-0", "+0x0.0p+0",
                                 "0x0.0000000000001p-1021", "0x1.8000000000000P+0",
                                 "0x1.8000000000000p0"])
def test_the_grammar_is_not_looser_than_the_writer(bad):
    assert not VALUE.match(bad)
