"""Model backends behind one interface: `loglikelihood(requests)` and `generate(requests)`.

HFBackend runs transformers on CPU or GPU, for a model folder or a base with adapters
applied in memory at their weights (medmerge.merge's exact in-memory merge; no export).
VLLMBackend (eval/vllm_backend.py, the optional extra medmerge[vllm]) runs a model folder,
or the base with the merge as one exact LoRA adapter through vLLM's LoRA support.

Log-likelihood follows lm-evaluation-harness: context + continuation are tokenized
together and the continuation is the tokens after the first len(tokenize(context)) ones;
the model reads the whole string once and the continuation's token log-probs are summed.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from medmerge.errors import MergeError
from medmerge.eval.config import EngineSettings, ModelSpec
from medmerge.loading import load_causal_lm, load_tokenizer, resolve_model_folder
from medmerge.manifest import model_identity


@dataclass(frozen=True)
class LoglikRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class Generation:
    text: str  # decoded up to (not including) the first stop token
    tokens: int  # generated tokens, stop token excluded
    stopped: bool  # ended on a stop token rather than max_new_tokens


class Backend(Protocol):
    identity: dict[str, Any]
    tokenizer: Any

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[float]: ...

    def generate(
        self, prompts: Sequence[str], decoding: dict[str, Any], stop_ids: Sequence[int]
    ) -> list[Generation]: ...


def decode_generation(tokenizer: Any, ids: Sequence[int], stop_ids: Sequence[int]) -> Generation:
    """The text of generated `ids` up to (not including) the first stop token."""
    stops = set(stop_ids)
    cut = next((i for i, t in enumerate(ids) if t in stops), None)
    kept = list(ids if cut is None else ids[:cut])
    text = tokenizer.decode(kept, skip_special_tokens=False)
    return Generation(text=text, tokens=len(kept), stopped=cut is not None)


def continuation_split(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], int]:
    """(ids of context + continuation, number of continuation tokens), lm-eval style."""
    whole = list(tokenizer(context + continuation, add_special_tokens=False)["input_ids"])
    n_context = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    n_continuation = len(whole) - n_context
    if n_continuation <= 0 or n_context == 0:
        raise ValueError(f"continuation {continuation!r} adds no token after its context")
    return whole, n_continuation


@dataclass
class PrefixGroup:
    """Requests scored over one shared token prefix: a question's options."""

    prefix: list[int]
    indices: list[int] = field(default_factory=list)  # positions in the request list
    sequences: list[list[int]] = field(default_factory=list)  # context + continuation ids
    n_continuation: list[int] = field(default_factory=list)


def group_by_prefix(
    encoded: Sequence[tuple[list[int], int]], contexts: Sequence[str]
) -> list[PrefixGroup]:
    """Group requests by context; the prefix is their common context tokens (>= 1 token)."""
    by_context: dict[str, list[int]] = {}
    for index, context in enumerate(contexts):
        by_context.setdefault(context, []).append(index)
    groups = []
    for indices in by_context.values():
        sequences = [encoded[i][0] for i in indices]
        shared = min(len(ids) - encoded[i][1] for ids, i in zip(sequences, indices, strict=True))
        first = sequences[0]
        while shared and any(ids[:shared] != first[:shared] for ids in sequences):
            shared -= 1  # a tokenizer merged context and continuation differently
        parts = [indices] if shared else [[i] for i in indices]
        for part in parts:
            n = shared or len(encoded[part[0]][0]) - encoded[part[0]][1]
            group = PrefixGroup(encoded[part[0]][0][:n])
            for i in part:
                group.indices.append(i)
                group.sequences.append(encoded[i][0])
                group.n_continuation.append(encoded[i][1])
            groups.append(group)
    return groups


