"""Multiple-choice scoring under many final-state shifts from one forward pass.

The logit intervention (interventions.shift_final_state) moves the output layer's input h by
gamma · v̂ at every position. The output layer is linear, so at a scored position the logits
become z + gamma · (W v̂), z = W h + b the unshifted logits. One packed forward (the backend's
own rows, packed_scoring.py) therefore captures h at every scored position, and each shift
then costs an output-layer product and a log-softmax there instead of a forward of the whole
model: the logit shift's 2 + gammas × (1 + controls) scorings of the MCQ suite become one.

This holds only when the model does nothing to the logits after its output layer: the capture
compares the output layer's product of the captured states with the model's logits and returns
None where they differ (soft-capping, scaled logits, a hook on the output layer), and the
caller then runs a hooked forward per shift. Equal
to the hooked forward per shift up to fp32 rounding (tests/mechanism/test_shifted_scoring.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medmerge.eval.backends.base import LoglikRequest
from medmerge.eval.backends.hf import HFBackend
from medmerge.eval.backends.packed_scoring import packed_batch, scored_logits
from medmerge.eval.mcq import McqTask

Shift = tuple[torch.Tensor, float] | None  # (direction, gamma): h + gamma · direction / ||·||
CHUNK_ELEMENTS = 1 << 24  # positions x vocabulary per block of logits (128 MB in fp64)
TINY = 1e-280  # a sum of exponentials below this has lost digits to fp64's range


@dataclass
class CapturedStates:
    """The output layer's input at every scored position of every request, with the token
    it predicts and the request it belongs to."""

    states: torch.Tensor  # [positions, hidden], on the model's device
    targets: torch.Tensor  # [positions]
    request: torch.Tensor  # [positions]
    n_requests: int


def option_requests(task: McqTask, items: Sequence[Any]) -> list[LoglikRequest]:
    """Every option of every item after its zero-shot context, items in order."""
    return [
        LoglikRequest(context, option)
        for item in items
        for context in [task.context(item, [])]
        for option in task.continuations(item)
    ]


@torch.no_grad()
def capture_states(hf: HFBackend, requests: Sequence[LoglikRequest]) -> CapturedStates | None:
    """One packed forward over `requests`; None when the model changes the output layer's
    logits before returning them (the closed form would then not be the model)."""
    head = hf.model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return None
    seen: dict[str, torch.Tensor] = {}

    def keep(_module: torch.nn.Module, args: tuple, _output: torch.Tensor) -> None:
        seen["states"] = args[0][0]

    # the model's logits must be the output layer's product of the captured states, to the
    # rounding of the model's dtype: anything a model or a hook does after it fails this
    tolerance = 1e-5 if head.weight.dtype == torch.float32 else 2e-2
    weight = head.weight.float()
    bias = head.bias.float() if head.bias is not None else None
    states, targets, owners = [], [], []
    handle = head.register_forward_hook(keep)  # after scored_logits' cut to scored positions
    try:
        for groups in hf.packed_groups(requests):
            batch = packed_batch(groups, hf.pad_id)
            logits = scored_logits(hf.model, batch.inputs, batch.flat).float()
            product = torch.nn.functional.linear(seen["states"].float(), weight, bias)
            if not torch.allclose(product, logits, rtol=tolerance, atol=tolerance):
                return None
            for index, picked, wanted in batch.requests:
                states.append(seen["states"][picked.to(logits.device)])
                targets.append(wanted)
                owners.append(torch.full((len(wanted),), index, dtype=torch.long))
    finally:
        handle.remove()
    device = hf.model.device
    return CapturedStates(
        torch.cat(states).float(),
        torch.cat(targets).to(device),
        torch.cat(owners).to(device),
        len(requests),
    )


@torch.no_grad()
def continuation_end_states(hf: HFBackend, requests: Sequence[LoglikRequest]) -> torch.Tensor:
    """[len(requests), hidden] float64: the output layer's input at each request's last
    continuation token, from packed rows (each shared context runs once)."""
    head = hf.model.get_output_embeddings()
    seen: dict[str, torch.Tensor] = {}

    def keep(_module: torch.nn.Module, args: tuple, _output: torch.Tensor) -> None:
        seen["states"] = args[0][0]

    states = torch.zeros(len(requests), head.in_features, dtype=torch.float64)
    handle = head.register_forward_hook(keep)
    try:
        for groups in hf.packed_groups(requests, append=hf.pad_id):
            batch = packed_batch(groups, hf.pad_id)
            scored_logits(hf.model, batch.inputs, batch.flat)
            for index, picked, _targets in batch.requests:
                states[index] = seen["states"][picked[-1]].double().cpu()
    finally:
        handle.remove()
    return states


@torch.no_grad()
def shifted_loglikelihoods(
    captured: CapturedStates, head: torch.nn.Linear, shifts: Sequence[Shift]
) -> torch.Tensor:
    """[len(shifts), n_requests] float64: each request's continuation log-likelihood with
    the output layer's input moved by each shift (None: unmoved).

    With z the unshifted logits and o_k shift k's logit offset, log-softmax(z + o_k)[t] is
    z_t + o_kt − m − M_k − log Σ_v exp(z_v − m) exp(o_kv − M_k) (m, M_k the maxima): the sums
    over the vocabulary for every shift at once are one fp64 matrix product.
    """
    weight = head.weight.float()
    bias = head.bias.float() if head.bias is not None else None
    offsets = torch.zeros(len(shifts), weight.shape[0], dtype=torch.float64, device=weight.device)
    for k, shift in enumerate(shifts):
        if shift is not None:
            direction, gamma = shift
            unit = direction.double() / float(direction.norm())
            offsets[k] = gamma * (weight.double() @ unit.to(weight.device))
    top = offsets.max(dim=1).values  # [shifts]
    scaled = (offsets - top[:, None]).exp().T  # [vocab, shifts], each column's maximum 1
    sums = torch.zeros(len(shifts), captured.n_requests, dtype=torch.float64, device=weight.device)
    chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
    for start in range(0, captured.states.shape[0], chunk):
        part = slice(start, start + chunk)
        logits = torch.nn.functional.linear(captured.states[part], weight, bias).double()
        targets, owners = captured.targets[part], captured.request[part]
        peak = logits.max(dim=1).values  # [positions]
        total = (logits - peak[:, None]).exp() @ scaled  # [positions, shifts]
        if bool((total > TINY).all()):
            lse = total.log() + peak[:, None] + top[None, :]
        else:  # a shift so large that the product left fp64's range: one shift at a time
            lse = torch.stack([(logits + o).logsumexp(-1) for o in offsets], 1)
        picked = logits.gather(1, targets[:, None]) + offsets[:, targets].T - lse
        for k in range(len(shifts)):
            sums[k].index_add_(0, owners, picked[:, k])
    return sums.cpu()


def shifted_hits(
    hf: HFBackend, task: McqTask, items: Sequence[Any], shifts: Sequence[Shift]
) -> list[list[bool]] | None:
    """Per shift, per item: is the highest-scoring option the answer (score_loglik's rule:
    the first maximum, right when it is the only answer)? None where the closed form does not
    apply (capture_states)."""
    options = [task.continuations(item) for item in items]
    captured = capture_states(hf, option_requests(task, items))
    if captured is None:
        return None
    scores = shifted_loglikelihoods(captured, hf.model.get_output_embeddings(), shifts).tolist()
    hits = []
    for row in scores:
        values, out = iter(row), []
        for item, item_options in zip(items, options, strict=True):
            option_scores = [next(values) for _ in item_options]
            best = max(range(len(option_scores)), key=option_scores.__getitem__)
            out.append({best} == set(item.answers))
        hits.append(out)
    return hits
