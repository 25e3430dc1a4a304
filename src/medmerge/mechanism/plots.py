"""The mechanism stage's two pictures: per-layer measures, and interventions vs controls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

CKA_LINES = (
    ("cka_merged_sft", "merged vs SFT-only"),
    ("cka_merged_pt", "merged vs PT-only"),
    ("cka_sft_base", "SFT-only vs base"),
    ("cka_pt_base", "PT-only vs base"),
)


def plot_layers(rows: list[dict[str, Any]], png_path: str | Path) -> Path:
    """CKA per layer; the top shift direction's share; probe accuracy with 95 % CIs."""
    layers = [r["layer"] for r in rows]
    panels = 3 if "probe_accuracy" in rows[-1] else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), dpi=110)
    for key, label in CKA_LINES:
        values = [float("nan") if r[key] is None else r[key] for r in rows]
        axes[0].plot(layers, values, marker="o", label=label)
    axes[0].set(title="linear CKA", xlabel="decoder layer", ylabel="CKA", ylim=(0, 1.05))
    axes[0].legend(fontsize=7)
    axes[1].bar(layers, [r["shift_top1_share"] for r in rows], color="#7570b3")
    axes[1].set(
        title="PCA of merged − SFT states",
        xlabel="decoder layer",
        ylabel="variance share of top direction",
        ylim=(0, 1),
    )
    if panels == 3:
        probed = [r for r in rows if "probe_accuracy" in r]
        x = [r["layer"] for r in probed]
        accuracy = [r["probe_accuracy"] for r in probed]
        low = [a - r["probe_ci_low"] for a, r in zip(accuracy, probed, strict=True)]
        high = [r["probe_ci_high"] - a for a, r in zip(accuracy, probed, strict=True)]
        axes[2].errorbar(x, accuracy, yerr=[low, high], marker="o", capsize=3, label="probe")
        axes[2].plot(x, [r["control_accuracy"] for r in probed], "k--", label="shuffled labels")
        axes[2].set(
            title="probe: will the output leak?",
            xlabel="decoder layer",
            ylabel="held-out accuracy (95 % CI)",
            ylim=(0, 1.05),
        )
        axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(layers)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)


def _with_controls(ax: Any, labels: list[str], found: list[dict], controls: list[list[dict]]):
    x = range(len(labels))
    estimate = [f["estimate"] for f in found]
    errors = [
        [e - f["ci_low"] for e, f in zip(estimate, found, strict=True)],
        [f["ci_high"] - e for e, f in zip(estimate, found, strict=True)],
    ]
    ax.errorbar(x, estimate, yerr=errors, fmt="o", capsize=4, color="#d95f0e", label="found")
    for i, group in enumerate(controls):
        ax.scatter([i + 0.15] * len(group), [c["estimate"] for c in group], color="grey", s=12)
    ax.scatter([], [], color="grey", s=12, label="random controls")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.legend(fontsize=7)


def plot_interventions(result: dict[str, Any], png_path: str | Path) -> Path:
    """Leak rate under suppression and accuracy under each logit shift, found vs random."""
    parts = [key for key in ("suppression", "logit_shift") if result.get(key)]
    fig, axes = plt.subplots(1, len(parts), figsize=(4.6 * len(parts), 3.4), dpi=110, squeeze=False)
    for ax, key in zip(axes[0], parts, strict=True):
        part = result[key]
        if key == "suppression":
            none = part["unchanged"]
            found = [none, part["suppressed"]]
            _with_controls(ax, ["unchanged", f"top-{part['k']} out"], found, [[], part["controls"]])
            ax.set(title="subspace suppression", ylabel="leak rate (95 % CI)")
        else:
            rows = part["rows"]
            labels = ["0", *(f"{r['gamma']:+g}" for r in rows)]
            found = [part["unchanged"], *(r["found"] for r in rows)]
            _with_controls(ax, labels, found, [[], *(r["controls"] for r in rows)])
            ax.set(
                title="rank-1 logit shift",
                xlabel="gamma (× mean final-state norm)",
                ylabel="MCQ accuracy (95 % CI)",
            )
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)
