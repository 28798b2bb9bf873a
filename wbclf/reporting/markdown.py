"""Render a report :class:`~wbclf.reporting.document.Document` as Markdown (GitHub flavour).

Images are files in a folder beside the Markdown file, linked by relative path, so that the
pair can be committed to a repository or pasted into a wiki.
"""

from __future__ import annotations

from wbclf.reporting.document import Bullets, Document, Heading, Image, Table, Text

__all__ = ["render_markdown"]


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    """Text that Markdown must not read as markup. GitHub Markdown never reads an underscore
    inside a word (``batch_norm``) as emphasis, so underscores stay as they are."""
    out = text
    for ch in ("\\", "*", "`", "[", "]", "<", ">"):
        out = out.replace(ch, "\\" + ch)
    return out


def _table(table: Table) -> str:
    head = "| " + " | ".join(_cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in table.numeric) + "|"
    rows = ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join([head, rule, *rows])


def render_markdown(doc: Document, assets: str) -> str:
    """The document as Markdown; images link to ``assets/<name>``."""
    parts = [f"# {_inline(doc.title)}"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            parts.append(f'<a id="{block.anchor}"></a>\n' if block.anchor else "")
            parts[-1] += f"{'#' * block.level} {_inline(block.text)}"
        elif isinstance(block, Text):
            text = _inline(block.text)
            parts.append(f"*{text}*" if block.kind == "question" else text)
        elif isinstance(block, Bullets):
            if block.anchors:
                parts.append("\n".join(f"- [{_inline(t)}](#{a})"
                                       for t, a in zip(block.items, block.anchors)))
            else:
                parts.append("\n".join(f"- {_inline(t)}" for t in block.items))
        elif isinstance(block, Table):
            parts.append(_table(block))
        elif isinstance(block, Image):
            parts.append(f"![{_cell(block.caption)}]({assets}/{block.name})\n\n"
                         f"{_inline(block.caption)}")
    return "\n\n".join(parts) + "\n"
