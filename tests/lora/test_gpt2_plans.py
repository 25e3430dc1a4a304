"""Layer ranges and group weights follow the base's architecture (GPT-2: transformer.h.N,
attn / mlp, Conv1D), and one that selects nothing is refused instead of ignored."""

from __future__ import annotations

import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model

from medmerge.errors import MergeError
from medmerge.lora import WeightPlan, check_fits, load_adapter
from medmerge.merge import MergeConfig, run_merge


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=32)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(root / "base")
    lora = LoraConfig(
        r=2,
        lora_alpha=4,
        target_modules=["c_attn", "c_proj", "c_fc"],
        fan_in_fan_out=True,
        init_lora_weights=False,
    )
    get_peft_model(model, lora).save_pretrained(root / "adapter")
    return root


def _merge(root, out: str, weight: float, **fields) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    cfg = MergeConfig(
        base=str(root / "base"),
        out=str(root / out),
        adapters=[{"path": str(root / "adapter"), "weight": weight}],
        **fields,
    )
    assert run_merge(cfg) == 0
    merged = load_file(str(root / out / "model.safetensors"))
    base = load_file(str(root / "base" / "model.safetensors"))
    return {n: t for n, t in merged.items() if not torch.equal(t, base[n])}


def test_gpt2_layer_range_touches_transformer_h_n(gpt2):
    changed = _merge(gpt2, "ranged", 1.0, layer_ranges=[{"first": 0, "last": 0, "weights": [0.0]}])
    assert changed
    assert all(name.startswith("transformer.h.1.") for name in changed), sorted(changed)


def test_gpt2_group_weight_on_mlp_never_touches_attention(gpt2):
    changed = _merge(gpt2, "mlp_only", 0.0, group_weights={"mlp": [1.0]})
    assert {n.split(".")[3] for n in changed} == {"mlp"}, sorted(changed)
    assert "transformer.h.0.mlp.c_proj.weight" in changed  # GPT-2's mlp.c_proj is MLP


def test_layer_range_or_group_matching_nothing_is_refused(gpt2):
    with pytest.raises(MergeError, match=r"layer_ranges\[0\] \(layers 5\.\.9\) matches no tensor"):
        _merge(gpt2, "nothing", 1.0, layer_ranges=[{"first": 5, "last": 9, "weights": [0.5]}])
    assert not (gpt2 / "nothing").exists()


def test_group_matching_nothing_is_refused(gpt2):
    from medmerge.architectures import ARCHITECTURES
    from medmerge.checkpoints import Checkpoint

    adapter = load_adapter(gpt2 / "adapter")
    attention_only = type(adapter)(
        adapter.path,
        adapter.config,
        factors={n: f for n, f in adapter.factors.items() if ".attn." in n},
    )
    plan = WeightPlan((1.0,), group_weights={"mlp": (0.5,)}).on(ARCHITECTURES["gpt2"])
    with pytest.raises(MergeError, match=r"group_weights\.mlp matches no tensor"):
        check_fits([attention_only], Checkpoint(gpt2 / "base").shapes(), plan)


def test_conv1d_layout_is_decided_per_module_not_by_the_saved_flag(gpt2):
    """PEFT saves the fan_in_fan_out flag of the last module it wrapped; a Conv1D module is
    stored (in, out) whatever the flag says, so its delta is transposed."""
    from medmerge.architectures import ARCHITECTURES
    from medmerge.checkpoints import Checkpoint

    adapter = load_adapter(gpt2 / "adapter")
    name = "transformer.h.0.attn.c_proj.weight"  # square: the shape check alone misses it
    adapter.factors[name].transpose = False  # as if the saved flag were false
    plan = WeightPlan((1.0,)).on(ARCHITECTURES["gpt2"])
    check_fits([adapter], Checkpoint(gpt2 / "base").shapes(), plan)
    assert adapter.factors[name].transpose


def test_every_entry_point_refuses_a_foreign_adapter_with_the_same_line(gpt2, tmp_path):
    """merge's preflight (a checkpoint) and the in-memory merge of eval/sweep (a loaded
    model) run the same check_fits, so they print the same line."""
    from medmerge.checkpoints import Checkpoint
    from medmerge.lora import check_in_memory_merge, check_shapes

    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32)
    other = transformers.GPT2LMHeadModel(config)
    other.save_pretrained(tmp_path / "other")
    adapters = [load_adapter(gpt2 / "adapter")]
    with pytest.raises(MergeError) as preflight:
        check_shapes(adapters, Checkpoint(tmp_path / "other"))
    with pytest.raises(MergeError) as in_memory:
        check_in_memory_merge(adapters, other, tmp_path / "other")
    assert str(preflight.value) == str(in_memory.value)
    assert "the adapter was made for another base model" in str(in_memory.value)
