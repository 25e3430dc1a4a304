"""Interventions on a loaded transformers model, each with a random control of the same size.

- Subspace suppression: at chosen decoder layers, the residual stream h (each layer's output)
  loses its component in the span of that layer's k orthonormal directions U (k x d):
      h <- h - (h Uᵀ) U
  The control is the same projection onto k random orthonormal directions.
- Rank-1 logit intervention: the final hidden state h (the output layer's input) moves along a
  unit direction v by gamma, so every logit moves by gamma · (W_U v):
      h <- h + gamma v
  The control is a random unit direction with the same gamma.

Both are context managers: the hooks are removed on leaving, the weights are never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of decoder layers (the ModuleList as long as num_hidden_layers)."""
    config = model.config.get_text_config() if hasattr(model, "config") else None
    count = getattr(config, "num_hidden_layers", None)
    for _name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"no decoder-layer stack of {count} layers in {type(model).__name__}")


def orthonormal_rows(directions: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (rows) of the span of `directions` [k, d]."""
    q, r = torch.linalg.qr(directions.double().T)
    keep = r.diagonal().abs() > 1e-10 * r.diagonal().abs().max()
    return q[:, keep].T.contiguous()


def random_directions(k: int, hidden: int, seed: int) -> torch.Tensor:
    """k random orthonormal directions in R^hidden (a control for k found ones)."""
    generator = torch.Generator().manual_seed(seed)
    return orthonormal_rows(torch.randn(k, hidden, generator=generator, dtype=torch.float64))


def _replace_hidden(output: Any, change: Any) -> Any:
    if isinstance(output, tuple):
        return (change(output[0]), *output[1:])
    return change(output)


def _projection_hook(basis: torch.Tensor) -> Any:
    u = orthonormal_rows(basis)

    def project_out(hidden: torch.Tensor) -> torch.Tensor:
        local = u.to(hidden.device, hidden.dtype)
        return hidden - (hidden @ local.T) @ local

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> Any:
        return _replace_hidden(output, project_out)

    return hook


@contextlib.contextmanager
def suppress_subspace(model: torch.nn.Module, bases: Mapping[int, torch.Tensor]) -> Iterator[None]:
    """Inside the block, each decoder layer l in `bases` (0-based) outputs h - (h U_lᵀ) U_l."""
    layers = decoder_layers(model)
    outside = [layer for layer in bases if not 0 <= layer < len(layers)]
    if outside:
        raise ValueError(f"layers {outside} outside 0..{len(layers) - 1}")
    handles = [layers[i].register_forward_hook(_projection_hook(b)) for i, b in bases.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def shift_final_state(
    model: torch.nn.Module, direction: torch.Tensor, gamma: float
) -> Iterator[None]:
    """Inside the block, the output layer sees h + gamma · v̂ (v̂ = direction / ||direction||)."""
    norm = float(direction.norm())
    if norm == 0:
        raise ValueError("the logit intervention needs a non-zero direction")
    unit = direction.double() / norm

    def hook(_module: torch.nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = inputs[0]
        return (hidden + gamma * unit.to(hidden.device, hidden.dtype), *inputs[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def mean_difference(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """mean(positive) − mean(negative) over rows: e.g. the correctness direction from the final
    states of right vs wrong multiple-choice answers (no surface marker involved)."""
    if positive.shape[0] == 0 or negative.shape[0] == 0:
        raise ValueError("the direction needs states of both kinds")
    return positive.double().mean(0) - negative.double().mean(0)
