"""Plots for artifacts and reports (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)
