"""The issue's targets, judged from ``results.json`` on each row's mean test accuracy over its seeds: each is met,
missed by how much, not run (its rows are absent or were not trained) or not measured (a random VAE), with the
figures behind it (both sides' mean ± std).

- speech: the VQ + BNN row keeps >= 94% of the mel baseline's accuracy with >= 16x less feature memory; the aim
  is to come within 3 points of mel; and where the accuracy goes (the quantizer's cost, then the binarisation's);
- images, DCT: a network on JPEG DCT coefficients within 1 point of the pixel baseline with fewer FLOPs per
  sample: the ``dct`` row, and the best trained DCT-domain row;
- images, latents: VAE latents at least as accurate as resampled pixels of the same tensor size.

A target whose rows include one no better than guessing (at most :data:`CHANCE` times 1 / classes, as the
``quick`` preset's one epoch on tiny data gives) is "not measured": a tie at chance is no result.
"""

from __future__ import annotations

import os

from dataclasses import dataclass
from typing import Any

MIB = 2**20
EPS = 1e-9  # accuracies are ratios of counts: a tie with a threshold is met, not lost to float rounding
SHARE = 0.94  # VQ + BNN accuracy / mel accuracy (the seed deck: 79% / 84%)
MEMORY = 16.0  # mel feature memory / VQ + BNN feature memory (the seed deck: 119.52 / 3.74 MiB, 32x)
AIM_POINTS = 3.0  # the aim: VQ + BNN within this many points of mel
DCT_POINTS = 1.0  # a DCT-domain network within this many points of the pixel baseline
CHANCE = 1.5  # a row at most this many times chance accuracy (1 / classes) learnt nothing a target can compare


@dataclass(frozen=True)
class Verdict:
    """One target: ``result`` is "met", "missed ...", "not run" or "not measured (...)"; ``figures`` the numbers
    behind it; ``parts`` the targets it is the conjunction of."""

    target: str
    result: str
    figures: str = ""
    parts: tuple[Verdict, ...] = ()

    @property
    def met(self) -> bool:
        return self.result == "met"

    def lines(self, indent: str = "") -> list[str]:
        mark = self.result if self.met or self.result == "not run" else f"**{self.result}**"
        head = f"{indent}- {mark}: {self.target}" + (f": {self.figures}" if self.figures else "")
        return [head] + [line for p in self.parts for line in p.lines(indent + "  ")]


def seeds(r: dict) -> int:
    return r.get("seeds") or len(r.get("runs") or []) or 1


def accuracy(r: dict | None) -> str:
    """``80.0 ± 1.2% (3 seeds)``; ``80.0%`` for one seed; ``—`` for no trained row."""
    if r is None or r.get("test_accuracy") is None:
        return "—"
    mean, std, n = 100 * r["test_accuracy"], r.get("test_accuracy_std"), seeds(r)
    return f"{mean:.1f}%" if std is None or n < 2 else f"{mean:.1f} ± {100 * std:.1f}% ({n} seeds)"


def points(v: float, sign: bool = False) -> str:
    """Accuracy points to two decimals, so that a near miss of a threshold shows (``-1.01``, not ``-1.0``)."""
    return f"{v:+.2f}" if sign else f"{v:.2f}"


def gap(a: dict, b: dict) -> float:
    """Mean accuracy of ``a`` minus that of ``b``, in points."""
    return 100 * (a["test_accuracy"] - b["test_accuracy"])


def trained(named: dict[str, dict], *names: str) -> list[str]:
    """Which of ``names`` have no trained row."""
    return [n for n in names if named.get(n, {}).get("test_accuracy") is None]


def not_run(target: str, missing: list[str]) -> Verdict:
    return Verdict(target, "not run", f"no trained row {', '.join(missing)} in this run")


def at_chance(*rows: dict) -> str | None:
    """Why a comparison of ``rows`` means nothing: one of them is no better than guessing (``None`` if none)."""
    low = [r for r in rows if r.get("classes") and r["test_accuracy"] <= CHANCE / r["classes"] + EPS]
    if not low:
        return None
    return "not measured (at chance: " + ", ".join(
        f"{r['name']} {accuracy(r)} with {r['classes']} classes, chance {100 / r['classes']:.1f}%" for r in low) + ")"


