"""The verification summary printed on the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

_MAX_LISTED = 12


def print_summary(report: dict[str, Any], path: Path) -> None:
    console = Console(stderr=True)
    table = Table(title=f"verify {report['merged']}", show_lines=False)
    for column in ("adapter", "intended", "recovered", "fit residual"):
        table.add_column(column, justify="left" if column == "adapter" else "right")
    for adapter in report["adapters"]:
        table.add_row(
            Path(adapter["path"]).name,
            f"{adapter['intended_weight']:g}",
            f"{adapter['recovered_weight']:.4f}",
            f"{adapter['residual']:.2%}",
        )
    console.print(table)
    line = (
        f"tensors checked {report['tensors_checked']} (touched {report['tensors_touched']}), "
        f"failed {report['tensors_failed']}, max ulp error {report['max_ulp_error']}, "
        f"min delta retention {report['min_retention']:.1%}"
    )
    if report["behaviour"] and "max_abs_diff" in report["behaviour"]:
        b = report["behaviour"]
        line += f", logits max |diff| {b['max_abs_diff']:.3g}, top-1 {b['top1_agreement']:.0%}"
    console.print(line)
    for warning in report.get("warnings", []):
        console.print(f"[yellow]WARN[/yellow] {warning}", highlight=False)
    for failure in report["failures"][:_MAX_LISTED]:
        console.print(f"[red]FAIL[/red] {failure}", highlight=False)
    if len(report["failures"]) > _MAX_LISTED:
        console.print(f"... and {len(report['failures']) - _MAX_LISTED} more in {path}")
    verdict = "[green]OK[/green]" if report["ok"] else "[red]FAILED[/red]"
    console.print(f"{verdict} — details in {path}")
