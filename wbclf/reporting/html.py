"""Render a report :class:`~wbclf.reporting.document.Document` as one self-contained HTML file.

Self-contained means: the stylesheet is inline, every image is a ``data:`` URI and there is
no script, font or link to fetch, so the file reads the same offline, from a mail attachment
or from an archive years later.
"""

from __future__ import annotations

import base64
from html import escape

from wbclf.reporting.document import Bullets, Document, Heading, Image, Table, Text

__all__ = ["render_html"]

CSS = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       margin: 0 auto; max-width: 1180px; padding: 24px 28px 64px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 40px 0 8px; padding-top: 12px; border-top: 2px solid #d0d7de; }
h3 { font-size: 16px; margin: 26px 0 8px; }
p.note { color: #57606a; font-size: 13px; margin: 4px 0 10px; }
p.question { font-style: italic; margin: 4px 0; }
ul { margin: 6px 0 10px; padding-left: 22px; }
li { margin: 3px 0; }
ul.findings li { margin: 5px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 14px; display: block;
        overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; white-space: nowrap; }
th { background: #f6f8fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.runs tbody tr:first-child td { background: #dafbe1; font-weight: 600; }
table.failed td { color: #57606a; }
tr.chance td, table.runs tbody tr.chance:first-child td { background: #fff8c5; color: #7d4e00; }
table.failed td.why { white-space: normal; min-width: 260px; }
tbody tr:nth-child(even) td { background: #f6f8fa; }
figure { display: inline-table; vertical-align: top; margin: 8px 14px 18px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; display: block; }
figcaption { display: table-caption; caption-side: bottom; color: #57606a; font-size: 13px;
             padding-top: 4px; }
a { color: #0969da; text-decoration: none; }
"""


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    rows = []
    ids = table.row_ids or [""] * len(table.rows)
    kinds = table.row_classes or [""] * len(table.rows)
    for row, run_id, kind in zip(table.rows, ids, kinds):
        cells = []
        for k, cell in enumerate(row):
            classes = ["num"] if table.numeric[k] else []
            if table.columns[k] == "why":
                classes.append("why")
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{escape(cell)}</td>")
        data = f' data-run="{escape(run_id)}"' if run_id else ""
        data += f' class="{escape(kind)}"' if kind else ""
        rows.append(f"<tr{data}>{''.join(cells)}</tr>")
    css = f' class="{table.css_class}"' if table.css_class else ""
    return (f"<table{css}><thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows)
            + "\n</tbody></table>")


def _image(image: Image) -> str:
    data = base64.b64encode(image.png).decode("ascii")
    alt = escape(image.caption or image.name)
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(image.caption)}</figcaption></figure>")


def _bullets(bullets: Bullets) -> str:
    if bullets.anchors:
        items = [f'<li><a href="#{escape(a)}">{escape(t)}</a></li>'
                 for t, a in zip(bullets.items, bullets.anchors)]
        return '<ul class="contents">' + "".join(items) + "</ul>"
    return '<ul class="findings">' + "".join(f"<li>{escape(t)}</li>" for t in bullets.items) \
        + "</ul>"


def render_html(doc: Document) -> str:
    """The document as a complete HTML5 page."""
    parts = []
    for block in doc.blocks:
        if isinstance(block, Heading):
            anchor = f' id="{escape(block.anchor)}"' if block.anchor else ""
            parts.append(f"<h{block.level}{anchor}>{escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            parts.append(f'<p class="{block.kind}">{escape(block.text)}</p>')
        elif isinstance(block, Bullets):
            parts.append(_bullets(block))
        elif isinstance(block, Table):
            parts.append(_table(block))
        elif isinstance(block, Image):
            parts.append(_image(block))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(doc.title)}</h1>\n{body}\n</body>\n</html>\n")
