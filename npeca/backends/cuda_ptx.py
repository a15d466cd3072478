"""Compile every kernel launch of the CUDA backend for real GPUs, without one.

``python -m npeca.backends.cuda_ptx [--cc 8.0 --cc 9.0] [--ptxas PATH]`` compiles each
(kernel, argument types) of :func:`npeca.backends.numba_cuda.launch_signatures` to PTX with
numba-cuda and NVIDIA's NVVM, for each compute capability, assembles the PTX with
``ptxas -v`` and fails (exit status 1) on any compile error, any ptxas error and any
register spill. No GPU or driver is needed: what numba-cuda asks the driver for (the
current device's compute capability, when a kernel calls a device function) is answered
with the capability being compiled for.

Needs numba-cuda and the toolchain wheels: ``pip install numba-cuda nvidia-nvvm
nvidia-cuda-nvrtc nvidia-cuda-nvcc`` (ptxas comes with nvidia-cuda-nvcc, or from a CUDA
toolkit on PATH). CI runs it (``.ci/run``).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types as pytypes
from dataclasses import dataclass
from typing import Iterator, Sequence

__all__ = ["Result", "check", "find_ptxas", "main"]


@dataclass
class Result:
    """One kernel signature at one compute capability."""

    kernel: str
    signature: str
    cc: tuple[int, int]
    ok: bool
    registers: int = -1
    spill_stores: int = 0
    spill_loads: int = 0
    fma: int = 0  # fused multiply-adds NVVM made (fma.rn.f32/f64 in the PTX)
    message: str = ""


def find_ptxas(explicit: str | None = None) -> str | None:
    """ptxas: ``explicit``, else the nvidia-cuda-nvcc wheel's, else one on PATH."""
    if explicit:
        return explicit
    for site in sys.path:
        for path in sorted(glob.glob(os.path.join(site, "nvidia", "*", "bin", "ptxas"))):
            if os.access(path, os.X_OK):
                return path
    return shutil.which("ptxas")


@contextlib.contextmanager
def _stand_in_device(cc: tuple[int, int]) -> Iterator[None]:
    """numba-cuda compiles a kernel's device functions for the current device: answer its
    question with ``cc`` (nothing else is asked of the driver when compiling to PTX)."""
    import numba.cuda.dispatcher as dispatcher

    real = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = real


def _numba_types(kinds: tuple) -> tuple:
    from numba import types

    out = []
    for kind in kinds:
        if kind[0] == "array":
            out.append(types.Array(getattr(types, kind[1]), 1, "C"))
        else:
            out.append(getattr(types, {"bool": "boolean"}.get(kind[0], kind[0])))
    return tuple(out)


_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def check(ccs: Sequence[tuple[int, int]] = ((8, 0), (9, 0)), ptxas: str | None = None,
          threads: int | None = None) -> list[Result]:
    """Compile and assemble every launch signature for every capability in ``ccs``."""
    from numba import cuda

    from . import numba_cuda

    tool = find_ptxas(ptxas)
    if tool is None:
        raise FileNotFoundError("ptxas not found: pip install nvidia-cuda-nvcc, or put a CUDA "
                                "toolkit's bin directory on PATH")
    kernels = numba_cuda._build_kernels(threads or numba_cuda.THREADS)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for cc in ccs:
            with _stand_in_device(cc):
                for name, kinds in numba_cuda.launch_signatures():
                    sig = _numba_types(kinds)
                    text = ", ".join(str(t) for t in sig)
                    try:
                        ptx, _ = cuda.compile_ptx(kernels[name].py_func, sig, cc=cc)
                    except Exception as exc:  # noqa: BLE001 - any compile failure is a result
                        results.append(Result(name, text, cc, False, message=(
                            f"compile_ptx: {type(exc).__name__}: {str(exc)[:300]}")))
                        continue
                    path = os.path.join(tmp, f"{name}.ptx")
                    with open(path, "w") as fh:
                        fh.write(ptx)
                    done = subprocess.run(
                        [tool, f"-arch=sm_{cc[0]}{cc[1]}", "-v", path, "-o",
                         os.path.join(tmp, f"{name}.cubin")],
                        capture_output=True, text=True, check=False)
                    log = done.stdout + done.stderr
                    spills = [tuple(map(int, m)) for m in _SPILL.findall(log)]
                    regs = [int(m) for m in _REGS.findall(log)]
                    stores = sum(s for s, _ in spills)
                    loads = sum(v for _, v in spills)
                    ok = done.returncode == 0 and stores == 0 and loads == 0
                    results.append(Result(
                        name, text, cc, ok, max(regs, default=-1), stores, loads,
                        len(re.findall(r"\bfma\.rn\.f(?:32|64)\b", ptx)),
                        "" if ok else (log.strip()[-300:] or f"ptxas exit {done.returncode}")))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cc", action="append", metavar="MAJOR.MINOR",
                        help="compute capability (repeatable; default 8.0 and 9.0)")
    parser.add_argument("--ptxas", help="the ptxas to use (default: found automatically)")
    args = parser.parse_args(argv)
    try:
        ccs = [tuple(int(v) for v in c.split(".")) for c in (args.cc or ["8.0", "9.0"])]
        if any(len(c) != 2 for c in ccs):
            raise ValueError
    except ValueError:
        print(f"error: --cc takes MAJOR.MINOR, e.g. 9.0; got {args.cc}", file=sys.stderr)
        return 2
    try:
        results = check([(c[0], c[1]) for c in ccs], args.ptxas)
    except (ImportError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in results:
        status = "ok  " if r.ok else "FAIL"
        print(f"{status} sm_{r.cc[0]}{r.cc[1]} {r.kernel:<12} registers {r.registers:>3}, "
              f"spills {r.spill_stores}/{r.spill_loads} B, fma {r.fma:>2}  ({r.signature})"
              + (f"\n     {r.message}" if r.message else ""))
    bad = [r for r in results if not r.ok]
    print(f"{len(results) - len(bad)} of {len(results)} kernel signatures compiled and "
          f"assembled without spills for {', '.join(f'sm_{a}{b}' for a, b in ccs)}")
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
