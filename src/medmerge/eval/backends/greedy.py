"""Greedy decoding and plain sampling that drop finished rows, with model.generate's outputs.

`model.generate` keeps every row of a batch in every step until the last row stops, so a
batch costs its longest answer times the batch size. Here a row leaves the batch (and its
KV cache) as soon as it emits a stop token, and the loop does only what decoding needs: one
forward, a pick and the cache. The inputs are the ones generate builds (left padding,
positions = cumulative mask - 1, the 2-D mask grown by one per step), so the tokens are the
same (tests/eval/test_generation_greedy.py).

Greedy decoding also refills (`continuous_greedy`): when a quarter of the batch has
finished, the next prompts are prefilled and join the rows still decoding, so a batch no
longer runs on with most of its rows gone while a few long answers finish. This pays where
answer lengths are unequal (a model that thinks on some questions and not on others). 96
HEAD-QA prompts, batch 16, a random-weight model with its most frequent tokens as stops (a
quarter of the rows run to 128 tokens, the rest end at once): 2.4-3.0 s against 3.6-4.0 s
without refilling. Where nearly every answer has one length it costs a little: the demo's
merged model on 96 MeQSum prompts, 1.22 s against 1.14 s (rows that join a long-running row
attend over its longer cache). Models with a sliding-window cache keep whole batches.

Sampling picks as generate's multinomial sampling does: the fp32 last-step logits through
the same warpers (temperature, top-k, top-p, in generate's order), a softmax, and
torch.multinomial over a tensor of the whole batch's shape. A finished row's place holds a
uniform distribution: the draw consumes the random stream by shape alone (one exponential
per entry), so every live row gets the token generate gives it under the same seed.

Only plain decoding takes this path: banned words, or a generation config that changes the
logits (repetition penalty and the like) or samples another way (min-p, typical, epsilon,
eta, top-h) go through model.generate.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

# generation-config settings under which greedy picks are no longer the logits' argmax
_NEUTRAL = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "min_new_tokens": (None, 0),
    "min_length": (None, 0),
    "encoder_repetition_penalty": (None, 1.0),
    "exponential_decay_length_penalty": (None,),
    "renormalize_logits": (None, False),
    "watermarking_config": (None,),
}


# generation-config settings that add a sampling warper beyond temperature, top-k and top-p
_SAMPLING_NEUTRAL = {
    "top_h": (None,),
    "min_p": (None,),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
}


def plain_greedy(model: Any, decoding: dict[str, Any]) -> bool:
    """Whether greedy picks are the argmax of the model's logits under `decoding` and the
    model's own generation config (a Qwen2.5 folder's repetition_penalty 1.05 is not)."""
    if decoding.get("do_sample") or decoding.get("answer_only"):
        return False
    return _neutral(model, _NEUTRAL)


def plain_sampling(model: Any, decoding: dict[str, Any]) -> bool:
    """Whether `decoding` samples with temperature, top-k and top-p alone, under a model
    generation config that adds no processor or warper."""
    if not decoding.get("do_sample") or decoding.get("answer_only"):
        return False
    return _neutral(model, _NEUTRAL) and _neutral(model, _SAMPLING_NEUTRAL)


def _neutral(model: Any, settings: dict[str, tuple]) -> bool:
    config = getattr(model, "generation_config", None)
    return config is None or all(getattr(config, k, None) in ok for k, ok in settings.items())


class Sampler:
    """generate's multinomial pick for the live rows of a batch of `batch` rows."""

    def __init__(self, decoding: dict[str, Any], batch: int) -> None:
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        temperature, top_p = float(decoding["temperature"]), float(decoding["top_p"])
        top_k = int(decoding.get("top_k") or 0)
        self.warpers: list[Any] = []  # in generate's order, under generate's conditions
        if temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k != 0:
            self.warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
        self.batch = batch

    def __call__(self, logits: torch.Tensor, alive: list[int]) -> torch.Tensor:
        scores = logits.to(dtype=torch.float32, copy=True)
        for warper in self.warpers:
            scores = warper(None, scores)
        probs = torch.nn.functional.softmax(scores, dim=-1)
        whole = probs.new_full((self.batch, probs.shape[-1]), 1.0 / probs.shape[-1])
        whole[alive] = probs
        return torch.multinomial(whole, num_samples=1).squeeze(1)[alive]


def _left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[index, width - len(row) :] = 1
    return ids, mask


def cache_argument(model: Any) -> str:
    """The forward's name for the KV cache: `cache` from transformers 5.24 (the old name
    past_key_values is still read, with a warning, until 5.40)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _prefill(model: Any, rows: Sequence[list[int]], pad_id: int) -> tuple:
    """(last-position logits, cache, mask, last positions) after the left-padded prompts."""
    from transformers import DynamicCache

    ids, mask = _left_pad(rows, pad_id)
    ids, mask = ids.to(model.device), mask.to(model.device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config)
    logits = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_argument(model): cache},
    ).logits
    return logits, cache, mask, positions[:, -1:]


def _step(model: Any, picked: torch.Tensor, mask, position, cache) -> tuple:
    """One decoding forward of the live rows' picked tokens: (logits, mask, positions)."""
    mask = torch.cat([mask, mask.new_ones((len(picked), 1))], dim=-1)
    position = position + 1
    logits = model(
        input_ids=picked[:, None],
        attention_mask=mask,
        position_ids=position,
        use_cache=True,
        **{cache_argument(model): cache},
    ).logits
    return logits, mask, position


