"""Export a golden suite for test runners outside Python: C99 sources (``format="c"``) and
ONNX's backend-test layout (``format="onnx"``). See docs/golden.md.

Every exporter fills a fresh temporary directory beside the target, which is then renamed
into place (a reader never sees half an export). The target must not exist, or, with
``force``, must be an earlier export of npeca's (it holds the marker file
``NPECA_EXPORT``); nothing else is ever replaced or deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ParameterError
from ._atomic import _identity, _signals_held, _signals_unwind, replace_directory
from .io import Suite
from .schema import EXPORT_MARKER
from .verify import check_case

MARKER = EXPORT_MARKER
EXPORT_FORMATS = ("c", "onnx")


@dataclass
class ExportReport:
    """What an export wrote: the directory, the cases written and those left out (with the
    reason each could not be expressed in the format)."""

    path: Path
    format: str
    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _writer(fmt: str) -> Callable[[Suite, Path], list[tuple[str, str]]]:
    if fmt == "c":
        from .export_c import write_c
        return write_c
    if fmt == "onnx":
        from .export_onnx import write_onnx
        return write_onnx
    raise ParameterError(f"format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")


def _is_export(path: Path) -> bool:
    """A real directory (not a link) holding npeca's export marker at its top."""
    try:
        return path.is_dir() and not path.is_symlink() and \
            (path / MARKER).is_file() and not (path / MARKER).is_symlink()
    except OSError:
        return False


def export(suite_dir: str | os.PathLike, fmt: str, out_dir: str | os.PathLike, *,
           force: bool = False) -> ExportReport:
    """Export the suite at ``suite_dir`` (checked as :func:`~npeca.golden.verify` checks it:
    manifest, hashes, every case's bounds and expected values) to ``out_dir`` in format
    ``fmt`` ("c" or "onnx").

    Raises
    ------
    ParameterError
        For an unknown format, or an ``out_dir`` that exists (without ``force``) or is not an
        earlier export (with it).
    GoldenIntegrityError
        For a suite that is damaged or was edited.
    """
    write = _writer(str(fmt))
    suite = Suite(suite_dir)
    for name, case in suite.cases.items():  # an edited suite is refused, as verify refuses it
        check_case(case, suite.arrays(name))
    out = Path(out_dir).absolute()
    previous = _identity(out)
    if previous is not None:
        if not force:
            raise ParameterError(f"{out} already exists; remove it or pass --force to "
                                 f"replace an earlier export there")
        if not _is_export(out):
            raise ParameterError(f"refusing to replace {out}: it is not an export of npeca's "
                                 f"(no {MARKER} file at its top); remove it yourself if you "
                                 f"mean it")
        resolved, cwd = out.resolve(), Path.cwd().resolve()
        if resolved == cwd or resolved in cwd.parents:
            raise ParameterError(f"refusing to replace {out}: it is the current directory or "
                                 f"one of its parents")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = ExportReport(out, fmt)
    with _signals_unwind():
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)
            report.skipped = list(write(suite, tmp))
            skipped = {name for name, _ in report.skipped}
            report.written = [n for n in suite.cases if n not in skipped]
            (tmp / MARKER).write_text(json.dumps({
                "format": fmt, "suite": suite.manifest["suite"], "digest": suite.digest,
                "written": report.written,
                "skipped": [{"case": n, "reason": r} for n, r in report.skipped]},
                indent=1) + "\n")
            with _signals_held():
                _move_into_place(tmp, out, previous)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return report


def _move_into_place(tmp: Path, out: Path, previous: tuple[int, int] | None) -> None:
    if previous is None:
        try:
            os.rename(tmp, out)  # fails if out appeared meanwhile and is not empty
        except OSError as exc:
            raise ParameterError(f"{out} appeared while the export was being written "
                                 f"({exc.strerror}); it was left as it is") from None
        return
    replace_directory(tmp, out, previous, _is_export, "the export")


__all__ = ["export", "ExportReport", "EXPORT_FORMATS", "MARKER"]
