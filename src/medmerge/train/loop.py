"""The one training loop behind `medmerge train pt` and `medmerge train sft`.

Built on accelerate so it runs unchanged under `accelerate launch` (DDP, FSDP, DeepSpeed);
PEFT provides the LoRA layers and the adapter format. Same seed on CPU, same bytes out.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import LoraConfig, get_peft_model
from torch.utils.data import DataLoader
from transformers import get_scheduler

from medmerge.artifacts import check_output_free, guard_inputs, output_lock, staged_output
from medmerge.loading import load_causal_lm
from medmerge.manifest import model_identity, sha256_file, sha256_json
from medmerge.progress import progress_bar
from medmerge.train import checkpoint
from medmerge.train.config import TrainConfig
from medmerge.train.dataset import TrainingData, load_tokenizer, load_training_data
from medmerge.train.document_attention import document_attention
from medmerge.train.micro_batch import backward_in_pieces, splits
from medmerge.train.outputs import write_adapter_folder
from medmerge.train.scored_loss import scored_loss


@dataclass
class TrainResult:
    out: Path
    model: object  # the trained PeftModel, unwrapped, in eval mode
    steps: int
    last_loss: float


@dataclass
class LoopState:
    step: int = 0
    tokens: int = 0
    last_loss: float = float("nan")


def load_lora_model(cfg: TrainConfig, dtype: torch.dtype):
    """The base model with fresh LoRA layers; the LoRA init draws from the seeded RNG."""
    model = load_causal_lm(cfg.base, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    model.config.use_cache = False
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        use_rslora=cfg.lora.use_rslora,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def epoch_loader(
    data: TrainingData, cfg: TrainConfig, epoch: int, accelerator: Accelerator
) -> DataLoader:
    """This epoch's batches in a seeded order, sharded across processes by accelerate."""
    order = torch.randperm(
        len(data.examples), generator=torch.Generator().manual_seed(cfg.seed + epoch)
    )
    ordered = [data.examples[i] for i in order.tolist()]
    # Its own generator: starting an iterator must not draw from the global RNG, which
    # drives dropout, or a resumed run would see other dropout masks than a straight one.
    loader = DataLoader(
        ordered,
        batch_size=cfg.batch_size,
        shuffle=False,
        collate_fn=data.collate,
        generator=torch.Generator().manual_seed(cfg.seed + epoch),
    )
    return accelerator.prepare_data_loader(loader)


def total_optimizer_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    return max(1, math.ceil(cfg.num_epochs * batches_per_epoch / cfg.gradient_accumulation_steps))


def make_optimizer(cfg: TrainConfig, model, total_steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
    )
    return optimizer, scheduler


def train(cfg: TrainConfig) -> TrainResult:
    """Train one LoRA adapter into `cfg.out`; resumes from `<out>.partial` after an interruption.

    The main process holds `out`'s lock from start to end, so a second `train` on the same
    OUT is refused instead of resuming (and corrupting) this run's live `.partial`.
    """
    inputs = [cfg.base, *_data_paths(cfg)]
    check_output_free(cfg.out, cfg.force)
    guard_inputs(cfg.out, inputs)
    guard_inputs(checkpoint.partial_dir(cfg.out), inputs)
    with _main_process_lock(cfg.out):
        return _train(cfg, inputs)


def _data_paths(cfg: TrainConfig) -> list[str]:
    """The data files the run reads: --data, or dataset_info.json and the --dataset files."""
    if cfg.dataset:
        from medmerge.data.lf_datasets import DATA_CONFIG, dataset_specs

        names = [name.strip() for name in cfg.dataset.split(",") if name.strip()]
        files = [str(f) for spec in dataset_specs(names, cfg.dataset_folder()) for f in spec.files]
        return [str(Path(cfg.dataset_folder()) / DATA_CONFIG), *files]
    return [entry if isinstance(entry, str) else entry.path for entry in cfg.data]


def _run_hash(cfg: TrainConfig, base_identity: dict[str, str], data: list[str]) -> str:
    """What a resumable `.partial` must match: the config, the base and the data's content."""
    contents = {str(path): sha256_file(path) if Path(path).is_file() else None for path in data}
    return sha256_json(
        {
            "config": cfg.model_dump(exclude={"force", "progress"}),
            "base": base_identity,
            "data": contents,
        }
    )


