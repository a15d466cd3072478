"""Compiling the numba kernels: serial/parallel twins, the background compile, the stderr
notice, the cache key, `npeca warmup`, and the machine-derived schedule sizes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is not installed")

import npeca  # noqa: E402
from npeca.backends.numba_cpu import _compile, _machine  # noqa: E402


class _FakeDispatcher:
    """Stands in for a numba dispatcher: records calls and compiles."""

    def __init__(self, name: str, gate: threading.Event | None = None):
        self.name, self.calls, self.compiled, self.gate = name, [], [], gate

    def __call__(self, *args):
        self.calls.append(args)

    def compile(self, signature):
        if self.gate is not None:
            assert self.gate.wait(30)
        self.compiled.append(signature)


def test_large_calls_run_serial_until_the_parallel_twin_is_compiled(monkeypatch):
    monkeypatch.setattr(_compile, "BACKGROUND", True)
    gate = threading.Event()
    twin = _compile.Twin(_FakeDispatcher("parallel", gate), _FakeDispatcher("serial"))
    args = (np.zeros((2, 3), np.float32), 1.5, True)
    _compile.run_parallel_or_serial(twin, args)  # not compiled: serial, compile started
    _compile.run_parallel_or_serial(twin, args)  # still compiling: serial again
    assert len(twin.serial.calls) == 2 and not twin.parallel.calls
    gate.set()
    assert _compile.wait_for_background(timeout=30)
    assert len(twin.parallel.compiled) == 1  # once, however many calls asked meanwhile
    _compile.run_parallel_or_serial(twin, args)
    assert len(twin.parallel.calls) == 1 and len(twin.serial.calls) == 2
    # other argument types (float64, read-only) are another signature: serial again
    other = np.zeros((2, 3))
    other.flags.writeable = False
    _compile.run_parallel_or_serial(twin, (other, 1.5, True))
    assert len(twin.serial.calls) == 3
    assert _compile.wait_for_background(timeout=30)


def test_without_background_compiles_the_parallel_twin_runs_at_once(monkeypatch):
    monkeypatch.setattr(_compile, "BACKGROUND", False)
    twin = _compile.Twin(_FakeDispatcher("parallel"), _FakeDispatcher("serial"))
    _compile.run_parallel_or_serial(twin, (np.zeros(3, np.float32),))
    assert len(twin.parallel.calls) == 1 and not twin.serial.calls


def test_deferring_starts_background_compiles_only_at_the_end(monkeypatch):
    monkeypatch.setattr(_compile, "BACKGROUND", True)
    started = []
    monkeypatch.setattr(_compile, "start_compile",
                        lambda dispatcher, args, key=None: started.append(dispatcher.name))
    first = _compile.Twin(_FakeDispatcher("p1"), _FakeDispatcher("s1"))
    second = _compile.Twin(_FakeDispatcher("p2"), _FakeDispatcher("s2"))
    with _compile.deferring():
        _compile.run_parallel_or_serial(first, (np.ones(2, np.float32),))
        _compile.run_parallel_or_serial(second, (np.ones(2, np.float32),))
        assert started == []  # a second serial kernel must not wait behind a compile
    assert started == ["p1", "p2"]


def test_a_failed_background_compile_shows_its_error_in_the_foreground(monkeypatch):
    monkeypatch.setattr(_compile, "BACKGROUND", True)

    class Broken(_FakeDispatcher):
        def compile(self, signature):
            raise TypeError("cannot compile this")

        def __call__(self, *args):
            raise TypeError("cannot compile this")

    twin = _compile.Twin(Broken("parallel"), _FakeDispatcher("serial"))
    args = (np.zeros(5, np.float16),)
    _compile.run_parallel_or_serial(twin, args)  # serial answers; the compile fails quietly
    assert _compile.wait_for_background(timeout=30)
    with pytest.raises(TypeError, match="cannot compile this"):
        _compile.run_parallel_or_serial(twin, args)


def test_the_cache_key_holds_the_fingerprint_of_every_file_of_the_package():
    """A kernel inlines code of the package's other files: a change to any of them must
    change every kernel's cache key (numba alone keys by the kernel's own file)."""
    package = Path(_compile.__file__).parent
    assert _compile._FINGERPRINT == _compile._fingerprint()
    jitted = {p.name for p in package.glob("*.py") if "@_jit" in p.read_text()
              or "@twin" in p.read_text() or "@intrinsic" in p.read_text()}
    assert jitted == set(_compile.CODE_FILES), jitted  # every file of compiled code counts
    from npeca.backends.numba_cpu import _kernels
    cache = _kernels._forward_cf.parallel._cache
    key = cache._index_key(None, _kernels._forward_cf.parallel.targetctx.codegen())
    assert key[-1] == _compile._FINGERPRINT


def test_machine_caches_come_from_sysfs_or_sane_defaults(tmp_path, monkeypatch):
    found = _machine.caches()
    assert 4 << 10 <= found.l1d <= 4 << 20 and 64 << 10 <= found.l2 <= 64 << 20
    assert found.l3 >= found.l2 and found.source in ("sysfs", "sysconf", "default")
    root = tmp_path / "cache"
    for i, (level, kind, size) in enumerate([(1, "Data", "32K"), (1, "Instruction", "32K"),
                                             (2, "Unified", "512K"), (3, "Unified", "32M")]):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert _machine._from_sysfs(root) == {1: 32 << 10, 2: 512 << 10, 3: 32 << 20}
    assert _machine._size("1048576") == 1 << 20
    # how many CPUs share the L3: its shared_cpu_list, else every CPU of the machine
    assert found.l3_cpus >= 1
    fallback = max(1, os.cpu_count() or 1)
    assert _machine._l3_cpus(root) == fallback  # no shared_cpu_list file
    (root / "index3" / "shared_cpu_list").write_text("0-7,16-23\n")
    assert _machine._l3_cpus(root) == 16
    for bad in ("", "0-", "7-0", "0-7,5-2", "a-b", "-1", "0-99999999999", "\uff11", "0,,1"):
        (root / "index3" / "shared_cpu_list").write_text(bad)
        assert _machine._cpu_count(bad) == 0, bad
        assert _machine._l3_cpus(root) == fallback, bad
    (root / "index3" / "level").write_text("x\n")  # an unreadable index is skipped
    assert _machine._l3_cpus(root) == fallback


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, **env))


@pytest.mark.slow
def test_a_foreground_compile_says_so_once_on_stderr_and_a_cached_one_is_silent(tmp_path):
    code = ("import numpy as np, npeca\n"
            "x = np.ones((1, 8, 5), np.float32)\n"
            "for _ in range(3):\n"
            "    npeca.eca(x, np.ones(3), backend='numba')\n")
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    first = _run(code, env)
    assert first.returncode == 0, first.stderr
    lines = [line for line in first.stderr.splitlines() if line.startswith("npeca: compiling")]
    assert len(lines) == 1, first.stderr
    assert "channels-first forward (one thread) for float32" in lines[0]
    assert str(tmp_path) in lines[0]
    assert "npeca warmup" in lines[0]
    second = _run(code, env)
    assert second.returncode == 0 and "compiling" not in second.stderr, second.stderr


@pytest.mark.slow
def test_warmup_prepares_every_kind_of_call_and_auto_uses_numba_at_once(tmp_path):
    """After warmup, backend="auto" runs numba from the first call, small inputs included
    (the background compile switched on, as for users)."""
    code = ("import numpy as np, npeca, npeca.backends as b\n"
            "steps = b.warmup()\n"
            "import ml_dtypes\n"
            "assert len(steps) == 10, steps\n"
            "from npeca._validate import eca_problem\n"
            "for shape, axis in (((1, 8, 5), 1), ((2, 300, 300, 2), -1)):\n"
            "    for dtype in (np.float32, np.float64, ml_dtypes.bfloat16):\n"
            "        p = eca_problem(np.ones(shape, dtype), np.ones(3), channel_axis=axis)\n"
            "        assert b.select_backend('auto', p).__name__.endswith('numba_cpu')\n"
            "        g = np.ones(shape, dtype)\n"
            "        assert b.select_backend('auto', p, 'backward', g).__name__.endswith("
            "'numba_cpu')\n"
            "print('ok')\n")
    done = _run(code, {"NPECA_BACKGROUND_COMPILE": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    cli = subprocess.run([sys.executable, "-m", "npeca", "warmup"], capture_output=True,
                         text=True, timeout=900)
    assert cli.returncode == 0, cli.stderr
    assert "10 kinds of call ready" in cli.stdout and "backward channels-last float64" in \
        cli.stdout and "backward channels-first bfloat16" in cli.stdout


def test_results_do_not_depend_on_the_background_switch(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 64, 40, 40)).astype(np.float32)
    w = rng.standard_normal(5)
    monkeypatch.setattr(_compile, "BACKGROUND", False)
    want = npeca.eca_forward(x, w, backend="numba")
    monkeypatch.setattr(_compile, "BACKGROUND", True)
    for _ in range(3):
        got = npeca.eca_forward(x, w, backend="numba")
        for u, v in zip(want, got):
            np.testing.assert_array_equal(u, v)
    assert _compile.wait_for_background(timeout=600)


@pytest.mark.slow
def test_no_stderr_does_not_break_a_compiling_call(tmp_path):
    """Under pythonw or with 2>&- sys.stderr is None: the notice is skipped, not an error."""
    code = ("import sys; sys.stderr = None\n"
            "import numpy as np, npeca\n"
            "x = np.linspace(-1, 1, 40, dtype=np.float32).reshape(1, 8, 5)\n"
            "y = npeca.eca(x, np.ones(3), backend='numba')\n"
            "ref = npeca.eca(x, np.ones(3), backend='numpy')\n"
            "print(np.allclose(y, ref, rtol=1e-6, atol=0))\n")
    done = _run(code, {"NUMBA_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stdout + done.stderr


_UNALIGNED = r"""
import numpy as np, npeca
from npeca.backends.numba_cpu import _schedule
assert hasattr(_schedule, "_STREAM_BYTES") and hasattr(_schedule, "_STREAM_MIN_ROW")
_schedule._STREAM_BYTES, _schedule._STREAM_MIN_ROW = 0, 1  # streaming stores on every row
rng = np.random.default_rng(5)
shape = (2, 8, 33, 7)
nbytes = int(np.prod(shape)) * 4


