#!/usr/bin/env python
"""The program `wandb agent` runs for the sweeps in sweeps/: ``wbclf train`` with its arguments.

It accepts every rendering the agent produces -- ``${args}`` (``--lr=0.001 --batch_norm=True``),
``${args_no_boolean_flags}``, ``${args_no_equals}`` and ``${args_json}`` -- reads the parameter
file named by ``WANDB_SWEEP_PARAM_PATH``, and joins the agent's W&B run (``wandb.init`` picks up
``WANDB_RUN_ID``/``WANDB_SWEEP_ID`` from the agent's environment). Run it from the repository
root: ``python scripts/train.py --dataset=toy-lesions --epochs=1``.
"""

import sys
from pathlib import Path

# Run from a checkout, `python scripts/train.py` puts scripts/ (not the root) on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wbclf.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
