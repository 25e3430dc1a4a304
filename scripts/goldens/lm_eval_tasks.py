"""Goldens of lm-evaluation-harness 0.4.13's multiple-choice tasks, made by lm-eval itself.

Run in a venv holding lm-eval (never the project's):
    python -m venv /work/venvs/lm-eval && /work/venvs/lm-eval/bin/pip install torch==2.13.0
    /work/venvs/lm-eval/bin/pip install "lm-eval[hf]==0.4.13"  # plain lm-eval brings no transformers
    /work/venvs/lm-eval/bin/python scripts/goldens/lm_eval_tasks.py

It writes small files in each benchmark's OFFICIAL layout to tests/goldens/lm_eval/data/
(what medmerge reads), the same items in the Hugging Face layout lm-eval's task reads to a
temporary folder, loads each task by name with its dataset overridden to those local files,
and saves per task the contexts and continuations lm-eval builds (zero-shot, and first_n
few-shot where the task defines it) and the per-item acc / acc_norm predictions of the
committed tiny model (tests/goldens/lm_eval/tiny_model) scored by lm-eval's HFLM.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

GOLDENS = Path(__file__).resolve().parents[2] / "tests" / "goldens" / "lm_eval"
FEWSHOT = 2

MEDQA = [
    (
        "A 23-year-old woman has fever and dysuria. What is the most likely organism?",
        ["Escherichia coli", "Staphylococcus aureus", "Proteus mirabilis", "Klebsiella"],
        0,
    ),
    (
        "Which vitamin deficiency causes scurvy?",
        ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"],
        2,
    ),
    (
        "A child presents with a barking cough and stridor. Diagnosis?",
        ["Epiglottitis", "Croup", "Asthma", "Pneumonia"],
        1,
    ),
    (
        "What is the first-line treatment of anaphylaxis?",
        [
            "Oral antihistamine",
            "Intravenous steroids",
            "Nebulised salbutamol",
            "Intramuscular epinephrine",
        ],
        3,
    ),
]
EXTRA_OPTION = ["Observation", "Antibiotics", "Surgery", "Reassurance"]
MEDMCQA = [
    ("Which nerve supplies the deltoid muscle?", ["Radial", "Axillary", "Ulnar", "Median"], 1),
    ("Normal adult hemoglobin is mainly:", ["HbA", "HbF", "HbA2", "HbS"], 0),
    (
        "Drug of choice for absence seizures:",
        ["Phenytoin", "Carbamazepine", "Ethosuximide", "Phenobarbital"],
        2,
    ),
]
MMLU_TEST = [
    ("Which bone is the longest in the human body? ", ["Tibia", "Femur", "Humerus", "Fibula"], 1),
    ("The heart has how many chambers?", ["Two", "Three", "Four", "Five"], 2),
    ("Which organ produces insulin?", ["Liver", "Pancreas", "Spleen", "Kidney"], 1),
]
MMLU_DEV = [
    ("What is the largest organ of the body?", ["Skin", "Liver", "Brain", "Lung"], 0),
    ("How many pairs of ribs do humans have?", ["10", "11", "12", "13"], 2),
    (
        "Which cells carry oxygen?",
        ["Platelets", "Neutrophils", "Lymphocytes", "Red blood cells"],
        3,
    ),
]
CMMLU_TEST = [
    ("人体最大的器官是什么？", ["皮肤", "肝脏", "大脑", "肺"], 0),
    ("心脏有几个腔室？", ["两个", "三个", "四个", "五个"], 2),
    ("胰岛素由哪个器官分泌？ ", ["肝脏", "胰腺", "脾脏", "肾脏"], 1),
]
CMMLU_DEV = [
    ("人体最长的骨头是？", ["胫骨", "股骨", "肱骨", "腓骨"], 1),
    ("红细胞的主要功能是？", ["凝血", "运输氧气", "免疫", "消化"], 1),
    ("成人有多少块骨头？", ["206", "186", "226", "196"], 0),
]
PUBMEDQA = {
    "10001": (
        "Does aspirin reduce the risk of stroke in adults?",
        ["Aspirin was given to 500 adults.", "Strokes were fewer in the aspirin group."],
        "yes",
    ),
    "10002": (
        "Is coffee associated with liver cancer?",
        ["A cohort of 1000 drinkers was followed for ten years."],
        "maybe",
    ),
    "10003": (
        "Do antibiotics shorten viral colds?",
        ["Patients with colds received antibiotics or placebo.", "Duration was equal."],
        "no",
    ),
}
HEADQA = [
    ("What is the pH of normal arterial blood?", ["6.8", "7.0", "7.4", "7.8", "8.0"], 3),
    ("Which enzyme digests starch?", ["Pepsin", "Amylase", "Lipase", "Trypsin"], 2),
    ("The main extracellular cation is:", ["Potassium", "Sodium", "Calcium", "Magnesium"], 2),
]
MMLU_SUBJECTS = [
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
    "nutrition",
    "virology",
]
CMMLU_SUBJECTS = [
    "anatomy",
    "clinical_knowledge",
    "college_medicine",
    "genetics",
    "nutrition",
    "traditional_chinese_medicine",
    "virology",
]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return str(path)


def write_csv(path: Path, header: list[str] | None, rows: list[list[str]]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def medqa(official: Path, hf: Path, letters: str) -> dict:
    """Official MedQA (question, options{A..}, answer_idx) and GBaker's HF layout."""
    rows, hf_rows = [], []
    for i, (question, options, answer) in enumerate(MEDQA):
        options = [*options, EXTRA_OPTION[i]][: len(letters)]
        rows.append(
            {
                "question": question,
                "answer": options[answer],
                "options": dict(zip(letters, options, strict=True)),
                "meta_info": "step1",
                "answer_idx": letters[answer],
            }
        )
        hf_rows.append(
            {
                "id": str(i),
                "sent1": question,
                "label": answer,
                **{f"ending{k}": o for k, o in enumerate(options)},
            }
        )
    write_jsonl(official / "test.jsonl", rows)
    return {"test": write_jsonl(hf / "test.jsonl", hf_rows)}


