"""The C export of a golden suite (npeca/golden/export_c.py) and the plain-C ECA with its
runner (examples/c): the core suite exported, compiled and passed in full; planted bugs in a
copy of eca.c caught; every exported value bit-exact in C; float16 rounding in C equal to
NumPy's; ``make check`` from another directory.

Needs a C compiler (``$CC`` or ``cc``) and, for the Makefile tests, ``make``: skipped
without them, failed without them under NPECA_REQUIRE_OPTIONAL=1 (as in CI).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from npeca.golden import Suite
from npeca.golden.export import export
from npeca.golden.export_c import _identifiers, c_literal

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "c"
CORE = ROOT / "tests" / "golden" / "core"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Werror"]


def _tool(name: str) -> str:
    """The path of a build tool, or a skip (a failure under NPECA_REQUIRE_OPTIONAL=1)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (set NPECA_REQUIRE_OPTIONAL=1 to make this a failure)"
        if os.environ.get("NPECA_REQUIRE_OPTIONAL") == "1":
            pytest.fail(f"{name} is required (NPECA_REQUIRE_OPTIONAL=1) but not installed")
        pytest.skip(message)
    return path


def _cc() -> list[str]:
    cc = shlex.split(os.environ.get("CC") or "cc")
    return [_tool(cc[0])] + cc[1:]


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                          **kw)


def _compile(cc: list[str], src: Path, obj: Path, *include: Path, extra=()) -> None:
    res = _run(cc + CFLAGS + list(extra) + [f"-I{d}" for d in include] +
               ["-c", src, "-o", obj])
    assert res.returncode == 0, f"{src}:\n{res.stderr}"


def _link(cc: list[str], objs: list[Path], exe: Path) -> None:
    res = _run(cc + CFLAGS + ["-o", exe] + objs + ["-lm"])
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The core suite exported to C once."""
    golden = tmp_path_factory.mktemp("export_c") / "golden"
    report = export(CORE, "c", golden)
    assert report.skipped == [] and len(report.written) == 52
    return golden


@pytest.fixture(scope="module")
def build(exported):
    """The export compiled once: the golden objects, the example's objects and the runner."""
    cc = _cc()
    golden = exported
    root = golden.parent
    objs = root / "obj"
    objs.mkdir()
    srcs = sorted(golden.glob("*.c"))
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        list(pool.map(lambda s: _compile(cc, s, objs / (s.stem + ".o")), srcs))
    example = {}
    for name in ("eca", "fp16", "runner"):
        example[name] = root / f"{name}.o"
        _compile(cc, EXAMPLE / f"{name}.c", example[name], golden)
    runner = root / "runner"
    golden_objs = [objs / (s.stem + ".o") for s in srcs]
    _link(cc, list(example.values()) + golden_objs, runner)
    return {"cc": cc, "root": root, "golden": golden, "golden_objs": golden_objs,
            "example": example, "runner": runner}


# --- the export -----------------------------------------------------------------------------

def test_export_layout(exported):
    golden = exported
    suite = Suite(CORE)
    files = {p.name for p in golden.iterdir()}
    assert {"npeca_golden.h", "cases.c", "sources.mk", "NPECA_EXPORT"} <= files
    assert {f"case_{n}.c" for n in suite.cases} <= files
    listed = (golden / "sources.mk").read_text().replace("\\\n", " ").split("=", 1)[1].split()
    assert sorted(listed) == sorted(p.name for p in golden.glob("*.c"))
    header = (golden / "npeca_golden.h").read_text()
    assert suite.digest in header and "#define NPECA_GOLDEN_CASE_COUNT 52" in header
    # the float16 cases are stored as float and marked float16
    f16 = (golden / "case_float16.c").read_text()
    assert ".dtype = NPECA_GOLDEN_FLOAT16" in f16 and "static const float v_x[" in f16
    f64 = (golden / "case_float64.c").read_text()
    assert "static const double v_x[" in f64 and re.search(r"0x[0-9a-f.]+p[-+]\d+f", f64) is None
    # nan_ok masks only in the nonfinite cases
    assert "v_nan_ok_dx" in (golden / "case_nan_propagation.c").read_text()
    assert ".nan_ok_dx = NULL" in (golden / "case_bias.c").read_text()


