"""Metric and leak values against an independent reimplementation of the stated formulas."""

from __future__ import annotations

import re

import jieba
import numpy as np
import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_chinese import Rouge

from medmerge.eval.leakage import item_leakage, leakage_summary, strip_think
from medmerge.eval.metrics import detect_language, generation_metrics, raw_and_stripped

EN = [
    (
        "<think>\nThe patient has a headache. Let's think step by step.\n</think>\n\nTake ibuprofen and rest.",
        "Rest and take ibuprofen for the headache.",
    ),
    ("Therefore, you should see a doctor.", "Please see a doctor soon."),
    ("<THINK>unclosed reasoning about dosage", "The usual dose is 500 mg."),
    ("", "Drink plenty of water."),
    ("Hypertension is high blood pressure.\n", "Hypertension means high blood pressure."),
]
ZH = [
    ("<think>首先分析症状。</think>\n\n建议多喝水，注意休息。", "多喝水，好好休息。"),
    ("因此应当及时就医。", "请尽快就医。"),
    ("< think >\n\n</ think >高血压需要长期服药。", "高血压患者需要长期规律服药。"),
    ("。。。", "注意饮食。"),
]


def reference_strip(text: str) -> str:
    if not re.search(r"<\s*think\s*>", text, flags=re.I):
        return text
    text = re.sub(r"<\s*think\s*>.*?<\s*/\s*think\s*>\s*", "", text, flags=re.S | re.I)
    return re.sub(r"<\s*think\s*>.*$", "", text, flags=re.S | re.I).strip()


def reference_scores(preds, refs, tokenize):
    bleu, r1, r2, rl = [], [], [], []
    for p, r in zip(preds, refs, strict=True):
        bleu.append(
            sentence_bleu([list(r)], list(p), smoothing_function=SmoothingFunction().method3) * 100
        )
        h, t = list(jieba.cut(p)), list(jieba.cut(r))
        if not " ".join(h).split() or not " ".join(t).split():
            s = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
        else:
            s = Rouge().get_scores(" ".join(h), " ".join(t))[0]
        r1.append(s["rouge-1"]["f"] * 100)
        r2.append(s["rouge-2"]["f"] * 100)
        rl.append(s["rouge-l"]["f"] * 100)
    sacre = sacrebleu.corpus_bleu(preds, [refs], tokenize=tokenize).score
    return {
        "bleu4": np.mean(bleu),
        "rouge1": np.mean(r1),
        "rouge2": np.mean(r2),
        "rougeL": np.mean(rl),
        "sacrebleu": sacre,
    }


@pytest.mark.parametrize(("pairs", "language", "tokenize"), [(EN, "en", "13a"), (ZH, "zh", "zh")])
def test_metrics_match_independent_formulas(pairs, language, tokenize):
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    got, _ = raw_and_stripped(preds, refs, language)
    raw = reference_scores(preds, refs, tokenize)
    clean = reference_scores([reference_strip(p) for p in preds], refs, tokenize)
    for key, value in raw.items():
        assert got["raw"][key] == pytest.approx(value, abs=1e-4), key
        assert got["no_think"][key] == pytest.approx(clean[key], abs=1e-4), key
    assert f"tok:{tokenize}" in got["raw"]["sacrebleu_signature"]
    assert got["raw"]["bleu4"] != got["no_think"]["bleu4"]


def test_language_detection():
    assert detect_language([r for _, r in ZH]) == "zh"
    assert detect_language([r for _, r in EN]) == "en"


def test_identical_prediction_scores_100():
    summary, _ = generation_metrics(["the same answer here"], ["the same answer here"], "en")
    assert summary["bleu4"] == pytest.approx(100)
    assert summary["rougeL"] == pytest.approx(100, abs=1e-4)


def test_strip_think_cases():
    assert strip_think(EN[0][0]) == "Take ibuprofen and rest."
    assert strip_think(EN[2][0]) == ""
    assert strip_think(ZH[2][0]) == "高血压需要长期服药。"
    assert strip_think("a <think>x</think> b <think>y</think>c") == "a b c"
    assert strip_think("  no block \n") == "  no block \n"


def test_leakage_per_item_by_hand():
    text = EN[0][0]
    block = text.index("</think>") + len("</think>")
    item = item_leakage(text)
    assert item["has_think_tag"] and item["nonempty_think"] and item["has_marker"]
    assert item["leakage"] == pytest.approx(block / len(text))
    marker = item_leakage("Rest well. Therefore, see a doctor.")
    assert marker["leakage"] == pytest.approx((35 - 11) / 35)
    assert not marker["has_think_tag"]
    empty = item_leakage(ZH[2][0])
    assert empty["has_think_tag"] and not empty["nonempty_think"]
    assert item_leakage("")["leakage"] == 0.0
    assert item_leakage("首先，多喝水。")["leakage"] == pytest.approx(1.0)


def test_leakage_summary_rates_and_lengths():
    texts = [p for p, _ in EN]
    summary, items = leakage_summary(texts, token_counts=[10, 5, 7, 0, 6])
    assert summary["think_tag_rate"] == pytest.approx(2 / 5)
    assert summary["nonempty_think_rate"] == pytest.approx(2 / 5)
    assert summary["marker_rate"] == pytest.approx(2 / 5)  # step by step; therefore
    assert summary["leakage_ratio"] == pytest.approx(np.mean([i["leakage"] for i in items]))
    chars = [len(t) for t in texts]
    assert summary["length_chars"]["p90"] == pytest.approx(np.percentile(chars, 90))
    assert summary["length_tokens"]["median"] == 6
    custom, _ = leakage_summary(["Hence it is B"], markers=["hence"])
    assert custom["marker_rate"] == 1.0