def medmcqa(official: Path, hf: Path) -> dict:
    rows = [
        {
            "id": f"m{i}",
            "question": q,
            "opa": o[0],
            "opb": o[1],
            "opc": o[2],
            "opd": o[3],
            "cop": a,
            "choice_type": "single",
            "exp": "",
            "subject_name": "Anatomy",
            "topic_name": None,
        }
        for i, (q, o, a) in enumerate(MEDMCQA)
    ]
    write_jsonl(official / "dev.json", rows)  # the HF release: cop counts from 0
    return {"validation": write_jsonl(hf / "validation.jsonl", rows)}


def mmlu(official: Path, hf: Path, subject: str) -> dict:
    """Official MMLU CSVs (no header: question,A,B,C,D,answer) and cais/mmlu's HF rows."""
    files = {}
    for split, items in (("test", MMLU_TEST), ("dev", MMLU_DEV)):
        write_csv(
            official / f"{subject}_{split}.csv", None, [[q, *o, "ABCD"[a]] for q, o, a in items]
        )
        files[split] = write_jsonl(
            hf / f"{subject}_{split}.jsonl",
            [{"question": q, "subject": subject, "choices": o, "answer": a} for q, o, a in items],
        )
    return files


def cmmlu(official: Path, hf: Path, subject: str) -> dict:
    files = {}
    for split, items in (("test", CMMLU_TEST), ("dev", CMMLU_DEV)):
        rows = [["", q, *o, "ABCD"[a]] for q, o, a in items]
        write_csv(
            official / split / f"{subject}.csv",
            ["", "Question", "A", "B", "C", "D", "Answer"],
            rows,
        )
        files[split] = write_jsonl(
            hf / f"{subject}_{split}.jsonl",
            [
                {"Question": q, "A": o[0], "B": o[1], "C": o[2], "D": o[3], "Answer": "ABCD"[a]}
                for q, o, a in items
            ],
        )
    return files


def pubmedqa(official: Path, hf: Path) -> dict:
    data = {
        pmid: {
            "QUESTION": q,
            "CONTEXTS": c,
            "LABELS": ["BACKGROUND"] * len(c),
            "MESHES": [],
            "YEAR": "2001",
            "reasoning_required_pred": d,
            "reasoning_free_pred": d,
            "final_decision": d,
            "LONG_ANSWER": f"The answer is {d}.",
        }
        for pmid, (q, c, d) in PUBMEDQA.items()
    }
    official.mkdir(parents=True, exist_ok=True)
    (official / "ori_pqal.json").write_text(json.dumps(data, indent=1), "utf-8")
    rows = [{"pubid": int(p), **r} for p, r in data.items()]
    return {"test": write_jsonl(hf / "test.jsonl", rows)}


def headqa(official: Path, hf: Path) -> dict:
    questions = [
        {
            "qid": i + 1,
            "qtext": q,
            "ra": a,
            "image": "",
            "answers": [{"aid": k + 1, "atext": t} for k, t in enumerate(o)],
        }
        for i, (q, o, a) in enumerate(HEADQA)
    ]
    exam = {"name": "Cuaderno_2013_1_B", "year": "2013", "category": "biology", "data": questions}
    official.mkdir(parents=True, exist_ok=True)
    (official / "HEAD_EN.json").write_text(json.dumps({"exams": {exam["name"]: exam}}), "utf-8")
    rows = [{"name": exam["name"], "year": "2013", "category": "biology", **q} for q in questions]
    return {"test": write_jsonl(hf / "test.jsonl", rows)}


