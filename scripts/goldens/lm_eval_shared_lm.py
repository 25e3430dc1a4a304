"""lm-eval 0.4.13 side of the check on the real sample files in /work/shared/data (HEAD-QA dev,
PubMedQA non-test, CMMLU dev): contexts and tiny-model predictions to /tmp/b15_real/lm.json.
Run: /work/venvs/lm-eval/bin/python scripts/goldens/lm_eval_shared_lm.py; then
.venv/bin/python scripts/goldens/lm_eval_shared_check.py compares medmerge with it.
"""

import csv
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lm_eval_tasks as g
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

D = Path("/work/shared/data")
hf = Path(tempfile.mkdtemp())
specs = {}
# HEAD-QA dev (official layout) -> HF rows
data = json.loads((D / "mcq_en/dev_HEAD_EN.json").read_text())
rows = [
    {"name": n, "year": e.get("year"), "category": e.get("category"), **q}
    for n, e in data["exams"].items()
    for q in e["data"]
]
rows = rows[:60]
for x in rows:
    x["ra"] = int(x["ra"])
    x["qid"] = int(x["qid"])
    x["answers"] = [{"aid": int(a["aid"]), "atext": a["atext"]} for a in x["answers"]]
g.write_jsonl(hf / "headqa.jsonl", rows)
specs["headqa_en"] = {"test": str(hf / "headqa.jsonl")}
# PubMedQA non-test
pq = json.loads((D / "qa_en/pubmedqa_pqal_nontest.json").read_text())
prow = [{"pubid": int(p), **r} for p, r in list(pq.items())[:60]]
g.write_jsonl(hf / "pubmedqa.jsonl", prow)
specs["pubmedqa"] = {"test": str(hf / "pubmedqa.jsonl")}
for subject in ["anatomy", "clinical_knowledge", "virology"]:
    with open(D / f"mcq_zh/cmmlu_medical_dev/{subject}.csv", encoding="utf-8") as h:
        r = list(csv.DictReader(h))
    g.write_jsonl(hf / f"c_{subject}.jsonl", [{k: v for k, v in x.items() if k} for x in r])
    specs[f"cmmlu_{subject}"] = {"test": str(hf / f"c_{subject}.jsonl")}
tm = TaskManager()
model = HFLM(
    pretrained="/work/main/tests/goldens/lm_eval/tiny_model",
    device="cpu",
    dtype="float32",
    batch_size=1,
)
out = {}
for name, files in specs.items():
    first = files["test"]
    override = {
        "task": name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {
            "data_files": {"train": first, "validation": first, "dev": first, **files}
        },
        "test_split": "test",
    }
    task = tm._factory.build(tm._entry(name), overrides=override, registry=tm._index)
    entries = g.requests_of(task, 0)
    g.predictions(task, model, entries)
    out[name] = entries
Path("/tmp/b15_real").mkdir(exist_ok=True)
Path("/tmp/b15_real/lm.json").write_text(json.dumps(out, ensure_ascii=False))
print({k: len(v) for k, v in out.items()})