def test_identifiers_are_unique_c_names():
    ids = _identifiers(["a-b", "a_b", "a_b_1", "a.b", "0-1"])
    assert len(set(ids.values())) == 5
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", i) for i in ids.values())


# --- hex-float literals ---------------------------------------------------------------------

_INT = {np.float16: np.uint16, np.float32: np.uint32, np.float64: np.uint64}


def _specials(dtype) -> np.ndarray:
    info = np.finfo(dtype)
    tiny = info.smallest_subnormal
    vals = [0.0, -0.0, 1.0, -1.0, 1.5, 1 / 3, -2 / 3, float(tiny), -float(tiny),
            float(tiny) * 3, float(info.tiny), float(info.tiny) * (1 - info.eps),
            float(info.max), -float(info.max), float(info.eps), math.inf, -math.inf, math.nan,
            -math.nan, math.pi, 1e-3, 65504.0]
    rng = np.random.default_rng(7)
    bits = rng.integers(0, np.iinfo(_INT[dtype]).max, 300, dtype=_INT[dtype],
                        endpoint=True).view(dtype)
    with np.errstate(over="ignore"):
        arr = np.concatenate([np.array(vals, dtype=np.float64).astype(dtype), bits])
    # NaNs keep their sign only; make the payload the default quiet one, as C's NAN
    nan = np.isnan(arr)
    arr[nan] = np.where(np.signbit(arr[nan]), -np.array(np.nan, dtype), np.nan)
    return arr


def _parse(literal: str) -> float:
    body = literal.removesuffix("f")
    names = {"NAN": math.nan, "-NAN": -math.nan, "INFINITY": math.inf, "-INFINITY": -math.inf}
    return names[body] if body in names else float.fromhex(body)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_literals_round_trip_in_python(dtype):
    arr = _specials(dtype)
    suffix = "" if dtype is np.float64 else "f"
    back = np.array([_parse(c_literal(v, suffix)) for v in arr.tolist()]).astype(dtype)
    assert np.array_equal(back.view(_INT[dtype]), arr.view(_INT[dtype]))
    assert c_literal(-0.0) == "-0x0p+0" and c_literal(0.0) == "0x0p+0"
    assert c_literal(np.float32(3.0), "f") == "0x1.8p+1f"
    assert {c_literal(math.nan), c_literal(-math.nan)} == {"NAN", "-NAN"}
    assert (c_literal(math.inf), c_literal(-math.inf)) == ("INFINITY", "-INFINITY")


def test_literals_round_trip_in_c(build, tmp_path):
    """The literals compiled by the C compiler give the very bits: float16 and float32 as
    float (float16 widened exactly), float64 as double; -0.0, subnormals, NaN sign, inf."""
    sets = {"h": (np.float16, "float", "f"), "s": (np.float32, "float", "f"),
            "d": (np.float64, "double", "")}
    src = ["#include <math.h>", "#include <stdint.h>", "#include <stdio.h>",
           "#include <string.h>"]
    main = ["int main(void) {", "    size_t i;", "    uint32_t u; uint64_t v;"]
    expected = []
    for tag, (dtype, ctype, suffix) in sets.items():
        arr = _specials(dtype)
        items = ", ".join(c_literal(v, suffix) for v in arr.tolist())
        src.append(f"static const {ctype} {tag}[{arr.size}] = {{{items}}};")
        if ctype == "float":
            main.append(f"    for (i = 0; i < {arr.size}; i++) {{ memcpy(&u, &{tag}[i], 4); "
                        f'printf("%08lx\\n", (unsigned long)u); }}')
            wide = arr.astype(np.float32)
            expected += [f"{b:08x}" for b in wide.view(np.uint32).tolist()]
        else:
            main.append(f"    for (i = 0; i < {arr.size}; i++) {{ memcpy(&v, &{tag}[i], 8); "
                        f'printf("%016llx\\n", (unsigned long long)v); }}')
            expected += [f"{b:016x}" for b in arr.view(np.uint64).tolist()]
    main += ["    return 0;", "}"]
    (tmp_path / "lit.c").write_text("\n".join(src + main) + "\n")
    res = _run(build["cc"] + CFLAGS + ["-o", tmp_path / "lit", tmp_path / "lit.c", "-lm"])
    assert res.returncode == 0, res.stderr
    out = _run([tmp_path / "lit"]).stdout.split()
    assert out == expected


