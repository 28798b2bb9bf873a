"""Training: one run end to end (``run``), its epoch loop (``engine``), optimizers and
schedules (``optim``), and the per-strategy plans that feed the loop (``plans``)."""