def _main_process_lock(out: str):
    """`out`'s lock on the main process (rank 0 writes); the other ranks only read and train."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    return output_lock(out) if rank == 0 else contextlib.nullcontext()


def _train(cfg: TrainConfig, inputs: list[str]) -> TrainResult:
    base_identity = model_identity(cfg.base)
    tokenizer = load_tokenizer(cfg)
    data = load_training_data(cfg, tokenizer)
    accelerator = Accelerator(
        # cpu=True on a machine without CUDA makes a multi-process launch (accelerate launch
        # --multi_gpu, torchrun) run as gloo CPU processes instead of failing to find GPUs.
        cpu=not torch.cuda.is_available(),
        mixed_precision="bf16" if cfg.precision == "bf16" else "no",
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
    )
    # The model loads (and is refused, for a bad base) before anything is written.
    set_seed(cfg.seed)
    model = load_lora_model(cfg, torch.bfloat16 if cfg.precision == "bf16" else torch.float32)
    work = checkpoint.partial_dir(cfg.out)
    if accelerator.is_main_process:
        checkpoint.open_partial(cfg.out, _run_hash(cfg, base_identity, inputs[1:]), cfg.force)
    accelerator.wait_for_everyone()

    batches_per_epoch = math.ceil(len(data.examples) / (cfg.batch_size * accelerator.num_processes))
    total_steps = total_optimizer_steps(cfg, batches_per_epoch)
    optimizer, scheduler = make_optimizer(cfg, model, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    if checkpoint.sharded(accelerator):
        accelerator.register_for_checkpointing(scheduler)  # saved by accelerate's save_state

    state = LoopState()
    resume_from = checkpoint.latest_checkpoint(work)
    if resume_from is not None:
        state.step = checkpoint.load_checkpoint(
            resume_from, accelerator, model, optimizer, scheduler
        )
        accelerator.print(f"resuming from {resume_from} (step {state.step} of {total_steps})")
    packed = any("position_ids" in example for example in data.examples[:1])
    with document_attention(accelerator.unwrap_model(model), packed) as per_document:
        if per_document:  # packed rows need no (L, L) mask
            data.collate = functools.partial(data.collate, document_attention=True)
        started = time.perf_counter()
        run_steps(cfg, data, model, optimizer, scheduler, accelerator, state, total_steps, work)
        seconds = time.perf_counter() - started

    # Gathered on every rank: under FSDP / ZeRO-3 each rank holds only a shard of the LoRA.
    full_state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        with staged_output(cfg.out, cfg.force, inputs=inputs) as staging:
            write_adapter_folder(
                staging,
                accelerator.unwrap_model(model),
                full_state,
                cfg,
                data,
                base_identity,
                work,
                seconds,
            )
        checkpoint.discard_partial(work)
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(model).eval()
    return TrainResult(Path(cfg.out), trained, state.step, state.last_loss)


def run_steps(
    cfg,
    data,
    model,
    optimizer,
    scheduler,
    accelerator,
    state: LoopState,
    total_steps: int,
    work: Path,
) -> None:
    """Optimizer steps from `state.step` to `total_steps`, logging and checkpointing."""
    log_path = work / "loss_log.jsonl"
    if accelerator.is_main_process:
        checkpoint.truncate_log(log_path, state.step)
    batches = math.ceil(len(data.examples) / (cfg.batch_size * accelerator.num_processes))
    steps_per_epoch = math.ceil(batches / cfg.gradient_accumulation_steps)
    epoch, done_in_epoch = divmod(state.step, steps_per_epoch)
    skip = done_in_epoch * cfg.gradient_accumulation_steps
    window_tokens, window_start, losses = 0, time.perf_counter(), []
    compute_loss = scored_loss(model, accelerator.unwrap_model(model))
    split = splits(accelerator, model)
    model.train()
    with progress_bar(
        total_steps, f"train {cfg.stage}", enabled=cfg.progress and accelerator.is_main_process
    ) as bar:
        bar.advance(state.step)
        while state.step < total_steps:
            loader = epoch_loader(data, cfg, epoch, accelerator)
            if skip:
                loader, skip = accelerator.skip_first_batches(loader, skip), 0
            for batch in loader:
                with accelerator.accumulate(model):
                    loss = backward_in_pieces(batch, compute_loss, accelerator, model, split)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                        scheduler_step = True
                    else:
                        scheduler_step = False
                    optimizer.step()  # accelerate skips it while accumulating
                    if scheduler_step:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                losses.append(loss.float())
                window_tokens += _real_tokens(batch) * accelerator.num_processes
                if not scheduler_step:
                    continue
                state.step += 1
                state.last_loss = accelerator.reduce(
                    torch.stack(losses).mean(), reduction="mean"
                ).item()
                losses = []
                rate = window_tokens / max(1e-9, time.perf_counter() - window_start)
                bar.advance(1, loss=state.last_loss, tok_s=rate)
                if accelerator.is_main_process:
                    after_step(
                        cfg, state, accelerator, model, optimizer, scheduler, work, log_path, rate
                    )
                    if data.held_out and (
                        state.step % cfg.eval_steps == 0 or state.step == total_steps
                    ):
                        log_held_out_loss(
                            accelerator.unwrap_model(model), data, state.step, log_path
                        )
                if state.step % cfg.save_steps == 0:
                    checkpoint.save_checkpoint(
                        work, state.step, accelerator, model, optimizer, scheduler
                    )
                if state.step >= total_steps:
                    break
            epoch += 1


@torch.no_grad()
def held_out_loss(model, data: TrainingData, batch_size: int = 8) -> float:
    """Mean per-token loss on the held-out examples (eval mode: no dropout, no RNG drawn)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(data.held_out), batch_size):
        batch = {
            k: v.to(device)
            for k, v in data.collate(data.held_out[start : start + batch_size]).items()
        }
        count = int((batch["labels"][:, 1:] != -100).sum())
        total += scored_loss(model)(batch).item() * count
        tokens += count
    model.train(was_training)
    return total / max(1, tokens)


def log_held_out_loss(model, data: TrainingData, step: int, log_path: Path) -> None:
    record = {"step": step, "eval_loss": held_out_loss(model, data)}
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _real_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding tokens of a batch; packed rows under a 4-D block mask count as full (under
    document attention their 2-D mask counts them exactly)."""
    mask = batch["attention_mask"]
    return int(mask.sum()) if mask.dim() == 2 else int(mask.shape[0] * mask.shape[-1])


def after_step(
    cfg,
    state: LoopState,
    accelerator,
    model,
    optimizer,
    scheduler,
    work: Path,
    log_path: Path,
    rate: float,
) -> None:
    if state.step % cfg.logging_steps == 0:
        record = {
            "step": state.step,
            "loss": state.last_loss,
            "lr": scheduler.get_last_lr()[0],
            "tokens_per_s": round(rate, 1),
        }
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
