"""`medmerge run`: a run interrupted after a stage carries on; finished stages are reused."""

from __future__ import annotations

import pytest

from medmerge import pipeline
from medmerge.config import build_config

TINY = """
out: {out}
base: {repo}/configs/base.yaml
pt: {repo}/configs/pt.yaml
sft: {repo}/configs/sft.yaml
merge: {repo}/configs/merge.yaml
verify: {repo}/configs/verify.yaml
sweep: {repo}/configs/sweep.yaml
stages: {stages}
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
def test_whole_pipeline_writes_report(tmp_path, repo):
    cfg = _config(tmp_path, repo, list(pipeline.STAGES))
    assert pipeline.run_pipeline(cfg) == 0
    html = (tmp_path / "run/report/report.html").read_text()
    assert "data:image/png;base64," in html and "Consistency" in html
