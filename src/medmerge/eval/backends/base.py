"""The one interface every model backend implements, and what the backends share.

A backend scores (`loglikelihood`) and decodes (`generate`) lists of requests, as in
lm-evaluation-harness. It also carries the two switches that evaluation turns on and off
around a block: `merged(plan)` (the merge of its adapters at other weights, undone after)
and `token_penalty(ids, gamma)` (lower those tokens' logits while generating). A backend
that cannot do one refuses it in one line with a medmerge error; callers never ask which
backend they hold.

Log-likelihood follows lm-evaluation-harness: context + continuation are tokenized
together and the continuation is the tokens after the first len(tokenize(context)) ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from medmerge.eval.config import EngineSettings, ModelSpec
from medmerge.lora import WeightPlan
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
    # the same tokens decoded with skip_special_tokens=True, the text LLaMA-Factory scores
    scored_text: str | None = None


class Backend(Protocol):
    """A model behind `load_backend`.

    Opened with `spec` and `adapters`: with the spec's adapter weights it serves that merge;
    with adapters but no weights in the spec it serves the base, and `merged(plan)` switches
    the adapters in at `plan` for the length of a block (a sweep's point, an ablation row).
    """

    name: ClassVar[str]  # the registry key, as `backend:` spells it
    identity: dict[str, Any]  # what is evaluated, recorded in run_meta.json
    tokenizer: Any
    # the longest scored input in tokens; a longer one keeps its last max_length + 1 tokens
    # (context truncated from the left, as lm-eval does)
    max_length: int

    @classmethod
    def from_engine(
        cls, spec: ModelSpec, engine: EngineSettings, adapters: Sequence[Any] = ()
    ) -> Backend:
        """The backend for `spec`, run as a stage config's engine settings say."""
        ...

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[float]:
        """Sum of the log-probs of each continuation given its context."""
        ...

    def generate(
        self, prompts: Sequence[str], decoding: dict[str, Any], stop_ids: Sequence[int]
    ) -> list[Generation]:
        """One generation per prompt under a resolved decoding; stops at any of `stop_ids`."""
        ...

    def merged(self, plan: WeightPlan | Sequence[float]) -> AbstractContextManager[None]:
        """Inside the block, base + the merge of the opened adapters under `plan`; after it,
        what the backend served before, exactly."""
        ...

    def token_penalty(self, token_ids: Sequence[int], gamma: float) -> AbstractContextManager[None]:
        """Inside the block, generation lowers the logits of `token_ids` by `gamma` before
        temperature and top-p act (scoring is unchanged); gamma 0 changes nothing."""
        ...


def as_plan(plan: WeightPlan | Sequence[float]) -> WeightPlan:
    return plan if isinstance(plan, WeightPlan) else WeightPlan(tuple(float(w) for w in plan))


def spec_plan(spec: ModelSpec) -> WeightPlan | None:
    """The merge `spec` asks for at opening; None when it asks for none (a model, a base)."""
    return WeightPlan(tuple(a.weight for a in spec.adapters)) if spec.adapters else None


def decode_generation(tokenizer: Any, ids: Sequence[int], stop_ids: Sequence[int]) -> Generation:
    """The text of generated `ids` up to (not including) the first stop token."""
    stops = set(stop_ids)
    cut = next((i for i, t in enumerate(ids) if t in stops), None)
    kept = list(ids if cut is None else ids[:cut])
    text = tokenizer.decode(kept, skip_special_tokens=False)
    scored = tokenizer.decode(kept, skip_special_tokens=True)
    return Generation(text=text, tokens=len(kept), stopped=cut is not None, scored_text=scored)


def continuation_split(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], int]:
    """(ids of context + continuation, number of continuation tokens), lm-eval style."""
    return continuation_splits(tokenizer, [LoglikRequest(context, continuation)])[0]


def continuation_splits(
    tokenizer: Any, requests: Sequence[LoglikRequest]
) -> list[tuple[list[int], int]]:
    """`continuation_split` of every request, each distinct context tokenized once and all
    in two batched tokenizer calls (a question's options share one context)."""
    contexts = list(dict.fromkeys(r.context for r in requests))
    context_ids = tokenizer(contexts, add_special_tokens=False)["input_ids"] if contexts else []
    n_context = {c: len(ids) for c, ids in zip(contexts, context_ids, strict=True)}
    wholes = [r.context + r.continuation for r in requests]
    whole_ids = tokenizer(wholes, add_special_tokens=False)["input_ids"] if wholes else []
    splits = []
    for request, ids in zip(requests, whole_ids, strict=True):
        n_continuation = len(ids) - n_context[request.context]
        if n_continuation <= 0 or n_context[request.context] == 0:
            raise ValueError(
                f"continuation {request.continuation!r} adds no token after its context"
            )
        splits.append((list(ids), n_continuation))
    return splits


def model_source_identity(spec: ModelSpec, adapters: Sequence[Any] = ()) -> dict[str, Any]:
    """What was evaluated: the folder's hashes, or the base's plus each adapter's and weight
    (no weight when the spec gives none: the weights are then set per `merged` block)."""
    if spec.model is not None:
        return {"model": model_identity(spec.model)}
    weights = [{"weight": a.weight} for a in spec.adapters] or [{} for _ in adapters]
    return {
        "base": model_identity(spec.base),
        "method": spec.method,
        "adapters": [
            {"path": str(Path(a.path).resolve()), **w, **a.hashes()}
            for a, w in zip(adapters, weights, strict=True)
        ],
    }


def local_spec(spec: ModelSpec, allow_hub: bool, allow_pickle: bool) -> ModelSpec:
    """`spec` with its model or base resolved to a local folder (a hub download if allowed)."""
    from medmerge.loading import resolve_model_folder

    key = "model" if spec.model is not None else "base"
    folder = resolve_model_folder(
        getattr(spec, key), allow_hub=allow_hub, allow_pickle=allow_pickle
    )
    return spec if str(folder) == getattr(spec, key) else spec.model_copy(update={key: str(folder)})
