"""The transformers backend: batched scoring (a packed row per question) and generation.

It runs a model folder, or a base with adapters merged in memory at their weights
(medmerge.lora's exact in-memory merge; no export). Opened on a base with adapters and no
weights, `merged(plan)` adds a point's merged delta to the weights and puts the originals
back after the block; the think penalty is a forward hook on the output layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch

from medmerge.errors import ConfigError, MergeError
from medmerge.eval.answer_only import forbidden_sequences
from medmerge.eval.backends.base import (
    Generation,
    LoglikRequest,
    as_plan,
    continuation_splits,
    decode_generation,
    local_spec,
    model_source_identity,
    spec_plan,
)
from medmerge.eval.backends.greedy import (
    continuous_greedy,
    greedy_generate,
    plain_greedy,
    plain_sampling,
    refills,
)
from medmerge.eval.backends.packed_scoring import PrefixGroup, group_by_prefix, score_packed
from medmerge.eval.config import EngineSettings, ModelSpec
from medmerge.loading import load_causal_lm, load_tokenizer
from medmerge.lora import WeightPlan, apply_merged_delta, restore_weights


def context_length(config: Any, tokenizer: Any) -> int:
    """The longest input, as lm-eval's HFLM reads it: n_positions, max_position_embeddings or
    n_ctx of the config, else the tokenizer's model_max_length when set, else 2048."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 10**9 else 2048


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def apply_adapters(
    model: torch.nn.Module,
    adapters: Sequence[Any],
    plan: WeightPlan,
    method: str,
) -> None:
    """The exact in-memory merge at `plan`, refused when a merged tensor overflows its dtype."""
    from medmerge.lora import all_finite, all_touched

    apply_merged_delta(model, adapters, plan, method)
    parameters = dict(model.named_parameters())
    for name in sorted(all_touched(adapters)):
        if not all_finite(parameters[name]):
            raise MergeError(
                f"{name}: merged tensor overflows {parameters[name].dtype} (Inf/NaN); "
                "use --dtype fp32 or smaller weights"
            )


