"""Local sweeps from W&B sweep files.

- :mod:`.schema` reads and validates a sweep YAML (every problem at once) into a ``SweepSpec``.
- :mod:`.space` maps W&B parameter forms to grid points and Optuna distributions.
- :mod:`.command` renders a trial's command line exactly as ``wandb agent`` would.
- :mod:`.study` keeps the study in Optuna's RDB storage: claims, retries, outcomes.
- :mod:`.runner` runs trials as subprocesses in parallel slots and reports progress.

The entry point is :func:`wbclf.sweeps.main.main` (``wbclf sweep``); the trial side of pruning is
:mod:`wbclf.sweeps.trial`.
"""
