"""Resumable training state: adapter weights, optimizer, scheduler and RNG, every N steps.

Checkpoints live in `<out>.partial/`, beside the final adapter folder, so an interrupted run
leaves nothing that looks finished and a rerun with the same config carries on.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from medmerge.artifacts import atomic_write_json
from medmerge.errors import ConfigError

STATE_FILE = "run_state.json"


def partial_dir(out: str | os.PathLike) -> Path:
    target = Path(out)
    return target.parent / f"{target.name}.partial"


def open_partial(out: str | os.PathLike, config_hash: str, force: bool) -> Path:
    """The work folder of this run; refuses one left by a run with another config."""
    work = partial_dir(out)
    state = work / STATE_FILE
    if state.is_file():
        recorded = json.loads(state.read_text())["config_hash"]
        if recorded != config_hash:
            if not force:
                raise ConfigError(
                    f"{work}: an interrupted run with a different config is there; rerun it with "
                    "the same config to resume, or pass --force to discard it"
                )
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state, {"config_hash": config_hash}, indent=None)
    return work


def latest_checkpoint(work: Path) -> Path | None:
    done = [p for p in work.glob("step-*") if (p / "complete").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def sharded(accelerator) -> bool:
    """FSDP and DeepSpeed keep parameters and optimizer states sharded across ranks."""
    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def save_checkpoint(work: Path, step: int, accelerator, model, optimizer, scheduler) -> Path:
    """Write step-N on every rank's behalf (a `complete` marker last); keep the newest two.

    Called on every rank: sharded setups save through accelerate's save_state, a collective.
    """
    folder = work / f"step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    accelerator.wait_for_everyone()
    if sharded(accelerator):
        accelerator.save_state(str(folder / "accelerate_state"))
    if accelerator.is_main_process:
        if not sharded(accelerator):
            unwrapped = accelerator.unwrap_model(model)
            weights = {
                k: v.detach().cpu().contiguous()
                for k, v in get_peft_model_state_dict(unwrapped).items()
            }
            save_file(weights, folder / "adapter.safetensors")
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                },
                folder / "trainer_state.pt",
            )
        atomic_write_json(folder / "step.json", {"step": step}, indent=None)
        (folder / "complete").touch()
        for old in sorted(work.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-2]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def load_checkpoint(folder: Path, accelerator, model, optimizer, scheduler) -> int:
    """Restore a checkpoint into the live objects; returns the optimizer step it was taken at."""
    if sharded(accelerator):
        accelerator.load_state(str(folder / "accelerate_state"))  # the scheduler is registered
    else:
        set_peft_model_state_dict(
            accelerator.unwrap_model(model), load_file(folder / "adapter.safetensors")
        )
        state: dict[str, Any] = torch.load(folder / "trainer_state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
    return int(json.loads((folder / "step.json").read_text())["step"])


def truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines past `step`, written after the checkpoint a run resumes from."""
    if not log_path.is_file():
        return
    kept = [
        line
        for line in log_path.read_text().splitlines()
        if line and json.loads(line)["step"] <= step
    ]
    log_path.write_text("".join(f"{line}\n" for line in kept))


def discard_partial(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
