"""Entry points of the evaluation commands; each writes one results folder and returns an
exit code. A folder holds run_meta.json (written first), predictions.jsonl, results.json
and medmerge_manifest.json; it appears under --out only when complete."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from medmerge.artifacts import staged_output
from medmerge.data.records import iter_json_records
from medmerge.data.templates import get_template
from medmerge.errors import ConfigError, DataError
from medmerge.eval.config import (
    GenEvalConfig,
    McqEvalConfig,
    ModelSpec,
    SafetyConfig,
    ScoreConfig,
)
from medmerge.eval.generation import generate_answers, load_gen_items, score_outputs
from medmerge.eval.lm_eval_tasks import check_items, fewshot_exemplars, get_task, score_harness
from medmerge.eval.mcq import (
    FORMATS,
    McqTask,
    answer_generate,
    few_shot_examples,
    score_loglik,
    summarize,
)
from medmerge.eval.mcq_data import load_mcq
from medmerge.eval.metrics import detect_language
from medmerge.eval.safety import (
    is_refusal_or_referral,
    load_safety_prompts,
    safety_messages,
    summarize_safety,
)
from medmerge.eval.selection import select
from medmerge.eval.session import data_hashes, open_model, run_meta, write_json, write_jsonl
from medmerge.eval.uncertainty import seed_spread, shown
from medmerge.manifest import sha256_file, write_manifest


def _inputs(spec: ModelSpec, data: list[str | None]) -> list[str | None]:
    """What an evaluation reads: its output may be none of these (nor hold one)."""
    return [spec.model, spec.base, *(a.path for a in spec.adapters), *data]


def _finish(
    folder: Path, command: str, cfg: Any, results: dict[str, Any], rows: list[dict]
) -> None:
    write_jsonl(folder / "predictions.jsonl", rows)
    write_json(folder / "results.json", {**results, "command": command, "config": cfg.model_dump()})
    write_manifest(
        folder,
        f"eval-{command}",
        {"config": cfg.model_dump(), "results_sha256": sha256_file(folder / "results.json")},
    )


def run_gen_eval(cfg: GenEvalConfig) -> int:
    """`medmerge eval gen`: generate with the training template, score raw and think-stripped."""
    template = get_template(cfg.template)
    items = load_gen_items(cfg.data, cfg.format, cfg.columns)[: cfg.limit]
    with staged_output(cfg.out, cfg.force, inputs=_inputs(cfg.model_spec(), [cfg.data])) as folder:
        backend, mismatches = open_model(cfg, cfg.model_spec())
        write_json(
            folder / "run_meta.json",
            run_meta("gen", cfg, backend.identity, data_hashes([cfg.data]), mismatches),
        )
        runs, rows = [], []
        for seed in cfg.seed_list():
            decoding = {**cfg.decoding.resolved(), "seed": seed}
            answers = generate_answers(items, backend, template, cfg.enable_thinking, decoding)
            results, scored = score_outputs(
                [r["prediction"] for r in answers],
                [r["reference"] for r in answers],
                cfg.language,
                [r["tokens"] for r in answers],
                cfg.markers,
            )
            runs.append(results)
            rows += [{**r, **s, "seed": seed} for r, s in zip(answers, scored, strict=True)]
        results = runs[0]  # the headline numbers are the first seed's, as a one-seed run's
        if cfg.seeds > 1:
            results = {**results, "over_seeds": seed_spread(runs, cfg.seed_list())}
        _finish(folder, "gen", cfg, results, rows)
    print(_gen_line(cfg.out, results))
    return 0


def _gen_line(out: str, results: dict[str, Any]) -> str:
    def show(key: str) -> str:
        return shown(results, key)

    return (
        f"{out}: n={results['n']} bleu4={show('metrics.raw.bleu4')} "
        f"(no think {show('metrics.no_think.bleu4')}) rougeL={show('metrics.raw.rougeL')} "
        f"sacrebleu={show('metrics.raw.sacrebleu')} "
        f"think_tag_rate={show('leakage.think_tag_rate')} "
        f"marker_rate={show('leakage.marker_rate')} (95% CIs over items)" + _seed_part(results)
    )


def _seed_part(results: dict[str, Any]) -> str:
    if "over_seeds" not in results:
        return ""
    spread = results["over_seeds"]
    bleu = spread["spread"]["metrics.raw.bleu4"]
    return (
        f"; over {len(spread['seeds'])} seeds bleu4 mean {bleu['mean']:.2f} sd {bleu['std']:.2f} "
        f"(range {bleu['min']:.2f}-{bleu['max']:.2f})"
    )


def run_score(cfg: ScoreConfig) -> int:
    """`medmerge score`: the generation and leak metrics of a predictions file."""
    predictions, references, tokens, rows = [], [], [], []
    for line, record in iter_json_records(cfg.predictions):
        source = f"{cfg.predictions}:{line}"
        for key in (cfg.prediction_key, cfg.reference_key):
            if not isinstance(record.get(key), str):
                raise DataError(
                    f"{source}: field {key!r} must be a string; name the fields with "
                    "--prediction-key / --reference-key"
                )
        predictions.append(record[cfg.prediction_key])
        references.append(record[cfg.reference_key])
        tokens.append(record.get("tokens"))
        rows.append(
            {
                "id": record.get("id", line),
                "prediction": predictions[-1],
                "reference": references[-1],
            }
        )
    counts = _token_counts(cfg.tokenizer, predictions, tokens)
    with staged_output(cfg.out, cfg.force, inputs=[cfg.predictions, cfg.tokenizer]) as folder:
        write_json(
            folder / "run_meta.json", run_meta("score", cfg, None, data_hashes([cfg.predictions]))
        )
        results, scored = score_outputs(predictions, references, cfg.language, counts, cfg.markers)
        _finish(
            folder, "score", cfg, results, [{**r, **s} for r, s in zip(rows, scored, strict=True)]
        )
    print(_gen_line(cfg.out, results))
    return 0


def _token_counts(
    tokenizer: str | None, predictions: list[str], given: list[Any]
) -> list[int] | None:
    """Token lengths: by the named tokenizer, else the files' own `tokens` fields, else none."""
    if tokenizer is not None:
        from medmerge.loading import load_tokenizer

        tok = load_tokenizer(tokenizer)
        return [len(tok(p, add_special_tokens=False)["input_ids"]) for p in predictions]
    if given and all(isinstance(t, int) for t in given):
        return given
    return None


