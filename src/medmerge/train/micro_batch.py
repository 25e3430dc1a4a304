"""A packed step's forward and backward in pieces of about 512 tokens, on CPU.

Under document attention a packed batch is one row of its real tokens (data/packing.py). On
a CPU its activations then outgrow the caches: at batch 4, cutoff 512, a step's backward ran
27 % slower per token than an unpacked step's of ~500 positions (py-spy, the benchmark's
h256 model). Here the row is cut at document starts into pieces of at most
`PIECE_TOKENS` tokens (a longer document is a piece of its own), each piece runs forward
and backward on its own, and its mean loss is weighted by its share of the step's scored
tokens, so the gradient is the whole step's mean loss's gradient (only the order of the
sums differs): gradient accumulation inside one optimizer step. benchmarks/training.py's
epoch (zh, batch 4, in one process): 5.1 s as one row, 4.8 s in pieces, 6.1 s unpacked.

GPUs want large matmuls, so there the row stays whole; so does a model whose loss is not
the tokens' mean cross-entropy (an MoE router's auxiliary loss) and a DeepSpeed engine,
which counts its own backward calls. Pieces other than the last skip the gradient
all-reduce of a multi-process run (accelerate's no_sync).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from medmerge.train.scored_loss import IGNORE_INDEX

# tokens per piece: 384 was slower, 512-1024 alike, a whole 1,900-token step slower again
PIECE_TOKENS = 512


def splits(accelerator, model) -> bool:
    """Whether packed steps run in pieces: on CPU, for a plain token loss, not under DeepSpeed."""
    from accelerate.utils import DistributedType

    config = getattr(accelerator.unwrap_model(model), "config", None)
    return (
        accelerator.device.type == "cpu"
        and accelerator.distributed_type != DistributedType.DEEPSPEED
        and not getattr(config, "output_router_logits", False)
    )


def pieces(batch: dict[str, torch.Tensor], budget: int | None = None) -> list[slice]:
    """Column ranges of a one-row packed batch, cut at document starts, each at most `budget`
    (default PIECE_TOKENS) tokens unless one document is longer; one range for anything else."""
    budget = budget or PIECE_TOKENS
    positions = batch.get("position_ids")
    if positions is None or positions.shape[0] != 1:
        return [slice(None)]
    ends = [*(positions[0] == 0).nonzero().flatten().tolist()[1:], positions.shape[1]]
    ranges, begin, end = [], 0, 0
    for stop in ends:  # each document's end
        if stop - begin > budget and end > begin:
            ranges.append(slice(begin, end))
            begin = end
        end = stop
    ranges.append(slice(begin, end))
    return ranges


def backward_in_pieces(
    batch: dict[str, torch.Tensor],
    compute_loss: Callable[[dict], torch.Tensor],
    accelerator,
    model,
    split: bool,
) -> torch.Tensor:
    """Forward and backward of `batch` (in pieces when `split`); the step's mean loss, detached."""
    ranges = pieces(batch) if split else [slice(None)]
    scored = [] if len(ranges) == 1 else [_scored(batch, r) for r in ranges]
    total = sum(scored)
    if total == 0:  # one piece, or nothing scored: the whole batch at once
        loss = compute_loss(batch)
        accelerator.backward(loss)
        return loss.detach()
    kept = [(r, n) for r, n in zip(ranges, scored, strict=True) if n]
    step_loss = torch.zeros((), device=batch["labels"].device)
    for index, (columns, count) in enumerate(kept):
        last = index == len(kept) - 1
        sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
        with sync:
            piece = {key: value[:, columns] for key, value in batch.items()}
            loss = compute_loss(piece) * (count / total)
            accelerator.backward(loss)
        step_loss += loss.detach()
    return step_loss


def _scored(batch: dict[str, torch.Tensor], columns: slice) -> int:
    """Tokens of `columns` whose next-token loss counts (a label after the first column)."""
    return int((batch["labels"][:, columns][:, 1:] != IGNORE_INDEX).sum())
