"""One shared training loop for PT and SFT LoRA adapters."""

from medmerge.train.config import LoraSettings, TrainConfig
from medmerge.train.loop import TrainResult, train

__all__ = ["LoraSettings", "TrainConfig", "TrainResult", "train"]
