"""lm-evaluation-harness 0.4.x's multiple-choice tasks by name, as data on medmerge's McqItems.

Each task is lm-eval's prompt: its description, `doc_to_text`, the choices scored after the
target delimiter " ", and (MMLU, CMMLU) few-shot exemplars taken first_n from the dev split
in file order, each `doc_to_text + " " + choice[target]`, joined and closed by the fewshot
delimiter "\n\n". acc is the argmax of the summed log-likelihoods, acc_norm of the
log-likelihood per character of the choice (without the delimiter), as lm-eval computes
them. tests/goldens/lm_eval/ holds the contexts lm-eval 0.4.13 itself built on the official
files (scripts/goldens/lm_eval_tasks.py).

Task names: medqa_4options, medqa_5options (lm-eval has no 5-option task: medqa_4options'
prompt with letter E added), medmcqa, pubmedqa, headqa_en, mmlu_<subject> and
cmmlu_<subject> (lm-eval's English task names; CMMLU's description names the subject in
Chinese, as lm-eval's does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medmerge.errors import ConfigError, unknown_choice
from medmerge.eval.backends import Backend
from medmerge.eval.mcq_formats import LETTERS, McqItem

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"

CMMLU_SUBJECTS_ZH = {
    "agronomy": "农学",
    "anatomy": "解剖学",
    "ancient_chinese": "古汉语",
    "arts": "艺术学",
    "astronomy": "天文学",
    "business_ethics": "商业伦理",
    "chinese_civil_service_exam": "中国公务员考试",
    "chinese_driving_rule": "中国驾驶规则",
    "chinese_food_culture": "中国饮食文化",
    "chinese_foreign_policy": "中国外交政策",
    "chinese_history": "中国历史",
    "chinese_literature": "中国文学",
    "chinese_teacher_qualification": "中国教师资格",
    "clinical_knowledge": "临床知识",
    "college_actuarial_science": "大学精算学",
    "college_education": "大学教育学",
    "college_engineering_hydrology": "大学工程水文学",
    "college_law": "大学法律",
    "college_mathematics": "大学数学",
    "college_medical_statistics": "大学医学统计",
    "college_medicine": "大学医学",
    "computer_science": "计算机科学",
    "computer_security": "计算机安全",
    "conceptual_physics": "概念物理学",
    "construction_project_management": "建设工程管理",
    "economics": "经济学",
    "education": "教育学",
    "electrical_engineering": "电气工程",
    "elementary_chinese": "小学语文",
    "elementary_commonsense": "小学常识",
    "elementary_information_and_technology": "小学信息技术",
    "elementary_mathematics": "初等数学",
    "ethnology": "民族学",
    "food_science": "食品科学",
    "genetics": "遗传学",
    "global_facts": "全球事实",
    "high_school_biology": "高中生物",
    "high_school_chemistry": "高中化学",
    "high_school_geography": "高中地理",
    "high_school_mathematics": "高中数学",
    "high_school_physics": "高中物理学",
    "high_school_politics": "高中政治",
    "human_sexuality": "人类性行为",
    "international_law": "国际法学",
    "journalism": "新闻学",
    "jurisprudence": "法理学",
    "legal_and_moral_basis": "法律与道德基础",
    "logical": "逻辑学",
    "machine_learning": "机器学习",
    "management": "管理学",
    "marketing": "市场营销",
    "marxist_theory": "马克思主义理论",
    "modern_chinese": "现代汉语",
    "nutrition": "营养学",
    "philosophy": "哲学",
    "professional_accounting": "专业会计",
    "professional_law": "专业法学",
    "professional_medicine": "专业医学",
    "professional_psychology": "专业心理学",
    "public_relations": "公共关系",
    "security_study": "安全研究",
    "sociology": "社会学",
    "sports_science": "体育学",
    "traditional_chinese_medicine": "中医中药",
    "virology": "病毒学",
    "world_history": "世界历史",
    "world_religions": "世界宗教",
}

MMLU_MEDICAL = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
    "nutrition",
    "virology",
)


def _lettered(item: McqItem, answer_label: str) -> str:
    options = "".join(f"\n{LETTERS[i]}. {text}" for i, text in enumerate(item.options))
    return f"{item.question.strip()}{options}\n{answer_label}"


def _question_first(item: McqItem, choices_line: str = "") -> str:
    options = "".join(f"{LETTERS[i]}. {text}\n" for i, text in enumerate(item.options))
    return f"Question: {item.question}\n{choices_line}{options}Answer:"


def _pubmedqa_text(item: McqItem) -> str:
    contexts = "\n".join(map(str, item.extra.get("contexts", [])))
    return (
        f"Abstract: {contexts}\nQuestion: {item.extra.get('question_only', item.question)}\nAnswer:"
    )


@dataclass(frozen=True)
class HarnessTask:
    """One lm-eval task: prompt text, choices, description, few-shot rule and option count."""

    name: str
    format: str  # the medmerge loader of the official file
    doc_to_text: Callable[[McqItem], str]
    letters: bool = True  # choices are the letters; else the option texts
    description: str = ""
    first_n_fewshot: bool = False  # few-shot from the dev split in file order (MMLU, CMMLU)
    options: int | None = None  # the number of options every item must have

    def choices(self, item: McqItem) -> list[str]:
        return list(LETTERS[: len(item.options)]) if self.letters else list(item.options)

    def context(self, item: McqItem, shots: Sequence[McqItem] = ()) -> str:
        examples = "".join(
            self.doc_to_text(s)
            + TARGET_DELIMITER
            + self.choices(s)[s.answer_index]
            + FEWSHOT_DELIMITER
            for s in shots
        )
        return self.description + examples + self.doc_to_text(item)

    def continuations(self, item: McqItem) -> list[str]:
        return [TARGET_DELIMITER + choice for choice in self.choices(item)]


def _tasks() -> dict[str, HarnessTask]:
    tasks = [
        HarnessTask("medqa_4options", "medqa", _question_first, options=4),
        HarnessTask("medqa_5options", "medqa", _question_first, options=5),
        HarnessTask("medmcqa", "medmcqa", lambda i: _question_first(i, "Choices:\n"), options=4),
        HarnessTask("pubmedqa", "pubmedqa", _pubmedqa_text, letters=False),
        HarnessTask("headqa_en", "headqa", lambda i: f"Question: {i.question}\nAnswer:", False),
    ]
    for subject in MMLU_MEDICAL:
        words = subject.replace("_", " ")
        tasks.append(
            HarnessTask(
                f"mmlu_{subject}",
                "mmlu",
                lambda i: _lettered(i, "Answer:"),
                description=f"The following are multiple choice questions (with answers) about {words}.\n\n",
                first_n_fewshot=True,
                options=4,
            )
        )
    for subject, chinese in CMMLU_SUBJECTS_ZH.items():
        tasks.append(
            HarnessTask(
                f"cmmlu_{subject}",
                "cmmlu",
                lambda i: _lettered(i, "答案："),
                description=f"以下是关于{chinese}的单项选择题，请直接给出正确答案的选项。\n\n",
                first_n_fewshot=True,
                options=4,
            )
        )
    return {task.name: task for task in tasks}


TASKS = _tasks()


def get_task(name: str) -> HarnessTask:
    if name not in TASKS:
        raise ConfigError(unknown_choice("lm-eval task", name, list(TASKS)))
    return TASKS[name]


def fewshot_exemplars(task: HarnessTask, pool: Sequence[McqItem], k: int) -> list[McqItem]:
    """lm-eval's first_n sampler: the first k items of the dev split, in file order."""
    if k == 0:
        return []
    if not task.first_n_fewshot:
        raise ConfigError(
            f"task {task.name}: lm-eval draws its few-shot exemplars at random from the "
            "training split, which medmerge does not reproduce; use --few-shot 0 (the "
            "published zero-shot setting) or an mmlu_/cmmlu_ task"
        )
    if len(pool) < k:
        raise ConfigError(
            f"task {task.name}: --few-shot {k} needs {k} dev items, --few-shot-data has "
            f"{len(pool)}; give the dev split (e.g. {task.name.split('_', 1)[1]}_dev.csv)"
        )
    return list(pool[:k])


