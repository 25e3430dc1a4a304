"""The training stage's schema, shared by PT and SFT (they differ in data and masking only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medmerge.config import StageConfig


class LoraSettings(StageConfig):
    """LoRA hyperparameters, as PEFT's LoraConfig names them."""

    r: int = Field(default=8, ge=1)
    alpha: float = Field(default=16, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_rslora: bool = False


class DataFile(StageConfig):
    """One data file with its own field names, for files that differ from the defaults."""

    path: str
    text_column: str | None = None  # PT
    columns: dict[str, str] = Field(default_factory=dict)  # SFT


class TrainConfig(StageConfig):
    """`medmerge train pt|sft`: one LoRA adapter from one base model and data files."""

    path_fields = ("base", "data", "out")

    stage: Literal["pt", "sft"]
    base: str
    data: list[str | DataFile] = Field(min_length=1)
    out: str
    # data reading
    text_column: str | None = None  # PT: column/field holding the text (default "text")
    data_format: Literal["auto", "alpaca", "sharegpt"] = "auto"  # SFT
    columns: dict[str, str] = Field(default_factory=dict)  # SFT: field-name mapping
    max_samples: int | None = Field(default=None, ge=1)
    # formatting
    template: str = "qwen3"
    enable_thinking: bool = True
    cutoff_len: int = Field(default=256, ge=8)
    packing: bool | None = None  # default: on for PT, off for SFT
    # LoRA and optimisation
    lora: LoraSettings = Field(default_factory=LoraSettings)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = Field(default=2e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    warmup_steps: int = Field(default=0, ge=0)
    num_epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=4, ge=1)  # per process
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    seed: int = 42
    precision: Literal["fp32", "bf16"] = "fp32"
    logging_steps: int = Field(default=1, ge=1)
    # Held-out examples (a count) whose mean loss is logged every eval_steps and at the end.
    val_size: int = Field(default=0, ge=0)
    eval_steps: int = Field(default=20, ge=1)
    save_steps: int = Field(default=50, ge=1)  # checkpoint cadence, for resuming
    progress: bool = True
    force: bool = False
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _defaults(self) -> TrainConfig:
        if self.packing is None:
            object.__setattr__(self, "packing", self.stage == "pt")
        return self

    def data_files(self) -> list[DataFile]:
        """Each data file with the stage-wide field names filled in where it names none."""
        files = []
        for item in self.data:
            item = DataFile(path=item) if isinstance(item, str) else item
            files.append(
                DataFile(
                    path=item.path,
                    text_column=item.text_column or self.text_column,
                    columns=item.columns or self.columns,
                )
            )
        return files
