"""lossyload.bench.memory: the process's RSS now and at its peak, and the peak reset (Linux /proc)."""

from __future__ import annotations

from lossyload.bench import memory


def test_rss_readings() -> None:
    now, peak = memory.status_mb("VmRSS"), memory.peak_rss_mb()
    assert now is not None and 0 < now <= peak + 1  # Linux /proc
    assert memory.status_mb("NoSuchField") is None
    blob = bytearray(200 * 10**6)  # noqa: F841 - touched memory raises the peak
    blob[:: 4096] = b"\1" * len(blob[:: 4096])
    assert memory.peak_rss_mb() >= now + 150
    del blob
    assert memory.reset_peak() and memory.peak_rss_mb() < now + 150
