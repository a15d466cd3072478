"""Where a first numba call's compile time goes: the tree of functions numba compiles for it.

    NUMBA_CACHE_DIR=$(mktemp -d) python benchmarks/compile_profile.py forward

Runs one first call (``forward``, ``backward``, ``forward_cl`` or ``backward_cl``) with
``backend="numba"`` on a 1 x 256 x 56 x 56 float32 input, as the cold-start part of
bench.py does, and prints the seconds of the call, then each function numba compiled for
it, nested under the function whose compile needed it: its whole compile (what it calls
included) and the part of it spent holding LLVM's lock for the function itself (optimizing
and emitting machine code; numba's ``numba:compile`` and ``numba:llvm_lock`` events).
Overloads of numba's own functions show as ``impl``. Last, the helpers compiled for more
than one signature (each signature is a compile of its own).

Use a new NUMBA_CACHE_DIR for each run: a cached kernel loads instead of compiling, and the
tree is then empty.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from numba.core import event

import npeca

_records: list = []  # ("start" | "end", name, time) and ("llvm", seconds, time it ended)


def _name(ev) -> str:
    dispatcher = ev.data.get("dispatcher")
    return getattr(getattr(dispatcher, "py_func", None), "__name__", "?")


class _Compiles(event.Listener):
    def on_start(self, ev):
        _records.append(("start", _name(ev), time.perf_counter()))

    def on_end(self, ev):
        _records.append(("end", _name(ev), time.perf_counter()))


class _LLVM(event.Listener):
    def on_start(self, ev):
        self.started = time.perf_counter()

    def on_end(self, ev):
        now = time.perf_counter()
        _records.append(("llvm", now - self.started, now))


def _call(what: str) -> None:
    x = np.random.default_rng(0).standard_normal((1, 256, 56, 56), dtype=np.float32)
    w = np.array([0.1, 0.2, 0.4, 0.2, 0.1], np.float32)
    if what.endswith("_cl"):
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    axis = -1 if what.endswith("_cl") else 1
    if what.startswith("forward"):
        npeca.eca(x, w, channel_axis=axis, backend="numba")
    else:
        npeca.eca_backward(x, w, x, channel_axis=axis, backend="numba")


def _tree(until: float) -> list[str]:
    lines: list[str] = []
    stack: list = []  # (name, start, [own LLVM seconds], index of its line)
    for kind, name, value in _records:
        if value > until:  # background compiles after the call
            break
        if kind == "llvm":
            if stack:
                stack[-1][2][0] += name
            continue
        if kind == "start":
            stack.append((name, value, [0.0], len(lines)))
            lines.append("")
        else:
            name, start, llvm, at = stack.pop()
            lines[at] = (f"{'  ' * len(stack)}{name}: {value - start:.2f} s "
                         f"(LLVM, own: {llvm[0]:.2f} s)")
    return lines


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "forward"
    if what not in ("forward", "backward", "forward_cl", "backward_cl"):
        sys.exit("usage: compile_profile.py [forward|backward|forward_cl|backward_cl]")
    event.register("numba:compile", _Compiles())
    event.register("numba:llvm_lock", _LLVM())
    start = time.perf_counter()
    _call(what)
    end = time.perf_counter()
    llvm = sum(seconds for kind, seconds, ended in _records if kind == "llvm" and ended <= end)
    print(f"first {what} call: {end - start:.2f} s, of which LLVM {llvm:.2f} s")
    print("\n".join(_tree(end)))
    from npeca.backends.numba_cpu import _items, _kernels
    for module in (_items, _kernels):
        for name, obj in vars(module).items():
            if len(getattr(obj, "signatures", ())) > 1:
                print(f"{name}: compiled for {len(obj.signatures)} signatures")


if __name__ == "__main__":
    main()
