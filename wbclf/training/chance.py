"""Did a run learn anything? A run's test figures against the majority-class baseline.

A network that predicts one class for every image scores the majority share in accuracy, 1/C
in balanced accuracy and about 0.5 in AUC. Such a run is not a result to average with the
others: it is marked (``status_note: chance_level``) so that reports can flag it.

"Within noise" is a one-sided test at the 5% level against a classifier that guesses without
looking at the image: the figure must exceed the chance value by more than
``Z_ONE_SIDED`` standard errors of what guessing would score on the same test set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Z_ONE_SIDED = 1.645  # one-sided 95%: the chance of flagging a guesser as "learned" is 5%
CHANCE_LEVEL = "chance_level"


@dataclass(frozen=True)
class ChanceVerdict:
    """Whether test figures beat guessing, and the limits they had to beat.

    Attributes:
        at_chance: True when the run did not beat the majority-class baseline.
        balanced_acc_limit: Balanced accuracy a run must exceed (1/C plus the noise margin).
        auc_limit: AUC a run must exceed (two classes only; None otherwise).
        reason: What failed, in words (empty when the run beat chance).
    """

    at_chance: bool
    balanced_acc_limit: float
    auc_limit: float | None
    reason: str

    def summary_keys(self) -> dict[str, Any]:
        """The figures for ``summary.json``: the limits always, the note only when flagged."""
        out: dict[str, Any] = {"chance/balanced_acc_limit": self.balanced_acc_limit}
        if self.auc_limit is not None:
            out["chance/auc_limit"] = self.auc_limit
        if self.at_chance:
            out["status_note"] = CHANCE_LEVEL
            out["chance/reason"] = self.reason
        return out


def balanced_acc_limit(supports: Sequence[int]) -> float:
    """1/C plus the noise margin of a uniform guesser's balanced accuracy on these classes.

    A guesser's recall on class c is Binomial(n_c, 1/C) / n_c, so balanced accuracy (the mean
    recall) has variance sum_c (1/C)(1 - 1/C) / n_c, divided by C².
    """
    counts = [n for n in supports if n > 0]
    c = len(counts)
    p = 1.0 / c
    se = math.sqrt(sum(p * (1 - p) / n for n in counts)) / c
    return p + Z_ONE_SIDED * se


def auc_limit(negatives: int, positives: int) -> float:
    """0.5 plus the noise margin of AUC under no signal (the Mann-Whitney null variance)."""
    se = math.sqrt((negatives + positives + 1) / (12.0 * negatives * positives))
    return 0.5 + Z_ONE_SIDED * se


def chance_verdict(balanced_acc: float, supports: Sequence[int],
                   auc: float | None = None) -> ChanceVerdict:
    """Judge a run's test ``balanced_acc`` (and ``auc``, two classes) against guessing.

    Args:
        balanced_acc: Test balanced accuracy (mean recall over the classes present).
        supports: Test images per class, in label order.
        auc: Test ROC-AUC for two classes (None or NaN when not defined).
    """
    bal_limit = balanced_acc_limit(supports)
    reasons = []
    if not balanced_acc > bal_limit:
        reasons.append(f"test balanced accuracy {balanced_acc:.3f} is not above chance "
                       f"{1 / len([n for n in supports if n > 0]):.3f} + noise "
                       f"(limit {bal_limit:.3f})")
    a_limit = None
    if len(supports) == 2 and min(supports) > 0:
        a_limit = auc_limit(supports[0], supports[1])
        if auc is not None and math.isfinite(auc) and not auc > a_limit:
            reasons.append(f"test AUC {auc:.3f} is within noise of 0.5 (limit {a_limit:.3f})")
    return ChanceVerdict(bool(reasons), bal_limit, a_limit, "; ".join(reasons))
