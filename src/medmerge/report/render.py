"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML file."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.4}.scroll{overflow-x:auto;margin:.5em 0 1.5em}
table{border-collapse:collapse;font-size:12.5px}
td,th{border:1px solid #ccc;padding:3px 5px;text-align:left;vertical-align:top;
max-width:34em;overflow-wrap:break-word}th{background:#f0f0f0}td.num{text-align:right}
td.text{min-width:16em}.nw{white-space:nowrap}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.5em;overflow:auto;font-size:12px;white-space:pre-wrap;
overflow-wrap:anywhere}h2{margin-top:1.6em}figure{margin:.5em 0}
figure.half{display:inline-block;width:48%;margin-right:1.5%;vertical-align:top}
.note{border-left:5px solid #d95f0e;background:#fff4e5;padding:.6em 1em;margin:1em 0}
.howto{color:#555;font-size:14px;border-left:3px solid #9ecae1;padding-left:.6em}"""

# A stage writes into a temporary sibling (`.medmerge-tmp-<name>-<8 hex>`, artifacts.py) or a
# resumable `<name>.partial` and renames it into place; readers only ever see `<name>`.
_STAGING = re.compile(r"\.medmerge-tmp-(.+?)-[0-9a-f]{8}\b")
_PARTIAL = re.compile(r"(?<=[\w-])\.partial\b")


def public_names(text: str) -> str:
    """`text` with staging folder names replaced by the final artifact's name."""
    return _PARTIAL.sub("", _STAGING.sub(r"\1", text))


def _md_text(text: str) -> str:
    """Markdown text where no HTML can start outside `code spans`: a `<` that could open a tag
    and an `&` that could start an entity are escaped, so a hostile string shows as text in a
    Markdown viewer too, while `p < 0.001` stays as it is."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else _md_escape(p) for p in parts)


def _md_escape(text: str) -> str:
    text = re.sub(r"&(?=#?\w+;)", "&amp;", text)
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", "<br>")


def _inline(text: str) -> str:
    """HTML of one line of report text: escaped, then **bold** and `code` marked up."""
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped, flags=re.S)
    escaped = re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)
    return escaped.replace("\n", "<br>")


HOW_TO_READ = "How to read this: "


class Doc:
    """The report's blocks in order; every text goes through `public_names` on the way in."""

    def __init__(self, title: str, scratch: Path | None = None) -> None:
        self.title = public_names(title)
        self.scratch = scratch  # where sections draw images of their own while the report is built
        self.blocks: list[tuple[str, Any]] = []
        self.images: list[tuple[Path, str]] = []  # (source, name in the report folder)

    def h2(self, text: str) -> None:
        self.blocks.append(("h2", public_names(text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", public_names(text)))

    def how_to_read(self, text: str) -> None:
        """The one line under a section's heading that says how to read it."""
        self.blocks.append(("howto", public_names(text)))

    def note(self, text: str) -> None:
        """A boxed caveat the reader must not miss."""
        self.blocks.append(("note", public_names(text)))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("bullets", [public_names(i) for i in items]))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        """A table; a cell may hold **bold**, `code` and line breaks."""
        if rows:
            cells = [[public_names(str(c)) for c in r] for r in rows]
            self.blocks.append(("table", ([public_names(h) for h in header], cells)))

    def image(self, path: Path, caption: str, half: bool = False) -> None:
        """A PNG if it exists; `half` ones sit two to a row in the HTML."""
        if path.is_file():
            name = f"{len(self.images):02d}_{path.parent.name}_{path.name}"
            self.images.append((path, name))
            self.blocks.append(("img", (path, name, public_names(caption), half)))

    def details(self, summary: str, text: str) -> None:
        self.blocks.append(("details", (public_names(summary), public_names(text))))

    def markdown(self) -> str:
        out = [f"# {_md_text(self.title)}\n"]
        for kind, value in self.blocks:
            out.append(_MARKDOWN[kind](value))
        return "\n".join(out) + "\n"

    def html(self) -> str:
        title = html.escape(self.title)
        out = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_CSS}</style></head><body><h1>{title}</h1>"
        ]
        out += [_HTML[kind](value) for kind, value in self.blocks]
        out.append("</body></html>")
        return "\n".join(out)


def _md_table(value: tuple[list[str], list[list[str]]]) -> str:
    header, rows = value
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


_MARKDOWN = {
    "h2": lambda v: f"\n## {_md_text(v)}\n",
    "p": lambda v: f"{_md_text(v)}\n",
    "howto": lambda v: f"*{HOW_TO_READ}{_md_text(v)}*\n",
    "note": lambda v: f"> **Note:** {_md_text(v)}\n",
    "bullets": lambda v: "\n".join(f"- {_md_text(i)}" for i in v) + "\n",
    "table": _md_table,
    "img": lambda v: f"![{_md_text(v[2])}]({v[1]})\n",
    "details": lambda v: (
        f"<details><summary>{html.escape(v[0])}</summary>\n\n```\n{v[1]}\n```\n</details>\n"
    ),
}


# an estimate with its CI and a test's p are read as one unit: never broken across lines
_UNBROKEN = re.compile(
    r"(?:Δ )?[+-]?[\d.]+(?:e-?\d+)? \[[^\]<]*\]|p_holm (?:=|&lt;) [\d.e-]+|\([^)<]{1,12}\)(?: [↑↓])?"
)
_NUMERIC = re.compile(r"^(\*\*)?(Δ )?[+-]?(\d|\.\d|—$)")


def _html_cell(text: str) -> str:
    """A cell: numbers right-aligned and unbroken, long prose given room to wrap."""
    inner = _UNBROKEN.sub(lambda m: f"<span class='nw'>{m.group(0)}</span>", _inline(text))
    kind = " class='num'" if _NUMERIC.match(text) else " class='text'" if len(text) > 60 else ""
    return f"<td{kind}>{inner}</td>"


def _html_table(value: tuple[list[str], list[list[str]]]) -> str:
    header, rows = value
    lines = [
        "<div class='scroll'><table><tr>"
        + "".join(f"<th>{_inline(h)}</th>" for h in header)
        + "</tr>"
    ]
    lines += ["<tr>" + "".join(_html_cell(c) for c in r) + "</tr>" for r in rows]
    return "\n".join(lines) + "</table></div>"


def _html_image(value: tuple[Path, str, str, bool]) -> str:
    data = base64.b64encode(value[0].read_bytes()).decode("ascii")
    caption = html.escape(value[2])
    return (
        f"<figure{' class=half' if value[3] else ''}><img alt='{caption}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{caption}</figcaption></figure>"
    )


_HTML = {
    "h2": lambda v: f"<h2>{html.escape(v)}</h2>",
    "p": lambda v: f"<p>{_inline(v)}</p>",
    "howto": lambda v: f"<p class='howto'><b>{HOW_TO_READ}</b>{_inline(v)}</p>",
    "note": lambda v: f"<div class='note'><b>Note:</b> {_inline(v)}</div>",
    "bullets": lambda v: "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in v) + "</ul>",
    "table": _html_table,
    "img": _html_image,
    "details": lambda v: (
        f"<details><summary>{html.escape(v[0])}</summary><pre>{html.escape(v[1])}</pre></details>"
    ),
}
