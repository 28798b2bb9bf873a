"""What a run cost in wall time, with the frozen strategy's backbone pass counted.

A frozen run trains a head on stored backbone features: its training epochs take
milliseconds, but the features cost one backbone pass over every image when the store was
built. Showing the epochs alone says frozen transfer is free. The cost compared here is

    training + evaluation + feature extraction (amortized)

where the feature-extraction cost of each store a run used (``features/store_build_s``, what
building it took, whether this run built it or reused it; likewise ``features/views_store*``
for the augmented views) is divided evenly among the runs in the report that used the same
store (``features/store``). Data preparation (indexing, the decoded-image cache) is left out:
every strategy pays it alike.
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
        features_s: The run's share of its feature stores' build cost (0 without a store).
        stores: The feature stores the run used.
        store_builds: What building each of them cost in all.
        shared_by: Runs in the report that used each of them.
    """

    train_s: float
    eval_s: float
    features_s: float = 0.0
    stores: tuple[str, ...] = ()
    store_builds: tuple[float, ...] = ()
    shared_by: tuple[int, ...] = ()

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s + self.features_s


STORES = ("store", "views_store")  # the feature stores a frozen run may use


def _stores(run: RunRecord) -> list[tuple[str, float]]:
    """``(store id, what building it cost)`` for each feature store the run used."""
    out = []
    for name in STORES:
        key = str(run.summary.get(f"features/{name}") or "")
        if key:
            out.append((key, run.value(f"features/{name}_build_s") or 0.0))
    return out


def run_costs(runs: Iterable[RunRecord]) -> dict[str, Cost]:
    """``{run.name: Cost}`` for every run with a training time; stores shared among ``runs``."""
    runs = [r for r in runs if (r.value("time/train_s") or r.value("train/time_s")) is not None]
    users: dict[str, int] = {}
    built: dict[str, float] = {}
    for run in runs:
        for key, build_s in _stores(run):
            users[key] = users.get(key, 0) + 1
            # every user records the same build cost; the largest guards against a run
            # from before the build cost was recorded (0)
            built[key] = max(built.get(key, 0.0), build_s)
    out = {}
    for run in runs:
        train = run.value("time/train_s")
        train = run.value("train/time_s") if train is None else train
        eval_s = run.value("time/eval_s") or 0.0
        keys = [key for key, _ in _stores(run)]
        share = sum(built[k] / users[k] for k in keys)
        out[run.name] = Cost(train, eval_s, share, stores=tuple(keys),
                             store_builds=tuple(built[k] for k in keys),
                             shared_by=tuple(users[k] for k in keys))
    return out


def cost_note(costs: Iterable[Cost]) -> str:
    """The sentence that says which cost a table or figure shows."""
    costs = list(costs)
    keys = {k for c in costs for k in c.stores}
    text = (f"Cost per run = {COST_LABEL}, wall time in seconds; data preparation is not "
            "counted. Train time = the training epochs alone.")
    if keys:
        shares = sum(c.features_s for c in costs if c.stores)
        frozen = sum(1 for c in costs if c.stores)
        text += (f" Frozen runs train on stored backbone features: building the "
                 f"{len(keys)} feature store{'s' if len(keys) != 1 else ''} they used took "
                 f"{_built(costs, keys):.1f} s; each store's cost is divided among the runs "
                 f"of this report that used it ({shares:.1f} s over these {frozen} frozen "
                 f"run{'s' if frozen != 1 else ''}).")
    return text


def _built(costs: list[Cost], keys: set[str]) -> float:
    per_key: dict[str, float] = {}
    for c in costs:
        for key, build_s in zip(c.stores, c.store_builds):
            per_key[key] = build_s
    return sum(per_key[k] for k in keys)
