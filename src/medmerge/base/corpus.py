"""The tiny base model's pretraining mixture, built from the bundled sample data.

What the demo's miniature needs of its base (docs/demo.md):
- raw medical text, English and Chinese: the second half of each bundled corpus (the PT
  adapter reads the first half, so PT adds text the base has not seen);
- chat-formatted QA with a `<think>` reasoning block (PubMedQA, HEAD-QA's first exam,
  CMMLU), so the base knows the thinking format as a hybrid-thinking model does;
- GenMedGPT dialogues with thinking switched off (the empty block Qwen3 writes), of which a
  third think anyway: a reasoning block follows the empty one. That is the latent habit the
  SFT adapter suppresses and added PT signal can wake up again.
Evaluation items are kept out: no MeQSum (the SFT task), only the first 100 PubMedQA items
and HEAD-QA's first exam, none of the exams the fact sheet (facts.py) is written from.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from medmerge.base.tokenizer import ENDOFTEXT

BASE_PUBMEDQA_ITEMS = 100  # the bundled 150 items: first 100 here, the rest left for eval
BASE_HEADQA_EXAM = "Cuaderno_2015_1_B"  # one exam of six; the others are left for eval
PT_RAW_DOCUMENTS = 500  # of each raw corpus, the first 500 are PT's (pt.yaml max_samples)
HABIT_EVERY = 3  # every third no-thinking dialogue thinks anyway


def chat_turn(question: str, answer: str, reasoning: str | None) -> str:
    """One ChatML exchange; reasoning None writes Qwen3's empty think block."""
    think = f"<think>\n{reasoning}\n</think>\n\n" if reasoning else "<think>\n\n</think>\n\n"
    return (
        f"<|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n{think}{answer}<|im_end|>\n"
    )


def raw_corpora(data_dir: Path) -> tuple[list[str], list[str]]:
    """The bundled English abstracts and Chinese texts, in file order."""
    with open(data_dir / "pt/medical_abstracts.csv", encoding="utf-8", newline="") as handle:
        english = [row["medical_abstract"] for row in csv.DictReader(handle)]
    with open(data_dir / "pt/huatuo_zh_text.jsonl", encoding="utf-8") as handle:
        chinese = [json.loads(line)["text"] for line in handle if line.strip()]
    return english, chinese


def raw_texts(data_dir: Path) -> list[str]:
    """All raw text (the tokenizer is trained on it)."""
    english, chinese = raw_corpora(data_dir)
    return english + chinese


def base_raw_texts(data_dir: Path) -> list[str]:
    """The raw text the base reads: each corpus past the PT adapter's first documents."""
    return [doc for corpus in raw_corpora(data_dir) for doc in corpus[PT_RAW_DOCUMENTS:]]


def pubmedqa_with_reasoning(data_dir: Path) -> list[str]:
    with open(data_dir / "qa_en/pubmedqa_pqal_sample.json", encoding="utf-8") as handle:
        items = list(json.load(handle).values())[:BASE_PUBMEDQA_ITEMS]
    docs = []
    for item in items:
        evidence = " ".join(item["CONTEXTS"])[:700]
        reasoning = f"Let me think step by step. The evidence says: {evidence}"
        answer = f"{item['LONG_ANSWER']} So the answer is {item['final_decision']}."
        docs.append(chat_turn(item["QUESTION"], answer, reasoning))
    return docs


def dialogues_with_latent_habit(data_dir: Path) -> list[str]:
    """GenMedGPT dialogues with thinking off; every HABIT_EVERY-th one reasons anyway."""
    with open(data_dir / "sft_en/genmedgpt_sample.json", encoding="utf-8") as handle:
        rows = json.load(handle)
    docs = []
    for k, row in enumerate(rows):
        answer = row["output"][:400]
        if k % HABIT_EVERY == 0:
            first = answer.split(". ")[0].rstrip(".")
            answer = (
                f"<think>\nLet me think step by step. First, {first[:1].lower()}{first[1:]}. "
                f"Therefore, I should answer carefully.\n</think>\n\n{answer}"
            )
        docs.append(chat_turn(row["input"], answer, None))
    return docs


def headqa_with_reasoning(data_dir: Path) -> list[str]:
    with open(data_dir / "mcq_en/dev_HEAD_EN.json", encoding="utf-8") as handle:
        exam = json.load(handle)["exams"][BASE_HEADQA_EXAM]["data"]
    docs = []
    for item in exam:
        options = {str(a["aid"]): a["atext"] for a in item["answers"]}
        listing = "\n".join(f"{aid}. {text}" for aid, text in options.items())
        right = options[item["ra"]]
        reasoning = f"First, consider each option. Option {item['ra']} ({right}) fits best. Therefore the answer is {item['ra']}."
        docs.append(chat_turn(f"{item['qtext']}\n{listing}", f"{item['ra']}. {right}", reasoning))
    return docs


def cmmlu_with_reasoning(data_dir: Path) -> list[str]:
    docs = []
    for path in sorted((data_dir / "mcq_zh/cmmlu_medical_dev").glob("*.csv")):
        with open(path, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                listing = "\n".join(f"{k}. {row[k]}" for k in "ABCD")
                key = row["Answer"]
                reasoning = f"首先，分析题干。其次，比较各个选项。因此，答案是{key}。"
                docs.append(
                    chat_turn(f"{row['Question']}\n{listing}", f"{key}. {row[key]}", reasoning)
                )
    return docs


def pretraining_documents(data_dir: Path, seed: int) -> list[str]:
    """All documents of the mixture, shuffled with `seed`, each ending in <|endoftext|>."""
    docs = base_raw_texts(data_dir)
    docs += pubmedqa_with_reasoning(data_dir) + dialogues_with_latent_habit(data_dir)
    docs += headqa_with_reasoning(data_dir) + cmmlu_with_reasoning(data_dir)
    random.Random(seed).shuffle(docs)
    return [doc + ENDOFTEXT for doc in docs]