def check_items(task: HarnessTask, items: Sequence[McqItem]) -> None:
    """Every item has the task's number of options (MedQA 4 vs 5 files differ)."""
    if task.options is None:
        return
    wrong = [i for i in items if len(i.options) != task.options]
    if wrong:
        raise ConfigError(
            f"{wrong[0].source}: {len(wrong[0].options)} options but task {task.name} has "
            f"{task.options} ({len(wrong)} such items); pick the task matching the file"
        )


def loglik_predictions(
    task: HarnessTask, item: McqItem, loglikelihoods: Sequence[float]
) -> tuple[int, int]:
    """(acc prediction, acc_norm prediction) as lm-eval's multiple_choice process_results."""
    lengths = [float(len(choice)) for choice in task.choices(item)]
    normed = [ll / n for ll, n in zip(loglikelihoods, lengths, strict=True)]
    return (
        max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__),
        max(range(len(normed)), key=normed.__getitem__),
    )


def score_harness(
    task: HarnessTask, items: Sequence[McqItem], shots: Sequence[McqItem], backend: Backend
) -> list[dict[str, Any]]:
    """One record per item (as `eval.mcq.score_loglik` writes them) with lm-eval's prompts."""
    from medmerge.eval.mcq import loglik_record, option_loglikelihoods

    contexts = [task.context(item, shots) for item in items]
    conts = [task.continuations(item) for item in items]
    records = []
    for item, context, continuations, scores in zip(
        items, contexts, conts, option_loglikelihoods(backend, contexts, conts), strict=True
    ):
        predicted, predicted_norm = loglik_predictions(task, item, scores)
        records.append(
            loglik_record(item, context, continuations, scores, predicted, predicted_norm)
        )
    return records
