"""Run by tests/loader/test_torchrun.py under ``torchrun``: each rank streams a dataset with LossyLoader and
writes the keys of every batch it saw, per epoch, to ``OUT/rank-R.json``. With ``--stop-after N`` it stops
after N batches of the first epoch and saves the loader state; with ``--resume`` it loads that state first
(``--resume-from FILE``: one state file for every rank, e.g. rank 0's of a run with another world size).
``--mix JSON`` reads a mixture instead of ``url``: ``{"sources": [{"url", "name", "storage_options"}],
"weights": [...], "epoch_samples": N}``."""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist

from lossyload.loader.dataset import LossyDataset
from lossyload.loader.loader import LossyLoader
from lossyload.loader.mix import Source


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--storage-options", default="{}")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--stop-after", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--resume-from")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--mix")
    args = p.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    state_path = os.path.join(args.out, f"state-{rank}.json")
    if args.mix:
        spec = json.loads(args.mix)
        ds = LossyDataset([Source(s["url"], name=s["name"], storage_options=s.get("storage_options"))
                           for s in spec["sources"]], weights=spec["weights"], epoch_samples=spec["epoch_samples"],
                          batch_size=args.batch_size, seed=7, shuffle_buffer=8, options={"crop": 16})
    else:
        ds = LossyDataset(args.url, batch_size=args.batch_size, seed=7, shuffle_buffer=8,
                          storage_options=json.loads(args.storage_options))
    loader = LossyLoader(ds, num_workers=args.workers, return_keys=True)
    if args.resume or args.resume_from:
        with open(args.resume_from or state_path) as f:
            loader.load_state_dict(json.load(f))
    epochs = []
    for _ in range(args.epochs):
        seen = []
        for _x, _y, keys in loader:
            seen.append(list(keys))
            if args.stop_after is not None and len(seen) == args.stop_after:
                with open(state_path, "w") as f:
                    json.dump(loader.state_dict(), f)
                break
        epochs.append(seen)
        if args.stop_after is not None:
            break
    counts = [torch.tensor([len(e) for e in epochs]) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([len(e) for e in epochs]))
    with open(os.path.join(args.out, f"rank-{rank}.json"), "w") as f:
        json.dump({"epochs": epochs, "len": len(loader), "all_counts": [c.tolist() for c in counts]}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
