"""The audit finds planted exact duplicates and near-duplicates, and writes a clean copy."""

from __future__ import annotations

import json

from medmerge.audit.leakage import AuditConfig, run_audit, tokens


def test_planted_duplicates_and_near_duplicates(tmp_path):
    long = " ".join(f"word{i}" for i in range(30))
    train = tmp_path / "train.jsonl"
    train.write_text(
        "\n".join(
            json.dumps({"text": t})
            for t in ["The patient has a FEVER, and a cough!", long, "unrelated training text"]
        )
        + "\n"
    )
    near = " ".join(long.split()[5:25]) + " plus new words at the end"
    eval_file = tmp_path / "eval.json"
    eval_file.write_text(
        json.dumps(
            [
                {"question": "the patient has a fever and a cough"},  # exact after normalising
                {"question": near},  # shares 13-grams
                {"question": "a completely different question about dosage"},
            ]
        )
    )
    cfg = AuditConfig(
        train=[str(train)],
        eval=[str(eval_file)],
        out=str(tmp_path / "audit"),
        exclude=str(tmp_path / "clean"),
    )
    assert run_audit(cfg) == 0
    items = [json.loads(x) for x in (tmp_path / "audit/items.jsonl").read_text().splitlines()]
    assert [i["exact_duplicate"] for i in items] == [True, False, False]
    assert items[1]["shared_ngrams"] == 20 - 13 + 1 and 0 < items[1]["overlap"] < 1
    assert [i["flagged"] for i in items] == [True, True, False]
    report = json.loads((tmp_path / "audit/leakage.json").read_text())
    summary = report["eval"][str(eval_file)]
    assert summary["exact_duplicates"] == 1 and summary["with_overlap"] == 2
    assert abs(summary["flagged_pct"] - 200 / 3) < 1e-9
    clean = json.loads((tmp_path / "clean/eval.json").read_text())
    assert clean == [{"question": "a completely different question about dosage"}]


def test_tokens_split_cjk_into_characters():
    assert tokens("Fever，发烧了 Ｈello") == ["fever", "发", "烧", "了", "hello"]
