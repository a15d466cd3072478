"""Directories written atomically: built in a temporary directory beside the target, then
renamed into place; a target that exists is replaced only after it was moved aside and found
to still be what the caller may replace. Used by ``npeca golden generate`` and ``export``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ParameterError


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so that the cleanup below runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGTERM, SIGHUP and SIGINT over the few renames that swap a suite in: a signal
    arriving between them would otherwise leave neither the old suite nor the new one at
    OUT. A signal that arrives is recorded and raised again, to the usual handler, right
    after. (Handlers, not a signal mask: a mask holds only the calling thread's signals, and
    NumPy's BLAS threads would still take them.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[signal.Signals] = []
    held = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    old = {sig: signal.signal(sig, lambda signum, frame: pending.append(signal.Signals(signum)))
           for sig in held}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def refuse_cwd(out: Path) -> None:
    """ParameterError when ``out`` is the current directory or one of its parents."""
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ParameterError(f"refusing to replace {out}: it is the current directory or "
                             f"one of its parents")


def replace_directory(tmp: Path, out: Path, previous: tuple[int, int] | None,
                      replaceable: Callable[[Path], bool], what: str) -> None:
    """Rename ``tmp`` over ``out``, which was the directory ``previous`` (device, inode) and
    must still be one ``replaceable`` accepts once moved aside; else put it back and raise
    ParameterError. ``what`` names the content in messages ("the golden suite")."""
    aside_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    aside = aside_dir / "previous"
    try:
        os.rename(out, aside)
    except OSError as exc:
        os.rmdir(aside_dir)
        raise ParameterError(f"{out} changed while {what} was being written "
                             f"({exc.strerror}); nothing was replaced") from None
    if _identity(aside) != previous or not replaceable(aside):
        _put_back(aside, out, aside_dir)
        raise ParameterError(f"{out} was replaced while {what} was being written and is "
                             f"no longer {what} that was there; left as it is")
    try:
        os.rename(tmp, out)
    except OSError as exc:
        _put_back(aside, out, aside_dir)
        raise ParameterError(f"{out} reappeared while {what} was being swapped in "
                             f"({exc.strerror}); nothing was replaced") from None
    shutil.rmtree(aside_dir, ignore_errors=True)


def _put_back(aside: Path, out: Path, aside_dir: Path) -> None:
    try:
        os.rename(aside, out)
        os.rmdir(aside_dir)
    except OSError:
        raise ParameterError(f"{out} changed during the run and its earlier content could not "
                             f"be put back: it is in {aside}") from None