_DUMP = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "npeca_golden.h"

/* FNV-1a over the bytes of every value, in order */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 1099511628211ULL; }
    return h;
}
static void arr(const char *c, const char *name, const npeca_golden_array *a)
{
    uint64_t h = 14695981039346656037ULL;
    if (a->size == 0) return;
    h = a->f ? fnv(h, a->f, a->size * sizeof(float)) : fnv(h, a->d, a->size * sizeof(double));
    printf("%s %s %zu %016llx\n", c, name, a->size, (unsigned long long)h);
}
static void dbl(const char *c, const char *name, const double *d, size_t n)
{
    npeca_golden_array a = {NULL, d, n};
    if (d) arr(c, name, &a);
}
static void mask(const char *c, const char *name, const uint8_t *m, size_t n)
{
    if (m) printf("%s %s %zu %016llx\n", c, name, n,
                  (unsigned long long)fnv(14695981039346656037ULL, m, n));
}
int main(void)
{
    for (size_t i = 0; i < npeca_golden_case_count; i++) {
        const npeca_golden_case *k = npeca_golden_cases[i];
        size_t nc = (size_t)k->n * k->c;
        printf("%s params %d %d %d %d %d %d %d %d %d %d %s %d %d %d\n", k->name, k->dtype,
               k->n, k->c, k->s, k->channel_axis, k->k, k->padding, k->groups, k->gate,
               k->has_bias, k->weight_form, k->per_channel, k->nonfinite, k->saturated);
        arr(k->name, "x", &k->x); arr(k->name, "weight", &k->weight);
        arr(k->name, "bias", &k->bias); arr(k->name, "grad_out", &k->grad_out);
        arr(k->name, "y", &k->y); arr(k->name, "dx", &k->dx);
        arr(k->name, "dweight", &k->dweight); arr(k->name, "dbias", &k->dbias);
        dbl(k->name, "m", k->m, nc); dbl(k->name, "z", k->z, nc); dbl(k->name, "a", k->a, nc);
        dbl(k->name, "bound_y", k->bound_y, k->x.size);
        dbl(k->name, "bound_m", k->bound_m, nc); dbl(k->name, "bound_z", k->bound_z, nc);
        dbl(k->name, "bound_a", k->bound_a, nc);
        dbl(k->name, "bound_dx", k->bound_dx, k->x.size);
        dbl(k->name, "bound_dweight", k->bound_dweight, k->weight.size);
        dbl(k->name, "bound_dbias", k->bound_dbias, k->bias.size);
        mask(k->name, "nan_ok_y", k->nan_ok_y, k->x.size);
        mask(k->name, "nan_ok_m", k->nan_ok_m, nc); mask(k->name, "nan_ok_z", k->nan_ok_z, nc);
        mask(k->name, "nan_ok_a", k->nan_ok_a, nc);
        mask(k->name, "nan_ok_dx", k->nan_ok_dx, k->x.size);
        mask(k->name, "nan_ok_dweight", k->nan_ok_dweight, k->weight.size);
        mask(k->name, "nan_ok_dbias", k->nan_ok_dbias, k->bias.size);
    }
    return 0;
}
"""


def _fnv(data: bytes) -> str:
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def test_exported_suite_is_bit_exact_in_c(build, tmp_path):
    """Every array of every case of the core suite, read back in C, has the suite's bits
    (float16 arrays: the exactly widened float32; bfloat16: its float32 carrier), the
    struct's fields the manifest's parameters, and the nan_ok masks nonfinite_reach."""
    from npeca.golden.bounds import nonfinite_reach

    (tmp_path / "dump.c").write_text(_DUMP)
    _compile(build["cc"], tmp_path / "dump.c", tmp_path / "dump.o", build["golden"])
    _link(build["cc"], [tmp_path / "dump.o"] + build["golden_objs"], tmp_path / "dump")
    got = _run([tmp_path / "dump"]).stdout.splitlines()
    suite = Suite(CORE)
    want = []
    for name, case in suite.cases.items():
        arrays = suite.arrays(name)
        p = case["params"]
        x = arrays["x"]
        c = x.shape[1] if p["channel_axis"] == 1 else x.shape[-1]
        code = {"float16": 16, "float32": 32, "float64": 64, "bfloat16": -16}[case["dtype"]]
        fields = [code, x.shape[0], c, x.size // (x.shape[0] * c), p["channel_axis"], p["k"],
                  int(p["padding"] == "circular"), p["groups"], int(p["gate"] != "sigmoid"),
                  int(p["bias"]), p["weight_form"], int(p["weight_form"] in ("Ck", "C1k")),
                  int(case["flags"]["nonfinite"]), int(case["flags"]["saturated"])]
        want.append(f"{name} params " + " ".join(str(f) for f in fields))
        order = ["x", "weight", "bias", "grad_out", "y", "dx", "dweight", "dbias", "m", "z",
                 "a"] + [f"bound_{o}" for o in ("y", "m", "z", "a", "dx", "dweight", "dbias")]
        for key in order:
            if key not in arrays:
                continue
            arr = arrays[key]
            if arr.dtype == np.float16:
                arr = arr.astype(np.float32)
            want.append(f"{name} {key} {arr.size} {_fnv(np.ascontiguousarray(arr).tobytes())}")
        if case["flags"]["nonfinite"]:
            reach = nonfinite_reach(arrays, p)
            for out in ("y", "m", "z", "a", "dx", "dweight", "dbias"):
                if out in reach and out in case["bounds"]:
                    m = np.asarray(reach[out], dtype=np.uint8).tobytes()
                    want.append(f"{name} nan_ok_{out} {len(m)} {_fnv(m)}")
    assert got == want


# --- float16 and bfloat16 rounding in C ---------------------------------------------------

_FP16_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fp16.h"

int main(void)
{
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        uint64_t bits = strtoull(line, NULL, 16), out;
        double v, r;
        memcpy(&v, &bits, 8);
        r = ROUND(v);
        memcpy(&out, &r, 8);
        printf("%016llx\n", (unsigned long long)out);
    }
    return 0;
}
"""


