"""medmerge: train PT and SFT LoRA adapters, merge them exactly, verify and evaluate the merge."""

__version__ = "0.1.0"
