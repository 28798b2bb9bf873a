"""Test figures with and without leaked test images (``data/leaked_test_images``)."""

from __future__ import annotations

from collections.abc import Sequence

from wbclf.reporting.collect import RunRecord

WITH, WITHOUT = "test_with_leaks/acc", "test_leak_free/acc"


def _differs(run: RunRecord) -> bool:
    a, b = run.value(WITH), run.value(WITHOUT)
    return a is not None and b is not None and a != b


def leak_columns(runs: Sequence[RunRecord]) -> list[str]:
    """Both test accuracies as run-table columns, when they differ for some run."""
    return [WITH, WITHOUT] if any(_differs(run) for run in runs) else []


def leak_findings(runs: Sequence[RunRecord]) -> list[str]:
    """One sentence on leaked test images, when some run's test split had them."""
    leaky = [run for run in runs if (run.value("data/leaked_test_images") or 0) > 0]
    if not leaky:
        return []
    worst = max(leaky, key=lambda run: run.value("data/leaked_test_images") or 0)
    count = int(worst.value("data/leaked_test_images") or 0)
    total = int(worst.value("data/test_images") or 0)
    text = (f"{len(leaky)} of {len(runs)} runs had test images that near-duplicate a train "
            f"or val image (up to {count}")
    text += f" of {total} test images" if total and not worst.summary.get("data/test_dedup") \
        else ""
    text += ")"
    if _differs(worst):
        text += (f"; {worst.short_name}: test/acc {worst.value(WITH):.3f} with them, "
                 f"{worst.value(WITHOUT):.3f} leak-free")
    dedup = sum(1 for run in leaky if run.summary.get("data/test_dedup"))
    text += (f"; {dedup} of them report the leak-free figure as test/acc (test_dedup=true)."
             if dedup else "; test/acc includes them (set test_dedup=true for the leak-free "
             "figure).")
    return [text]
