"""vLLM behind the Backend protocol (the optional extra medmerge[vllm]).

A model folder runs as it is. A base with adapters runs with the weighted merge as ONE
exact LoRA adapter (merge.adapter_export: A' = [A_i], B' = [w_i s_i B_i], so B' A' is the
merged delta) written to a scratch folder and served through vLLM's LoRA support: no merged
checkpoint is written, and a sweep swaps in each weight point's adapter under a fresh id.

Scoring and decoding follow HFBackend: log-likelihoods are summed from prompt logprobs over
the same token split (`continuation_splits`), prompts go in as token ids, and the generated
ids are decoded and cut at the first stop token the way HFBackend does. vLLM itself is
imported when a VLLMBackend is opened, not with this module.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medmerge.checkpoints import Checkpoint
from medmerge.errors import ConfigError
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
from medmerge.eval.config import EngineSettings, ModelSpec
from medmerge.loading import check_model_folder, load_tokenizer
from medmerge.lora import Adapter, WeightPlan, get_method
from medmerge.lora.fit import check_base_config, check_identity, check_shapes
from medmerge.merge.adapter_export import export_adapter

# The values vLLM's LoRAConfig accepts for max_lora_rank (vllm/config/lora.py, MaxLoRARanks).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "auto": "auto"}
_FULL_CHECKPOINT = (
    "export a full checkpoint (medmerge merge --export full) and pass it with --model, "
    "or use --backend hf"
)


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ConfigError(
            "backend 'vllm' needs vLLM, which is not installed; pip install 'medmerge[vllm]' "
            "or use --backend hf"
        ) from None
    return vllm


def merged_lora_rank(adapters: Sequence[Adapter]) -> int:
    """The exported merge's rank: the largest, over modules, sum of the ranks touching one."""
    names = set().union(*(a.factors for a in adapters))
    return max(
        (sum(a.factors[n].rank for a in adapters if n in a.factors) for n in names), default=0
    )


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ConfigError(
        f"the merged adapter has rank {rank} (the adapters' ranks summed), above vLLM's largest "
        f"max_lora_rank {VLLM_LORA_RANKS[-1]}; recompress it exactly (medmerge merge --export "
        "adapter --adapter-rank auto) and evaluate that adapter at weight 1, or " + _FULL_CHECKPOINT
    )


def check_servable(adapters: Sequence[Adapter], method: str) -> None:
    """Refuse what one LoRA adapter served by vLLM cannot carry exactly."""
    if not get_method(method).low_rank_exact:
        raise ConfigError(
            f"backend 'vllm' serves the merge as one LoRA adapter, exact for method linear "
            f"only, not {method}; " + _FULL_CHECKPOINT
        )
    for adapter in adapters:
        if adapter.full_copies:
            names = sorted(n.removesuffix(".weight") for n in adapter.full_copies)
            listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if names[3:] else "")
            raise ConfigError(
                f"{adapter.path}: the adapter has modules_to_save ({listed}), which vLLM's LoRA "
                "support cannot load; " + _FULL_CHECKPOINT
            )
        if any(f.bias is not None for f in adapter.factors.values()):
            raise ConfigError(
                f"{adapter.path}: the adapter has LoRA biases (lora_bias), which vLLM's LoRA "
                "support does not load; " + _FULL_CHECKPOINT
            )


class MergedLora:
    """The weighted merge of `adapters` as one exact adapter folder, and its vLLM request.

    `use(plan)` exports the merge at a new weight plan into the scratch folder under a fresh
    LoRA id (vLLM caches adapters by id, so an id is never reused for other weights) and
    removes the previous point's folder.
    """

    def __init__(self, base: str, adapters: Sequence[Adapter], method: str) -> None:
        check_servable(adapters, method)
        self.adapters = list(adapters)
        self.rank = merged_lora_rank(adapters)
        self.max_lora_rank = vllm_max_lora_rank(self.rank)
        self.base = Checkpoint(base)
        # Beside vLLM's workers on this machine; TMPDIR chooses where.
        self._scratch = tempfile.TemporaryDirectory(prefix="medmerge-vllm-lora-")
        self._last_id = 0
        self.plan: WeightPlan | None = None
        self.request: Any = None

    def use(self, plan: WeightPlan) -> Any:
        """The LoRARequest of the merge at `plan` (exported now unless already current)."""
        from vllm.lora.request import LoRARequest

        if plan == self.plan:
            return self.request
        self._last_id += 1
        folder = Path(self._scratch.name) / f"merge-{self._last_id}"
        folder.mkdir()
        export_adapter(self.adapters, plan, self.base, folder, rank=None)
        if self.request is not None:
            shutil.rmtree(self.request.lora_path, ignore_errors=True)
        self.request = LoRARequest(
            lora_name=f"medmerge-merge-{self._last_id}",
            lora_int_id=self._last_id,
            lora_path=str(folder),
        )
        self.plan = plan
        return self.request