def task_specs(hf_root: Path) -> dict[str, tuple[dict, dict]]:
    """task name -> (lm-eval overrides, what the golden records about the official files)."""
    data = GOLDENS / "data"
    specs = {}

    def add(name, files, official, fewshot_split=None, **extra):
        # splits the YAML names but zero-shot never reads (train, validation) point at the
        # evaluated file, so that the task can be built
        first = next(iter(files.values()))
        kwargs = {"data_files": {"train": first, "validation": first, **files}}
        override = {
            "task": name,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": kwargs,
            **extra,
        }
        specs[name] = (override, {"data": official, "fewshot": fewshot_split})

    add(
        "medqa_4options",
        medqa(data / "medqa4", hf_root / "medqa4", "ABCD"),
        ["medqa4/test.jsonl"],
        test_split="test",
    )
    five = medqa(data / "medqa5", hf_root / "medqa5", "ABCDE")
    add("medqa_5options", five, ["medqa5/test.jsonl"], test_split="test")
    add("medmcqa", medmcqa(data / "medmcqa", hf_root / "medmcqa"), ["medmcqa/dev.json"])
    add(
        "pubmedqa",
        pubmedqa(data / "pubmedqa", hf_root / "pubmedqa"),
        ["pubmedqa/ori_pqal.json"],
        dataset_name=None,
    )
    add("headqa_en", headqa(data / "headqa", hf_root / "headqa"), ["headqa/HEAD_EN.json"])
    for subject in MMLU_SUBJECTS:
        add(
            f"mmlu_{subject}",
            mmlu(data / "mmlu", hf_root / "mmlu", subject),
            [f"mmlu/{subject}_test.csv"],
            fewshot_split=f"mmlu/{subject}_dev.csv",
        )
    for subject in CMMLU_SUBJECTS:
        add(
            f"cmmlu_{subject}",
            cmmlu(data / "cmmlu", hf_root / "cmmlu", subject),
            [f"cmmlu/test/{subject}.csv"],
            fewshot_split=f"cmmlu/dev/{subject}.csv",
        )
    return specs


def five_option_config(override: dict) -> dict:
    """lm-eval 0.4.13 has no 5-option MedQA task: medqa_4options' prompt with a fifth letter."""
    text = (
        "Question: {{sent1}}\nA. {{ending0}}\nB. {{ending1}}\nC. {{ending2}}\n"
        "D. {{ending3}}\nE. {{ending4}}\nAnswer:"
    )
    return {
        **override,
        "task": "medqa_5options",
        "dataset_path": "json",
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": text,
        "doc_to_target": "label",
        "doc_to_choice": ["A", "B", "C", "D", "E"],
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
    }


def requests_of(task, num_fewshot: int) -> list[dict]:
    from lm_eval.api.instance import Instance  # noqa: F401  (the objects built below)

    task.set_fewshot_seed(1234)
    task.config.num_fewshot = num_fewshot
    task.build_all_requests(limit=None, rank=0, world_size=1)
    by_doc: dict[int, dict] = {}
    for instance in task.instances:
        entry = by_doc.setdefault(instance.doc_id, {"doc_id": instance.doc_id, "continuations": []})
        entry["context"] = instance.arguments[0]
        entry["continuations"].append(instance.arguments[1])
        entry["target"] = task.doc_to_target(instance.doc)
        entry["choices"] = task.doc_to_choice(instance.doc)
    return [by_doc[k] for k in sorted(by_doc)]


def predictions(task, model, entries: list[dict]) -> None:
    """acc and acc_norm predictions as lm-eval's multiple_choice process_results takes them."""
    from lm_eval.api.instance import Instance

    requests = [
        Instance("loglikelihood", {}, (e["context"], c), i, metadata=(task.task_name, 0, 1))
        for e in entries
        for i, c in enumerate(e["continuations"])
    ]
    values = iter(model.loglikelihood(requests))
    for entry in entries:
        lls = [next(values)[0] for _ in entry["continuations"]]
        lengths = [float(len(c)) for c in entry["choices"]]
        entry["loglikelihoods"] = lls
        entry["pred"] = max(range(len(lls)), key=lls.__getitem__)
        normed = [ll / n for ll, n in zip(lls, lengths, strict=True)]
        entry["pred_norm"] = max(range(len(normed)), key=normed.__getitem__)


def main() -> None:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager()
    model = HFLM(
        pretrained=str(GOLDENS / "tiny_model"), device="cpu", dtype="float32", batch_size=1
    )
    with tempfile.TemporaryDirectory() as hf_root:
        for name, (override, record) in task_specs(Path(hf_root)).items():
            if name == "medqa_5options":  # an inline task, built from its config alone
                task = next(iter(manager.load(five_option_config(override))["tasks"].values()))
            else:  # the registered task's YAML, its dataset replaced by the local files
                entry = manager._entry(name)
                task = manager._factory.build(entry, overrides=override, registry=manager._index)
            golden = {"task": name, "lm_eval_version": lm_eval.__version__, **record}
            golden["zero_shot"] = requests_of(task, 0)
            predictions(task, model, golden["zero_shot"])
            if record["fewshot"]:
                golden["few_shot"] = {"k": FEWSHOT, "items": requests_of(task, FEWSHOT)}
            out = GOLDENS / f"{name}.json"
            out.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", "utf-8")
            print(f"{out}: {len(golden['zero_shot'])} items")


if __name__ == "__main__":
    main()