def run_mcq_eval(cfg: McqEvalConfig) -> int:
    """`medmerge eval mcq`: accuracy by log-likelihood or by generated letter."""
    harness = get_task(cfg.task) if cfg.style() == "lm-eval" else None
    fmt = harness.format if harness is not None and cfg.format == "auto" else cfg.format
    options = {"columns": cfg.columns, "medmcqa_cop_base": cfg.medmcqa_cop_base}
    loaded = load_mcq(cfg.data, fmt, **options)
    items = select(loaded, cfg.split, cfg.ids_file, cfg.sample, cfg.seed, cfg.limit)
    pool = load_mcq(cfg.few_shot_data, fmt, **options) if cfg.few_shot_data else items
    language = (
        cfg.language if cfg.language != "auto" else detect_language([i.question for i in items])
    )
    if harness is not None:
        check_items(harness, items)
        if cfg.few_shot and not cfg.few_shot_data:
            raise ConfigError(
                f"task {harness.name}: few-shot exemplars come from the dev split; "
                "give it with --few-shot-data"
            )
        harness_shots = fewshot_exemplars(harness, pool, cfg.few_shot)
    else:
        shots = [few_shot_examples(item, pool, cfg.few_shot, cfg.seed) for item in items]
    inputs = _inputs(cfg.model_spec(), [*cfg.data, *cfg.few_shot_data, cfg.ids_file])
    with staged_output(cfg.out, cfg.force, inputs=inputs) as folder:
        backend, mismatches = open_model(cfg, cfg.model_spec())
        hashes = data_hashes([*cfg.data, *cfg.few_shot_data])
        write_json(
            folder / "run_meta.json", run_meta("mcq", cfg, backend.identity, hashes, mismatches)
        )
        template = get_template(cfg.template) if cfg.style() == "chat" else None
        task = McqTask(
            FORMATS[language], template, backend.tokenizer, cfg.enable_thinking, cfg.continuation
        )
        if harness is not None:
            prompts = [(harness.context(i, harness_shots), harness.continuations(i)) for i in items]
        else:
            prompts = [
                (task.context(i, s), task.continuations(i))
                for i, s in zip(items, shots, strict=True)
            ]
        overflow = context_overflow(cfg.context_overflow, backend, prompts, items)
        if harness is not None:
            records = score_harness(harness, items, harness_shots, backend)
        elif cfg.mode == "loglik":
            records = score_loglik(task, items, shots, backend)
        else:
            records = answer_generate(task, items, shots, backend, cfg.answer_tokens())
        results = {
            "mode": cfg.mode,
            "language": language,
            "prompt_style": cfg.style(),
            "task": cfg.task,
            "context_overflow": overflow,
            **summarize(records, cfg.mode),
        }
        _finish(folder, "mcq", cfg, results, records)
    print(
        f"{cfg.out}: n={results['n']} accuracy={shown(results, 'accuracy')} "
        f"invalid_rate={shown(results, 'invalid_rate')} (95% Wilson CIs)"
    )
    return 0


