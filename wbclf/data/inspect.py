"""``wbclf data inspect``: what wbclf sees in a dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wbclf.data.layouts import index_dataset
from wbclf.data.sources import resolve_dataset

SPLIT_ORDER = ("train", "val", "test")


def inspect_dataset(dataset: str, data_dir: str | Path) -> dict[str, Any]:
    """Layout, classes, per-split per-class counts and skipped files."""
    root = resolve_dataset(dataset, data_dir)
    index = index_dataset(root)
    counts = index.counts()
    return {
        "root": str(index.root),
        "layout": index.layout,
        "classes": index.classes,
        "splits": {name: counts.get(name, {}) for name in SPLIT_ORDER},
        "skipped": index.skipped,
        "warnings": index.warnings,
    }


def render_inspection(report: dict[str, Any]) -> str:
    """A human-readable table of :func:`inspect_dataset`'s result."""
    splits = report["splits"]
    width = max(len(c) for c in report["classes"]) + 2
    lines = [f"root:    {report['root']}", f"layout:  {report['layout']}",
             f"classes: {len(report['classes'])}", ""]
    header = "class".ljust(width) + "".join(s.rjust(9) for s in SPLIT_ORDER)
    lines.append(header)
    for cls in report["classes"]:
        row = cls.ljust(width)
        for split in SPLIT_ORDER:
            value = splits[split].get(cls) if splits[split] else None
            row += (str(value) if value is not None else "-").rjust(9)
        lines.append(row)
    totals = "total".ljust(width) + "".join(
        str(sum(splits[s].values())).rjust(9) if splits[s] else "-".rjust(9)
        for s in SPLIT_ORDER)
    lines += [totals, ""]
    if not splits["val"]:
        lines.append("val: none in the dataset; carved from train per run (val_fraction)")
    for item in report["skipped"]:
        lines.append(f"skipped: {item['path']}: {item['reason']}")
    for warning in report["warnings"]:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
