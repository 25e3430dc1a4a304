"""Plots for artifacts and reports (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from medmerge.eval.metrics import plot_panels


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def plot_loss_curve(log_path: str | Path, png_path: str | Path, title: str) -> Path:
    """Training loss (with a moving mean) and held-out loss against the optimizer step."""
    logged = read_jsonl(log_path)
    records = [r for r in logged if "loss" in r]
    held_out = [r for r in logged if "eval_loss" in r]
    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    window = max(1, len(losses) // 20)
    smooth = [_mean(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, color="#9ecae1", linewidth=1, label="train loss")
    ax.plot(steps, smooth, color="#08519c", linewidth=2, label=f"train, moving mean ({window})")
    if held_out:
        ax.plot(
            [r["step"] for r in held_out],
            [r["eval_loss"] for r in held_out],
            color="#d95f0e",
            marker="o",
            linewidth=2,
            label="held-out loss",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, metadata={"Title": title})
    plt.close(fig)
    return Path(png_path)


# the y axis of each trade-off panel, by metric name: what is counted and in which unit
AXIS_UNITS = {
    "bleu4": "BLEU-4 (0–100)",
    "accuracy": "accuracy (share correct, 0–1)",
    "think_tag_rate": "share of answers with a think tag (0–1)",
    "marker_rate": "share of answers with a reasoning marker (0–1)",
}


def axis_label(name: str) -> str:
    """The y-axis label of a metric's panel, with its unit."""
    return AXIS_UNITS.get(name, name)


def _series(rows: list[dict], labels: list[str]) -> dict[str, list[dict]]:
    """Rows grouped into lines: one per template/decoding (and per other weights when free)."""
    lines: dict[str, list[dict]] = {}
    x_label = f"w_{labels[0]}"
    for row in rows:
        others = [f"{lb}={row[f'w_{lb}']:.2g}" for lb in labels[1:]]
        free = len({round(1 - row[x_label], 9) for row in rows}) < len(rows)
        key = f"{row['template']} / {row['decoding']}"
        if free and others and abs(sum(row[f"w_{lb}"] for lb in labels) - 1) > 1e-9:
            key += " " + " ".join(others)
        lines.setdefault(key, []).append(row)
    return {k: sorted(v, key=lambda r: r[x_label]) for k, v in lines.items()}


def plot_sweep(rows: list[dict], labels: list[str], png_path: str | Path) -> Path:
    """The plotted metrics of eval.metrics.METRICS (BLEU-4, accuracy, think-tag and
    reasoning-marker rates) against the first adapter's weight, side by side."""
    x_label = f"w_{labels[0]}"
    lines = _series(rows, labels)
    panels = plot_panels()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(13 * len(panels) / 3, 3.8), dpi=110, squeeze=False
    )
    for index, (ax, metric) in enumerate(zip(axes[0], panels, strict=True)):
        _plot_lines(ax, lines, x_label, metric.column)
        if metric.suite == "mcq":
            _plot_benchmarks(ax, rows, x_label, metric.name)
        if metric.overlay:
            column, note = metric.overlay
            _plot_lines(ax, lines, x_label, column, f" ({note})", linestyle=":", linewidth=1.2)
        ax.set_title(metric.label or metric.column)
        ax.set_ylabel(axis_label(metric.name))
        ax.set_xlabel(
            f"{labels[0].upper()} weight"
            + (f" ({labels[1].upper()} = 1 - it)" if len(labels) == 2 else "")
        )
        ax.grid(alpha=0.3)
        if index == 0 or metric.suite == "mcq":
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)


def _plot_lines(
    ax, lines: dict[str, list[dict]], x_label: str, column: str, note: str = "", **style
) -> None:
    """One line per series of `column`, skipping rows without it; its 95 % CI (the table's
    `<column>_lo` / `_hi`) drawn as a band of the line's colour where the rows carry it."""
    style = style or {"marker": "o", "linewidth": 1.8}
    for name, line in lines.items():
        points = [(r[x_label], r[column]) for r in line if r.get(column) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            (drawn,) = ax.plot(xs, ys, label=f"{name}{note}", **style)
            band = [r for r in line if r.get(f"{column}_lo") is not None]
            if len(band) == len(points):
                ax.fill_between(
                    [r[x_label] for r in band],
                    [r[f"{column}_lo"] for r in band],
                    [r[f"{column}_hi"] for r in band],
                    color=drawn.get_color(),
                    alpha=0.15,
                    linewidth=0,
                )


def _plot_benchmarks(ax, rows: list[dict], x_label: str, name: str) -> None:
    """Thin lines for each benchmark's `name` (first template/decoding only)."""
    first = (rows[0]["template"], rows[0]["decoding"])
    subset = sorted(
        (r for r in rows if (r["template"], r["decoding"]) == first), key=lambda r: r[x_label]
    )
    for key in [k for k in rows[0] if k.endswith(f".{name}")]:
        ax.plot(
            [r[x_label] for r in subset],
            [r[key] for r in subset],
            linewidth=0.9,
            alpha=0.6,
            label=key.removesuffix(f".{name}"),
        )


def plot_heatmap(
    matrix: list[list[float]],
    row_labels: list[str],
    col_labels: list[str],
    title: str,
    png_path: str | Path,
    cmap: str = "viridis",
) -> Path:
    """A labelled heatmap (layers x modules) with the value written in each cell."""
    fig, ax = plt.subplots(
        figsize=(1.1 * len(col_labels) + 2, 0.45 * len(row_labels) + 1.5), dpi=110
    )
    image = ax.imshow(matrix, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7, color="white")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)


def plot_layer_ablation(rows: list[dict], png_path: str | Path) -> Path:
    """Think rate and BLEU-4 when the PT delta is applied on one layer range only."""
    names = [r["layers"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(rows) + 2), 3.5), dpi=110)
    ax.bar(names, [r["think_tag_rate"] for r in rows], color="#d95f0e", label="think-tag rate")
    ax.bar(names, [r["marker_rate"] for r in rows], color="#fdae6b", alpha=0.6, label="marker rate")
    ax.set_ylabel("rate (share of answers, 0–1)")
    ax.set_xlabel("layers carrying the PT delta")
    twin = ax.twinx()
    twin.plot(names, [r["bleu4"] for r in rows], color="#08519c", marker="o", label="BLEU-4")
    twin.set_ylabel("BLEU-4 (0–100)")
    ax.legend(loc="upper left", fontsize=7)
    twin.legend(loc="upper right", fontsize=7)
    ax.set_title("Layer-wise PT ablation")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)