def unaligned(offset):
    raw = np.zeros(nbytes + 64, np.uint8)
    arr = raw[offset:offset + nbytes].view(np.float32).reshape(shape)
    assert arr.flags.c_contiguous and arr.flags.aligned == (offset % 4 == 0)
    return arr


x = rng.standard_normal(shape).astype(np.float32)
w = rng.standard_normal(3)
want = npeca.eca_forward(x, w, backend="numba")
gwant = npeca.eca_backward(x, w, x, backend="numba")
for offset in (1, 2, 6):
    out = unaligned(offset)
    assert np.array_equal(npeca.eca(x, w, out=out, backend="numba"), want.y)
    xi = unaligned(offset)
    xi[...] = x
    assert np.array_equal(npeca.eca(xi, w, out=xi, backend="numba"), want.y)
    xi[...] = x
    got = npeca.eca_backward(xi, w, x, out=unaligned(offset), backend="numba").x
    assert np.array_equal(got, gwant.x)
print("ok")
"""


def test_unaligned_arrays_are_staged_not_crashed_on():
    """A C-contiguous array at an odd byte offset (a memmap at an odd offset) is not aligned
    to its element size; the kernels' vector loads and streaming stores assume alignment (an
    unaligned out= used to crash the process), so such arrays go through the staging
    buffers. In a subprocess, so that a crash is a failure, not the end of the run."""
    done = _run(_UNALIGNED, {})
    assert done.returncode == 0 and done.stdout.strip() == "ok", \
        f"exit {done.returncode}: {done.stdout}{done.stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_during_a_background_compile_waits_and_the_child_works(tmp_path):
    """fork() waits for a running background compile (a child would inherit numba's compiler
    lock held by a thread it does not have); the child computes and exits normally."""
    code = ("import os, sys, numpy as np, npeca\n"
            "x = np.ones((2, 64, 40, 40), np.float32)\n"
            "npeca.eca(x, np.ones(3), backend='numba')  # serial; parallel compiles behind\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    y = npeca.eca_backward(np.ones((1, 8, 5)), np.ones(3), np.ones((1, 8, 5)),\n"
            "                           backend='numba')\n"
            "    os._exit(0 if y.x.shape == (1, 8, 5) else 3)\n"
            "_, status = os.waitpid(pid, 0)\n"
            "print(os.waitstatus_to_exitcode(status))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path),
                                                NPECA_BACKGROUND_COMPILE="1"))
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stdout + done.stderr


_FORK_CHILD = r"""
import os, sys, time
import numpy as np, npeca
x = np.random.default_rng(0).standard_normal((2, 64, 40, 40)).astype(np.float32)
w = np.array([0.2, 0.5, 0.3])
if sys.argv[1] == "parallel":
    want = npeca.eca(x, w, backend="numba")  # starts numba's (OpenMP) thread pool