def context_overflow(
    policy: str, backend: Any, prompts: list[tuple[str, list[str]]], items: list[Any]
) -> dict[str, Any]:
    """Count the prompts (context + longest continuation) over the model's context; refuse
    or warn that they are truncated from the left as lm-eval truncates them."""
    limit = backend.max_length
    tokenizer = backend.tokenizer
    over = [
        item
        for item, (context, continuations) in zip(items, prompts, strict=True)
        if max(
            len(tokenizer(context + c, add_special_tokens=False)["input_ids"])
            for c in continuations
        )
        > limit + 1
    ]
    if over and policy == "refuse":
        raise DataError(
            f"{over[0].source}: {len(over)} of {len(items)} prompts exceed the model's "
            f"{limit}-token context; shorten them (fewer --few-shot) or pass "
            "--context-overflow truncate"
        )
    if over:
        print(
            f"medmerge: warning: {len(over)} of {len(items)} prompts exceed the model's {limit}-"
            "token context; their contexts are truncated from the left, as lm-eval does",
            file=sys.stderr,
        )
    return {"policy": policy, "max_length": limit, "items": len(over)}


def run_safety_eval(cfg: SafetyConfig) -> int:
    """`medmerge eval safety`: each model answers the safety prompts; answers side by side."""
    prompts = load_safety_prompts(cfg.prompts)
    template = get_template(cfg.template)
    rows = [{**p, "answers": {}} for p in prompts]
    labels, identities, mismatches = [], {}, []
    inputs = [p for spec in cfg.models for p in _inputs(spec, [cfg.prompts])]
    with staged_output(cfg.out, cfg.force, inputs=inputs) as folder:
        data = data_hashes([cfg.prompts]) if cfg.prompts else {"bundled": "safety_prompts.jsonl"}
        write_json(folder / "run_meta.json", run_meta("safety", cfg, None, data))
        for index, spec in enumerate(cfg.models):
            label = spec.label or f"{index}:{Path(spec.model or spec.base).name}"
            backend, problems = open_model(cfg, spec)
            labels.append(label)
            identities[label], mismatches = backend.identity, [*mismatches, *problems]
            texts = [
                template.render_prompt(backend.tokenizer, safety_messages(p), cfg.enable_thinking)
                for p in prompts
            ]
            outputs = backend.generate(
                texts, cfg.decoding.resolved(), template.stop_token_ids(backend.tokenizer)
            )
            for row, out in zip(rows, outputs, strict=True):
                row["answers"][label] = {
                    "text": out.text,
                    "referral": is_refusal_or_referral(out.text),
                }
            del backend
        results = {
            "models": identities,
            "template_mismatch": mismatches,
            "refusal_referral": summarize_safety(rows, labels),
        }
        _finish(folder, "safety", cfg, results, rows)
    for label in labels:
        print(
            f"{cfg.out}: {label} referral_rate={results['refusal_referral'][label]['referral_rate']:.3f}"
        )
    return 0
