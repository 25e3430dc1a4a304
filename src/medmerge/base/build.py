"""`medmerge base build`: the tiny default Qwen3 base model, made from a seed in minutes.

Steps: train the tokenizer on the bundled text, initialise a Qwen3ForCausalLM from the seed,
pretrain it briefly on the mixture from `corpus.py`, save a standard HF folder.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

from medmerge.artifacts import atomic_write_json, staged_output
from medmerge.base.corpus import pretraining_documents, raw_texts
from medmerge.base.tokenizer import train_tokenizer
from medmerge.config import StageConfig
from medmerge.manifest import model_identity, write_manifest
from medmerge.paths import sample_data_dir
from medmerge.progress import progress_bar


class BaseBuildConfig(StageConfig):
    """Architecture and pretraining budget of the tiny base model."""

    path_fields = ("out", "data_dir")

    out: str = Field(default="runs/base", description="output folder (a Hugging Face model folder)")
    data_dir: str | None = Field(
        default=None,
        description="folder of the corpus the tokenizer and pretraining read (default: the bundled sample data)",
    )
    seed: int = Field(
        default=0, description="seed of the initial weights and the pretraining batches"
    )
    vocab_size: int = Field(default=8192, ge=512, description="tokenizer vocabulary size")
    hidden_size: int = Field(default=128, description="model width")
    intermediate_size: int = Field(default=384, description="MLP width")
    num_layers: int = Field(default=4, description="decoder layers")
    num_heads: int = Field(default=4, description="attention heads")
    num_kv_heads: int = Field(default=2, description="key/value heads (grouped-query attention)")
    head_dim: int = Field(default=32, description="width of one attention head")
    max_position_embeddings: int = Field(
        default=2048, description="longest context the model accepts"
    )
    pretrain_steps: int = Field(
        default=300, ge=0, description="brief pretraining steps; 0 skips it"
    )
    batch_size: int = Field(default=8, description="pretraining batch size")
    seq_len: int = Field(default=256, description="pretraining sequence length")
    learning_rate: float = Field(default=3e-3, description="pretraining learning rate")
    save_dtype: Literal["fp32", "bf16"] = Field(
        default="fp32", description="the dtype of model.safetensors"
    )
    force: bool = Field(default=False, description="replace an existing --out")


def qwen3_config(cfg: BaseBuildConfig, vocab_size: int, special_ids: dict[str, int]) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=special_ids["<|endoftext|>"],
        eos_token_id=special_ids["<|im_end|>"],
        pad_token_id=special_ids["<|endoftext|>"],
    )


def token_stream(tokenizer, documents: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for doc in documents:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
    return torch.tensor(ids, dtype=torch.long)


def pretrain(model: Qwen3ForCausalLM, stream: torch.Tensor, cfg: BaseBuildConfig) -> list[float]:
    """Full-parameter next-token training on random windows of the stream; returns losses."""
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    warmup = max(1, cfg.pretrain_steps // 20)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.pretrain_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    losses = []
    model.train()
    with progress_bar(cfg.pretrain_steps, "pretraining base") as bar:
        for _ in range(cfg.pretrain_steps):
            starts = torch.randint(
                0, len(stream) - cfg.seq_len - 1, (cfg.batch_size,), generator=generator
            )
            batch = torch.stack([stream[s : s + cfg.seq_len] for s in starts.tolist()])
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.advance(loss=losses[-1])
    model.eval()
    return losses


def build_base(cfg: BaseBuildConfig) -> Path:
    """Build the tiny base into `cfg.out` (staged, renamed when complete); returns the path."""
    data_dir = Path(cfg.data_dir) if cfg.data_dir else sample_data_dir()
    started = time.perf_counter()
    with staged_output(cfg.out, cfg.force, inputs=[data_dir]) as staging:
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        tokenizer = train_tokenizer(raw_texts(data_dir), cfg.vocab_size)
        special_ids = {
            t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")
        }
        model = Qwen3ForCausalLM(qwen3_config(cfg, len(tokenizer), special_ids))
        losses: list[float] = []
        if cfg.pretrain_steps:
            stream = token_stream(tokenizer, pretraining_documents(data_dir, cfg.seed))
            losses = pretrain(model, stream, cfg)
        model.generation_config = GenerationConfig(
            bos_token_id=special_ids["<|endoftext|>"],
            eos_token_id=[special_ids["<|im_end|>"], special_ids["<|endoftext|>"]],
            pad_token_id=special_ids["<|endoftext|>"],
            do_sample=True,
            temperature=0.6,
            top_p=0.95,
            top_k=20,
        )
        if cfg.save_dtype == "bf16":
            model = model.to(torch.bfloat16)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        atomic_write_json(staging / "pretrain_losses.json", losses, indent=None)
        write_manifest(
            staging,
            "base",
            {
                "config": cfg.model_dump(),
                "identity": model_identity(staging),
                "parameters": sum(p.numel() for p in model.parameters()),
                "pretrain_loss_first": losses[0] if losses else None,
                "pretrain_loss_last": losses[-1] if losses else None,
                "seconds": round(time.perf_counter() - started, 1),
            },
        )
    return Path(cfg.out)