else:  # "auto": numba is imported in a thread meanwhile; fork at once or a little later
    want = npeca.eca(x, w, backend="numpy")
    npeca.eca(x, w)
    if sys.argv[2] == "logging":  # the import is under way: logging's fork handler is set
        while "logging" not in sys.modules:
            time.sleep(0.0005)
    else:
        time.sleep(float(sys.argv[2]))
pid = os.fork()
if pid == 0:
    got = npeca.eca(x, w, backend="numba")
    ok = np.array_equal(got, want) if sys.argv[1] == "parallel" else got.shape == x.shape
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.parametrize("case", [("parallel", "0"), ("auto", "0"), ("auto", "logging"),
                                  ("auto", "0.3")])
def test_a_forked_child_computes_with_numba(case):
    """A child made by fork() after the parent started numba's thread pool runs the serial
    kernels (GNU OpenMP would terminate it at its first parallel region), with the same bits;
    a fork while backend="auto" imports numba in its thread waits for the import (a child
    would inherit its module locks; logging's fork handler once made this wait deadlock)."""
    done = subprocess.run([sys.executable, "-c", _FORK_CHILD, *case], capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, NPECA_BACKGROUND_COMPILE="1"))
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stdout + done.stderr


@pytest.mark.slow
def test_exit_right_after_the_first_default_call_waits_for_the_background_load(tmp_path):
    """The first backend="auto" call imports numba in a thread, which starts compiling the
    kernels; numba's exit handler is registered by that import, too late when the process
    is already exiting: npeca's own exit handler then waits for the compile (cut off inside
    LLVM it could crash the exit) and says so."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NPECA_BACKGROUND_COMPILE="1")
    subprocess.run([sys.executable, "-c", "import npeca.backends.numba_cpu"], env=env,
                   check=True, timeout=300)
    code = ("import numpy as np, npeca\n"
            "npeca.eca(np.zeros((1, 64, 32, 32), np.float32), np.ones(3) / 3)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "waiting for a background compile" in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.rglob("*.nbi")), "the compile was cut off: nothing cached"


_SPECIALIZATIONS_SCRIPT = r"""
import json
import numpy as np, npeca
from npeca.backends.numba_cpu import _items, _kernels, _compile
rng = np.random.default_rng(0)
w = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
for shape, axis in (((1, 40, 6, 6), 1), ((1, 6, 6, 40), -1)):
    x = rng.standard_normal(shape).astype(np.float32)
    npeca.eca(x, w, channel_axis=axis, backend="numba")
    npeca.eca_backward(x, w, x, channel_axis=axis, backend="numba")
