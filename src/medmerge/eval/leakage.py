"""Reasoning leaks: think blocks and reasoning markers in outputs meant to answer directly.

Definitions (per output):
- think block: from an opening tag `<think>` (any case, spaces allowed inside the brackets,
  e.g. `< THINK >`) to the next closing tag `</think>` (same leniency) or, when unclosed, to
  the end of the text. Its characters include both tags. An output may hold several.
- has_think_tag: an opening tag occurs (closed or not).
- nonempty_think: some think block holds non-whitespace text between its tags.
- has_marker: the output contains a reasoning marker (case-insensitive substring match of
  any entry of the marker list; DEFAULT_MARKERS unless configured).
- leakage: characters of all think blocks / total characters when there is a think block;
  else (total - index of the first marker) / total when there is a marker; else 0. An empty
  output leaks 0.
`strip_think` removes every think block and the whitespace after it, then strips the ends;
an output without a think block is returned unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

THINK_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)
THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)

DEFAULT_MARKERS: tuple[str, ...] = (
    # English
    "let's think",
    "let us think",
    "step by step",
    "step-by-step",
    "first,",
    "firstly",
    "second,",
    "secondly",
    "therefore",
    "thus,",
    "in conclusion",
    "to summarize",
    "wait,",
    "hmm",
    "okay, so",
    # Chinese
    "首先",
    "其次",
    "然后",
    "因此",
    "所以",
    "综上",
    "总之",
    "一步一步",
    "逐步",
    "让我们想",
    "让我想",
    "我们来分析",
)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    inner_start: int
    inner_end: int


def think_spans(text: str) -> list[Span]:
    """Every think block of `text`, in order (an unclosed one runs to the end)."""
    spans, position = [], 0
    while (opening := THINK_OPEN.search(text, position)) is not None:
        closing = THINK_CLOSE.search(text, opening.end())
        if closing is None:
            spans.append(Span(opening.start(), len(text), opening.end(), len(text)))
            break
        spans.append(Span(opening.start(), closing.end(), opening.end(), closing.start()))
        position = closing.end()
    return spans


def strip_think(text: str) -> str:
    """The output with every think block (and the whitespace after it) removed, ends stripped;
    unchanged when it has none."""
    spans = think_spans(text)
    if not spans:
        return text
    pieces, position = [], 0
    for span in spans:
        pieces.append(text[position : span.start])
        position = span.end
        while position < len(text) and text[position].isspace():
            position += 1
    pieces.append(text[position:])
    return "".join(pieces).strip()


def first_marker(text: str, markers: Sequence[str] = DEFAULT_MARKERS) -> int | None:
    """Index of the earliest marker occurrence (case-insensitive), or None."""
    lowered = text.lower()
    found = [i for m in markers if (i := lowered.find(m.lower())) >= 0]
    return min(found) if found else None


def item_leakage(text: str, markers: Sequence[str] = DEFAULT_MARKERS) -> dict[str, object]:
    """Per-output leak record: tags, non-empty think, marker, leakage ratio, length."""
    spans = think_spans(text)
    marker = first_marker(text, markers)
    total = len(text)
    if total == 0:
        ratio = 0.0
    elif spans:
        ratio = sum(s.end - s.start for s in spans) / total
    elif marker is not None:
        ratio = (total - marker) / total
    else:
        ratio = 0.0
    return {
        "has_think_tag": bool(spans),
        "nonempty_think": any(text[s.inner_start : s.inner_end].strip() for s in spans),
        "has_marker": marker is not None,
        "leakage": ratio,
        "chars": total,
    }


def length_stats(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, median and 90th percentile (numpy's linear interpolation)."""
    if not values:
        return {"mean": None, "median": None, "p90": None}
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        "p90": float(np.percentile(array, 90)),
    }


def leakage_summary(
    texts: Sequence[str],
    token_counts: Sequence[int] | None = None,
    markers: Sequence[str] = DEFAULT_MARKERS,
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """Run-level rates and length statistics, and the per-item records they come from."""
    items = [item_leakage(t, markers) for t in texts]
    n = len(items)

    def share(key: str) -> float:
        return sum(bool(i[key]) for i in items) / n if n else 0.0

    summary = {
        "n": n,
        "think_tag_rate": share("has_think_tag"),
        "nonempty_think_rate": share("nonempty_think"),
        "marker_rate": share("has_marker"),
        "leakage_ratio": float(np.mean([i["leakage"] for i in items])) if n else 0.0,
        "length_chars": length_stats([i["chars"] for i in items]),
        "length_tokens": length_stats(list(token_counts)) if token_counts is not None else None,
        "markers": list(markers),
    }
    if token_counts is not None:
        for item, count in zip(items, token_counts, strict=True):
            item["tokens"] = count
    return summary, items