def test_fp16_round_matches_numpy(build, tmp_path):
    """fp16_round (round to nearest even, directly from double) against NumPy's
    float64 -> float16 conversion: random values over the whole range, every tie between two
    halves (normal, subnormal, towards zero and towards overflow) and the edges."""
    rng = np.random.default_rng(3)
    halves = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    ties = (halves[:-1] + halves[1:]) / 2  # exact in float64
    vals = np.concatenate([
        rng.standard_normal(2000) * 10.0 ** rng.uniform(-9, 6, 2000),
        ties, np.nextafter(ties, 0), np.nextafter(ties, np.inf), halves,
        [0.0, -0.0, 2.0**-24, 2.0**-25, 2.0**-25 * (1 + 2**-52), 2.0**-26, 1e-300, 5e-324,
         65504.0, 65519.99, 65520.0, 65536.0, 1e300, math.inf, -math.inf, math.nan]])
    vals = np.concatenate([vals, -vals])
    with np.errstate(over="ignore"):
        want = vals.astype(np.float16).astype(np.float64)
    _check_c_rounding(build, tmp_path, "fp16_round", vals, want)


def test_bf16_round_matches_the_single_rounding(build, tmp_path):
    """bf16_round against npeca._bfloat16.round_bits (round to odd in float32, then to
    nearest even: another method): every tie between two bfloat16 values and its float64
    neighbours, values just off a tie by less than float32 can see (where rounding through
    float32 goes wrong), random values over the whole range, and the edges."""
    from npeca._bfloat16 import bits_to_float32, round_bits

    rng = np.random.default_rng(4)
    finite = bits_to_float32(np.arange(0, 0x7F80, dtype=np.uint16)).astype(np.float64)
    ties = (finite[:-1] + finite[1:]) / 2
    off = np.abs(ties) * 2.0 ** -30
    vals = np.concatenate([
        rng.standard_normal(2000) * 10.0 ** rng.uniform(-40, 38, 2000),
        ties, ties + off, ties - off, np.nextafter(ties, 0), np.nextafter(ties, np.inf),
        finite, [0.0, -0.0, 2.0**-133, 2.0**-134, 2.0**-135, 1e-300, 5e-324,
                 math.ldexp(255.5, 120), np.nextafter(math.ldexp(255.5, 120), 0), 1e300,
                 math.inf, -math.inf, math.nan]])
    vals = np.concatenate([vals, -vals])
    with np.errstate(invalid="ignore"):
        want = bits_to_float32(round_bits(vals)).astype(np.float64)
    _check_c_rounding(build, tmp_path, "bf16_round", vals, want)


