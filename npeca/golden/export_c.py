"""Write a golden suite as C99 sources: a header describing the cases, one ``case_<name>.c``
per case holding its arrays, ``cases.c`` with the table of all cases, and ``sources.mk``
listing the ``.c`` files for a Makefile. ``examples/c`` is a runner built on it; the layout
is documented in docs/golden.md.

Every value is written as a C99 hexadecimal floating constant, which a conforming compiler
converts exactly (C99 6.4.4.2: correctly rounded, and these values are representable):

* float64 arrays (the case dtype of float64 cases, m, z, a and every bound) as ``double``:
  ``0x1.8p+1``;
* float32 arrays as ``float``, with an ``f`` suffix: ``0x1.8p+1f``;
* float16 and bfloat16 arrays as ``float`` too (C99 has neither type; widening is exact),
  the case's ``dtype`` telling the runner to round its results to binary16 or bfloat16;
* zeros as ``0x0p+0`` and ``-0x0p+0``, subnormals as ``float.hex`` writes them
  (``0x0.0000000000001p-1022``, or normalized for float32 and float16 values);
* NaN and infinities with <math.h>'s ``NAN``, ``-NAN`` (sign bit set), ``INFINITY`` and
  ``-INFINITY``. A NaN keeps its sign but not its payload: C99 has no constant expression
  for one, and every NaN is alike to the verdict.

Nothing is left out: every case of a valid suite can be expressed, so the list of skipped
cases :func:`write_c` returns is empty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .bounds import nonfinite_reach
from .io import Suite
from .schema import OUTPUTS

__all__ = ["HEADER", "c_literal", "write_c"]

HEADER = "npeca_golden.h"
_PER_LINE = 6
_DTYPE_CODE = {"float16": "FLOAT16", "float32": "FLOAT32", "float64": "FLOAT64",
               "bfloat16": "BFLOAT16"}
_CASE_DTYPE_ARRAYS = ("x", "weight", "bias", "grad_out", "y", "dx", "dweight", "dbias")
_DOUBLE_ARRAYS = ("m", "z", "a")


# --- literals -------------------------------------------------------------------------------

def _hex(v: float) -> str:
    """``float.hex`` without the trailing zeros of its fraction: 0x1.8p+1, 0x1p+0, -0x0p+0."""
    mant, exp = v.hex().split("p")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return f"{mant}p{exp}"


def c_literal(value: Any, suffix: str = "") -> str:
    """The C99 constant expression for one value: a hexadecimal floating constant with
    ``suffix`` ("f" for float, "" for double), or NAN / -NAN / INFINITY / -INFINITY.

    >>> c_literal(3.0), c_literal(np.float32(0.1), "f"), c_literal(-0.0, "f")
    ('0x1.8p+1', '0x1.99999ap-4f', '-0x0p+0f')
    >>> c_literal(5e-324), c_literal(float("-inf")), c_literal(np.float16("nan"), "f")
    ('0x0.0000000000001p-1022', '-INFINITY', 'NAN')
    """
    v = float(value)
    if math.isnan(v):
        return "-NAN" if math.copysign(1.0, v) < 0 else "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    return _hex(v) + suffix


def _c_array(ctype: str, ident: str, values: np.ndarray, suffix: str) -> str:
    items = [c_literal(v, suffix) for v in values.reshape(-1).tolist()]
    return _c_initializer(f"static const {ctype} {ident}[{len(items)}]", items)


def _c_mask(ident: str, mask: np.ndarray) -> str:
    items = ["1" if b else "0" for b in mask.reshape(-1).tolist()]
    return _c_initializer(f"static const uint8_t {ident}[{len(items)}]", items,
                          per_line=32)


def _c_initializer(decl: str, items: list[str], per_line: int = _PER_LINE) -> str:
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return decl + " = {\n    " + ",\n    ".join(lines) + "\n};\n"


# --- names ----------------------------------------------------------------------------------

def _identifiers(names: Iterable[str]) -> dict[str, str]:
    """A C identifier for every case, unique: the name with characters outside [A-Za-z0-9_]
    replaced by '_', and numbered where two names would collide that way ('a-b', 'a_b')."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        base = ident = "npeca_golden_case_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        number = 1
        while ident in taken:
            ident = f"{base}_{number}"
            number += 1
        taken.add(ident)
        out[name] = ident
    return out


