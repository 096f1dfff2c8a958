"""The report as a document: sections of blocks (text, notes, tables, figures, code, cards), rendered once as one
self-contained HTML page and once as Markdown. Nothing here knows about runs or policies."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field


@dataclass
class Text:
    text: str


@dataclass
class Note:
    """Something the reader should know is missing or limited, and how to get it."""

    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str  # file name of the PNG beside report.md
    png: bytes
    caption: str


@dataclass
class Code:
    text: str


@dataclass
class Card:
    """Blocks shown together as one tile; tiles sit side by side in the HTML page (e.g. one per expert)."""

    blocks: list


Block = Text | Note | Bullets | Table | Figure | Code | Card


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


def figures(blocks: list[Block]) -> list[Figure]:
    """The figures among ``blocks``, including those inside cards, in page order."""
    found: list[Figure] = []
    for block in blocks:
        if isinstance(block, Figure):
            found.append(block)
        elif isinstance(block, Card):
            found += figures(block.blocks)
    return found


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2733;
background:#f4f6f8;line-height:1.45}
header{background:#1d2733;color:#fff;padding:18px 32px}header h1{margin:0 0 6px;font-size:24px}
nav a{color:#b8d4f0;margin-right:16px;text-decoration:none;font-size:14px}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);margin:20px 0;padding:8px 24px 18px}
h2{border-bottom:2px solid #e3e8ee;padding-bottom:6px}
table{border-collapse:collapse;margin:10px 0;font-size:14px}
th,td{border:1px solid #d5dce3;padding:4px 10px;text-align:left}th{background:#eef2f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:14px 0}figure img{max-width:100%;height:auto;border:1px solid #e3e8ee}
figcaption{font-size:13px;color:#55616d;margin-top:4px}
pre{background:#f6f8fa;border:1px solid #e3e8ee;padding:10px;overflow-x:auto;font-size:13px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:8px 12px;margin:10px 0}
li{margin:3px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:12px;margin:12px 0}
.card{border:1px solid #e3e8ee;border-radius:6px;padding:0 10px}
.card figure{margin:8px 0}.card ul{padding-left:18px;font-size:14px}
"""


def _is_number(text: str) -> bool:
    """Whole-cell numbers (1,234 / 71.6% / -0.2) are right-aligned in tables; mixed text is not."""
    try:
        float(text.replace(",", "").rstrip("%"))
        return True
    except ValueError:
        return False


def _html_block(block: Block) -> str:
    esc = html.escape
    if isinstance(block, Text):
        return f"<p>{esc(block.text)}</p>"
    if isinstance(block, Note):
        return f'<p class="note">{esc(block.text)}</p>'
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
        body = "".join(
            "<tr>" + "".join(f'<td class="num">{esc(c)}</td>' if _is_number(c) else f"<td>{esc(c)}</td>" for c in row)
            + "</tr>"
            for row in block.rows
        )
        thead = f"<thead><tr>{head}</tr></thead>" if any(block.header) else ""
        return f"<table>{thead}<tbody>{body}</tbody></table>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure><img alt="{esc(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>")
    if isinstance(block, Code):
        return f"<pre>{esc(block.text)}</pre>"
    return '<div class="card">' + "".join(_html_block(b) for b in block.blocks) + "</div>"


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    esc = html.escape
    nav = " ".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{esc(title)}</h1><div>{esc(subtitle)}</div><nav>{nav}</nav></header><main>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.id}"><h2>{esc(section.title)}</h2>')
        in_cards = False
        for block in section.blocks:  # consecutive cards share one grid
            if isinstance(block, Card) != in_cards:
                parts.append('<div class="cards">' if not in_cards else "</div>")
                in_cards = not in_cards
            parts.append(_html_block(block))
        if in_cards:
            parts.append("</div>")
        parts.append("</section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_block(block: Block) -> list[str]:
    if isinstance(block, Text):
        return [block.text, ""]
    if isinstance(block, Note):
        return [f"> **Note.** {block.text}", ""]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items] + [""]
    if isinstance(block, Table):
        return (["| " + " | ".join(_md_cell(h) for h in block.header) + " |", "|" + "---|" * len(block.header)]
                + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows] + [""])
    if isinstance(block, Figure):
        return [f"![{_md_cell(block.caption)}]({block.name})", "", f"*{block.caption}*", ""]
    if isinstance(block, Code):
        return ["```", block.text.rstrip("\n"), "```", ""]
    return [line for b in block.blocks for line in _markdown_block(b)]


def render_markdown(title: str, subtitle: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", subtitle, ""]
    lines += [f"- [{s.title}](#{s.id})" for s in sections] + [""]
    for section in sections:
        lines += [f'<a id="{section.id}"></a>', "", f"## {section.title}", ""]
        for block in section.blocks:
            lines += _markdown_block(block)
    return "\n".join(lines)
