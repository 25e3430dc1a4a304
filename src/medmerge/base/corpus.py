"""The tiny base model's pretraining mixture, built from the bundled sample data.

Raw medical text (English and Chinese) plus chat-formatted QA, part of it with a
`<think>` reasoning block and part with the empty block Qwen3 writes when thinking is off,
so the base knows the thinking format the way a hybrid-thinking model does. Evaluation
items are kept out: only the first PubMedQA/MeQSum items and HEAD-QA's first exam are used.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from medmerge.base.tokenizer import ENDOFTEXT

BASE_PUBMEDQA_ITEMS = 100  # the bundled 150 items: first 100 here, the rest left for eval
BASE_MEQSUM_ITEMS = 200  # the bundled 300 items: first 200 here
BASE_HEADQA_EXAM = "Cuaderno_2015_1_B"  # one exam of six; the others are left for eval


def chat_turn(question: str, answer: str, reasoning: str | None) -> str:
    """One ChatML exchange; reasoning None writes Qwen3's empty think block."""
    think = f"<think>\n{reasoning}\n</think>\n\n" if reasoning else "<think>\n\n</think>\n\n"
    return (
        f"<|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n{think}{answer}<|im_end|>\n"
    )


def raw_texts(data_dir: Path) -> list[str]:
    with open(data_dir / "pt/medical_abstracts.csv", encoding="utf-8", newline="") as handle:
        english = [row["medical_abstract"] for row in csv.DictReader(handle)]
    with open(data_dir / "pt/huatuo_zh_text.jsonl", encoding="utf-8") as handle:
        chinese = [json.loads(line)["text"] for line in handle if line.strip()]
    return english + chinese


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


def meqsum_without_reasoning(data_dir: Path) -> list[str]:
    with open(data_dir / "qa_en/meqsum_sample.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()][:BASE_MEQSUM_ITEMS]
    return [
        chat_turn(f"Summarize this question: {r['question']}", r["summary"], None) for r in rows
    ]


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
    docs = raw_texts(data_dir)
    docs += pubmedqa_with_reasoning(data_dir) + meqsum_without_reasoning(data_dir)
    docs += headqa_with_reasoning(data_dir) + cmmlu_with_reasoning(data_dir)
    random.Random(seed).shuffle(docs)
    return [doc + ENDOFTEXT for doc in docs]