class ThinkPenalty:
    """LogitsProcessor: scores[:, ids] -= gamma (pass in `logits_processor=[...]`)."""

    def __init__(self, token_ids: Sequence[int], gamma: float) -> None:
        self.token_ids = torch.tensor(list(token_ids), dtype=torch.long)
        self.gamma = float(gamma)

    def __call__(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        if self.gamma == 0 or self.token_ids.numel() == 0:
            return scores
        scores = scores.clone()
        scores[:, self.token_ids.to(scores.device)] -= self.gamma
        return scores


@contextlib.contextmanager
def think_penalty(model: torch.nn.Module, token_ids: Sequence[int], gamma: float) -> Iterator[None]:
    """While inside, the model's output logits of `token_ids` are lowered by gamma.

    Equivalent to ThinkPenalty placed first among the logits processors (temperature and
    top-p then act on the shifted scores); use it around generation only, not scoring.
    """
    if gamma == 0 or not token_ids:
        yield
        return
    processor = ThinkPenalty(token_ids, gamma)

    def shift(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        flat = output.reshape(-1, output.shape[-1])
        return processor(None, flat).reshape(output.shape)

    handle = model.get_output_embeddings().register_forward_hook(shift)
    try:
        yield
    finally:
        handle.remove()


class HFBackend:
    """transformers causal LM: batched scoring (a packed row per question, packed_scoring.py)
    and generation (left padding; plain greedy in greedy.py)."""

    name = "hf"

    @classmethod
    def from_engine(
        cls, spec: ModelSpec, engine: EngineSettings, adapters: Sequence[Any] = ()
    ) -> HFBackend:
        return cls(
            spec,
            device=engine.device,
            dtype=engine.dtype,
            batch_size=engine.batch_size,
            adapters=adapters,
            allow_pickle=engine.allow_pickle,
            allow_hub=engine.allow_hub,
        )

    def __init__(
        self,
        spec: ModelSpec,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        adapters: Sequence[Any] = (),
        *,
        allow_pickle: bool = False,
        allow_hub: bool = False,
    ) -> None:
        spec = local_spec(spec, allow_hub, allow_pickle)
        folder = spec.model or spec.base
        self.device = resolve_device(device)
        torch_dtype = _DTYPES.get(dtype) or (torch.float32 if self.device == "cpu" else "auto")
        self.tokenizer = load_tokenizer(folder)
        self.model = load_causal_lm(folder, dtype=torch_dtype, allow_pickle=allow_pickle)
        identity = model_source_identity(spec, adapters)
        self.adapters, self.method = list(adapters), spec.method
        # applied once, for good (no originals kept)
        self._fixed_merge = spec_plan(spec) if adapters else None
        if adapters:
            from medmerge.lora import check_in_memory_merge

            check_in_memory_merge(adapters, self.model, spec.base, identity.get("base"))
        if self._fixed_merge is not None:
            apply_adapters(self.model, adapters, self._fixed_merge, spec.method)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.identity = {
            **identity,
            "backend": "hf",
            "device": self.device,
            "dtype": str(self.model.dtype).removeprefix("torch."),
        }
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id or 0
        self.max_length = context_length(self.model.config, self.tokenizer)

    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[float]:
        """Sum of log-probs of each continuation given its context (float64 sums).

        Requests sharing a context (a question's options) form one group, packed into one
        row: the shared prefix once, then each option (packed_scoring.py). Rows go longest
        first, `batch_size` groups (contexts, not requests) per forward.
        """
        results = [0.0] * len(requests)
        for groups in self.packed_groups(requests):
            score_packed(self.model, groups, self.pad_id, results)
        return results

    def packed_groups(
        self, requests: Sequence[LoglikRequest], append: int | None = None
    ) -> list[list[PrefixGroup]]:
        """The requests grouped by shared context, longest row first, `batch_size` groups
        per forward. `append`: a token id put after every continuation, so that the
        continuation's last token is an input too (its states are computed)."""
        encoded = continuation_splits(self.tokenizer, requests)
        # lm-eval's policy for a longer input: keep its last max_length + 1 tokens
        keep = self.max_length + (1 if append is None else 0)
        encoded = [(ids[-keep:], n) for ids, n in encoded]
        if append is not None:
            encoded = [([*ids, append], n + 1) for ids, n in encoded]
        groups = group_by_prefix(encoded, [r.context for r in requests])
        groups.sort(key=lambda g: -g.row_length())
        return [groups[i : i + self.batch_size] for i in range(0, len(groups), self.batch_size)]

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[str], decoding: dict[str, Any], stop_ids: Sequence[int]
    ) -> list[Generation]:
        """Batched generation with left padding and the KV cache; stops at any of `stop_ids`.
        Prompts go longest first, so a batch holds prompts of similar length; plain greedy
        decoding and plain sampling drop each row as it finishes, greedy refilling its place
        with the next prompt (greedy.py); anything else is model.generate."""
        torch.manual_seed(int(decoding.get("seed", 0)))
        encoded = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        sampled = plain_sampling(self.model, decoding)
        fast = sampled or plain_greedy(self.model, decoding)
        refill = fast and not sampled and refills(self.model)
        step = max(1, len(order)) if refill else self.batch_size  # refilling: one queue
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), step):
            batch = order[start : start + step]
            if fast:
                rows_in = [encoded[i] for i in batch]
                new_tokens = int(decoding["max_new_tokens"])
                common = (self.model, rows_in, new_tokens, list(stop_ids), self.pad_id)
                if refill:
                    rows = continuous_greedy(*common, batch_size=self.batch_size)
                else:
                    rows = greedy_generate(*common, sampling=decoding if sampled else None)
                outputs = [decode_generation(self.tokenizer, ids, stop_ids) for ids in rows]
            else:
                outputs = self._generate_batch(
                    [prompts[i] for i in batch], decoding, list(stop_ids)
                )
            for index, generation in zip(batch, outputs, strict=True):
                results[index] = generation
        return [r for r in results if r is not None]

    def _generate_batch(
        self, prompts: list[str], decoding: dict[str, Any], stop_ids: list[int]
    ) -> list[Generation]:
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        sampling = bool(decoding.get("do_sample"))
        extra = (
            {
                "temperature": float(decoding["temperature"]),
                "top_p": float(decoding["top_p"]),
                "top_k": int(decoding.get("top_k") or 0),
            }
            if sampling
            else {}
        )
        if decoding.get("answer_only"):
            extra["bad_words_ids"] = forbidden_sequences(self.tokenizer)
        out = self.model.generate(
            **enc.to(self.device),
            max_new_tokens=int(decoding["max_new_tokens"]),
            do_sample=sampling,
            eos_token_id=stop_ids,
            pad_token_id=self.pad_id,
            use_cache=True,
            **extra,
        )
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        return [decode_generation(self.tokenizer, ids, stop_ids) for ids in new_tokens]

    @contextlib.contextmanager
    def merged(self, plan: WeightPlan | Sequence[float]) -> Iterator[None]:
        """The merged delta at `plan` added to the weights in place; the originals put back
        bit for bit after the block."""
        if not self.adapters:
            raise ConfigError("merged(): this backend was opened without adapters to merge")
        if self._fixed_merge is not None:
            raise ConfigError(
                "merged(): backend hf holds its merge in the weights (no originals kept); "
                "open it on the base with the adapters and no weights to switch merges"
            )
        originals = apply_merged_delta(self.model, self.adapters, as_plan(plan), self.method)
        try:
            yield
        finally:
            restore_weights(self.model, originals)

    def token_penalty(self, token_ids: Sequence[int], gamma: float) -> AbstractContextManager[None]:
        """A forward hook on the output layer shifts the logits, before any sampling step."""
        return think_penalty(self.model, token_ids, gamma)