def _c_string(text: str) -> str:
    """A C string literal for ASCII text (case names: letters, digits, '_' and '-')."""
    return '"' + "".join(ch if ch.isalnum() or ch in "_-./ " else f"\\{ord(ch):03o}"
                         for ch in text) + '"'


# --- the header -----------------------------------------------------------------------------

_HEADER_TEXT = """\
/* npeca_golden.h: the cases of the golden suite {suite!s} as C99 data.
 *
 * Written by `npeca golden export DIR --format c OUT`; do not edit. The suite's digest:
 *   {digest}
 * Format and verdict rules: docs/golden.md in npeca. Link every .c file of this directory
 * (sources.mk lists them as GOLDEN_SRCS) and include this header.
 *
 * Layout. Arrays are flat, in the C order of the suite's arrays:
 *   x, grad_out, y, dx   N * C * S values, (N, C, S) for channel_axis 1, (N, S, C) for -1
 *                        (S: the spatial axes flattened);
 *   weight, dweight      k values (shared kernel, weight_form "k" or "11k") or C * k (one
 *                        kernel per channel, "Ck" or "C1k": row c is channel c's kernel);
 *   bias, dbias          1 value, only when has_bias;
 *   m, z, a              N * C values, (N, C), always double.
 */
#ifndef NPECA_GOLDEN_H
#define NPECA_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#define NPECA_GOLDEN_SUITE {suite_literal}
#define NPECA_GOLDEN_DIGEST "{digest}"
#define NPECA_GOLDEN_CASE_COUNT {count}

/* npeca_golden_case.dtype: the case's dtype, as its width in bits (bfloat16, 16 bits too,
 * negative to tell it from binary16). */
#define NPECA_GOLDEN_FLOAT16 16
#define NPECA_GOLDEN_FLOAT32 32
#define NPECA_GOLDEN_FLOAT64 64
#define NPECA_GOLDEN_BFLOAT16 (-16)

/* npeca_golden_case.padding: how the channel window is extended past a group's edge. */
#define NPECA_GOLDEN_PAD_ZEROS 0    /* by zeros */
#define NPECA_GOLDEN_PAD_CIRCULAR 1 /* periodically, modulo C / groups, any number of times */

/* npeca_golden_case.gate */
#define NPECA_GOLDEN_GATE_SIGMOID 0      /* 1 / (1 + exp(-z)) */
#define NPECA_GOLDEN_GATE_HARD_SIGMOID 1 /* min(max(z + 3, 0), 6) / 6; slope 1/6 inside (-3, 3) */

/* An array of the case's dtype. float16, bfloat16 and float32 cases keep it in `f` (16-bit
 * values widened exactly to float) with `d` NULL; float64 cases in `d` with `f` NULL. Both are
 * NULL, and size 0, for an array the case does not have (bias and dbias without a bias). */
typedef struct {{
    const float *f;
    const double *d;
    size_t size; /* number of values */
}} npeca_golden_array;

/* One case. Expected outputs are the exact results rounded once to their dtype; a result
 * passes where |actual - expected| <= bound (expected finite), actual is NaN (expected NaN),
 * or actual is the same infinity (expected infinite); and also where actual is NaN and the
 * output's nan_ok mask is 1. */
typedef struct {{
    const char *name;        /* the case's name in the suite */
    int dtype;               /* NPECA_GOLDEN_FLOAT16, _FLOAT32, _FLOAT64 or _BFLOAT16 */
    int n;                   /* batch size N */
    int c;                   /* channels C */
    int s;                   /* spatial positions S (the product of the spatial sizes) */
    int channel_axis;        /* 1: x is (N, C, spatial...); -1: x is (N, spatial..., C) */
    int k;                   /* kernel size, odd; tap j reads channel c + j - (k - 1) / 2 */
    int padding;             /* NPECA_GOLDEN_PAD_ZEROS or _CIRCULAR */
    int groups;              /* contiguous channel groups; the window never crosses one */
    int gate;                /* NPECA_GOLDEN_GATE_SIGMOID or _HARD_SIGMOID */
    int has_bias;            /* 1: z = bias + correlation, bias and dbias present */
    const char *weight_form; /* "k", "11k", "Ck" or "C1k": the suite's weight shape */
    int per_channel;         /* 1 for "Ck" and "C1k": weight holds C * k values */
    int nonfinite;           /* flags.nonfinite: an input holds NaN or an infinity */
    int saturated;           /* flags.saturated: some |z| >= 17 */

    /* inputs */
    npeca_golden_array x, weight, bias, grad_out;
    /* expected outputs in the case's dtype, and intermediates in double */
    npeca_golden_array y, dx, dweight, dbias;
    const double *m, *z, *a;
    /* per-element bounds (double), shaped like their output; NULL where the output is not
     * in the case (bound_dbias without a bias) */
    const double *bound_y, *bound_m, *bound_z, *bound_a, *bound_dx, *bound_dweight,
        *bound_dbias;
    /* nonfinite cases only (NULL otherwise): 1 where the element depends on a NaN or
     * infinite input, so NaN is accepted there besides the expected value
     * (npeca.golden.bounds.nonfinite_reach) */
    const uint8_t *nan_ok_y, *nan_ok_m, *nan_ok_z, *nan_ok_a, *nan_ok_dx, *nan_ok_dweight,
        *nan_ok_dbias;
}} npeca_golden_case;

/* Every case of the suite, in the manifest's order. */
extern const npeca_golden_case *const npeca_golden_cases[];
extern const size_t npeca_golden_case_count; /* == NPECA_GOLDEN_CASE_COUNT */

#endif /* NPECA_GOLDEN_H */
"""


