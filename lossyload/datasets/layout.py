"""The on-disk layout shared by the keyword builders: ``dest/{train,validation,test}/<word>/<clip>`` or
``dest/{split}.tar`` (WebDataset), README.txt, and ``keywords.json`` written last (marks a complete build)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")


def _add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
    tf.addfile(info, io.BytesIO(data))


def write_split_files(dest: Path, tars: bool, items: Iterable[tuple[str, str, int, str, bytes]]) -> int:
    """Write ``(split, key, label, ext, data)`` items (tar order) as files or as ``dest/{split}.tar``."""
    open_tars: dict[str, tarfile.TarFile] = {}
    nbytes = 0
    try:
        for split, key, label, ext, data in items:
            if tars:
                if split not in open_tars:
                    open_tars[split] = tarfile.open(dest / f"{split}.tar", "w", format=tarfile.USTAR_FORMAT)
                _add_member(open_tars[split], f"{key}.{ext}", data)
                _add_member(open_tars[split], f"{key}.cls", str(label).encode())
            else:
                path = dest / split / f"{key}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            nbytes += len(data)
    finally:
        for tf in open_tars.values():
            tf.close()
    return nbytes


def count_by_split(entries: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for split, word in entries:
        counts[split][word] = counts[split].get(word, 0) + 1
    return {split: dict(sorted(c.items())) for split, c in counts.items()}


def _tar_sizes(dest: Path) -> dict[str, int | None]:
    return {s: (dest / f"{s}.tar").stat().st_size if (dest / f"{s}.tar").exists() else None for s in SPLITS}


def cached_summary(dest: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    try:
        record = json.loads((dest / "keywords.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("version") != FORMAT_VERSION or record.get("config") != config:
        return None
    summary = record["summary"]
    if summary["tars"]:
        return summary if _tar_sizes(dest) == summary["tar_bytes"] else None
    found = sum(1 for split in SPLITS for p in (dest / split).glob("*/*") if p.is_file())
    return summary if found == sum(summary["totals"].values()) else None


def prepare(dest: Path) -> None:
    """Empty ``dest`` of a previous (possibly partial) keywords build; refuse to touch anything else."""
    marker = dest / ".keywords-partial"
    if dest.exists() and any(dest.iterdir()):
        if not ((dest / "keywords.json").exists() or marker.exists()):
            raise FileExistsError(f"{dest}: not empty and not a keywords build; refusing to overwrite")
        for split in SPLITS:
            shutil.rmtree(dest / split, ignore_errors=True)
            (dest / f"{split}.tar").unlink(missing_ok=True)
        (dest / "keywords.json").unlink(missing_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    marker.touch()


def finish(dest: Path, config: dict[str, Any], summary: dict[str, Any], header: list[str]) -> dict[str, Any]:
    """Write README.txt and, last, keywords.json (which marks the build complete)."""
    if summary["tars"]:
        summary["tar_bytes"] = _tar_sizes(dest)
    lines = [*header, "", f"config: {json.dumps(config)}", f"labels (index = .cls in tars): {summary['labels']}",
             f"totals: {json.dumps(summary['totals'])}", f"counts: {json.dumps(summary['counts'])}"]
    (dest / "README.txt").write_text("\n".join(lines) + "\n")
    record = {"version": FORMAT_VERSION, "config": config, "summary": summary}
    (dest / "keywords.json").write_text(json.dumps(record, indent=1) + "\n")
    (dest / ".keywords-partial").unlink()
    return summary
