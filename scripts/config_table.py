"""Print the RunConfig field table (Markdown) that docs/ARCHITECTURE.md embeds.

    python scripts/config_table.py            # the table on stdout
    python scripts/config_table.py --write    # replace the table in docs/ARCHITECTURE.md

The meanings live once, next to the fields in ``wbclf/config.py``; a test checks that the
page holds what this prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wbclf.config import field_rows

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
BEGIN, END = "<!-- config-table:begin -->", "<!-- config-table:end -->"


def table() -> str:
    """The fields grouped by purpose: group, field, type, default, meaning."""
    lines = ["| group | field | type | default | meaning |", "|---|---|---|---|---|"]
    for group, name, kind, default, meaning in field_rows():
        kind = kind.replace("|", " \\| ")
        lines.append(f"| {group} | `{name}` | {kind} | `{default}` | {meaning} |"
                     if default else f"| {group} | `{name}` | {kind} | (empty) | {meaning} |")
    return "\n".join(lines)


def embedded(text: str) -> str:
    """The table between the markers of a page."""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main(argv: list[str]) -> int:
    if "--write" in argv:
        text = DOC.read_text()
        head, rest = text.split(BEGIN, 1)
        DOC.write_text(f"{head}{BEGIN}\n{table()}\n{END}{rest.split(END, 1)[1]}")
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
