"""A stand-in for the `vllm` package at its boundary: LLM, SamplingParams and LoRARequest.

Its answers come from a real transformers model, with the requested LoRA adapter loaded by
PEFT from the folder the LoRARequest names, so a test checks what medmerge hands vLLM (the
exported adapter, the token ids, the sampling settings), not a mock's echo. It keeps vLLM's
observable rules: adapters are cached by lora_int_id, a LoRA needs enable_lora and a rank
within max_lora_rank, modules_to_save is refused, prompt logprobs are one dict per prompt
position (None first) holding the prompt token's own Logprob, and generated token ids end
with the stop token.
"""

from __future__ import annotations

import copy
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

CREATED: list[LLM] = []  # every LLM the code under test built, in order


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""


class SamplingParams:
    """Only the keywords medmerge may use; anything else is a TypeError, as a typo would be."""

    def __init__(
        self,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop_token_ids: list[int] | None = None,
        ignore_eos: bool = False,
        max_tokens: int | None = 16,
        prompt_logprobs: int | None = None,
        logit_bias: dict[int, float] | None = None,
        bad_words: list[str] | None = None,
    ) -> None:
        self.n, self.temperature, self.top_p, self.top_k = n, temperature, top_p, top_k
        self.seed, self.stop_token_ids, self.ignore_eos = seed, stop_token_ids or [], ignore_eos
        self.max_tokens, self.prompt_logprobs = max_tokens, prompt_logprobs
        self.logit_bias = logit_bias or {}
        self.bad_words = bad_words or []


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput] = field(default_factory=list)


class LLM:
    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        max_loras: int = 1,
        enable_prefix_caching: bool | None = None,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.kwargs = {
            "model": model,
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "enable_lora": enable_lora,
            "max_lora_rank": max_lora_rank,
            "max_loras": max_loras,
            "enable_prefix_caching": enable_prefix_caching,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
        }
        self.base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.eos_token_id = self.tokenizer.eos_token_id
        self.loras: dict[int, Any] = {}  # lora_int_id -> model with that adapter (vLLM's cache)
        self.calls: list[dict[str, Any]] = []
        CREATED.append(self)

    def generate(
        self,
        prompts: list[Any],
        sampling_params: SamplingParams | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: LoRARequest | None = None,
    ) -> list[RequestOutput]:
        params = sampling_params or SamplingParams()
        self.calls.append({"params": params, "lora_request": lora_request, "n": len(prompts)})
        model = self._model_for(lora_request)
        return [self._answer(model, str(i), p, params) for i, p in enumerate(prompts)]

    def _model_for(self, request: LoRARequest | None) -> Any:
        if request is None:
            return self.base
        if not self.kwargs["enable_lora"]:
            raise ValueError("LoRA is not enabled; pass enable_lora=True")
        if request.lora_int_id in self.loras:  # vLLM does not reread a cached id's folder
            return self.loras[request.lora_int_id]
        from peft import PeftModel

        config = json.loads((Path(request.lora_path) / "adapter_config.json").read_text())
        if config["r"] > self.kwargs["max_lora_rank"]:
            raise ValueError(f"LoRA rank {config['r']} > max_lora_rank")
        if config.get("modules_to_save"):
            raise ValueError("vLLM only supports modules_to_save being None.")
        model = PeftModel.from_pretrained(copy.deepcopy(self.base), request.lora_path).eval()
        while len(self.loras) >= self.kwargs["max_loras"]:
            self.loras.pop(next(iter(self.loras)))
        self.loras[request.lora_int_id] = model
        return model

    @torch.no_grad()
    def _answer(self, model: Any, rid: str, prompt: Any, params: SamplingParams) -> RequestOutput:
        if not isinstance(prompt, dict) or set(prompt) != {"prompt_token_ids"}:
            raise TypeError("this stand-in takes token-id prompts only")
        ids = list(prompt["prompt_token_ids"])
        logprobs = None
        if params.prompt_logprobs is not None:
            table = model(input_ids=torch.tensor([ids])).logits[0].double().log_softmax(-1)
            logprobs = [None] + [
                self._position(table[i - 1], ids[i], params) for i in range(1, len(ids))
            ]
        return RequestOutput(rid, ids, logprobs, [self._complete(model, ids, params)])

    @staticmethod
    def _position(row: torch.Tensor, token: int, params: SamplingParams) -> dict[int, Logprob]:
        top = row.topk(params.prompt_logprobs)
        entries = {
            int(t): Logprob(float(v), rank=k + 1)
            for k, (v, t) in enumerate(zip(top.values, top.indices, strict=True))
        }
        rank = int((row > row[token]).sum()) + 1
        return {**entries, token: Logprob(float(row[token]), rank=rank)}

    def _banned(self, params: SamplingParams, tokens: list[int]) -> list[int]:
        """vLLM's bad_words: a word's last token, where the tokens before it were just made."""
        banned = []
        for word in params.bad_words:
            ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
            prefix = ids[:-1]
            if not prefix or tokens[-len(prefix) :] == prefix:
                banned.append(ids[-1])
        return banned

    def _complete(self, model: Any, ids: list[int], params: SamplingParams) -> CompletionOutput:
        stops = set(params.stop_token_ids) | (set() if params.ignore_eos else {self.eos_token_id})
        generator = torch.Generator().manual_seed(params.seed or 0)
        out: list[int] = []
        reason = "length"
        while len(out) < params.max_tokens:
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1].clone()
            for token, bias in params.logit_bias.items():
                logits[token] += bias
            for banned in self._banned(params, ids + out):
                logits[banned] = float("-inf")
            if params.temperature == 0:
                token = int(logits.argmax())
            else:
                probs = (logits / params.temperature).softmax(-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            out.append(token)
            if token in stops:
                reason = "stop"
                break
        kept = out[:-1] if reason == "stop" else out
        return CompletionOutput(0, self.tokenizer.decode(kept), tuple(out), reason)


def install(monkeypatch: Any) -> types.ModuleType:
    """Put this stand-in where `import vllm` and `from vllm.lora.request import ...` look."""
    CREATED.clear()
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams, vllm.__version__ = LLM, SamplingParams, "0.0+fake"
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    vllm.lora, lora.request = lora, request
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    return vllm