# the other kernel of each family: in place with split samples (_forward_cf_waves) and the
# pipelined backward (_backward_cf_pipelined, _pipeline_cf, _dz_one, _dx_one)
from npeca.backends.numba_cpu import _schedule
_schedule._PER_SAMPLE_BYTES = 0
_schedule._PIPELINE_MIN_ROW = 0
_schedule._CHUNK_BYTES = 1
x = rng.standard_normal((1, 40, 6, 6)).astype(np.float32)
npeca.eca(x, w, out=x, backend="numba")
npeca.eca_backward(x, w, x.copy(), backend="numba")
found = {}
for module in (_items, _kernels):
    for name, obj in vars(module).items():
        for d in (obj if isinstance(obj, _compile.Twin) else (obj,)):
            if hasattr(d, "signatures") and hasattr(d, "targetoptions"):
                found[d.py_func.__name__] = {
                    "inline": d.targetoptions.get("inline") == "always",
                    "signatures": [str(s) for s in d.signatures]}
print(json.dumps(found))
"""


@pytest.mark.slow
def test_a_first_compile_builds_each_helper_once_and_inlines_the_items(tmp_path):
    """In a new cache, the first forward and backward of both layouts, and the other kernel
    of each family (in place with split samples, the pipelined backward), compile each
    helper for one signature (a literal 0 argument made numba compile a second copy,
    Literal[int](0), seconds of compile) and never compile an item function on its own
    (inline="always": its code is compiled once, inside its kernel; docs/performance.md,
    "Where a first compile's time goes")."""
    import json
    done = _run(_SPECIALIZATIONS_SCRIPT, {"NUMBA_CACHE_DIR": str(tmp_path),
                                         "NPECA_BACKGROUND_COMPILE": "0"})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    compiled = {name for name, f in found.items() if f["signatures"]}
    assert {"_forward_cf_serial", "_forward_cf_waves_serial", "_forward_cl_serial",
            "_backward_cf_serial", "_backward_cf_pipelined_serial", "_backward_cl_serial",
            "_logits", "_gates", "_dz", "_gates_and_grads", "_dz_one", "_dx_one"} <= compiled, \
        sorted(compiled)
    literal = {name: f["signatures"] for name, f in found.items()
               if any("Literal" in s for s in f["signatures"])}
    assert not literal, literal
    inlined = {name for name, f in found.items() if f["inline"]}
    assert {"_forward_item_cf", "_scale_cf", "_forward_item_cl", "_backward_item_cl",
            "_pipeline_cf"} <= inlined, sorted(inlined)
    assert not inlined & compiled, sorted(inlined & compiled)
