"""Export a golden suite for test runners outside Python: C99 sources (``format="c"``) and
ONNX's backend-test layout (``format="onnx"``). See docs/golden.md.

Every exporter fills a fresh temporary directory beside the target, which is then renamed
into place (a reader never sees half an export). The target must not exist (or be an empty
directory), or, with ``force``, must be exactly an earlier export of npeca's: the marker file
``NPECA_EXPORT`` and the files it lists, with the SHA-256 it records; a file added or changed
there makes it something else. Nothing else is ever replaced or deleted.
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
from ._atomic import (_identity, _signals_held, _signals_unwind, refuse_cwd,
                      replace_directory)
from .io import Suite, sha256
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


def _tree(root: Path) -> dict[str, str] | None:
    """SHA-256 of every file under ``root`` by relative path, or None when something there
    is not a regular file or directory (a link, a FIFO...)."""
    files: dict[str, str] = {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        for d in dirs:
            if os.path.islink(os.path.join(folder, d)):
                return None
        for name in names:
            full = os.path.join(folder, name)
            if os.path.islink(full) or not os.path.isfile(full):
                return None
            with open(full, "rb") as f:
                files[os.path.relpath(full, root)] = sha256(f.read())
    return files


def _is_export(path: Path) -> bool:
    """A real directory holding exactly what an export of npeca's wrote there: its marker,
    and the files the marker lists, each with the hash the marker records. A file added,
    changed or removed makes it something else, which is never replaced."""
    try:
        if path.is_symlink() or not path.is_dir():
            return False
        marker = path / MARKER
        if marker.is_symlink() or not marker.is_file():
            return False
        listed = json.loads(marker.read_text()).get("files")
        tree = _tree(path)
        if not isinstance(listed, dict) or tree is None:
            return False
        tree.pop(MARKER, None)
        return tree == listed
    except (OSError, ValueError, AttributeError):
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
        check_case(case, suite.arrays(name), schema_version=suite.schema_version)
    out = Path(out_dir).absolute()
    inside = Path(os.path.realpath(out))
    if inside == Path(os.path.realpath(suite.path)) or \
            Path(os.path.realpath(suite.path)) in inside.parents:
        raise ParameterError(f"refusing to write into the suite itself ({out} is inside "
                             f"{suite.path}): a suite holds only its manifest and cases; "
                             f"choose a directory outside it")
    previous = _identity(out)
    if previous is not None and not _empty_dir(out):
        if not force:
            raise ParameterError(f"{out} already exists and is not empty; remove it or pass "
                                 f"--force to replace an earlier export there")
        if not _is_export(out):
            raise ParameterError(f"refusing to replace {out}: it is not exactly an export of "
                                 f"npeca's (a directory holding the {MARKER} file and only the "
                                 f"files it lists, unchanged); remove it yourself if you mean "
                                 f"it")
        refuse_cwd(out)
    elif previous is not None:
        previous = None  # an empty directory: renamed over, as if it were not there
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
                "skipped": [{"case": n, "reason": r} for n, r in report.skipped],
                "files": _tree(tmp)}, indent=1) + "\n")
            with _signals_held():
                _move_into_place(tmp, out, previous)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return report


def _empty_dir(path: Path) -> bool:
    try:
        return not path.is_symlink() and path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


def _move_into_place(tmp: Path, out: Path, previous: tuple[int, int] | None) -> None:
    if previous is None:
        try:
            os.rename(tmp, out)  # replaces an empty directory; fails if out is not empty
        except OSError as exc:
            raise ParameterError(f"{out} appeared while the export was being written "
                                 f"({exc.strerror}); it was left as it is") from None
        return
    replace_directory(tmp, out, previous, _is_export, "the export")


__all__ = ["export", "ExportReport", "EXPORT_FORMATS", "MARKER"]
