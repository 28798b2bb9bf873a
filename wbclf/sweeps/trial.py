"""The trial side of a local sweep: report each epoch's metric to Optuna and ask to prune.

``wbclf sweep`` runs every trial as a separate ``wbclf train`` process (the W&B agent's way).
When the study uses ``early_terminate: hyperband`` it passes the study's location in the
environment; :func:`callback_from_env` turns that into an ``epoch_callback`` for
:func:`wbclf.training.run.train_run`. Outside a local sweep (plain ``wbclf train``, ``wandb agent``)
the variables are absent and it returns None.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Mapping

EpochCallback = Callable[[int, dict], bool]

ENV_STORAGE = "WBCLF_OPTUNA_STORAGE"  # RDB URL of the study
ENV_STUDY = "WBCLF_OPTUNA_STUDY"  # study name
ENV_TRIAL = "WBCLF_OPTUNA_TRIAL"  # trial number in that study
ENV_PRUNER = "WBCLF_OPTUNA_PRUNER"  # JSON kwargs of optuna.pruners.HyperbandPruner
ENV_METRIC = "WBCLF_OPTUNA_METRIC"  # the metric to report, e.g. val/acc
GROUP_ENV = "WANDB_RUN_GROUP"  # the sweep's name; wandb.init reads it by itself


def run_group() -> str | None:
    """The W&B group of this run when a local sweep started it (the sweep's name)."""
    return os.environ.get(GROUP_ENV) or None


def callback_from_env(environ: Mapping[str, str] | None = None) -> EpochCallback | None:
    """An epoch callback that reports to this process's Optuna trial, or None.

    The callback reports ``metrics[<metric>]`` at ``step=epoch`` and returns
    ``trial.should_prune()``: True means "stop now" (the run ends as pruned). A database hiccup
    never stops training: it is printed once and the run carries on unpruned.
    """
    env = os.environ if environ is None else environ
    names = (ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_PRUNER, ENV_METRIC)
    if not all(env.get(n) for n in names):
        return None
    try:
        trial = _load_trial(env)
    except Exception as err:  # noqa: BLE001 -- the run itself must not fail over pruning
        print(f"wbclf: warning: cannot open the sweep's study ({err}); this trial will not "
              "be pruned", file=sys.stderr)
        return None
    metric = env[ENV_METRIC]
    warned = False

    def report(epoch: int, metrics: dict) -> bool:
        nonlocal warned
        value = metrics.get(metric)
        if value is None or not math.isfinite(float(value)):
            return False
        try:
            trial.report(float(value), step=int(epoch))
            return bool(trial.should_prune())
        except Exception as err:  # noqa: BLE001 -- pruning is an optimization, never fatal
            if not warned:
                print(f"wbclf: warning: cannot report to the sweep's study ({err}); this "
                      "trial will not be pruned", file=sys.stderr)
                warned = True
            return False

    return report


def _load_trial(env: Mapping[str, str]):  # -> optuna.trial.Trial
    import optuna

    from wbclf.sweeps.storage import open_storage

    storage = open_storage(env[ENV_STORAGE])
    pruner = optuna.pruners.HyperbandPruner(**json.loads(env[ENV_PRUNER]))
    study = optuna.load_study(study_name=env[ENV_STUDY], storage=storage, pruner=pruner,
                              sampler=optuna.samplers.RandomSampler())
    study_id = storage.get_study_id_from_name(env[ENV_STUDY])
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(env[ENV_TRIAL]))
    return optuna.trial.Trial(study, trial_id)
