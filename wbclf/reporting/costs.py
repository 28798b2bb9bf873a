"""What a run cost in wall time, with the frozen strategy's backbone pass counted.

A frozen run trains a head on stored backbone features: its training epochs take
milliseconds, but the features cost one backbone pass over every image when the store was
built. Showing the epochs alone says frozen transfer is free. The cost compared here is

    training + evaluation + feature extraction (amortized)

where the feature-extraction cost of a store (``features/store_build_s``, what building it
took, whether this run built it or reused it) is divided evenly among the runs in the report
that used the same store (``features/store``). Data preparation (indexing, the decoded-image
cache) is left out: every strategy pays it alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from wbclf.reporting.collect import RunRecord

COST_LABEL = "train + eval + feature extraction (amortized)"
PARTS = (("train_s", "training"), ("eval_s", "evaluation"),
         ("features_s", "feature extraction (amortized)"))


@dataclass(frozen=True)
class Cost:
    """One run's wall time, in seconds.

    Attributes:
        train_s: The training epochs (``time/train_s``, else ``train/time_s``).
        eval_s: Per-epoch validation and the final evaluation (``time/eval_s``; 0 if unknown).
        features_s: The run's share of its feature store's build cost (0 without a store).
        shared_by: Runs in the report that used the same feature store (0 without a store).
        store_build_s: What building that store cost in all.
    """

    train_s: float
    eval_s: float
    features_s: float = 0.0
    shared_by: int = 0
    store_build_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s + self.features_s


def _store(run: RunRecord) -> str:
    return str(run.summary.get("features/store") or "")


def run_costs(runs: Iterable[RunRecord]) -> dict[str, Cost]:
    """``{run.name: Cost}`` for every run with a training time; stores shared among ``runs``."""
    runs = [r for r in runs if (r.value("time/train_s") or r.value("train/time_s")) is not None]
    sharing: dict[str, list[RunRecord]] = {}
    for run in runs:
        if _store(run):
            sharing.setdefault(_store(run), []).append(run)
    out = {}
    for run in runs:
        train = run.value("time/train_s")
        train = run.value("train/time_s") if train is None else train
        eval_s = run.value("time/eval_s") or 0.0
        peers = sharing.get(_store(run), [])
        if peers:
            # Every sharer records the same build cost; the largest guards against a run
            # from before the build cost was recorded (0).
            built = max(r.value("features/store_build_s") or 0.0 for r in peers)
            out[run.name] = Cost(train, eval_s, built / len(peers), len(peers), built)
        else:
            out[run.name] = Cost(train, eval_s)
    return out


def cost_note(costs: Iterable[Cost]) -> str:
    """The sentence that says which cost a table or figure shows."""
    stores = {(c.store_build_s, c.shared_by) for c in costs if c.shared_by}
    text = (f"Cost per run = {COST_LABEL}, wall time in seconds; data preparation is not "
            "counted. Train time = the training epochs alone.")
    if stores:
        built = sum(b for b, _ in stores)
        runs = sum(n for _, n in stores)
        text += (f" Frozen runs train on stored backbone features: building "
                 f"{'that store' if len(stores) == 1 else f'those {len(stores)} stores'} took "
                 f"{built:.1f} s, divided among the {runs} run{'s' if runs != 1 else ''} "
                 "that used "
                 f"{'it' if len(stores) == 1 else 'them'}.")
    return text
