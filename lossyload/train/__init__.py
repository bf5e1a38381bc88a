"""``lossyload-train``: the reference trainer (the seeds' experiments side by side, with bytes, memory, FLOPs,
throughput and accuracy measured per representation)."""

from .trainer import TrainConfig, run

__all__ = ["TrainConfig", "run"]