def _config_context(folder: str, tokenizer: Any) -> int:
    """The context vLLM defaults to: the model config's, as HFBackend reads it."""
    from transformers import AutoConfig

    from medmerge.eval.backends.hf import context_length

    return context_length(AutoConfig.from_pretrained(folder), tokenizer)


def engine_arguments(engine: EngineSettings, lora: MergedLora | None) -> dict[str, Any]:
    """Keyword arguments of vllm.LLM beyond the model folder."""
    arguments: dict[str, Any] = {
        "dtype": _DTYPES[engine.dtype],
        "tensor_parallel_size": engine.tensor_parallel_size,
        # Prompt logprobs and the prefix cache fail together on several vLLM releases
        # (vllm-project/vllm#8268, #13409); scoring needs every prompt position anyway.
        "enable_prefix_caching": False,
    }
    if engine.gpu_memory_utilization is not None:
        arguments["gpu_memory_utilization"] = engine.gpu_memory_utilization
    if engine.max_model_len is not None:
        arguments["max_model_len"] = engine.max_model_len
    if lora is not None:
        arguments.update(enable_lora=True, max_lora_rank=lora.max_lora_rank, max_loras=1)
    return arguments


def sampling_arguments(
    decoding: dict[str, Any], stop_ids: Sequence[int], logit_bias: dict[int, float]
) -> dict[str, Any]:
    """vllm.SamplingParams keywords for a resolved decoding, as HFBackend decodes it."""
    sampling = bool(decoding.get("do_sample"))
    arguments: dict[str, Any] = {
        "max_tokens": int(decoding["max_new_tokens"]),
        "temperature": float(decoding["temperature"]) if sampling else 0.0,
        "stop_token_ids": list(stop_ids),
        # HFBackend stops at stop_ids only; vLLM would also stop at the model's EOS.
        "ignore_eos": True,
    }
    if decoding.get("answer_only"):
        from medmerge.eval.answer_only import forbidden_spellings

        arguments["bad_words"] = forbidden_spellings()
    if sampling:
        arguments.update(
            top_p=float(decoding["top_p"]),
            top_k=int(decoding.get("top_k") or 0) or -1,  # -1: no top-k in every vLLM release
            seed=int(decoding.get("seed", 0)),
        )
    if logit_bias:
        arguments["logit_bias"] = dict(logit_bias)
    return arguments


def continuation_logprob(prompt_logprobs: Sequence[Any], ids: Sequence[int], n: int) -> float:
    """Sum of the last `n` prompt tokens' log-probs; position i's dict holds token ids[i]'s."""
    return math.fsum(prompt_logprobs[i][ids[i]].logprob for i in range(len(ids) - n, len(ids)))


def check_local_folder(folder: str, allow_pickle: bool) -> None:
    """Before vLLM reads `folder`: what medmerge's own loader checks short of loading the weights
    (vLLM loads them itself): a local causal-LM folder, safetensors, config.json's sizes."""
    check_model_folder(Path(folder), allow_pickle=allow_pickle)
    if any(Path(folder).glob("*.safetensors")):
        check_base_config(Checkpoint(folder))


