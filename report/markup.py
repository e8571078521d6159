"""The report's HTML pieces: tables whose cells carry exact values, figures, the page.

Why every number cell carries ``data-value``: the shown text is rounded for reading,
but a reader (or a test) checking the page against the ledger and the manifests needs
the exact value, and parsing it back out of formatted text would be fragile.
Why a tiny script: after the page loads it records on ``<body>`` how many images
decoded, which a headless browser can read back from the DOM to prove the page renders.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;color:#222}
nav a{margin-right:1em} section{border-top:2px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:2px 8px;text-align:left} td.num{text-align:right}
figure{margin:1em 0} img{max-width:100%} figcaption{font-size:0.85em;color:#555}
.missing{color:#8a6d3b;background:#fcf8e3;padding:0.5em} .verdict.ok{color:#2d7a2d}
.verdict.bad{color:#b00;font-weight:bold}
details{margin:0.4em 0} summary{cursor:pointer} details>table,details>p{margin-left:1.2em}
td.snippet{min-width:340px;max-width:520px;font-size:0.85em;color:#333}
td.url{min-width:200px;max-width:280px;word-break:break-all;font-size:0.85em}
td.id{max-width:120px;word-break:break-all;font-size:0.75em}
table[data-table="scores"]{font-size:0.8em}
table[data-table="scores"] td:last-child{min-width:190px}
.verdicts{border:2px solid #999;padding:0.4em 1em;margin:1em 0;background:#fafafa}
.verdicts li.bad{color:#b00} .verdicts li.ok{color:#2d7a2d} .verdicts li.info{color:#444}
.note{color:#555;font-size:0.9em}
"""
SCRIPT = """window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesRendered =
    images.filter((i) => i.complete && i.naturalWidth > 0).length;
});"""
MISSING_CLASS = "missing"


@dataclass(frozen=True)
class Num:
    """A table cell holding a number: exact in ``data-value``, rounded in the text."""

    value: float | int | None
    digits: int = 4

    def text(self) -> str:
        if self.value is None:
            return "–"
        if isinstance(self.value, int):
            return f"{self.value:,}"
        return f"{self.value:,.{self.digits}f}"


@dataclass(frozen=True)
class Text:
    """A text cell with a CSS class (a long snippet, a URL that may wrap anywhere)."""

    text: str
    css: str


def table(name: str, headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, Num):
                value = "" if cell.value is None else repr(cell.value)
                cells.append(f'<td class="num" data-value="{value}">{cell.text()}</td>')
            elif isinstance(cell, Text):
                cells.append(f'<td class="{cell.css}">{html.escape(cell.text)}</td>')
            else:
                cells.append(f"<td>{html.escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table data-table="{html.escape(name)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def figure(uri: str, caption: str) -> str:
    alt = html.escape(caption)
    return f'<figure><img src="{uri}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def details(summary: str, body: str, name: str = "") -> str:
    """A collapsed block: the summary line always shows, the body on a click."""
    attr = f' data-details="{html.escape(name)}"' if name else ""
    return f"<details{attr}><summary>{html.escape(summary)}</summary>\n{body}\n</details>"


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def para(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def missing(text: str) -> str:
    """What a section shows instead of plots when its inputs are not in the run."""
    return f'<p class="{MISSING_CLASS}">{html.escape(text)}</p>'


def is_missing(body: str) -> bool:
    return body.startswith(f'<p class="{MISSING_CLASS}">')


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]], lead: str = "") -> str:
    """The whole document from (id, heading, body) sections, with a table of contents.
    A section that only says what is missing is marked ``data-status="missing"``;
    ``lead`` (the verdicts) goes above the table of contents."""
    nav = " ".join(f'<a href="#{key}">{html.escape(heading)}</a>' for key, heading, _ in sections)
    blocks = [
        f'<section id="{key}" data-status="{"missing" if is_missing(body) else "ok"}">'
        f"<h2>{html.escape(heading)}</h2>\n{body}\n</section>"
        for key, heading, body in sections
    ]
    title = html.escape(title)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{CSS}</style><script>{SCRIPT}</script></head>\n"
        f"<body><h1>{title}</h1><p>{html.escape(subtitle)}</p>{lead}<nav>{nav}</nav>\n"
        + "\n".join(blocks)
        + "\n</body></html>\n"
    )