# --- one case -------------------------------------------------------------------------------

# long: one C source file written top to bottom, each array in the header's field order
def _case_source(case: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                 ident: str) -> str:
    p = case["params"]
    dtype = case["dtype"]
    x = arrays["x"]
    n = x.shape[0]
    c = x.shape[1] if p["channel_axis"] == 1 else x.shape[-1]
    s = x.size // (n * c)
    suffix = "" if dtype == "float64" else "f"
    ctype = "double" if dtype == "float64" else "float"
    parts = [(f"/* Case {case['name']}: written by `npeca golden export --format c`; "
              f"do not edit. */\n"),
             "#include <math.h>\n#include <stdint.h>\n\n",
             f'#include "{HEADER}"\n\n']
    field: dict[str, str] = {}

    def emit(key: str, values: np.ndarray, ctype_: str, suffix_: str) -> str:
        name = f"v_{key}"
        parts.append(_c_array(ctype_, name, np.asarray(values), suffix_) + "\n")
        return name

    for key in _CASE_DTYPE_ARRAYS:
        if key not in arrays:
            field[key] = "{NULL, NULL, 0}"
            continue
        arr = arrays[key]
        name = emit(key, arr, ctype, suffix)
        field[key] = (f"{{NULL, {name}, {arr.size}}}" if dtype == "float64"
                      else f"{{{name}, NULL, {arr.size}}}")
    for key in _DOUBLE_ARRAYS:
        field[key] = emit(key, arrays[key].astype(np.float64), "double", "")
    for out in OUTPUTS:
        bname = case["bounds"].get(out)
        field["bound_" + out] = emit("bound_" + out, arrays[bname], "double", "") \
            if bname is not None else "NULL"
    reach: dict[str, np.ndarray] = {}
    if case["flags"]["nonfinite"]:
        with np.errstate(all="ignore"):
            reach = nonfinite_reach(arrays, p)
    for out in OUTPUTS:
        if out in reach and out in case["bounds"]:
            mask = np.asarray(reach[out], dtype=bool).reshape(arrays[out].shape)
            name = f"v_nan_ok_{out}"
            parts.append(_c_mask(name, mask) + "\n")
            field["nan_ok_" + out] = name
        else:
            field["nan_ok_" + out] = "NULL"

    flag = case["flags"]
    members = [
        (".name", _c_string(case["name"])),
        (".dtype", f"NPECA_GOLDEN_{_DTYPE_CODE[dtype]}"),
        (".n", str(n)), (".c", str(c)), (".s", str(s)),
        (".channel_axis", str(p["channel_axis"])),
        (".k", str(p["k"])),
        (".padding", "NPECA_GOLDEN_PAD_" + ("ZEROS" if p["padding"] == "zeros"
                                            else "CIRCULAR")),
        (".groups", str(p["groups"])),
        (".gate", "NPECA_GOLDEN_GATE_" + ("SIGMOID" if p["gate"] == "sigmoid"
                                          else "HARD_SIGMOID")),
        (".has_bias", "1" if p["bias"] else "0"),
        (".weight_form", _c_string(p["weight_form"])),
        (".per_channel", "1" if p["weight_form"] in ("Ck", "C1k") else "0"),
        (".nonfinite", "1" if flag["nonfinite"] else "0"),
        (".saturated", "1" if flag["saturated"] else "0"),
    ]
    members += [(f".{key}", field[key]) for key in _CASE_DTYPE_ARRAYS + _DOUBLE_ARRAYS]
    members += [(f".bound_{o}", field["bound_" + o]) for o in OUTPUTS]
    members += [(f".nan_ok_{o}", field["nan_ok_" + o]) for o in OUTPUTS]
    # C99 designated initializers, so the order of the struct's members cannot be mixed up
    body = ",\n".join(f"    {member} = {value}" for member, value in members)
    parts.append(f"const npeca_golden_case {ident} = {{\n{body}\n}};\n")
    return "".join(parts)


