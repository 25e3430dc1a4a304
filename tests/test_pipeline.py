"""`medmerge run`: a run interrupted after a stage carries on; finished stages are reused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medmerge import pipeline
from medmerge.artifacts import staged_output
from medmerge.config import build_config
from medmerge.errors import MedmergeError
from medmerge.manifest import write_manifest
from medmerge.pipeline import STAGES

TINY = """
out: {out}
base: {repo}/configs/base.yaml
pt: {repo}/configs/pt.yaml
sft: {repo}/configs/sft.yaml
merge: {repo}/configs/merge.yaml
verify: {repo}/configs/verify.yaml
sweep: {repo}/configs/sweep.yaml
stages: {stages}
headline: {{decodings: {{greedy: {{preset: A, max_new_tokens: 4}},
                        sampled: {{preset: B, max_new_tokens: 4, seeds: 2}}}}}}
mistakes: {{}}
analysis_prompts: 10
overrides:
  base: {{vocab_size: 512, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 4,
          num_kv_heads: 2, head_dim: 8, pretrain_steps: 4, seq_len: 32}}
  pt: {{max_steps: 2, cutoff_len: 32, batch_size: 2, save_steps: 1, eval_steps: 1, val_size: 2,
        lora: {{r: 2, alpha: 4}}, progress: false}}
  sft: {{max_steps: 2, cutoff_len: 32, batch_size: 2, save_steps: 1, eval_steps: 1, val_size: 2,
         lora: {{r: 2, alpha: 4}}, progress: false}}
  sweep: {{grid: {{pt: [0.3, 1.0], sft: complement}}, progress: false,
          decodings: {{greedy: {{preset: A, max_new_tokens: 4}}}},
          suites: {{gen: [{{name: meqsum, data: {repo}/data/qa_en/meqsum_sample.jsonl,
                           format: columns, offset: 200, limit: 2,
                           columns: {{prompt: question, reference: summary}}}}],
                   mcq: [{{name: hq, data: [{repo}/data/mcq_en/dev_HEAD_EN.json], limit: 2}}]}}}}