def share(mel: dict, bnn: dict) -> Verdict:
    ratio = bnn["test_accuracy"] / mel["test_accuracy"] if mel["test_accuracy"] > 0 else float("inf")
    need = SHARE * mel["test_accuracy"]
    short = 100 * (need - bnn["test_accuracy"])
    return Verdict(f"accuracy >= {SHARE:.0%} of mel's", "met" if ratio >= SHARE - EPS else
                   f"missed by {points(short)} points", f"vq-bnn {accuracy(bnn)} is {100 * ratio:.2f}% of mel's "
                   f"{accuracy(mel)} (needs >= {100 * need:.1f}%; the seed deck: 79% of 84%)")


def memory(mel: dict, bnn: dict) -> Verdict:
    """Feature memory per sample (per batch when both rows ran the same batch size)."""
    per = [r["feature_bytes_per_batch"] / r["batch_size"] for r in (mel, bnn)]
    less = per[0] / per[1] if per[1] else float("inf")
    same = mel["batch_size"] == bnn["batch_size"]
    unit = f"per batch of {mel['batch_size']}" if same else "per sample (the batch sizes differ)"
    scale = mel["batch_size"] if same else 1
    return Verdict(f"feature memory >= {MEMORY:g}x less than mel's", "met" if less >= MEMORY - EPS else
                   f"missed by a factor of {MEMORY / less:.2f}", f"vq-bnn {per[1] * scale / MIB:.2f} MiB vs mel "
                   f"{per[0] * scale / MIB:.2f} MiB {unit}: {less:.1f}x less (the seed deck: 3.74 vs 119.52 MiB, 32x)")


def speech(named: dict[str, dict]) -> list[Verdict]:
    goal = (f"speech: VQ + BNN keeps >= {SHARE:.0%} of the mel baseline's accuracy with >= {MEMORY:g}x less "
            "feature memory")
    aim = f"speech aim: VQ + BNN within {AIM_POINTS:g} points of mel"
    if missing := trained(named, "mel", "vq-bnn"):
        return [not_run(goal, missing), not_run(aim, missing)]
    mel, bnn = named["mel"], named["vq-bnn"]
    parts = (share(mel, bnn), memory(mel, bnn))
    d = gap(bnn, mel)
    chance = at_chance(mel, bnn)
    return [Verdict(goal, chance or ("met" if all(p.met for p in parts) else "missed"), parts=parts),
            Verdict(aim, chance or ("met" if d >= -AIM_POINTS - EPS else f"missed by {points(-AIM_POINTS - d)} points"),
                    f"vq-bnn {accuracy(bnn)} vs mel {accuracy(mel)}: {points(d, sign=True)} points")]


def breakdown(named: dict[str, dict]) -> str:
    """Where the speech accuracy goes: mel -> the float network on the VQ bits -> the binarized network."""
    head = "- where the accuracy goes"
    if missing := trained(named, "mel", "vq-bits-cnn", "vq-bnn"):
        return f"{head}: not run (no trained row {', '.join(missing)} in this run)"
    mel, bits, bnn = named["mel"], named["vq-bits-cnn"], named["vq-bnn"]
    return (f"{head}: mel {accuracy(mel)} -> vq-bits-cnn (float network on the VQ bit-planes) {accuracy(bits)}: "
            f"the quantizer {points(gap(bits, mel), sign=True)} points -> vq-bnn (binarized network) "
            f"{accuracy(bnn)}: the binarisation {points(gap(bnn, bits), sign=True)} points")


