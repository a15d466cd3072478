"""The ``npeca`` command."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

import numpy as np

from ._version import __version__
from .api import eca_backward, eca_forward
from .errors import NpecaError
from .kernel_size import kernel_size


def _cmd_kernel_size(args: argparse.Namespace) -> int:
    rows = [(c, kernel_size(c, args.gamma, args.b), kernel_size(c, args.gamma, args.b,
                                                                min_size=3))
            for c in args.channels]
    print(f"kernel size k = psi(C), gamma = {args.gamma}, b = {args.b}")
    print(f"{'C':>8}  {'paper':>5}  {'timm':>5}")
    for c, paper, timm in rows:
        print(f"{c:>8}  {paper:>5}  {timm:>5}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    n, c, h, w_ = 2, 16, 8, 8
    k = kernel_size(c)
    x = rng.standard_normal((n, c, h, w_))
    weight = rng.standard_normal((1, 1, k)) / np.sqrt(k)
    bias = 0.1
    print(f"npeca {__version__}: ECA demo on x of shape {x.shape} (float64), seed {args.seed}")
    print(f"kernel size for C = {c}: k = {k} (paper rule, gamma = 2, b = 1)")

    fwd = eca_forward(x, weight, bias=bias)
    print(f"attention a: min {fwd.a.min():.6f}  mean {fwd.a.mean():.6f}  max {fwd.a.max():.6f}")
    print(f"output y:    mean {fwd.y.mean():+.6f}  std {fwd.y.std():.6f}  "
          f"max|y|/max|x| {np.abs(fwd.y).max() / np.abs(x).max():.6f}")

    # L = <r, y>; compare <dL/dinputs, u> with a central difference of L along u.
    r = rng.standard_normal(x.shape)
    grads = eca_backward(x, weight, r, bias=bias)
    ux, uw, ub = rng.standard_normal(x.shape), rng.standard_normal(weight.shape), 1.0
    db = 0.0 if grads.bias is None else float(np.sum(grads.bias))  # one value, any shape
    analytic = np.vdot(grads.x, ux) + np.vdot(grads.weight, uw) + db * ub

    def loss(t: float) -> float:
        y = eca_forward(x + t * ux, weight + t * uw, bias=bias + t * ub).y
        return float(np.vdot(r, y))

    eps = 1e-6
    numeric = (loss(eps) - loss(-eps)) / (2 * eps)
    rel = abs(analytic - numeric) / max(abs(analytic), abs(numeric), 1e-300)
    ok = rel < 1e-7
    print("gradient check, L = <r, y>, random direction u over (x, weight, bias):")
    print(f"  backward <dL, u> = {analytic:+.12e}")
    print(f"  central diff     = {numeric:+.12e}  (eps = {eps:g})")
    print(f"  relative error   = {rel:.2e}  {'PASS' if ok else 'FAIL'} (tolerance 1e-7)")
    return 0 if ok else 1


def _cmd_warmup(args: argparse.Namespace) -> int:
    from .backends import warmup

    def progress(what: str) -> None:
        if not args.quiet:
            print(f"  {what} ...", end="", flush=True)

    if not args.quiet:
        print("npeca warmup: compiling every numba kernel into numba's cache")
    steps = warmup(progress=progress if not args.quiet else None,
                   done=(lambda s: print(f" {s:.1f} s", flush=True)) if not args.quiet
                   else None)
    total = sum(s for _, s in steps)
    print(f"npeca warmup: {len(steps)} kinds of call ready in {total:.1f} s; later processes "
          f"load them from the cache")
    return 0


def _cmd_golden_generate(args: argparse.Namespace) -> int:
    from .golden import Suite, generate

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    path = generate(args.out_dir, suite_name=args.suite, formats=formats, force=args.force,
                    progress=None if not args.quiet else False)
    suite = Suite(path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote {len(suite.cases)} cases of the {args.suite} suite to {path} "
          f"({', '.join(formats)}; {size / 1e6:.2f} MB)")
    print(f"digest {suite.digest}")
    return 0


def _cmd_golden_digest(args: argparse.Namespace) -> int:
    from .golden import Suite

    print(Suite(args.dir).digest)
    return 0


def _cmd_golden_verify(args: argparse.Namespace) -> int:
    import json

    from .golden import format_table, to_json, verify

    results = verify(args.dir, args.backend, fmt=args.format, require=args.require,
                     expect_digest=args.expect_digest,
                     progress=None if not (args.quiet or args.json) else False)
    if args.json:
        print(json.dumps({"backend": args.backend, "suite": str(args.dir),
                          "cases": to_json(results)}, indent=1, default=float))
    else:
        print(format_table(results, verbose=args.verbose))
    if all(r.status == "SKIP" for r in results):
        print(f"npeca golden verify: backend {args.backend} ran no case (every case was "
              f"skipped)", file=sys.stderr)
        return 1
    return 1 if any(r.status in ("FAIL", "ERROR") for r in results) else 0


def _cmd_golden_export(args: argparse.Namespace) -> int:
    from .golden.export import export

    report = export(args.dir, args.format, args.out, force=args.force)
    print(f"wrote {len(report.written)} cases of {args.dir} as {args.format} to {report.path}")
    for name, reason in report.skipped:
        print(f"  skipped {name}: {reason}")
    return 0


def _cmd_golden_mutants(args: argparse.Namespace) -> int:
    from .golden import Suite
    from .golden.mutants import format_kill_table, kill_table

    correct, mutants = kill_table(Suite(args.dir))
    print(format_kill_table(correct, mutants))
    survivors = [m.name for m in mutants if not m.failed]
    wrong = [c.name for c in correct if c.failed]
    print(f"{len(mutants) - len(survivors)} of {len(mutants)} mutants killed; "
          f"{len(correct) - len(wrong)} of {len(correct)} correct implementations pass")
    return 1 if survivors or wrong else 0


def _seed(text: str) -> int:
    """An argparse type: a non-negative integer seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0; got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``npeca`` command."""
    parser = argparse.ArgumentParser(
        prog="npeca",
        description="Reference implementation of ECA (Efficient Channel Attention).",
    )
    parser.add_argument("--version", action="version", version=f"npeca {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ks = sub.add_parser("kernel-size", help="print the kernel size k for channel counts C",
                        description="Print k = psi(C) for the paper's rule and timm's "
                                    "(min_size = 3).")
    ks.add_argument("channels", nargs="+", type=int, metavar="C", help="channel counts")
    ks.add_argument("--gamma", type=float, default=2, help="gamma of the rule (default 2)")
    ks.add_argument("--b", type=float, default=1, help="b of the rule (default 1)")
    ks.set_defaults(func=_cmd_kernel_size)

    demo = sub.add_parser("demo", help="run forward, backward and a gradient check",
                          description="Run ECA forward and backward on a built-in example "
                                      "and check the gradient by finite differences.")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_cmd_demo)

    warm = sub.add_parser("warmup", help="compile every numba kernel into the cache",
                          description="Compile the numba backend's kernels (float32 and "
                                      "float64, both layouts, forward and backward, serial and "
                                      "parallel) into numba's on-disk cache, so that no later "
                                      "process compiles: for container images and CI.")
    warm.add_argument("--quiet", action="store_true", help="print only the summary")
    warm.set_defaults(func=_cmd_warmup)

    _add_golden(sub)
    return parser


# long: the declarations of the five golden subcommands, each a few add_argument lines
def _add_golden(sub: Any) -> None:
    """The ``npeca golden`` subcommands."""
    golden = sub.add_parser("golden", help="generate or verify golden test vectors",
                            description="Golden test vectors for checking any ECA backend.")
    gsub = golden.add_subparsers(dest="golden_command", metavar="ACTION", required=True)
    gen = gsub.add_parser("generate", help="write a golden suite to a directory",
                          description="Write a deterministic golden suite (inputs, exact "
                                      "expected outputs, intermediates and gradients).")
    gen.add_argument("out_dir", metavar="OUT_DIR", help="directory to create")
    gen.add_argument("--suite", choices=("core", "full"), default="core")
    gen.add_argument("--format", default="npz,json",
                     help="comma-separated subset of npz,safetensors,json; json not alone "
                          "(default npz,json)")
    gen.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_cmd_golden_generate)
    ver = gsub.add_parser("verify", help="check a backend against a golden suite",
                          description="Run a backend on every case of a suite and compare. "
                                      "Exit status 0: all pass; 1: a case failed; 2: the suite "
                                      "is damaged or the arguments are wrong.")
    ver.add_argument("dir", metavar="DIR", help="a suite written by golden generate")
    ver.add_argument("--backend", default="numpy",
                     help="numpy, numba, cuda, torch, onnxruntime or module:function "
                          "(default numpy)")
    ver.add_argument("--format", choices=("npz", "safetensors", "json"), default=None,
                     help="which files to read (default npz)")
    ver.add_argument("--require", default="y", metavar="OUTPUTS",
                     help="comma-separated outputs every case must return to pass, of "
                          "y,m,z,a,dx,dweight,dbias (default y; dbias only where the case "
                          "has a bias)")
    ver.add_argument("--expect-digest", default=None, metavar="HEX",
                     help="refuse (exit 2) a suite whose digest (npeca golden digest) "
                          "differs")
    ver.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ver.add_argument("--verbose", action="store_true", help="one row per output")
    ver.add_argument("--quiet", action="store_true", help="no progress bar")
    ver.set_defaults(func=_cmd_golden_verify)
    dig = gsub.add_parser("digest", help="print the SHA-256 that pins a suite",
                          description="Print one SHA-256 over the suite's canonical manifest "
                                      "(which holds every file's SHA-256). Pin it with "
                                      "verify --expect-digest.")
    dig.add_argument("dir", metavar="DIR", help="a golden suite")
    dig.set_defaults(func=_cmd_golden_digest)
    exp = gsub.add_parser("export", help="write a suite for C or ONNX test runners",
                          description="Write a golden suite's cases as C99 sources (--format "
                                      "c: arrays as hex-float literals, bounds, a header that "
                                      "describes the cases) or in ONNX's backend-test layout "
                                      "(--format onnx: test_<case>/model.onnx and "
                                      "test_data_set_0/*.pb). Cases a format cannot express "
                                      "are listed as skipped, with the reason.")
    exp.add_argument("dir", metavar="DIR", help="a golden suite")
    exp.add_argument("out", metavar="OUT", help="directory to create")
    exp.add_argument("--format", choices=("c", "onnx"), required=True)
    exp.add_argument("--force", action="store_true",
                     help="replace OUT if it is an earlier export")
    exp.set_defaults(func=_cmd_golden_export)
    mut = gsub.add_parser("mutants", help="prove the suite's verdicts can fail",
                          description="Run correct contract implementations (every summation "
                                      "order) and a catalogue of ECA bugs against a suite: "
                                      "exit 0 when every correct one passes and every bug "
                                      "fails some case.")
    mut.add_argument("dir", metavar="DIR", help="a golden suite")
    mut.set_defaults(func=_cmd_golden_mutants)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``npeca`` command with ``argv`` (default: ``sys.argv[1:]``)."""
    for stream in (sys.stdout, sys.stderr):  # a path the console cannot encode: escape it
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except NpecaError as exc:
        print(f"npeca {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `npeca ... | head`: the reader left; nothing more to say
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes it at exit
        except OSError:
            pass
        return 0
    except OSError as exc:
        print(f"npeca {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"npeca {args.command}: error: out of memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"npeca {args.command}: interrupted", file=sys.stderr)
        return 130

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
