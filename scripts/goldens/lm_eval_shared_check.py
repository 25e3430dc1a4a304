"""medmerge side of scripts/goldens/lm_eval_shared_lm.py: per task, how many contexts, acc and
acc_norm predictions equal lm-eval's on the real sample files (a check, not a test: tests may
not read /work/shared)."""

import json

from medmerge.eval.backends import load_backend
from medmerge.eval.config import EngineSettings, ModelSpec
from medmerge.eval.lm_eval_tasks import get_task, score_harness
from medmerge.eval.mcq_data import load_mcq

D = "/work/shared/data"
with open("/tmp/b15_real/lm.json", encoding="utf-8") as handle:
    gold = json.load(handle)
backend = load_backend(
    ModelSpec(model="/work/main/tests/goldens/lm_eval/tiny_model"),
    EngineSettings(device="cpu", dtype="fp32"),
)
files = {
    "headqa_en": f"{D}/mcq_en/dev_HEAD_EN.json",
    "pubmedqa": f"{D}/qa_en/pubmedqa_pqal_nontest.json",
    **{
        f"cmmlu_{s}": f"{D}/mcq_zh/cmmlu_medical_dev/{s}.csv"
        for s in ["anatomy", "clinical_knowledge", "virology"]
    },
}
for name, path in files.items():
    task = get_task(name)
    items = load_mcq([path], task.format)[: len(gold[name])]
    recs = score_harness(task, items, [], backend)
    g = gold[name]
    same_ctx = sum(task.context(i) == e["context"] for i, e in zip(items, g, strict=True))
    same_pred = sum(r["predicted_index"] == e["pred"] for r, e in zip(recs, g, strict=True))
    same_norm = sum(
        r["predicted_index_norm"] == e["pred_norm"] for r, e in zip(recs, g, strict=True)
    )
    print(
        f"{name}: contexts {same_ctx}/{len(g)}, acc predictions {same_pred}/{len(g)}, acc_norm predictions {same_norm}/{len(g)}"
    )
