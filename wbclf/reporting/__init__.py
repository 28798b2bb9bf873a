"""The comparison report of a set of runs (``wbclf report``).

``collect`` reads run directories into studies, ``analysis`` works out what varied and what
it did, ``figures`` draws it, ``document`` assembles the sections that ``html`` and
``markdown`` render; ``wandb_report`` builds the same comparison as a W&B Report.
"""
