"""The merge stage: check the inputs, stream the merged checkpoint and/or adapter, verify, record.

The LoRA math it runs lives in medmerge.lora; checkpoint reading and writing in
medmerge.checkpoints.
"""

from medmerge.merge.config import MergeConfig
from medmerge.merge.run import run_merge

__all__ = ["MergeConfig", "run_merge"]