def dct_verdict(target: str, r: dict, pix: dict) -> Verdict:
    d, ratio = gap(r, pix), r["flops_per_sample"] / pix["flops_per_sample"]
    close, fewer = d >= -DCT_POINTS - EPS, ratio < 1
    misses = ([f"{points(-DCT_POINTS - d)} points"] if not close else []) + (
        [f"FLOPs ({ratio:.2f}x the pixel network's)"] if not fewer else [])
    per = r["input_bytes_per_batch"] / r["batch_size"]
    return Verdict(target, at_chance(r, pix) or ("met" if close and fewer else "missed by " + " and by ".join(misses)),
                   f"{r['name']} {accuracy(r)} vs pixels {accuracy(pix)}: {points(d, sign=True)} points; "
                   f"{r['flops_per_sample'] / 1e6:,.1f} vs {pix['flops_per_sample'] / 1e6:,.1f} MFLOPs per sample "
                   f"({1 / ratio:.2f}x fewer); input {per:,.0f} bytes per sample (pixels "
                   f"{pix['input_bytes_per_batch'] / pix['batch_size']:,.0f})")


def dct(named: dict[str, dict]) -> list[Verdict]:
    goal = f"within {DCT_POINTS:g} point of the pixel baseline with fewer FLOPs per sample"
    first, best = f"images: the dct row {goal}", f"images: the best trained DCT-domain row {goal}"
    if missing := trained(named, "pixels"):
        return [not_run(first, missing), not_run(best, missing)]
    pix = named["pixels"]
    rows = [r for r in named.values() if r.get("codec") == "jpeg-dct" and r.get("test_accuracy") is not None]
    out = [not_run(first, ["dct"]) if "dct" not in {r["name"] for r in rows} else dct_verdict(first, named["dct"], pix)]
    if not rows:
        return out + [not_run(best, ["with DCT coefficients"])]
    top = max(rows, key=lambda r: (r["test_accuracy"], -r["flops_per_sample"]))
    return out + [dct_verdict(f"images: the best trained DCT-domain row ({top['name']}) {goal}", top, pix)]


def vae_text(vae: dict) -> str:
    """``VAE <model> (fitted on the training images ..., PSNR 27.1 dB)``."""
    sources = {"pretrained": "pretrained", "fitted": "fitted on the training images with lossyload fit-vae",
               "given": "given", "random": "RANDOM-initialised weights"}
    source = sources.get(vae.get("source") or "", "source not recorded")
    psnr = f", reconstruction PSNR {vae['psnr_db']:.1f} dB" if vae.get("psnr_db") is not None else ""
    if psnr and vae.get("psnr_resampling_db") is not None:
        psnr += f" vs {vae['psnr_resampling_db']:.1f} dB for resampling to the latent grid's size and back"
    model = vae.get("model") or "?"
    if vae.get("source") == "fitted":  # a folder in the run's work directory: its name, not this machine's path
        model = f"{os.path.basename(model.rstrip('/'))} (in the work folder)"
    return f"VAE {model} ({source}{psnr})"


def vae_of(results: dict[str, Any]) -> dict:
    """``results["vae"]``, or what the config says when the run did not record it."""
    if results.get("vae"):
        return results["vae"]
    choice = str(results.get("config", {}).get("vae", ""))
    return {"model": choice or None, "source": "random" if choice.startswith("random:") else None}


def latents(named: dict[str, dict], vae: dict) -> Verdict:
    target = "images: VAE latents at least as accurate as resampled pixels of the same tensor size"
    if missing := trained(named, "latents", "pixels-small"):
        return not_run(target, missing)
    lat, small = named["latents"], named["pixels-small"]
    d = gap(lat, small)
    result = ("not measured (random VAE)" if vae.get("source") == "random" else
              at_chance(lat, small) or ("met" if d >= -EPS else f"missed by {points(-d)} points"))
    return Verdict(target, result, f"latents {accuracy(lat)} vs pixels-small {accuracy(small)}: "
                   f"{points(d, sign=True)} points (the seed deck: 44% vs 39%); {vae_text(vae)}")


def evaluate(results: dict[str, Any]) -> list[str]:
    """Every target as markdown list lines, in a fixed order, whichever rows the run had."""
    named = {r["name"]: r for r in results["rows"]}
    verdicts = speech(named)
    lines = [line for v in verdicts for line in v.lines()] + [breakdown(named)]
    for v in [*dct(named), latents(named, vae_of(results))]:
        lines += v.lines()
    return lines