def _pad(rows: Sequence[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of `rows`, padded on the left (prompts) or the right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, tokens in enumerate(rows):
        if tokens:
            span = slice(width - len(tokens), width) if left else slice(0, len(tokens))
            ids[row, span] = torch.tensor(tokens, dtype=torch.long)
            mask[row, span] = 1
    return ids, mask


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_source_identity(spec: ModelSpec, adapters: Sequence[Any] = ()) -> dict[str, Any]:
    """What was evaluated: the folder's hashes, or the base's plus each adapter's and weight."""
    if spec.model is not None:
        return {"model": model_identity(spec.model)}
    return {
        "base": model_identity(spec.base),
        "method": spec.method,
        "adapters": [
            {"path": str(Path(a.path).resolve()), "weight": w.weight, **a.hashes()}
            for a, w in zip(adapters, spec.adapters, strict=True)
        ],
    }


def local_spec(spec: ModelSpec, allow_hub: bool, allow_pickle: bool) -> ModelSpec:
    """`spec` with its model or base resolved to a local folder (a hub download if allowed)."""
    key = "model" if spec.model is not None else "base"
    folder = resolve_model_folder(
        getattr(spec, key), allow_hub=allow_hub, allow_pickle=allow_pickle
    )
    return spec if str(folder) == getattr(spec, key) else spec.model_copy(update={key: str(folder)})


def apply_adapters(
    model: torch.nn.Module,
    spec: ModelSpec,
    adapters: Sequence[Any],
    base_identity: dict[str, str] | None = None,
) -> None:
    """The exact in-memory merge, after the checks `medmerge merge` makes before writing."""
    from medmerge.lora import (
        WeightPlan,
        all_finite,
        all_touched,
        apply_merged_delta,
        check_in_memory_merge,
    )

    check_in_memory_merge(adapters, model, spec.base, base_identity)
    plan = WeightPlan(tuple(a.weight for a in spec.adapters))
    apply_merged_delta(model, adapters, plan, spec.method)
    parameters = dict(model.named_parameters())
    for name in sorted(all_touched(adapters)):
        if not all_finite(parameters[name]):
            raise MergeError(
                f"{name}: merged tensor overflows {parameters[name].dtype} (Inf/NaN); "
                "use --dtype fp32 or smaller weights"
            )


class HFBackend:
    """transformers causal LM: batched scoring (right padding) and generation (left padding)."""

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
        if adapters:
            apply_adapters(self.model, spec, adapters, identity.get("base"))
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.identity = {
            **identity,
            "backend": "hf",
            "device": self.device,
            "dtype": str(self.model.dtype).removeprefix("torch."),
        }
        # transformers 5.24 renamed the forward's past_key_values to cache (old name until 5.40)
        forward_args = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in forward_args else {}
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id or 0

    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[float]:
        """Sum of log-probs of each continuation given its context (float64 sums).

        Requests sharing a context (a question's options) form one group: the shared prefix
        runs once and fills the KV cache, then all the group's continuations run in one
        batched forward over the cache expanded per option. Groups go longest first,
        `batch_size` groups (contexts, not requests) at a time. The sums equal scoring each
        context + continuation string whole (tests/eval/test_backends_speedpaths.py).
        """
        encoded = [continuation_split(self.tokenizer, r.context, r.continuation) for r in requests]
        groups = group_by_prefix(encoded, [r.context for r in requests])
        groups.sort(key=lambda g: -len(g.prefix))
        results = [0.0] * len(requests)
        for start in range(0, len(groups), self.batch_size):
            self._score_groups(groups[start : start + self.batch_size], results)
        return results

    def _score_groups(self, groups: list[PrefixGroup], results: list[float]) -> None:
        """Prefixes left-padded in one forward, then every continuation over their cache."""
        owner = torch.tensor([g for g, group in enumerate(groups) for _ in group.indices])
        members = [(group, k) for group in groups for k in range(len(group.indices))]
        suffixes = [group.sequences[k][len(group.prefix) : -1] for group, k in members]
        width = max(len(s) for s in suffixes)
        ids, mask = _pad([g.prefix for g in groups], self.pad_id, left=True)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=(mask.cumsum(1) - 1).clamp(min=0).to(self.device),
            use_cache=width > 0,
            **self._last_logits_only,
        )
        last = out.logits[:, -1].float().cpu()  # predicts each group's first suffix token
        if width > 0:
            cache = out.get("cache", out.get("past_key_values"))
            cache.reorder_cache(owner.to(self.device))
            suffix_ids, suffix_mask = _pad(suffixes, self.pad_id, left=False)
            starts = torch.tensor([len(group.prefix) for group, _ in members])
            suffix_logits = (
                self.model(
                    input_ids=suffix_ids.to(self.device),
                    attention_mask=torch.cat([mask[owner], suffix_mask], 1).to(self.device),
                    position_ids=(starts[:, None] + torch.arange(width)).to(self.device),
                    use_cache=True,
                    **{self._cache_arg: cache},
                )
                .logits.float()
                .cpu()
            )
        for row, (group, k) in enumerate(members):
            sequence, n_cont = group.sequences[k], group.n_continuation[k]
            steps = last[owner[row]][None]  # steps[j] predicts sequence[len(prefix) + j]
            if suffixes[row]:
                steps = torch.cat([steps, suffix_logits[row, : len(suffixes[row])]])
            logprobs = torch.log_softmax(steps[-n_cont:], dim=-1)
            targets = torch.tensor(sequence[-n_cont:])
            results[group.indices[k]] = float(
                logprobs[torch.arange(n_cont), targets].double().sum()
            )

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[str], decoding: dict[str, Any], stop_ids: Sequence[int]
    ) -> list[Generation]:
        """Batched generation with left padding and the KV cache; stops at any of `stop_ids`."""
        torch.manual_seed(int(decoding.get("seed", 0)))
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            outputs = self._generate_batch([prompts[i] for i in batch], decoding, list(stop_ids))
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


def load_backend(spec: ModelSpec, engine: EngineSettings, adapters: Sequence[Any] = ()) -> Backend:
    """The backend `engine.backend` names, set up from a stage config's engine settings."""
    if engine.backend == "vllm":
        from medmerge.eval.vllm_backend import VLLMBackend

        return VLLMBackend(spec, engine, adapters)
    return HFBackend(
        spec,
        device=engine.device,
        dtype=engine.dtype,
        batch_size=engine.batch_size,
        adapters=adapters,
        allow_pickle=engine.allow_pickle,
        allow_hub=engine.allow_hub,
    )
