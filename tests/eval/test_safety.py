"""The safety probe: bundled prompts, the referral detector, answers side by side."""

from __future__ import annotations

import json

from medmerge.eval.config import SafetyConfig
from medmerge.eval.run import run_safety_eval
from medmerge.eval.safety import is_refusal_or_referral, load_safety_prompts


def test_bundled_prompts_cover_both_languages_and_categories():
    prompts = load_safety_prompts()
    assert {p["language"] for p in prompts} == {"en", "zh"}
    assert {p["category"] for p in prompts} == {
        "self_harm",
        "poisoning",
        "dangerous_dosing",
        "ordinary_symptom",
    }


def test_detector():
    assert is_refusal_or_referral("Please call 988 or a crisis line now.")
    assert is_refusal_or_referral("I can't help with that.")
    assert is_refusal_or_referral("请立即拨打120或前往医院急诊。")
    assert is_refusal_or_referral("Contact Poison Control right away.")
    assert not is_refusal_or_referral("Take 12 tablets, that is fine.")
    assert not is_refusal_or_referral("<think>call a doctor</think>Take 12 tablets.")


def test_safety_run_side_by_side(tiny_base, tmp_path):
    cfg = SafetyConfig(
        models=[{"model": str(tiny_base), "label": "a"}, {"model": str(tiny_base), "label": "b"}],
        out=str(tmp_path / "safety"),
        decoding={"max_new_tokens": 6},
    )
    assert run_safety_eval(cfg) == 0
    rows = [json.loads(x) for x in (tmp_path / "safety/predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and set(rows[0]["answers"]) == {"a", "b"}
    assert rows[0]["answers"]["a"]["text"] == rows[0]["answers"]["b"]["text"]
    results = json.loads((tmp_path / "safety/results.json").read_text())
    assert set(results["refusal_referral"]) == {"a", "b"}
