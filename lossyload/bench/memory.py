"""The process's resident memory, read from the kernel: now, at its peak, and the peak reset (Linux)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def status_mb(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB; None where there is no /proc."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(x.split()[1]) * 1024 / 1e6 for x in lines if x.startswith(field + ":")), None)


def peak_rss_mb() -> float:
    """The process's peak RSS in MB: ``VmHWM``, else ``ru_maxrss`` (KiB on Linux, bytes on macOS). Not
    ``ru_maxrss`` on Linux: it never drops below the parent's RSS at fork (kept across exec) nor resets."""
    hwm = status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def reset_peak() -> bool:
    """Reset the kernel's record of this process's peak RSS (Linux ``clear_refs``); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