# --- the directory --------------------------------------------------------------------------

def _file_name(name: str) -> str:
    return f"case_{name}.c"


def write_c(suite: Suite, out: Path) -> list[tuple[str, str]]:
    """Write ``suite`` into the existing empty directory ``out`` as C99 sources:
    ``npeca_golden.h``, ``case_<name>.c`` per case, ``cases.c`` (the table) and
    ``sources.mk`` (``GOLDEN_SRCS = cases.c case_<name>.c ...``). Returns the cases that
    could not be expressed, with the reason: none (see the module's docstring)."""
    out = Path(out)
    names = list(suite.cases)
    idents = _identifiers(names)
    sources = []
    for name in names:
        case = suite.cases[name]
        text = _case_source(case, suite.arrays(name), idents[name])
        fname = _file_name(name)
        (out / fname).write_text(text, encoding="ascii")
        sources.append(fname)
    (out / HEADER).write_text(_HEADER_TEXT.format(
        suite=suite.manifest["suite"], suite_literal=_c_string(str(suite.manifest["suite"])),
        digest=suite.digest, count=len(names)), encoding="ascii")
    table = [("/* The table of all cases: written by `npeca golden export --format c`; "
              "do not edit. */\n"), f'#include "{HEADER}"\n\n']
    table += [f"extern const npeca_golden_case {idents[n]};\n" for n in names]
    table.append("\nconst npeca_golden_case *const npeca_golden_cases[] = {\n")
    table += [f"    &{idents[n]},\n" for n in names]
    table.append("};\n\nconst size_t npeca_golden_case_count = "
                 "sizeof npeca_golden_cases / sizeof npeca_golden_cases[0];\n")
    (out / "cases.c").write_text("".join(table), encoding="ascii")
    (out / "sources.mk").write_text(
        "# The C sources of this export, for a Makefile: include it, then compile and link\n"
        "# $(addprefix <this directory>/,$(GOLDEN_SRCS)).\n"
        "GOLDEN_SRCS = " + " \\\n\t".join(["cases.c"] + sources) + "\n", encoding="ascii")
    return []
