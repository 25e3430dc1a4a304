"""Generation metrics computed the way the field reports them.

- bleu4: LLaMA-Factory's: mean over samples of nltk `sentence_bleu([list(ref)], list(pred),
  smoothing_function=SmoothingFunction().method3)` on character lists, x100. (LLaMA-Factory
  rounds each sample to 4 decimals before the mean; we do not, a difference < 5e-5.)
- rouge1/rouge2/rougeL: LLaMA-Factory's ComputeSimilarity: rouge-chinese F-scores on
  jieba-segmented words joined by spaces, mean over samples x100; a sample where either side
  has no words after segmentation scores 0.
- sacrebleu: corpus BLEU with tokenizer 13a (English) or zh (Chinese), with its signature.
Different numbers: LLaMA-Factory's BLEU is character-level, so it is not sacreBLEU's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from medmerge.eval.leakage import strip_think

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
SACREBLEU_TOKENIZERS = {"en": "13a", "zh": "zh"}


def detect_language(texts: Sequence[str]) -> str:
    """'zh' when at least 20% of the non-space characters are CJK ideographs, else 'en'."""
    joined = "".join("".join(t.split()) for t in texts)
    if not joined:
        return "en"
    return "zh" if len(_CJK.findall(joined)) / len(joined) >= 0.2 else "en"


def sentence_bleu4(prediction: str, reference: str) -> float:
    """One sample's character-level BLEU-4 with smoothing method3, x100."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    score = sentence_bleu(
        [list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3
    )
    return float(score) * 100


def sentence_rouge(prediction: str, reference: str) -> dict[str, float]:
    """One sample's rouge-1/2/L F-scores x100 on jieba words; an empty side scores 0."""
    import jieba
    from rouge_chinese import Rouge

    hypothesis = " ".join(jieba.cut(prediction))
    target = " ".join(jieba.cut(reference))
    if not hypothesis.split() or not target.split():
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    scores = Rouge().get_scores(hypothesis, target)[0]
    return {
        "rouge1": scores["rouge-1"]["f"] * 100,
        "rouge2": scores["rouge-2"]["f"] * 100,
        "rougeL": scores["rouge-l"]["f"] * 100,
    }


def corpus_sacrebleu(predictions: Sequence[str], references: Sequence[str], language: str) -> dict:
    """sacreBLEU corpus score, its signature and the tokenizer used."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize=SACREBLEU_TOKENIZERS[language])
    result = bleu.corpus_score(list(predictions), [list(references)])
    return {"score": float(result.score), "signature": str(bleu.get_signature())}


def sample_scores(prediction: str, reference: str) -> dict[str, float]:
    return {"bleu4": sentence_bleu4(prediction, reference), **sentence_rouge(prediction, reference)}


def generation_metrics(
    predictions: Sequence[str], references: Sequence[str], language: str
) -> tuple[dict[str, object], list[dict[str, float]]]:
    """Corpus-level metrics and per-sample scores of one set of predictions."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    per_item = [sample_scores(p, r) for p, r in zip(predictions, references, strict=True)]
    summary: dict[str, object] = {
        key: float(np.mean([s[key] for s in per_item])) if per_item else 0.0
        for key in ("bleu4", "rouge1", "rouge2", "rougeL")
    }
    sacre = corpus_sacrebleu(predictions, references, language)
    summary["sacrebleu"] = sacre["score"]
    summary["sacrebleu_signature"] = sacre["signature"]
    return summary, per_item


def raw_and_stripped(
    predictions: Sequence[str], references: Sequence[str], language: str
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """Metrics on the raw outputs and on the outputs with think blocks removed."""
    stripped = [strip_think(p) for p in predictions]
    raw, raw_items = generation_metrics(predictions, references, language)
    clean, clean_items = generation_metrics(stripped, references, language)
    items = [
        {"raw": r, "no_think": c, "prediction_no_think": s}
        for r, c, s in zip(raw_items, clean_items, stripped, strict=True)
    ]
    return {"raw": raw, "no_think": clean, "language": language}, items
