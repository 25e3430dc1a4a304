"""The report's first screen and its "Pipeline mistakes" section, rendered from the contract's
headline.json and mistakes.json: what shows where, CIs and tests in every cell, text escaped,
staging names gone, every section with its "how to read this" line."""

from __future__ import annotations

import json
import re

from report_fixture_run import DATA, STAGING_NAME

from medmerge.report.build import ReportConfig, build_report
from medmerge.report.headline import model_table, recommendation_line, sweep_recommendation
from medmerge.report.render import Doc, public_names


def _build(run):
    assert build_report(ReportConfig(run_dir=str(run))) == 0
    folder = run / "report"
    return (folder / "report.md").read_text(), (folder / "report.html").read_text()


def _section(md: str, heading: str) -> str:
    return md.split(f"## {heading}")[1].split("\n## ")[0]


def test_the_first_screen_comes_first_in_its_order(fixture_run):
    md, html = _build(fixture_run)
    order = [
        "# medmerge report — demo17",
        "> **Note:** A constructed miniature",
        "## The headline: SFT-only vs merged PT 0.3 / SFT 0.7 vs PT-only",
        "| metric | decoding | n | SFT-only |",
        "- Adding PT (0.3) raised the reasoning-marker rate",
        "## The trade-off across 11 merge weights",
        "![BLEU-4, multiple-choice accuracy",
        "**No weight is significantly better than the reference:** pt=0.0",
        "## Pipeline mistakes",
        "## Training",
    ]
    positions = [md.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert md.index("> **Note:**") < md.index("\n## ")  # nothing above the caveat but the title
    assert "<div class='note'><b>Note:</b> A constructed miniature" in html
    assert "## At a glance" not in md  # the sweep-only headline is for runs without headline.json


def test_each_cell_is_an_estimate_with_its_ci_and_each_difference_its_holm_test():
    header, rows = model_table(json.loads((DATA / "headline.json").read_text()))
    assert header == [
        "metric",
        "decoding",
        "n",
        "SFT-only",
        "merged PT 0.3 / SFT 0.7",
        "PT-only",
        "Δ merged PT 0.3 / SFT 0.7 − SFT-only",
        "Δ PT-only − SFT-only",
        "test",
    ]
    by_row = {(r[0], r[1]): r for r in rows}
    bleu = by_row[("BLEU-4 (0–100) ↑", "greedy")]
    assert bleu[2:6] == ["300", "21.3 [18.0, 24.9]", "9.2 [7.1, 11.4]", "3.40 [2.20, 4.80]"]
    assert bleu[6] == "**-12.1 [-15.0, -9.2]**\np_holm = 0.001"
    sampled = by_row[("BLEU-4 (0–100) ↑", "sampled")]
    assert sampled[3] == "19.8 [16.9, 22.7]\nseeds 19.1–20.6"
    accuracy = by_row[("MCQ accuracy (0–1) ↑", "(any)")]
    assert accuracy[2] == "455" and accuracy[8] == "exact McNemar"
    assert accuracy[6] == "+0.031 [-0.012, +0.074]\np_holm = 0.36, n.s."
    assert accuracy[7] == "**+0.086 [+0.035, +0.137]**\np_holm = 0.004"
    think = by_row[("think-tag rate (share 0–1) ↓", "greedy")]
    assert think[3] == "0.000 [0.000, 0.013]" and think[6].endswith("p_holm < 0.001")
    # a test given the other way round (a = pt, b = sft) is read as PT-only − SFT-only
    length = by_row[("answer length (tokens)", "greedy")]
    assert length[7] == "**+23.3 [+20.4, +26.2]**\np_holm < 0.001"
    markers = by_row[("reasoning-marker rate (share 0–1) ↓", "greedy")]
    assert markers[2] == "300 / 300 / —" and markers[5] == "—" and markers[7] == "—"


def test_a_weight_is_recommended_only_when_significant():
    text = {"text": "pt=0.2 raises accuracy by 0.05 [0.01, 0.09]", "significant": True}
    assert recommendation_line(text) == f"**Recommended:** {text['text']}."
    line = recommendation_line({**text, "significant": False})
    assert "Recommended" not in line and "No weight is significantly better" in line
    assert "No recommendation" in recommendation_line(None)


def test_the_mistakes_table_puts_each_mistake_beside_the_true_merge(fixture_run):
    md, _ = _build(fixture_run)
    section = _section(md, "Pipeline mistakes: what each would have reported")
    tables = [t for t in section.split("\n\n") if t.startswith("| ")]
    header, _, *metrics = tables[0].splitlines()
    labels = [
        "α² script (both factors scaled by w)",
        "wrong adapter exported (SFT-only passed off as the merge)",
        "export folder overwritten by a later run",
        "evaluated with another template (qwen3, thinking on)",
    ]
    assert (
        header
        == " | ".join(
            ["| metric (Δ: its test)", "true merge (PT 0.3 / SFT 0.7) (reference)", *labels]
        )
        + " |"
    )
    bleu, rouge, accuracy = metrics[:3]
    assert bleu.startswith("| BLEU-4 (0–100) ↑<br>Δ: paired bootstrap | 9.2 [7.1, 11.4] |")
    assert "| 17.9 [15.0, 20.9]<br>**Δ +8.7 [+5.9, +11.5]**<br>p_holm = 0.002 |" in bleu
    assert accuracy.startswith("| MCQ accuracy (0–1) ↑<br>Δ: exact McNemar | 0.347 [0.304, 0.392]")
    assert "Δ -0.017 [-0.050, +0.016]<br>p_holm = 1, n.s." in accuracy
    assert rouge.endswith(
        "| 0.389 [0.364, 0.414]<br>**Δ +0.088 [+0.060, +0.116]**<br>p_holm = 0.002 | 0.412 [0.388, 0.437] | — | 0.200 [0.180, 0.220] |"
    )
    checks = tables[1].splitlines()
    assert checks[0] == "| mistake | what the pipeline did | caught by | what it said |"
    assert [c.split("**")[1] for c in checks[2:]] == labels
    assert (
        "| **verify: WRONG** (exit 1) | scaled twice: the deltas match weights 0.09/0.49"
        in (checks[2])
    )
    assert "| **template guard: REFUSED** (exit 2) | template mismatch" in checks[5]
    assert "Every row claims to be the merge pt 0.3, sft 0.7 under template qwen3" in section


def test_hostile_text_is_escaped_in_html_and_markdown(fixture_run):
    md, html = _build(fixture_run)
    assert "<script" not in html and "<script" not in md
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co | pipe" in html
    assert "&lt;script>alert('x')&lt;/script> & co \\| pipe" in md  # a cell, | escaped
    assert "(p_holm < 0.001)" in md  # a `<` that opens no tag stays readable
    assert "w² (max relative residual 2e-7 under that hypothesis)<br>run: medmerge" in html


def test_no_staging_name_reaches_the_report(fixture_run):
    md, html = _build(fixture_run)
    for text in (md, html):
        assert ".medmerge-tmp-" not in text and ".partial" not in text
    assert "/demo17/merged/model.safetensors: 1 tensor differs" in md
    assert "/runs/demo17/merged was written by another run" in md
    assert public_names(f"pt/{STAGING_NAME}/x and sft.partial/y, not a .partial") == (
        "pt/merged/x and sft/y, not a .partial"
    )


def test_every_section_says_how_to_read_it_and_every_table_scrolls_in_its_box(fixture_run):
    md, html = _build(fixture_run)
    lines = md.splitlines()
    headings = [i for i, line in enumerate(lines) if line.startswith("## ")]
    assert len(headings) >= 6
    for i in headings:
        following = next(line for line in lines[i + 1 :] if line.strip())
        assert following.startswith("*How to read this: "), lines[i]
    assert html.count("<table>") == html.count("<div class='scroll'><table>") >= 3
    assert html.count("src='data:image/png;base64,") == 2
    assert not re.search(r"(src|href)=['\"]?(https?:|file:|//)", html)


def test_a_run_without_the_new_files_or_with_null_fields_still_renders(tmp_path, fixture_run):
    (fixture_run / "mistakes" / "mistakes.json").unlink()
    sparse = {
        "models": [{"key": "sft", "label": "SFT-only"}, {"key": "merged", "label": "merged"}],
        "metrics": [{"name": "bleu4", "decoding": None, "values": None, "tests": None}],
        "findings": None,
        "recommendation": None,
    }
    (fixture_run / "headline" / "headline.json").write_text(json.dumps(sparse))
    md, _ = _build(fixture_run)
    assert "| bleu4 | (any) | — | — | — | — | — |" in md
    assert "Pipeline mistakes" not in md
    assert "**No weight is significantly better than the reference:** no weight meets" in md


def test_without_its_own_recommendation_the_headline_claims_only_what_the_sweep_tested():
    tested = {"p_value": 0.01, "difference": 0.06, "verdict": "better than pt=0,sft=1 at n = 455"}
    table = {"recommendation": {"point": "pt=0.4,sft=0.6", "rule": "r", "paired_test": tested}}
    assert sweep_recommendation(table) == {
        "text": "pt=0.4,sft=0.6 — better than pt=0,sft=1 at n = 455",
        "significant": True,
    }
    kept = {**tested, "p_value": 0.3, "candidate": "pt=0.8,sft=0.2"}
    table["recommendation"] = {"point": "pt=0,sft=1", "rule": "r", "paired_test": kept}
    assert sweep_recommendation(table)["significant"] is False
    table["recommendation"]["paired_test"] = {"verdict": "no paired test for objective x"}
    assert sweep_recommendation(table)["significant"] is False


def test_a_doc_escapes_every_block_kind():
    doc = Doc("t <b>")
    doc.h2("<h>")
    doc.how_to_read("<i>")
    doc.note("<n>")
    doc.bullets(["<l>"])
    doc.details("<s>", "<d>")
    html = doc.html()
    assert all(f"&lt;{tag}&gt;" in html for tag in "bhinlsd")
    assert not re.search(r"<(h|i|n|l|s|d)>", html)


def test_the_models_answers_show_side_by_side_verbatim_and_escaped(fixture_run):
    md, html = _build(fixture_run)
    section = _section(md, "What the models answered (first items, greedy)")
    rows = [line for line in section.splitlines() if line.startswith("| meqsum-")]
    assert rows[0].startswith("| meqsum-0007 | What are the treatments for plantar fasciitis? |")
    assert "&lt;think><br>The patient asks about heel pain.<br>&lt;/think>" in rows[0]
    assert rows[1].endswith("| How is Lyme disease tested? | — |")  # PT-only gave one example
    assert "&lt;think&gt;<br>The patient asks" in html and "<think>" not in html


def test_a_mistake_no_check_caught_says_so_and_medmerges_own_refusal_shows():
    from medmerge.report.mistakes import checks_table

    passed = {"label": "x", "caught_by": "verify", "verdict": "EXACT", "exit_code": 0}
    guarded = {
        "label": "y",
        "caught_by": "verify",
        "verdict": "WRONG",
        "exit_code": 1,
        "diagnosis": "d",
        "guard": "medmerge merge refused the later run: exists",
    }
    _, rows = checks_table({"rows": [passed, guarded]})
    assert rows[0][2] == "**verify: EXACT** (exit 0)\n**not caught**" and rows[0][3] == "—"
    assert rows[1][2] == "**verify: WRONG** (exit 1)"
    assert rows[1][3] == "d\nmedmerge merge refused the later run: exists"


def test_without_a_sweep_plot_there_is_no_empty_trade_off_section(fixture_run):
    (fixture_run / "sweep" / "tradeoff.png").unlink()
    md, _ = _build(fixture_run)
    assert "## The trade-off" not in md
    headline = _section(md, "The headline: SFT-only vs merged PT 0.3 / SFT 0.7 vs PT-only")
    assert "**No weight is significantly better than the reference:**" in headline


def test_a_mistakes_file_with_null_fields_still_renders(fixture_run):
    sparse = {
        "claimed": None,
        "true_merge": {"label": None, "metrics": {"bleu4": None}},
        "rows": [{"key": "x", "metrics": None, "tests": None, "verdict": None}],
    }
    (fixture_run / "mistakes" / "mistakes.json").write_text(json.dumps(sparse))
    md, _ = _build(fixture_run)
    section = _section(md, "Pipeline mistakes: what each would have reported")
    assert "| BLEU-4 (0–100) ↑ | — | — |" in section
    assert (
        "| **x** | — | — (exit None)" not in section
        and "| **x** | — | —<br>**not caught** | — |" in section
    )
    assert "claims to be the merge — under template —" in section