def _check_c_rounding(build, tmp_path, function, vals, want):
    (tmp_path / "h.c").write_text(_FP16_MAIN.replace("ROUND", function))
    _compile(build["cc"], tmp_path / "h.c", tmp_path / "h.o", EXAMPLE)
    _link(build["cc"], [tmp_path / "h.o", build["example"]["fp16"]], tmp_path / "h")
    stdin = "".join(f"{b:016x}\n" for b in vals.view(np.uint64).tolist())
    res = _run([tmp_path / "h"], input=stdin)
    got = np.array([int(s, 16) for s in res.stdout.split()], dtype=np.uint64).view(np.float64)
    same = (got.view(np.uint64) == want.view(np.uint64)) | (np.isnan(got) & np.isnan(want))
    bad = np.nonzero(~same)[0]
    assert bad.size == 0, [(vals[i].hex(), got[i], want[i]) for i in bad[:5]]


# --- the runner -----------------------------------------------------------------------------

def _cases_of(stdout: str, status: str) -> set[str]:
    return {m.group(1) for m in re.finditer(rf"^{status} ([^:\s]+)", stdout, re.MULTILINE)}


def test_runner_passes_every_core_case(build):
    res = _run([build["runner"]])
    assert res.returncode == 0, res.stdout + res.stderr
    passed = _cases_of(res.stdout, "PASS")
    assert passed == set(Suite(CORE).cases)
    assert {"float16", "float16_long_sums", "nan_propagation", "inf_propagation",
            "saturated_sigmoid", "k_wraps_twice_circular", "float64_everything"} <= passed
    assert "52 PASS, 0 FAIL of 52 cases" in res.stdout


def test_runner_selects_cases_and_refuses_unknown_ones(build):
    res = _run([build["runner"], "bias", "float16"])
    assert res.returncode == 0 and _cases_of(res.stdout, "PASS") == {"bias", "float16"}
    res = _run([build["runner"], "no_such_case"])
    assert res.returncode == 2 and "no case no_such_case" in res.stderr


def test_runner_fails_when_no_case_ran(build, tmp_path):
    (tmp_path / "empty.c").write_text(
        '#include "npeca_golden.h"\n'
        "const npeca_golden_case *const npeca_golden_cases[1] = {NULL};\n"
        "const size_t npeca_golden_case_count = 0;\n")
    _compile(build["cc"], tmp_path / "empty.c", tmp_path / "empty.o", build["golden"])
    ex = build["example"]
    _link(build["cc"], [ex["eca"], ex["fp16"], ex["runner"], tmp_path / "empty.o"],
          tmp_path / "runner")
    res = _run([tmp_path / "runner"])
    assert res.returncode == 1 and "no case ran" in res.stdout


