"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML file."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f0f0f0}
td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.5em;overflow:auto;font-size:12px}h2{margin-top:1.6em}"""


def _inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


class Doc:
    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[tuple[str, Any]] = []
        self.images: list[tuple[Path, str]] = []  # (source, name in the report folder)

    def h2(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        if rows:
            self.blocks.append(("table", (header, [[str(c) for c in r] for r in rows])))

    def image(self, path: Path, caption: str) -> None:
        if path.is_file():
            name = f"{len(self.images):02d}_{path.parent.name}_{path.name}"
            self.images.append((path, name))
            self.blocks.append(("img", (path, name, caption)))

    def details(self, summary: str, text: str) -> None:
        self.blocks.append(("details", (summary, text)))

    def markdown(self) -> str:
        out = [f"# {self.title}\n"]
        for kind, value in self.blocks:
            if kind == "h2":
                out.append(f"\n## {value}\n")
            elif kind == "p":
                out.append(f"{value}\n")
            elif kind == "table":
                header, rows = value
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "---|" * len(header))
                out += ["| " + " | ".join(r) + " |" for r in rows]
                out.append("")
            elif kind == "img":
                out.append(f"![{value[2]}]({value[1]})\n")
            else:
                out.append(
                    f"<details><summary>{value[0]}</summary>\n\n```\n{value[1]}\n```\n</details>\n"
                )
        return "\n".join(out) + "\n"

    def html(self) -> str:
        out = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"
        ]
        for kind, value in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{html.escape(value)}</h2>")
            elif kind == "p":
                out.append(f"<p>{_inline(value)}</p>")
            elif kind == "table":
                header, rows = value
                out.append(
                    "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                )
                out += [
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in rows
                ]
                out.append("</table>")
            elif kind == "img":
                data = base64.b64encode(value[0].read_bytes()).decode("ascii")
                out.append(
                    f"<figure><img alt='{html.escape(value[2])}' "
                    f"src='data:image/png;base64,{data}'><figcaption>"
                    f"{html.escape(value[2])}</figcaption></figure>"
                )
            else:
                out.append(
                    f"<details><summary>{html.escape(value[0])}</summary><pre>"
                    f"{html.escape(value[1])}</pre></details>"
                )
        out.append("</body></html>")
        return "\n".join(out)
