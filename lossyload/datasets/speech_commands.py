"""Import a real Google Speech Commands folder into the ``keywords`` layout (same splits, same tools)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lossyload.errors import LossyloadError

from .layout import SPLITS, cached_summary, count_by_split, finish, prepare, write_split_files

# the keywords: seed 1's Speech Commands subset, and the words of the bundled synthetic set
WORDS: tuple[str, ...] = ("stop", "down", "no", "right", "go", "up", "yes", "left")


def _speech_commands_files(src: Path, words: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """``[(split, word, file name)]`` of a Speech Commands folder, sorted by split then word/file."""
    if not src.is_dir():
        raise LossyloadError(f"{src}: not a directory (expected a Google Speech Commands folder)")
    listed: dict[str, str] = {}
    for split, name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        if not (src / name).is_file():
            raise LossyloadError(f"{src}: no {name} (expected a Google Speech Commands folder)")
        listed.update({line.strip(): split for line in (src / name).read_text().splitlines() if line.strip()})
    files = []
    for word in words:
        if not (src / word).is_dir():
            raise LossyloadError(f"{src}: no folder for word {word!r}")
        files += [(listed.pop(f"{word}/{p.name}", "train"), word, p.name) for p in sorted((src / word).glob("*.wav"))]
    missing = [rel for rel in listed if rel.split("/")[0] in words]
    if missing:
        raise LossyloadError(f"{src}: {len(missing)} listed files are missing, e.g. {missing[0]}")
    return sorted(files, key=lambda f: (SPLITS.index(f[0]), f[1], f[2]))


def import_speech_commands(src: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                           words: tuple[str, ...] = WORDS, tars: bool = False,
                           progress: bool = True) -> dict[str, Any]:
    """Copy the ``words`` of a Google Speech Commands folder (``src/<word>/<speaker>_nohash_<n>.wav`` with
    ``validation_list.txt`` and ``testing_list.txt``; train is the rest) into the keywords layout."""
    src, dest, words = Path(src), Path(dest), tuple(words)
    config = {"source": "speech_commands", "src": str(src.resolve()), "words": list(words), "tars": tars}
    cached = cached_summary(dest, config)
    if cached is not None:
        return cached
    files = _speech_commands_files(src, words)
    prepare(dest)
    labels = sorted(words)
    items = ((split, f"{word}/{name.removesuffix('.wav')}", labels.index(word), "wav", (src / word / name).read_bytes())
             for split, word, name in tqdm(files, desc="import", unit="clip", disable=not progress))
    nbytes = write_split_files(dest, tars, items)
    counts = count_by_split((split, word) for split, word, _ in files)
    speakers = {s: len({n.split("_nohash_")[0] for sp, _, n in files if sp == s}) for s in SPLITS}
    summary = {"task": "keyword-spotting", "source": "speech_commands", "labels": labels, "counts": counts,
               "totals": {s: sum(c.values()) for s, c in counts.items()}, "speakers": speakers,
               "format": "wav", "tars": tars, "bytes": nbytes}
    header = [f"keywords: Google Speech Commands words from {src}, imported by lossyload.datasets.keywords",
              "splits from validation_list.txt / testing_list.txt; train is the rest", f"speakers: {speakers}"]
    return finish(dest, config, summary, header)
