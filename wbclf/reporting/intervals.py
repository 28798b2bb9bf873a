"""95% intervals of a run's summary figures, also for runs written before wbclf stored them.

New runs carry ``test/acc_ci_low`` / ``test/acc_ci_high`` (and the same for macro-F1, AUC,
sensitivity, specificity) in ``summary.json``. For an older run the accuracy interval is
rebuilt from the summary's counts (accuracy x ``data/test_images`` correct images, Wilson);
the bootstrap ones cannot be, and are left out rather than guessed.
"""

from __future__ import annotations

from wbclf.metrics import wilson_interval
from wbclf.reporting.collect import RunRecord

__all__ = ["interval", "interval_text"]

_COUNTS = {"test": "data/test_images", "val": "data/val_images"}


def interval(run: RunRecord, key: str) -> tuple[float, float] | None:
    """The 95% interval of the summary figure ``key`` (``test/acc``), or None."""
    low, high = run.value(f"{key}_ci_low"), run.value(f"{key}_ci_high")
    if low is not None and high is not None:
        return low, high
    split, _, name = key.partition("/")
    n, value = run.value(_COUNTS.get(split, "")), run.value(key)
    if name != "acc" or n is None or value is None or n < 1:
        return None
    return wilson_interval(int(round(value * n)), int(n))


def interval_text(run: RunRecord, key: str) -> str:
    """``[0.612, 0.781]`` or ``–`` when no interval is known."""
    found = interval(run, key)
    return "–" if found is None else f"[{found[0]:.3f}, {found[1]:.3f}]"