def _kept(going: torch.Tensor, cache, alive: list[int], *rows: torch.Tensor) -> list:
    """[alive, *rows] for the rows still `going`; the cache is cut to them in place."""
    keep = going.nonzero().flatten()
    cache.reorder_cache(keep)
    return [[alive[k] for k in keep.tolist()], *(tensor[keep] for tensor in rows)]


@torch.no_grad()
def greedy_generate(
    model: Any,
    rows: Sequence[list[int]],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    sampling: dict[str, Any] | None = None,
) -> list[list[int]]:
    """Greedy (or, given `sampling`'s temperature / top_p / top_k, sampled) continuations of
    the token `rows` (one batch), each ending at its first stop token (kept) or after
    `max_new_tokens`; a finished row leaves the batch at once."""
    logits, cache, mask, position = _prefill(model, rows, pad_id)
    stops = torch.tensor(list(stop_ids) or [-1], device=model.device)
    generated: list[list[int]] = [[] for _ in rows]
    alive = list(range(len(rows)))  # row numbers still in the batch, in batch order
    sampler = Sampler(sampling, len(rows)) if sampling else None
    for step in range(max_new_tokens):
        picked = sampler(logits[:, -1], alive) if sampler else logits[:, -1].argmax(-1)
        for row, token in zip(alive, picked.tolist(), strict=True):
            generated[row].append(token)
        going = ~torch.isin(picked, stops)
        if step == max_new_tokens - 1 or not bool(going.any()):
            break
        if not bool(going.all()):
            alive, mask, position, picked = _kept(going, cache, alive, mask, position, picked)
        logits, mask, position = _step(model, picked, mask, position, cache)
    return generated


def refills(model: Any) -> bool:
    """Whether the model's KV cache is plain full attention (every layer a DynamicLayer), so
    rows can join a running batch (`continuous_greedy`); a sliding-window cache cannot."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def _joined(cache, mask: torch.Tensor, new_cache, new_mask: torch.Tensor):
    """Two left-padded batches' caches and masks as one: the shorter is padded on the left
    (masked key positions, which attention gives exactly zero weight)."""
    width = max(mask.shape[1], new_mask.shape[1])

    def left(tensor: torch.Tensor, dim: int) -> torch.Tensor:
        pad = width - tensor.shape[dim]
        if pad == 0:
            return tensor
        shape = list(tensor.shape)
        shape[dim] = pad
        return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

    for layer, new in zip(cache.layers, new_cache.layers, strict=True):
        layer.keys = torch.cat([left(layer.keys, 2), left(new.keys, 2)])
        layer.values = torch.cat([left(layer.values, 2), left(new.values, 2)])
    return cache, torch.cat([left(mask, 1), left(new_mask, 1)])


def _trimmed(cache, mask: torch.Tensor) -> torch.Tensor:
    """The mask (and the cache) without the leading positions no live row attends to."""
    first = int(mask.any(0).to(torch.int8).argmax())  # the first column a live row attends
    if first:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        mask = mask[:, first:]
    return mask


@torch.no_grad()
def continuous_greedy(
    model: Any,
    rows: Sequence[list[int]],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    batch_size: int,
) -> list[list[int]]:
    """Greedy continuations of all token `rows` (in the order given), at most `batch_size`
    decoding at once, with greedy_generate's tokens.

    A row leaves at its first stop token or after `max_new_tokens`; when a quarter of the
    batch is free (or none is left), the next prompts are prefilled and join the running
    batch, their cache left-padded to its length (or it to theirs). So a batch no longer
    runs to its longest answer with most rows gone: a long answer keeps only itself going.
    Each row's inputs are the ones generate builds for it (its own positions, a mask over
    its own tokens), so its tokens are those of a batch of its own."""
    stops = torch.tensor(list(stop_ids) or [-1], device=model.device)
    generated: list[list[int]] = [[] for _ in rows]
    waiting = deque(range(len(rows)) if max_new_tokens > 0 else [])
    alive: list[int] = []
    cache = mask = position = logits = None
    while waiting or alive:
        room = batch_size - len(alive)
        if waiting and (not alive or room >= max(1, batch_size // 4)):
            new = [waiting.popleft() for _ in range(min(room, len(waiting)))]
            new_logits, new_cache, new_mask, new_position = _prefill(
                model, [rows[i] for i in new], pad_id
            )
            if alive:
                cache, mask = _joined(cache, mask, new_cache, new_mask)
                logits = torch.cat([logits, new_logits[:, -1:]])
                position = torch.cat([position, new_position])
            else:
                cache, mask, position, logits = new_cache, new_mask, new_position, new_logits
            alive += new
        picked = logits[:, -1].argmax(-1)
        for row, token in zip(alive, picked.tolist(), strict=True):
            generated[row].append(token)
        done = torch.isin(picked, stops)
        done |= torch.tensor(
            [len(generated[r]) >= max_new_tokens for r in alive], device=done.device
        )
        if bool(done.all()):
            alive, cache = [], None
            continue
        if bool(done.any()):
            alive, mask, position, picked = _kept(~done, cache, alive, mask, position, picked)
            mask = _trimmed(cache, mask)
        logits, mask, position = _step(model, picked, mask, position, cache)
    return generated
