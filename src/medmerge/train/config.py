"""The training stage's schema, shared by PT and SFT (they differ in data and masking only)."""

from __future__ import annotations

from typing import Any, Literal

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

    path_fields = ("base", "data", "out", "dataset_dir")

    stage: Literal["pt", "sft"]
    base: str = Field(description="base model folder")
    # Required unless `dataset` names the data (then `_data_from_dataset` fills in []).
    data: list[str | DataFile] = Field(description="data file(s) or folder(s)")
    dataset: str | None = Field(
        default=None,
        description="dataset name(s) of --dataset-dir's dataset_info.json, comma-separated",
    )
    dataset_dir: str | None = Field(
        default=None,
        description="folder of dataset_info.json, LLaMA-Factory's layout (default: data)",
    )
    skip_bad_records: bool = Field(
        default=False, description="drop and count bad records instead of stopping at the first"
    )
    out: str = Field(description="adapter output folder")
    # data reading
    text_column: str | None = Field(
        default=None, description="PT: column/field holding the text (default text)"
    )
    data_format: Literal["auto", "alpaca", "sharegpt"] = Field(
        default="auto", description="SFT: the data's layout"
    )
    columns: dict[str, str] = Field(default_factory=dict)  # SFT: field-name mapping
    max_samples: int | None = Field(
        default=None,
        ge=1,
        description="use the first N records of each data file or dataset (as LLaMA-Factory counts)",
    )
    # formatting
    template: str = Field(default="qwen3", description="chat template")
    enable_thinking: bool = Field(
        default=True, description="render the reasoning (<think>) part of the template"
    )
    cutoff_len: int = Field(
        default=256, ge=8, description="longest example in tokens; longer ones are cut"
    )
    packing: bool | None = Field(
        default=None,
        description="pack examples into full sequences (default: on for PT, off for SFT); "
        "PT without packing: one truncated document per row",
    )
    keep_remainder: bool = Field(
        default=False,
        description="PT: keep the last, short block (LLaMA-Factory drops it)",
    )
    mask_turn_end_newline: bool = Field(
        default=False,
        description="SFT: do not train the \\n after each reply's end token (LLaMA-Factory trains it)",
    )
    # LoRA and optimisation
    lora: LoraSettings = Field(default_factory=LoraSettings)
    optimizer: Literal["adamw", "sgd"] = Field(default="adamw", description="optimizer")
    learning_rate: float = Field(default=2e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(default=0.0, ge=0, description="weight decay")
    max_grad_norm: float = Field(default=1.0, gt=0, description="gradient-norm clip")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="learning-rate schedule"
    )
    warmup_ratio: float = Field(
        default=0.0, ge=0, lt=1, description="share of the steps spent warming up"
    )
    warmup_steps: int = Field(
        default=0, ge=0, description="warm-up steps (over --warmup-ratio when set)"
    )
    num_epochs: float = Field(default=1.0, gt=0, description="passes over the data")
    max_steps: int | None = Field(
        default=None, ge=1, description="stop after N optimizer steps (over --num-epochs)"
    )
    batch_size: int = Field(default=4, ge=1, description="examples per step per process")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="micro-batches per optimizer step"
    )
    seed: int = Field(default=42, description="seed of the LoRA init, shuffling and dropout")
    precision: Literal["fp32", "bf16"] = Field(default="fp32", description="training precision")
    logging_steps: int = Field(default=1, ge=1, description="log the loss every N steps")
    # Held-out examples whose mean loss is logged every eval_steps and at the end.
    val_size: float = Field(
        default=0,
        ge=0,
        description="held-out examples (a count, or a fraction below 1 as LLaMA-Factory's "
        "val_size) whose mean loss is logged every --eval-steps and at the end",
    )
    eval_steps: int = Field(default=20, ge=1, description="held-out loss every N steps")
    save_steps: int = Field(
        default=50, ge=1, description="checkpoint cadence in steps, for resuming"
    )
    progress: bool = Field(default=True, description="show a progress bar")
    force: bool = Field(default=False, description="replace an existing --out")
    llamafactory: bool = Field(
        default=False,
        description="read --config as a LLaMA-Factory train YAML (found by its keys otherwise)",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="run the model folder's own Python code (transformers' trust_remote_code)",
    )

    @model_validator(mode="before")
    @classmethod
    def _data_from_dataset(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("dataset") and "data" not in values:
            return {**values, "data": []}
        return values

    @model_validator(mode="after")
    def _defaults(self) -> TrainConfig:
        if self.val_size >= 1 and self.val_size != int(self.val_size):
            raise ValueError("val_size is a count (1, 2, ...) or a fraction below 1")
        if bool(self.data) == bool(self.dataset):
            raise ValueError("give the data as --data FILE or as --dataset NAME, one of the two")
        if self.packing is None:
            object.__setattr__(self, "packing", self.stage == "pt")
        return self

    def dataset_folder(self) -> str:
        """Where dataset_info.json is: --dataset-dir, or `data` as in LLaMA-Factory."""
        return self.dataset_dir or "data"

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
