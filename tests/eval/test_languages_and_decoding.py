"""Mixed English/Chinese files: sacreBLEU's tokenizer per record; generations scored as
decoded with skip_special_tokens=True (the raw text kept)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh
from transformers import AutoTokenizer

from medmerge.eval.backends.base import decode_generation
from medmerge.eval.generation import score_outputs
from medmerge.eval.uncertainty import sacrebleu_statistic

PREDICTIONS = ["The patient has anemia.", "患者需要多休息和补液。", "Take aspirin daily."]
REFERENCES = [
    "The patient has iron deficiency anemia.",
    "患者应该多休息并补充液体。",
    "Aspirin daily.",
]


def test_mixed_file_uses_each_records_tokenizer():
    results, items = score_outputs(PREDICTIONS, REFERENCES, "auto", None, None)
    assert results["metrics"]["language"] == "mixed"
    assert results["metrics"]["languages"] == {"en": 2, "zh": 1}
    assert [i["language"] for i in items] == ["en", "zh", "en"]
    tokenizers = [Tokenizer13a(), TokenizerZh(), Tokenizer13a()]
    preds = [t(p) for t, p in zip(tokenizers, PREDICTIONS, strict=True)]
    refs = [t(r) for t, r in zip(tokenizers, REFERENCES, strict=True)]
    expected = sacrebleu.corpus_bleu(preds, [refs], tokenize="none").score
    assert results["metrics"]["raw"]["sacrebleu"] == pytest.approx(expected)
    one_tokenizer = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES], tokenize="13a").score
    assert expected != pytest.approx(one_tokenizer)
    statistic = sacrebleu_statistic(PREDICTIONS, REFERENCES, ["en", "zh", "en"])
    assert statistic([0, 1, 2]) == pytest.approx(expected)


def test_one_language_files_are_unchanged():
    zh = ["我们是中国人。", "他很好。"]
    refs = ["我们是中国的人。", "他很好啊。"]
    results, _ = score_outputs(zh, refs, "auto", None, None)
    assert results["metrics"]["language"] == "zh"
    expected = sacrebleu.corpus_bleu(zh, [refs], tokenize="zh").score
    assert results["metrics"]["raw"]["sacrebleu"] == pytest.approx(expected)


def test_generation_scored_without_special_tokens():
    folder = Path(__file__).resolve().parents[1] / "goldens" / "lm_eval" / "tiny_model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("Rest and fluids.", add_special_tokens=False)["input_ids"]
    special = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    generation = decode_generation(tokenizer, [*ids, special, *ids, stop, *ids], [stop])
    assert "<|endoftext|>" in generation.text
    assert generation.scored_text == tokenizer.decode([*ids, *ids], skip_special_tokens=True)
    assert generation.tokens == 2 * len(ids) + 1 and generation.stopped