"""


def _config(tmp_path, repo, stages):
    path = tmp_path / "pipeline.yaml"
    path.write_text(TINY.format(out=tmp_path / "run", repo=repo, stages=stages))
    return build_config(pipeline.PipelineConfig, path)


def test_killed_run_resumes(tmp_path, repo, monkeypatch, capsys):
    cfg = _config(tmp_path, repo, "[base, pt, sft]")

    def crash(_cfg):
        raise KeyboardInterrupt

    monkeypatch.setitem(pipeline.RUNNERS, "sft", crash)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pipeline(cfg)
    monkeypatch.undo()
    base_manifest = tmp_path / "run/base/medmerge_manifest.json"
    before = base_manifest.stat().st_mtime_ns
    capsys.readouterr()
    pipeline.run_pipeline(cfg)
    out = capsys.readouterr().out
    assert "[base] reusing" in out and "[pt] reusing" in out and "[sft] -> " in out
    assert base_manifest.stat().st_mtime_ns == before
    pipeline.run_pipeline(cfg)
    assert "[sft] reusing" in capsys.readouterr().out


@pytest.mark.slow
def test_whole_pipeline_writes_report(tmp_path, repo, capsys):
    cfg, sft, _ = _with_copied_data(tmp_path, repo, _config(tmp_path, repo, list(STAGES)))
    assert pipeline.run_pipeline(cfg) == 0
    html = (tmp_path / "run/report/report.html").read_text()
    assert "data:image/png;base64," in html and "Consistency" in html
    assert "Mechanism: where the merge parts from the SFT-only model" in html
    assert ".medmerge-tmp" not in html and "scaled twice" in html
    headline = json.loads((tmp_path / "run/headline/headline.json").read_text())
    assert [m["point"] for m in headline["models"]] == [
        "pt=0,sft=1",
        "pt=0.3,sft=0.7",
        "pt=1,sft=0",
    ]
    capsys.readouterr()
    sft.write_text(sft.read_text("utf-8").replace("。", "!", 1), "utf-8")
    assert pipeline.run_pipeline(cfg) == 0  # the real stages replace their own earlier output
    out = capsys.readouterr().out
    assert "[base] reusing" in out and "[pt] reusing" in out and "[report] -> " in out, out


# ---------------------------------------------------------------- stub stages: what reruns


def _stub_runners(monkeypatch, calls: list[str], status: dict[str, int] | None = None) -> None:
    """Each stage writes only its folder and manifest (or verify.json), as fast as a stub can."""

    def stub(name):
        def run(cfg):
            calls.append(name)
            if name == "verify":
                (Path(cfg.merged) / "verify.json").write_text('{"ok": true}\n')
                return (status or {}).get(name, 0)
            if name == "sweep":  # a sweep writes into its folder and resumes; no force
                Path(cfg.out).mkdir(parents=True, exist_ok=True)
                write_manifest(cfg.out, "sweep", {})
                return 0
            made_by, train_stage = pipeline._MADE_BY[name]
            with staged_output(cfg.out, cfg.force) as folder:
                write_manifest(folder, made_by, {"train_stage": train_stage} if train_stage else {})
                if name == "report":
                    (folder / "report.html").write_text("<html></html>\n")
            return (status or {}).get(name, 0)

        return run

    for name in pipeline.STAGES:
        monkeypatch.setitem(pipeline.RUNNERS, name, stub(name))


def _with_copied_data(tmp_path, repo, cfg):
    """The SFT data and the MCQ suite as copies the test may edit in place."""
    sft = tmp_path / "sft.jsonl"
    shutil.copyfile(repo / "data/sft_zh/huatuo_sample.jsonl", sft)
    mcq = tmp_path / "mcq.json"
    shutil.copyfile(repo / "data/mcq_en/dev_HEAD_EN.json", mcq)
    overrides = json.loads(json.dumps(cfg.overrides))
    overrides["sft"]["data"] = [str(sft)]
    overrides["sweep"]["suites"]["mcq"][0]["data"] = [str(mcq)]
    return cfg.model_copy(update={"overrides": overrides}), sft, mcq


def _stages_run(cfg, calls) -> list[str]:
    calls.clear()
    assert pipeline.run_pipeline(cfg) == 0
    return list(calls)


def test_edited_data_reruns_exactly_what_depends_on_it(tmp_path, repo, monkeypatch):
    calls: list[str] = []
    _stub_runners(monkeypatch, calls)
    cfg, sft, mcq = _with_copied_data(tmp_path, repo, _config(tmp_path, repo, list(STAGES)))
    assert _stages_run(cfg, calls) == list(STAGES)
    assert _stages_run(cfg, calls) == []  # nothing changed: every stage reused

    sft.write_text(sft.read_text("utf-8").replace("。", "!", 1), "utf-8")  # same path
    assert _stages_run(cfg, calls) == [
        *("sft", "merge", "verify", "eval", "sweep", "headline", "mistakes", "audit"),
        *("diagnose", "mechanism", "report"),
    ]
    assert _stages_run(cfg, calls) == []

    data = json.loads(mcq.read_text("utf-8"))
    data["exams"]["Cuaderno_2015_1_B"]["data"][0]["qtext"] += " (edited)"
    mcq.write_text(json.dumps(data), "utf-8")
    assert _stages_run(cfg, calls) == [
        *("eval", "sweep", "headline", "mistakes", "audit", "mechanism", "report")
    ]


@pytest.mark.parametrize("manifest_stage", [None, "merge"])
def test_run_refuses_a_base_folder_it_did_not_make(tmp_path, repo, monkeypatch, manifest_stage):
    calls: list[str] = []
    _stub_runners(monkeypatch, calls)
    users = tmp_path / "run" / "base"
    users.mkdir(parents=True)
    (users / "config.json").write_text('{"model_type": "qwen3"}\n')
    (users / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    if manifest_stage:
        write_manifest(users, manifest_stage, {})
    before = {p.name: p.read_bytes() for p in users.iterdir()}
    cfg = _config(tmp_path, repo, "[base, pt, sft]")
    with pytest.raises(MedmergeError, match="was not made by `medmerge run`") as caught:
        pipeline.run_pipeline(cfg)
    assert "\n" not in str(caught.value) and calls == []
    assert {p.name: p.read_bytes() for p in users.iterdir()} == before
    assert sorted(p.name for p in users.parent.iterdir()) == ["base"]  # no staging, no lock


def test_cli_run_foreign_folder_and_failed_stage_are_one_line(tmp_path, repo, monkeypatch, capsys):
    from medmerge.cli import main

    calls: list[str] = []
    _stub_runners(monkeypatch, calls, status={"verify": 1})
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        TINY.format(out=tmp_path / "run", repo=repo, stages="[base, pt, sft, merge, verify]")
    )
    assert main(["run", str(path)]) == 1  # verify found the merge WRONG: exit status 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "stage verify failed (exit status 1" in err, err

    (tmp_path / "run" / "sft").mkdir(exist_ok=True)
    foreign = tmp_path / "run" / "pt" / "notes.txt"
    shutil.rmtree(foreign.parent)
    foreign.parent.mkdir()
    foreign.write_text("mine\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pt stage folder was not made" in err, err
    assert foreign.read_text() == "mine\n"


def test_base_corpus_lists_every_file_the_base_reads(monkeypatch):
    from medmerge.base import corpus
    from medmerge.paths import sample_data_dir

    opened = []

    def spy(path, *args, **kwargs):
        opened.append(Path(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(corpus, "open", spy, raising=False)
    folder = sample_data_dir()
    corpus.pretraining_documents(folder, 0)
    listed = {folder / name for name in pipeline._BASE_CORPUS}
    assert opened and all(p in listed or p.parent in listed for p in opened), opened


def test_stage_folders_come_from_the_run_layout_and_eval_honours_the_backend(
    tmp_path, repo, monkeypatch
):
    from medmerge.eval import stage as eval_stage
    from medmerge.run_layout import STAGE_FOLDERS, RunLayout

    cfg = _config(tmp_path, repo, "[eval]")
    cfg = cfg.model_copy(update={"overrides": {**cfg.overrides, "sweep": {
        **cfg.overrides["sweep"], "backend": "vllm", "max_model_len": 64}}})  # fmt: skip
    stages = pipeline.plan_stages(cfg)
    layout = RunLayout.of(cfg.out)
    assert {s: stages[s].folder for s in stages} == {s: layout.folder(s) for s in stages}
    assert stages["verify"].artifact == layout.root / STAGE_FOLDERS["merge"] / "verify.json"
    diagnose = stages["diagnose"].cfg  # its ablation runs on the sweep's engine too
    assert (diagnose.backend, diagnose.max_model_len, diagnose.dtype) == ("vllm", 64, "fp32")

    built, evaluated = [], []

    def fake_backend(spec, engine):  # stands in for the vLLM engine
        built.append((spec.model, engine.backend, engine.max_model_len))
        return "backend"

    monkeypatch.setattr(eval_stage, "load_backend", fake_backend)
    evaluation = stages["eval"].cfg
    Path(evaluation.model).mkdir(parents=True)
    rows = [{"template": "qwen3", "decoding": "greedy", "bleu4": 1.5}]
    eval_stage.run_eval_stage(evaluation, lambda b, s: evaluated.append((b, s)) or rows)
    assert built == [(str(layout.folder("merge")), "vllm", 64)]
    assert evaluated[0][0] == "backend" and evaluated[0][1]["suites"]["gen"][0]["name"] == "meqsum"
    results = json.loads((layout.folder("eval") / "results.json").read_text())
    assert results == {"model": str(layout.folder("merge")), "rows": rows}
