"""Tracking: where a run's figures go.

- :mod:`.loggers`: the ``Logger`` protocol, the run-directory logger, the in-memory one.
- :mod:`.records`: what loggers are handed (an evaluation, sample predictions).
- :mod:`.wandb_logger` / :mod:`.wandb_offline`: the W&B adapter and the offline-run reader.
- :mod:`.plots`: the run's figures (confusion matrix, ROC, sample grids).
"""
