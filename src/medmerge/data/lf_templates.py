"""LLaMA-Factory 0.9.5's register_template calls for the families medmerge merges, as slots.

Copied slot for slot from src/llamafactory/data/template.py (v0.9.5); encoded by SlotTemplate
(chat_slots.py), checked against LLaMA-Factory's own output in tests/goldens/llamafactory/.
"""

from __future__ import annotations

from medmerge.data.chat_slots import BOS, EOS, SlotTemplate

_CHATML_USER = "<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"
_CHATML = dict(
    user=(_CHATML_USER,),
    assistant=("{{content}}<|im_end|>\n",),
    system=("<|im_start|>system\n{{content}}<|im_end|>\n",),
    stop_strings=("<|im_end|>",),
    replace_eos=True,
)
_GEMMA = dict(
    user=("<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n",),
    assistant=("{{content}}<end_of_turn>\n",),
    system=("{{content}}\n\n",),
    prefix=(BOS,),
    stop_strings=("<end_of_turn>",),
    replace_eos=True,
    fuse_system=True,
)
_PHI = dict(
    user=("<|user|>\n{{content}}<|end|>\n<|assistant|>\n",),
    assistant=("{{content}}<|end|>\n",),
    system=("<|system|>\n{{content}}<|end|>\n",),
    stop_strings=("<|end|>",),
    replace_eos=True,
)
_LLAMA3_HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"

SLOT_TEMPLATES = [
    SlotTemplate("qwen3", **_CHATML, reasoning=True),
    SlotTemplate("qwen3_nothink", **_CHATML),
    SlotTemplate(
        "qwen",
        **_CHATML,
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    ),
    SlotTemplate("chatml", **{**_CHATML, "stop_strings": ("<|im_end|>", "<|im_start|>")}),
    SlotTemplate(
        "default",
        user=("Human: {{content}}", EOS, "\nAssistant:"),
        assistant=("{{content}}", EOS, "\n"),
        system=("System: {{content}}", EOS, "\n"),
    ),
    SlotTemplate(
        "empty", user=("{{content}}",), assistant=("{{content}}",), system=("{{content}}",)
    ),
    SlotTemplate(
        "llama3",
        user=(
            _LLAMA3_HEADER.format("user")
            + "{{content}}<|eot_id|>"
            + _LLAMA3_HEADER.format("assistant"),
        ),
        assistant=("{{content}}<|eot_id|>",),
        system=(_LLAMA3_HEADER.format("system") + "{{content}}<|eot_id|>",),
        prefix=(BOS,),
        stop_strings=("<|eot_id|>", "<|eom_id|>"),
        replace_eos=True,
    ),
    SlotTemplate(
        "mistral",
        user=("[INST] {{content}}[/INST]",),
        assistant=(" {{content}}", EOS),
        system=("{{content}}\n\n",),
        prefix=(BOS,),
        fuse_system=True,
    ),
    SlotTemplate("gemma", **_GEMMA),
    SlotTemplate(
        "gemma2",
        **{**_GEMMA, "stop_strings": ("<eos>", "<end_of_turn>"), "replace_eos": False},
        efficient_eos=True,
    ),
    SlotTemplate("gemma3", **_GEMMA),
    SlotTemplate("phi", **_PHI),
    # LLaMA-Factory's phi_small prefix is {"<|endoftext|>"}, a set naming neither bos_token nor
    # eos_token, so it adds nothing; neither does this one.
    SlotTemplate("phi_small", **_PHI),
    SlotTemplate(
        "phi4",
        user=("<|im_start|>user<|im_sep|>{{content}}<|im_end|><|im_start|>assistant<|im_sep|>",),
        assistant=("{{content}}<|im_end|>",),
        system=("<|im_start|>system<|im_sep|>{{content}}<|im_end|>",),
        stop_strings=("<|im_end|>",),
        replace_eos=True,
    ),
    SlotTemplate(
        "phi4_mini",
        user=("<|user|>{{content}}<|end|><|assistant|>",),
        assistant=("{{content}}<|end|>",),
        system=("<|system|>{{content}}<|end|>",),
        stop_strings=("<|end|>",),
        replace_eos=True,
    ),
]
