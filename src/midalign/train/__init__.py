"""Training: config, the alternating trainer, and the entry point that builds both from files."""

from midalign.train.config import MidAlignConfig
from midalign.train.guards import NonFiniteLossError
from midalign.train.run import build_trainer, train
from midalign.train.trainer import MidAlignTrainer

__all__ = ["MidAlignConfig", "MidAlignTrainer", "NonFiniteLossError", "build_trainer", "train"]
