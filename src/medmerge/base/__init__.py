"""The tiny default base model: tokenizer, Qwen3 architecture, brief pretraining."""

from medmerge.base.build import BaseBuildConfig, build_base

__all__ = ["BaseBuildConfig", "build_base"]