class VLLMBackend:
    """vLLM for a model folder, or a base plus the exact merge of its adapters as one LoRA."""

    name = "vllm"

    @classmethod
    def from_engine(
        cls, spec: ModelSpec, engine: EngineSettings, adapters: Sequence[Adapter] = ()
    ) -> VLLMBackend:
        return cls(spec, engine, adapters)

    def __init__(
        self, spec: ModelSpec, engine: EngineSettings, adapters: Sequence[Adapter] = ()
    ) -> None:
        vllm = import_vllm()
        spec = local_spec(spec, engine.allow_hub, engine.allow_pickle)
        folder = spec.model or spec.base
        check_local_folder(folder, engine.allow_pickle)
        self.lora = MergedLora(spec.base, adapters, spec.method) if adapters else None
        source = model_source_identity(spec, adapters)
        if self.lora is not None:
            check_shapes(adapters, self.lora.base)
            check_identity(adapters, source["base"])
        self.tokenizer = load_tokenizer(folder)  # the one HFBackend uses
        # the merge served now; None: the model or the base alone
        self.plan = spec_plan(spec) if self.lora is not None else None
        if self.plan is not None:  # exported before the engine starts: errors come early
            self.lora.use(self.plan)
        arguments = engine_arguments(engine, self.lora)
        self.llm = vllm.LLM(model=folder, **arguments)
        # inputs are cut to max_length + 1 tokens (the last one only scored): vLLM's limit
        self.max_length = (engine.max_model_len or _config_context(folder, self.tokenizer)) - 1
        self.logit_bias: dict[int, float] = {}  # added to the logits while generating
        self.identity = {
            **source,
            "backend": "vllm",
            "vllm_version": getattr(vllm, "__version__", None),
            "dtype": engine.dtype,
            "tensor_parallel_size": engine.tensor_parallel_size,
            "gpu_memory_utilization": engine.gpu_memory_utilization,
            "max_model_len": engine.max_model_len,
            "lora_rank": self.lora.rank if self.lora else None,
            "max_lora_rank": arguments.get("max_lora_rank"),
        }

    @contextlib.contextmanager
    def merged(self, plan: WeightPlan | Sequence[float]) -> Iterator[None]:
        """Serve the merge at `plan` inside the block (a fresh adapter id; the base is not
        reloaded); after it, what was served before (re-exported only when next used)."""
        if self.lora is None:
            raise ConfigError("merged(): this backend was opened without adapters to merge")
        previous, self.plan = self.plan, as_plan(plan)
        self.lora.use(self.plan)  # exported on entry, so an export error comes here
        try:
            yield
        finally:
            self.plan = previous

    @contextlib.contextmanager
    def token_penalty(self, token_ids: Sequence[int], gamma: float) -> Iterator[None]:
        """A logit bias of -gamma on `token_ids`; vLLM adds it before temperature and top-p."""
        self.logit_bias = {int(i): -float(gamma) for i in token_ids} if gamma else {}
        try:
            yield
        finally:
            self.logit_bias = {}

    def _run(self, prompts: list[list[int]], params: Any) -> list[Any]:
        """One vLLM call over token-id prompts, through the merged adapter when there is one."""
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompts],
            params,
            use_tqdm=False,
            lora_request=self.lora.use(self.plan) if self.plan is not None else None,
        )
        if [list(o.prompt_token_ids) for o in outputs] != prompts:
            raise RuntimeError("vLLM returned its outputs in another order than the prompts")
        return outputs

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[float]:
        """Sum of log-probs of each continuation given its context, from prompt logprobs."""
        from vllm import SamplingParams

        encoded = continuation_splits(self.tokenizer, requests)
        encoded = [(ids[-(self.max_length + 1) :], n) for ids, n in encoded]  # lm-eval's cut
        # 1, not 0: some releases read prompt_logprobs=0 as "off" (vllm/v1/engine/logprobs.py);
        # each position's dict holds the prompt token's own log-prob whatever its rank.
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self._run([ids for ids, _ in encoded], params)
        return [
            continuation_logprob(out.prompt_logprobs, ids, n)
            for out, (ids, n) in zip(outputs, encoded, strict=True)
        ]

    def generate(
        self, prompts: Sequence[str], decoding: dict[str, Any], stop_ids: Sequence[int]
    ) -> list[Generation]:
        """Generation for every prompt in one vLLM call; stops at any of `stop_ids`."""
        from vllm import SamplingParams

        ids = [list(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        params = SamplingParams(**sampling_arguments(decoding, stop_ids, self.logit_bias))
        outputs = self._run(ids, params)
        return [
            decode_generation(self.tokenizer, list(out.outputs[0].token_ids), stop_ids)
            for out in outputs
        ]