# Planted bugs: (name, [(text in eca.c, replacement, occurrences)], cases that must fail).
MUTANTS = [
    ("flipped_kernel", [("c % size + j - pad", "c % size - j + pad", 1)],
     {"ksize_c8", "circular", "float16", "float64"}),
    ("bias_dropped", [("sum += bias[0];", "sum += 0.0;", 1)],
     {"bias", "float16_bias_hard", "hard_sigmoid_bias_circular", "float64_everything"}),
    ("circular_as_zeros", [("if (p->padding == ECA_PAD_CIRCULAR)", "if (0)", 1)],
     {"circular", "groups4_circular", "k_exceeds_c_circular", "channels_last_1d"}),
    ("circular_wraps_once",
     [("return r < 0 ? r + len : r;", "return r < 0 ? (t + len) % len : r;", 1)],
     {"k_wraps_twice_circular"}),
    ("groups_ignored", [("p->c / p->groups", "p->c", 3)],
     {"groups4_zeros", "groups4_circular", "per_channel_c1k_groups", "float64_everything"}),
    ("channels_last_ignored", [("if (p->channels_last)", "if (0)", 1)],
     {"channels_last_2d", "channels_last_1d", "float64_everything"}),
    ("per_channel_transposed", [("w[(size_t)c * p->k + j]", "w[(size_t)j * p->c + c]", 1)],
     {"per_channel_ck", "per_channel_c1k_groups", "float64_everything"}),
    ("sum_not_mean", [("= sum / p->s;", "= sum;", 1)], {"ksize_c8", "float16"}),
    ("hard_slope_unclamped", [("1.0 / 6.0 : 0.0", "1.0 / 6.0 : 1.0 / 6.0", 1)],
     {"hard_sigmoid_clamped"}),
    ("sigmoid_slope_a", [("return a * sigmoid(-z);", "return a;", 1)], {"ksize_c8"}),
    ("dm_not_transposed", [("int c = tap_reader(p, ci, j);", "int c = tap_source(p, ci, j);",
                            1)], {"ksize_c8", "float64"}),
    ("dm_not_divided", [("+ dm[nc] / p->s", "+ dm[nc]", 1)], {"ksize_c8", "float64"}),
    ("hard_sigmoid_keras", [("double t = z + 3.0;", "double t = 1.2 * z + 3.0;", 1)],
     {"hard_sigmoid", "float64_hard_sigmoid"}),
]


@pytest.mark.parametrize("name,edits,must_fail", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_planted_bug_is_caught(build, tmp_path, name, edits, must_fail):
    text = (EXAMPLE / "eca.c").read_text()
    for old, new, count in edits:
        assert text.count(old) == count, f"{name}: {old!r} not found {count} times in eca.c"
        text = text.replace(old, new)
    (tmp_path / "eca.c").write_text(text)
    shutil.copy(EXAMPLE / "eca.h", tmp_path / "eca.h")
    # a mutant may leave a helper unused (tap_reader when dm reads tap_source)
    _compile(build["cc"], tmp_path / "eca.c", tmp_path / "eca.o", tmp_path,
             extra=["-Wno-unused-function"])
    ex = build["example"]
    _link(build["cc"], [tmp_path / "eca.o", ex["fp16"], ex["runner"]] + build["golden_objs"],
          tmp_path / "runner")
    res = _run([tmp_path / "runner"])
    assert res.returncode == 1, res.stdout
    failed = _cases_of(res.stdout, "FAIL")
    assert must_fail <= failed, f"{name}: {sorted(must_fail - failed)} passed"
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("FAIL "))
    assert re.match(r"FAIL \S+: \w+\[\d+\] got \S+ expected \S+ bound \S+ \(\d+ of \d+ ", line)


# --- the Makefile ---------------------------------------------------------------------------

def _make(args: list, cwd: Path) -> subprocess.CompletedProcess:
    _cc()
    env = dict(os.environ, PYTHON=sys.executable)
    return _run([_tool("make"), "--no-print-directory"] + args, cwd=cwd, env=env)


@pytest.mark.slow
def test_make_check_from_another_directory(tmp_path):
    build_dir = tmp_path / "build"
    res = _make(["-C", EXAMPLE, "check", f"SUITE={CORE}", f"BUILD={build_dir}",
                 f"PYTHON={sys.executable}"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "52 PASS, 0 FAIL of 52 cases" in res.stdout
    assert (build_dir / "runner").is_file() and (build_dir / "golden" / "NPECA_EXPORT").is_file()
    # make clean removes what the Makefile wrote and nothing else
    (build_dir / "mine.txt").write_text("keep me")
    res = _make(["-C", EXAMPLE, "clean", f"BUILD={build_dir}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in build_dir.iterdir()) == ["mine.txt"]
    (build_dir / "mine.txt").unlink()
    res = _make(["-C", EXAMPLE, "clean", f"BUILD={build_dir}"], cwd=tmp_path)
    assert res.returncode == 0 and not build_dir.exists()


def test_make_refuses_a_suite_it_cannot_find(tmp_path):
    res = _make(["-C", EXAMPLE, "check", "SUITE=tests/golden/core",
                 f"BUILD={tmp_path / 'build'}"], cwd=ROOT)
    assert res.returncode != 0
    assert "taken relative to" in res.stderr and "absolute path" in res.stderr
    assert not (tmp_path / "build").exists()
