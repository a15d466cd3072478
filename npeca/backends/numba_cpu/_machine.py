"""What the schedule is derived from: this machine's cache sizes and thread count.

Read once per process from Linux's sysfs (``/sys/devices/system/cpu/cpu0/cache``), else from
``os.sysconf`` (glibc), else conservative defaults that suit any x86 CPU of the last decade.
Nothing here changes arithmetic: only how work is cut into items and handed to threads.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Caches", "caches"]

_KIB = 1024
_MAX_CPUS = 1 << 16  # more CPUs sharing a cache than this is a misreport
_DEFAULTS = {1: 32 * _KIB, 2: 512 * _KIB, 3: 8 * _KIB * _KIB}  # the smallest common x86 sizes


@dataclass(frozen=True)
class Caches:
    """Data cache sizes in bytes, per core for L1 and L2, per socket (or core complex) for
    L3, where each number came from ("sysfs", "sysconf" or "default"), and how many CPUs
    share the L3 (sysfs's ``shared_cpu_list``, else every CPU of the machine)."""

    l1d: int
    l2: int
    l3: int
    source: str
    l3_cpus: int = 1  # how many CPUs share that L3 (its share per CPU is l3 // l3_cpus)


def _size(text: str) -> int:
    """'48K' / '2048K' / '32M' / '1048576' as bytes."""
    text = text.strip().upper()
    scale = {"K": _KIB, "M": _KIB * _KIB, "G": _KIB ** 3}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in "KMG" else text
    return int(digits) * scale


def _from_sysfs(root: Path) -> dict[int, int]:
    """{level: bytes} of the data and unified caches of cpu0."""
    found: dict[int, int] = {}
    for index in sorted(root.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text())
            size = _size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size > 0:
            found[level] = size
    return found


def _from_sysconf() -> dict[int, int]:
    """{level: bytes} from glibc's sysconf names, where they exist and are positive."""
    found: dict[int, int] = {}
    for level, name in ((1, "SC_LEVEL1_DCACHE_SIZE"), (2, "SC_LEVEL2_CACHE_SIZE"),
                        (3, "SC_LEVEL3_CACHE_SIZE")):
        try:
            value = os.sysconf(name)
        except (ValueError, OSError, AttributeError):
            continue
        if value and value > 0:
            found[level] = value
    return found


def _digits(text: str) -> bool:
    """ASCII decimal digits only (int() would also take other scripts' digits)."""
    return text.isascii() and text.isdecimal()


def _cpu_count(text: str) -> int:
    """How many CPUs a sysfs CPU list names ('0-7,16-23' -> 16); 0 when it is not such a
    list (empty, a range without its end or running backwards, not decimal, or more CPUs
    than any machine has)."""
    count = 0
    for part in text.strip().split(","):
        low, dash, high = part.partition("-")
        if not _digits(low) or (dash and not _digits(high)):
            return 0
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            return 0
        count += last - first + 1
    return count if count <= _MAX_CPUS else 0


def _l3_cpus(root: Path) -> int:
    """How many CPUs share cpu0's level-3 cache (sysfs), else os.cpu_count()."""
    for index in sorted(root.glob("index*")):
        try:
            if int((index / "level").read_text()) == 3:
                count = _cpu_count((index / "shared_cpu_list").read_text())
                if count > 0:
                    return count
        except (OSError, ValueError):
            continue
    return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def caches() -> Caches:
    """This machine's caches (read once per process; see the module docstring)."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    found, source = _from_sysfs(root), "sysfs"
    if 2 not in found:
        found, source = _from_sysconf(), "sysconf"
    if 2 not in found:
        found, source = {}, "default"
    sizes = {level: found.get(level, default) for level, default in _DEFAULTS.items()}
    # A value outside what any CPU has is a misreport: keep the default for it.
    bounds = {1: (4 * _KIB, 4 * _KIB * _KIB), 2: (64 * _KIB, 64 * _KIB * _KIB),
              3: (256 * _KIB, 4 * _KIB ** 3)}
    for level, (low, high) in bounds.items():
        if not low <= sizes[level] <= high:
            sizes[level] = _DEFAULTS[level]
    return Caches(l1d=sizes[1], l2=sizes[2], l3=max(sizes[3], sizes[2]), source=source,
                  l3_cpus=_l3_cpus(root))
