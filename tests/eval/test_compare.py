"""`medmerge compare`: p-values and CIs equal an independent computation on the same records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sacrebleu
from scipy import stats as sps

from medmerge.cli import main
from medmerge.eval.generation import score_outputs


def write_run(folder, command, records, results=None):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"command": command, **(results or {})}))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(folder)


def mcq_records(correct, ids=None):
    ids = ids or range(len(correct))
    return [
        {"id": str(i), "subject": "anatomy", "correct": c, "correct_norm": c}
        for i, c in zip(ids, correct, strict=True)
    ]


def test_mcq_compare_is_exact_mcnemar_on_shared_items(tmp_path, capsys):
    rng = np.random.default_rng(1)
    a = [bool(x) for x in rng.random(60) < 0.5]
    b = [bool(x) for x in rng.random(60) < 0.7]
    run_a = write_run(tmp_path / "a", "mcq", mcq_records(a))
    # b lacks the first 10 items: the pairing is on the 50 shared ones
    run_b = write_run(tmp_path / "b", "mcq", mcq_records(b[10:], ids=range(10, 60)))
    assert main(["compare", run_a, run_b, "--out", str(tmp_path / "cmp")]) == 0
    report = json.loads((tmp_path / "cmp/compare.json").read_text())
    pair = report["pairs"][0]
    assert (pair["shared"], pair["only_a"], pair["only_b"]) == (50, 10, 0)
    sa, sb = np.array(a[10:]), np.array(b[10:])
    only_a, only_b = int((sa & ~sb).sum()), int((sb & ~sa).sum())
    expected = sps.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    accuracy = pair["tests"]["accuracy"]
    assert accuracy["p_value"] == pytest.approx(expected, rel=1e-10)
    assert accuracy["difference"] == pytest.approx(sb.mean() - sa.mean())
    assert accuracy["p_holm"] == pytest.approx(min(1.0, 2 * expected))
    assert "50 shared items" in capsys.readouterr().out


def test_compare_refuses_runs_without_shared_items(tmp_path, capsys):
    run_a = write_run(tmp_path / "a", "mcq", mcq_records([True, False]))
    run_b = write_run(tmp_path / "b", "mcq", mcq_records([True, True], ids=["x", "y"]))
    assert main(["compare", run_a, run_b, "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "share no items" in err[0]
    assert not (tmp_path / "cmp").exists()


def gen_run(folder, predictions, references):
    results, items = score_outputs(predictions, references, "en", None, None)
    records = [
        {"id": str(i), "prediction": p, "reference": r, **s}
        for i, (p, r, s) in enumerate(zip(predictions, references, items, strict=True))
    ]
    return write_run(folder, "score", records, results)


def test_gen_compare_is_a_paired_bootstrap_with_the_same_seed(tmp_path):
    refs = [f"the patient needs {w} rest and fluids" for w in ("more", "less", "some", "no")] * 3
    preds_a = [f"patient needs rest {i}" for i in range(12)]
    preds_b = [r if i % 3 else "fluids" for i, r in enumerate(refs)]
    run_a, run_b = gen_run(tmp_path / "a", preds_a, refs), gen_run(tmp_path / "b", preds_b, refs)
    out = tmp_path / "cmp"
    assert main(["compare", run_a, run_b, "--out", str(out), "--resamples", "200"]) == 0
    tests = json.loads((out / "compare.json").read_text())["pairs"][0]["tests"]
    indices = np.random.default_rng(0).integers(0, 12, (200, 12))
    deltas = [
        sacrebleu.corpus_bleu([preds_b[i] for i in row], [[refs[i] for i in row]]).score
        - sacrebleu.corpus_bleu([preds_a[i] for i in row], [[refs[i] for i in row]]).score
        for row in indices
    ]
    assert tests["sacrebleu"]["stderr"] == pytest.approx(np.std(deltas, ddof=1))
    assert tests["sacrebleu"]["ci_low"] == pytest.approx(np.percentile(deltas, 2.5))
    below, above = sum(d <= 0 for d in deltas), sum(d >= 0 for d in deltas)
    assert tests["sacrebleu"]["p_value"] == pytest.approx(
        min(1, 2 * min(below + 1, above + 1) / 201)
    )
    assert set(tests) >= {"bleu4", "rougeL", "think_tag_rate", "marker_rate"}
