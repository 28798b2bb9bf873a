"""Runs that learned nothing: found by their ``status_note``, named in the findings.

A run whose test figures do not beat the majority-class baseline is marked
``status_note: chance_level`` by the trainer (see ``wbclf/training/chance.py``). The report
keeps such runs in its tables and means (dropping them would flatter a strategy), but it
never averages them in silently: the run table, the strategy comparison and the findings say
which runs they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from wbclf.reporting.analysis import REPLICATE, StudyAnalysis, fmt_value
from wbclf.reporting.collect import RunRecord

CHANCE_LEVEL = "chance_level"
FLAG = "chance level"  # how a table cell says it


def at_chance(run: RunRecord) -> bool:
    """Whether the trainer marked ``run`` as not beating the majority-class baseline."""
    return run.summary.get("status_note") == CHANCE_LEVEL


def chance_count(runs: Sequence[RunRecord]) -> int:
    return sum(1 for r in runs if at_chance(r))


def _span(runs: Sequence[RunRecord], key: str) -> str:
    values = [v for r in runs if (v := r.value(key)) is not None]
    if not values:
        return ""
    low, high = min(values), max(values)
    return f"{low:.3f}" if f"{low:.3f}" == f"{high:.3f}" else f"{low:.3f}–{high:.3f}"


def chance_findings(an: StudyAnalysis) -> list[str]:
    """One sentence per configuration whose runs did not beat chance, e.g. "strategy=scratch
    did not learn in 3 epochs at lr=1.0e-3: 3 of 3 seeds at chance level ...". Empty when
    every run learned something."""
    flagged = [r for r in an.finished if at_chance(r)]
    groups: dict[str, list[RunRecord]] = {}
    for run in flagged:
        groups.setdefault(an.label(run, exclude=(REPLICATE,)), []).append(run)
    out = []
    for label, runs in groups.items():
        peers = [r for r in an.finished if an.label(r, exclude=(REPLICATE,)) == label]
        cfg = runs[0].config
        epochs = cfg.get("epochs")
        what = f"run {label}" if label == runs[0].short_name else label
        replicas = "seeds" if an.seed is not None else "runs"
        figures = [f"test balanced accuracy {_span(runs, 'test/balanced_acc')}"]
        if an.binary:
            figures.append(f"test AUC {_span(runs, 'test/auc')}")
        shown = sorted(r.short_name for r in runs)
        names = ", ".join(shown[:6]) + (" ..." if len(shown) > 6 else "")
        budget = f"in {epochs} epochs at lr={fmt_value(cfg.get('lr'), log=True)}"
        if len(runs) == len(peers):
            head = f"{what} did not learn {budget}: {len(runs)} of {len(peers)} " \
                f"{replicas} did not beat the majority-class baseline"
        else:  # some seeds learned: say how many did not
            head = f"{what}: {len(runs)} of {len(peers)} {replicas} did not learn {budget}, " \
                "not beating the majority-class baseline"
        they = "They are" if len(runs) > 1 else "It is"
        out.append(f"{head} ({', '.join(figures)}; {names}). {they} marked \"{FLAG}\" in the "
                   "tables and counted in every mean and figure of this report.")
    return out


def averaged_note(runs: Sequence[RunRecord]) -> str:
    """A caption's warning when chance-level runs are part of what it averages."""
    n = chance_count(runs)
    if not n:
        return ""
    return (f" Includes {n} chance-level run{'s' if n != 1 else ''} (did not beat the "
            "majority-class baseline; marked in the run table).")
