"""Random conversations checked against LLaMA-Factory itself, beyond the committed goldens.

    python scripts/goldens/llamafactory_fuzz.py inputs /tmp/fuzz --count 300 --seed 7
    /work/venvs/llamafactory/bin/python scripts/goldens/llamafactory_templates.py --out /tmp/fuzz
    .venv/bin/python scripts/goldens/llamafactory_fuzz.py compare /tmp/fuzz

`inputs` writes random conversations (1-3 turns, EN/ZH, think markers in and out of place,
special tokens as text, CRLF, emoji; reasoning in ~30% of replies) and PT documents; the golden
script then has LLaMA-Factory encode them; `compare` (project venv) counts the rows, cutoffs,
generation prompts and PT rows where medmerge differs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PIECES = ["fever", "发烧", " ", "\n", "\n\n", "<think>", "</think>", "<think>\n", "\n</think>\n\n"]
PIECES += ["A.", "  x ", "\t", "答：", "don't", "123", "😀", "<|im_end|>", "Human:", "café", "\r\n"]


def write_inputs(out: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)

    def text(n: int) -> str:
        return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, n)))

    conversations = []
    for index in range(count):
        messages = []
        for _ in range(rng.randint(1, 3)):
            reply = text(8)
            if rng.random() < 0.3:
                reply = f"<think>\n{text(4)}\n</think>\n\n{text(4)}"
            messages += [["user", text(6) or "q"], ["assistant", reply]]
        system = text(4) if rng.random() < 0.4 else ""
        conversations.append({"id": f"c{index}", "system": system, "messages": messages})
    documents = [text(10) for _ in range(40)]
    out.mkdir(parents=True, exist_ok=True)
    inputs = {"conversations": conversations, "documents": documents}
    (out / "conversations.json").write_text(json.dumps(inputs, ensure_ascii=False), "utf-8")


def _tokenizers(out: Path) -> dict:
    from transformers import AutoTokenizer

    sys.path.insert(0, str(REPO / "tests"))
    from helpers.qwen3_tokenizer import save_qwen3_tokenizer

    names = ("project", "project_llama3", "project_gemma", "project_phi")
    found = {n: AutoTokenizer.from_pretrained(out / "tokenizers" / n) for n in names}
    qwen3 = save_qwen3_tokenizer(out / "tokenizers" / "qwen3")
    found["qwen3"] = AutoTokenizer.from_pretrained(qwen3)
    found["qwen3_base"] = AutoTokenizer.from_pretrained(qwen3, eos_token="<|endoftext|>")
    return found


def _sft_mismatches(golden: dict, tokenizer, records: dict) -> tuple[int, int]:
    from medmerge.data import Conversation, Message, get_template, supervised_example

    bad = total = 0
    for key, per_conversation in golden["sft"].items():
        name, _, mode = key.partition(":")
        thinking, chat = mode != "nothink", get_template(name)
        for conv_id, expected in per_conversation.items():
            record = records[conv_id]
            system = [Message("system", record["system"])] if record["system"] else []
            messages = (*system, *(Message(r, c) for r, c in record["messages"]))
            pairs = chat.encode_pairs(tokenizer, Conversation(messages, conv_id), thinking)
            for cutoff in golden["cutoffs"]:
                row = supervised_example(pairs, cutoff, chat.efficient_eos_id(tokenizer))
                bad += [row["input_ids"], row["labels"]] != expected[str(cutoff)]
            bad += chat.prompt_ids(tokenizer, messages[:-1], thinking) != expected["prompt"]
            total += len(golden["cutoffs"]) + 1
    return bad, total


def compare(out: Path) -> int:
    from medmerge.data import build_pt_examples

    inputs = json.loads((out / "conversations.json").read_text("utf-8"))
    records = {c["id"]: c for c in inputs["conversations"]}
    bad = total = 0
    for name, tokenizer in _tokenizers(out).items():
        golden = json.loads((out / f"{name}.json").read_text("utf-8"))
        sft_bad, sft_total = _sft_mismatches(golden, tokenizer, records)
        bad, total = bad + sft_bad, total + sft_total
        for template, rows in golden["pt"].items():
            for packing, key in ((True, "packed"), (False, "unpacked")):
                built = build_pt_examples(
                    inputs["documents"], tokenizer, golden["pt_cutoff"], template, packing
                )
                bad += [r["input_ids"] for r in built] != rows[key]
                total += 1
        print(f"{name}: {sft_bad} of {sft_total} SFT rows/prompts differ")
    print(f"mismatches {bad} of {total}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("inputs", "compare"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.step == "inputs":
        write_inputs(args.folder, args.count, args.seed)
        return 0
    return compare(args.folder)


if __name__ == "__main__":
    sys.exit(main())
