"""The verification summary printed on the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

_MAX_LISTED = 12


def print_summary(report: dict[str, Any], path: Path) -> None:
    console = Console(stderr=True)
    console.print(_weights_table(report))
    line = (
        f"tensors checked {report['tensors_checked']} (touched {report['tensors_touched']}), "
        f"failed {report['tensors_failed']}, max ulp error {report['max_ulp_error']}, "
        f"min delta retention {report['min_retention']:.1%}"
    )
    if report["behaviour"] and "max_abs_diff" in report["behaviour"]:
        b = report["behaviour"]
        line += (
            f", logits max |diff| {b['max_abs_diff']:.3g} (tolerance {b.get('tolerance', 0):.3g}"
            f" from a {b.get('dtype', '')} rounding gap of {b.get('rounding_gap', 0):.3g}), "
            f"top-1 {b['top1_agreement']:.0%}"
        )
    console.print(line)
    for warning in report.get("warnings", []):
        console.print(f"[yellow]WARN[/yellow] {warning}", highlight=False)
    for failure in report["failures"][:_MAX_LISTED]:
        console.print(f"[red]FAIL[/red] {failure}", highlight=False)
    if len(report["failures"]) > _MAX_LISTED:
        console.print(f"... and {len(report['failures']) - _MAX_LISTED} more in {path}")
    console.print(f"{_verdict_line(report)} — details in {path}")


def _weights_table(report: dict[str, Any]) -> Table:
    """Intended weights; beside them the fitted ones only for a merge that is not exact (the
    fit of an exactly rounded delta shrinks where rounding erased part of it)."""
    table = Table(title=f"verify {report['merged']}", show_lines=False)
    fitted = report["verdict"] != "EXACT"
    columns = ("adapter", "intended", *(("recovered", "fit residual") if fitted else ()))
    for column in columns:
        table.add_column(column, justify="left" if column == "adapter" else "right")
    for adapter in report["adapters"]:
        row = [Path(adapter["path"]).name, f"{adapter['intended_weight']:g}"]
        if fitted:
            row += [f"{adapter['recovered_weight']:.4f}", f"{adapter['residual']:.2%}"]
        table.add_row(*row)
    return table


def _verdict_line(report: dict[str, Any]) -> str:
    """The tensors' verdict, and FAILED when another check (provenance, behaviour) failed."""
    colour = {"EXACT": "green", "WRONG": "red"}.get(report["verdict"], "yellow")
    line = f"[{colour}]{report['verdict']}[/{colour}]"
    if not report["ok"] and report["verdict"] != "WRONG":
        line += " [red]FAILED[/red] (see above)"
    return line
