"""npeca of another commit against this working tree, in one process: the same calls on the
same arrays, timed in turns, after checking that both give the same bits.

    python benchmarks/ab.py REV [SHAPE ...] [--kind forward|backward|both]
                                [--layout nchw|nhwc|both]

REV (a commit, tag or branch) is extracted with ``git archive`` as a package of another name,
``npeca_ab``, into ``$XDG_CACHE_HOME/npeca/ab/<commit>`` (``~/.cache`` without it), kept
there so that a second run finds its numba kernels cached. B is the npeca of the checkout
this script is in (its directory goes first on ``sys.path``; the script stops if another
npeca is imported). Both packages are warmed up (``npeca warmup``'s kernels)
before anything is timed. Per shape (``1x2048x7x7``, N x C x H x W; default: ResNet-50's
ECA shapes at batch 1 and 32), layout and kind (``forward``: ``y = eca(x, w)``;
``backward``: ``eca_backward(x, w, g)``, new arrays), the two calls are first compared bit
for bit (a difference is reported and that row is not timed), then timed in 7 rounds of
30 calls each, the two in turn (A first in rounds 1, 3, 5, 7, B first in the others, so that
whatever the first or the second place in a round costs falls on both alike); the least of
the 7 medians of each, and their ratio.

A copy of npeca under another name must run its own kernels: commits before this script
named the backend modules ``npeca.backends.*`` in full, so the copy's numba backend was this
tree's, and an A/B of two commits compared this tree with itself. The extracted copy's
names are rewritten to its own, and the script stops unless each package's numba backend
is its own module.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPES = ["1x256x56x56", "1x512x28x28", "1x1024x14x14", "1x2048x7x7",
          "32x256x56x56", "32x512x28x28", "32x1024x14x14", "32x2048x7x7"]
NAME = "npeca_ab"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def extract(rev: str) -> str:
    """The directory holding REV's npeca as the package NAME (made once per commit)."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT,
                            capture_output=True, text=True)
    if commit.returncode != 0:
        sys.exit(f"ab.py: {rev!r} is not a commit of {ROOT}: {commit.stderr.strip()}")
    sha = commit.stdout.strip()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    parent = os.path.join(cache, "npeca", "ab")
    home = os.path.join(parent, sha)
    if os.path.isfile(os.path.join(home, NAME, "__init__.py")):
        return home
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=parent)
    try:
        archive = subprocess.run(["git", "archive", sha, "npeca"], cwd=ROOT,
                                 capture_output=True)
        if archive.returncode != 0:
            sys.exit(f"ab.py: git archive {sha} npeca failed: "
                     f"{archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", staging], input=archive.stdout, check=True)
        os.rename(os.path.join(staging, "npeca"), os.path.join(staging, NAME))
        table = os.path.join(staging, NAME, "backends", "__init__.py")
        with open(table, encoding="utf-8") as f:
            text = f.read()
        with open(table, "w", encoding="utf-8") as f:
            f.write(text.replace('"npeca.backends.', f'"{NAME}.backends.'))
        try:
            os.rename(staging, home)  # atomic: another run sees all of it or none
        except OSError:  # another run made it first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename, else junk
    return home


def time_round(call, rounds: list) -> None:
    """Append the median of 30 timed calls to ``rounds``."""
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    rounds.append(float(np.median(times)))


def same(a, b) -> bool:
    """Bit for bit (the signs of zeros and the payloads of NaNs included) for arrays, or
    tuples of arrays and None of the same length."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)
                and all(same(p, q) for p, q in zip(a, b)))
    if a is None or b is None:
        return a is None and b is None
    return (a.dtype == b.dtype and a.shape == b.shape
            and a.tobytes() == b.tobytes())


def the_call(package, kind: str, x, w, g, axis: int):
    """``package``'s forward (a new y) or backward (new arrays) of x, as a call of nothing."""
    if kind == "forward":
        return lambda: package.eca(x, w, channel_axis=axis, backend="numba")
    return lambda: tuple(package.eca_backward(x, w, g, channel_axis=axis, backend="numba"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev")
    parser.add_argument("shapes", nargs="*", default=SHAPES)
    parser.add_argument("--kind", choices=("forward", "backward", "both"), default="both")
    parser.add_argument("--layout", choices=("nchw", "nhwc", "both"), default="both")
    args = parser.parse_args()
    shapes = []
    for label in args.shapes:
        try:
            n, c, h, w_ = (int(v) for v in label.split("x"))
        except ValueError:
            parser.error(f"a shape is N x C x H x W, like 1x2048x7x7; got {label!r}")
        if min(n, c, h, w_) < 1:
            parser.error(f"every size of a shape must be at least 1; got {label!r}")
        shapes.append((label, n, c, h, w_))
    sys.path.insert(0, ROOT)  # B: this checkout's npeca
    sys.path.insert(1, extract(args.rev))
    import npeca
    if os.path.dirname(os.path.abspath(npeca.__file__)) != os.path.join(ROOT, "npeca"):
        sys.exit(f"ab.py: imported npeca from {npeca.__file__}, not from {ROOT}")
    old = __import__(NAME)
    for package, name in ((old, NAME), (npeca, "npeca")):
        module = package.backends.get_backend("numba")
        if not module.__name__.startswith(name + "."):
            sys.exit(f"ab.py: {name}'s numba backend is {module.__name__}: not its own")
        if not hasattr(package.backends, "warmup"):
            sys.exit(f"ab.py: {args.rev} predates npeca.backends.warmup; compare commits "
                     f"from issue 13 on")
        package.backends.warmup()
    print(f"A: {args.rev} ({old.__file__}); B: this tree ({npeca.__file__})")
    print("least of 7 medians of 30 calls, ms; B / A below 1: this tree is faster")
    kinds = ("forward", "backward") if args.kind == "both" else (args.kind,)
    layouts = ("nchw", "nhwc") if args.layout == "both" else (args.layout,)
    for label, n, c, h, w_ in shapes:
        for layout in layouts:
            shape, axis = ((n, c, h, w_), 1) if layout == "nchw" else ((n, h, w_, c), -1)
            rng = np.random.default_rng(0)
            x = rng.standard_normal(shape, dtype=np.float32)
            g = rng.standard_normal(shape, dtype=np.float32)
            w = np.array([0.1, -0.2, 0.4, 0.2, -0.1], np.float32)
            for kind in kinds:
                a, b = (the_call(package, kind, x, w, g, axis) for package in (old, npeca))
                row = f"{label:14s} {layout.upper():5s} {kind:9s}"
                if not same(a(), b()):
                    print(f"{row} results differ: not timed")
                    continue
                ra: list = []
                rb: list = []
                for i in range(7):  # in turns, A first in even rounds and B in odd ones
                    for call, rounds in ((a, ra), (b, rb))[::1 if i % 2 == 0 else -1]:
                        time_round(call, rounds)
                ta, tb = min(ra) * 1e3, min(rb) * 1e3
                print(f"{row} A {ta:8.4f}  B {tb:8.4f}  B / A {tb / ta:5.2f}", flush=True)


if __name__ == "__main__":
    main()
