"""Generation metrics computed the way the field reports them.

- bleu4: LLaMA-Factory's: mean over samples of nltk `sentence_bleu([list(ref)], list(pred),
  smoothing_function=SmoothingFunction().method3)` on character lists, x100. (LLaMA-Factory
  rounds each sample to 4 decimals before the mean; we do not, a difference < 5e-5.)
- rouge1/rouge2/rougeL: LLaMA-Factory's ComputeSimilarity: rouge-chinese F-scores on
  jieba-segmented words joined by spaces, mean over samples x100; a sample where either side
  has no words after segmentation scores 0.
- sacrebleu: corpus BLEU with tokenizer 13a (English) or zh (Chinese), with its signature.
Different numbers: LLaMA-Factory's BLEU is character-level, so it is not sacreBLEU's.

METRICS is the one list of numbers: how each is computed from predictions and references,
and where it shows (sweep-table columns, their across-suite averages, the report's columns,
the trade-off plot's panels, the Pareto objectives). Adding a metric is one entry here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

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


def record_languages(texts: Sequence[str]) -> str | list[str]:
    """One language for the whole set when every record has it, else each record's own
    (a mixed English/Chinese file), by `detect_language` per record."""
    languages = [detect_language([t]) for t in texts]
    return languages[0] if len(set(languages)) == 1 else languages


def _tokenizer(language: str):
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

    return {"en": Tokenizer13a, "zh": TokenizerZh}[language]()


def bleu_inputs(
    predictions: Sequence[str], references: Sequence[str], language: str | Sequence[str]
) -> tuple[Any, list[str], list[str]]:
    """(sacreBLEU BLEU object, predictions, references) for one language, or, for per-record
    languages, each sentence tokenized by its record's language and BLEU told `none`."""
    from sacrebleu.metrics import BLEU

    if isinstance(language, str):
        return BLEU(tokenize=SACREBLEU_TOKENIZERS[language]), list(predictions), list(references)
    tokenizers = {lang: _tokenizer(lang) for lang in set(language)}
    preds = [tokenizers[lg](p) for p, lg in zip(predictions, language, strict=True)]
    refs = [tokenizers[lg](r) for r, lg in zip(references, language, strict=True)]
    return BLEU(tokenize="none"), preds, refs


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


def corpus_sacrebleu(
    predictions: Sequence[str], references: Sequence[str], language: str | Sequence[str]
) -> dict:
    """sacreBLEU corpus score, its signature and the tokenizer used (per record when the
    records' languages differ: 13a for English ones, zh for Chinese ones)."""
    bleu, preds, refs = bleu_inputs(predictions, references, language)
    result = bleu.corpus_score(preds, [refs])
    signature = str(bleu.get_signature())
    if not isinstance(language, str):
        signature += f" (pre-tokenized per record: {language.count('en')} en 13a, "
        signature += f"{language.count('zh')} zh)"
    return {"score": float(result.score), "signature": signature}


@lru_cache(maxsize=256)
def _rouge(prediction: str, reference: str) -> dict[str, float]:
    """rouge1/2/L come from one segmentation; the three entries share it."""
    return sentence_rouge(prediction, reference)


def _sacrebleu(predictions: Sequence[str], references: Sequence[str], language: str) -> dict:
    sacre = corpus_sacrebleu(predictions, references, language)
    return {"sacrebleu": sacre["score"], "sacrebleu_signature": sacre["signature"]}


Results = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    """One number: how it is computed and where it shows.

    Computed (in results.json `metrics.raw` / `metrics.no_think`): `sample` scores one
    prediction against its reference and is averaged over samples (and kept per item);
    `corpus` scores the whole set and returns its keys. A number computed elsewhere (leak
    rates, MCQ accuracy) has neither and only a `read`.
    Shown: `read` takes the sweep-table value `<suite>.<name>` from one suite's results
    (`suite` "gen" or "mcq"); `average` adds the across-suite mean as column `column`;
    `report` / `plot` give its position among the report's sweep columns / the trade-off
    plot's panels (0: not shown); `objective` is +1 (maximise) or -1 (minimise) on the
    Pareto front, 0 for none. `overlay` draws another column dotted on its panel.
    """

    name: str
    label: str = ""
    sample: Callable[[str, str], float] | None = None
    corpus: Callable[[Sequence[str], Sequence[str], str], dict[str, object]] | None = None
    read: Callable[[Results], float | None] | None = None
    suite: str = "gen"
    average: bool = True
    report: int = 0
    plot: int = 0
    objective: int = 0
    overlay: tuple[str, str] | None = None
    uncertainty: str | None = None  # its key in results.json's `uncertainty` block

    @property
    def column(self) -> str:
        """The across-suite column: the name itself, `avg_<name>` for MCQ numbers."""
        return self.name if self.suite == "gen" else f"avg_{self.name}"


def raw(key: str) -> Callable[[Results], Any]:
    """A reader: `key` of the metrics on the raw outputs."""
    return lambda results: results["metrics"]["raw"][key]


def no_think(key: str) -> Callable[[Results], Any]:
    """A reader: `key` of the metrics on the outputs with think blocks removed."""
    return lambda results: results["metrics"]["no_think"][key]


def leak(key: str) -> Callable[[Results], Any]:
    """A reader: `key` of the leakage summary."""
    return lambda results: results["leakage"][key]


def _mean_of(key: str) -> Callable[[Results], Any]:
    return lambda results: (results["leakage"][key] or {}).get("mean")


METRICS: tuple[Metric, ...] = (
    Metric(
        "bleu4",
        "BLEU-4 (character-level)",
        sample=sentence_bleu4,
        read=raw("bleu4"),
        report=1,
        plot=1,
        objective=1,
        overlay=("bleu4_no_think", "think removed"),
        uncertainty="metrics.raw.bleu4",
    ),
    Metric("rouge1", sample=lambda p, r: _rouge(p, r)["rouge1"]),
    Metric("rouge2", sample=lambda p, r: _rouge(p, r)["rouge2"]),
    Metric(
        "rougeL",
        sample=lambda p, r: _rouge(p, r)["rougeL"],
        read=raw("rougeL"),
        report=3,
        uncertainty="metrics.raw.rougeL",
    ),
    Metric("sacrebleu", corpus=_sacrebleu),
    Metric(
        "bleu4_no_think", read=no_think("bleu4"), report=2, uncertainty="metrics.no_think.bleu4"
    ),
    Metric(
        "think_tag_rate",
        "think-tag rate",
        read=leak("think_tag_rate"),
        report=4,
        plot=3,
        objective=-1,
        uncertainty="leakage.think_tag_rate",
    ),
    Metric(
        "nonempty_think_rate",
        read=leak("nonempty_think_rate"),
        uncertainty="leakage.nonempty_think_rate",
    ),
    Metric(
        "marker_rate",
        "reasoning-marker rate",
        read=leak("marker_rate"),
        report=5,
        plot=4,
        uncertainty="leakage.marker_rate",
    ),
    Metric(
        "len_tokens",
        read=_mean_of("length_tokens"),
        report=6,
        uncertainty="leakage.length_tokens.mean",
    ),
    Metric("len_chars", read=_mean_of("length_chars"), average=False),
    Metric(
        "accuracy",
        "multiple-choice accuracy",
        read=lambda results: results["accuracy"],
        suite="mcq",
        report=7,
        plot=2,
        objective=1,
        uncertainty="accuracy",
    ),
    Metric(
        "accuracy_norm",
        read=lambda results: results["accuracy_norm"],
        suite="mcq",
        average=False,
        uncertainty="accuracy_norm",
    ),
)


def table_metrics(suite: str | None = None) -> list[Metric]:
    """The metrics with a sweep-table column, of one suite kind or all, in METRICS order."""
    return [m for m in METRICS if m.read is not None and suite in (None, m.suite)]


def report_columns() -> list[str]:
    """The report's sweep columns, in their `report` order."""
    return [m.column for m in sorted((m for m in METRICS if m.report), key=lambda m: m.report)]


def plot_panels() -> list[Metric]:
    """The trade-off plot's panels, in their `plot` order."""
    return sorted((m for m in METRICS if m.plot), key=lambda m: m.plot)


def pareto_objectives() -> tuple[tuple[str, int], ...]:
    """(column, +1 to maximise or -1 to minimise) of every Pareto objective."""
    return tuple((m.column, m.objective) for m in METRICS if m.objective)


def sample_scores(prediction: str, reference: str) -> dict[str, float]:
    return dict(_sample_scores(prediction, reference, METRICS))


@lru_cache(maxsize=1 << 14)
def _sample_scores(
    prediction: str, reference: str, registry: tuple[Metric, ...]
) -> tuple[tuple[str, float], ...]:
    """Every per-sample metric of one pair, computed once: an output with no think block is
    scored again as its stripped self, and a sweep's neighbouring points repeat outputs.
    The registry is part of the key, so a metric added to it is computed, not missed."""
    return tuple((m.name, m.sample(prediction, reference)) for m in registry if m.sample)


def generation_metrics(
    predictions: Sequence[str], references: Sequence[str], language: str
) -> tuple[dict[str, object], list[dict[str, float]]]:
    """Corpus-level metrics and per-sample scores of one set of predictions."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    per_item = [sample_scores(p, r) for p, r in zip(predictions, references, strict=True)]
    summary: dict[str, object] = {}
    for metric in METRICS:
        if metric.sample is not None:
            scores = [s[metric.name] for s in per_item]
            summary[metric.name] = float(np.mean(scores)) if per_item else 0.0
        if metric.corpus is not None:
            summary.update(metric.corpus(predictions, references, language))
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
