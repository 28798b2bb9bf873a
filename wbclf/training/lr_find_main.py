"""``wbclf lr-find``: the learning-rate range test for any RunConfig.

``--key=value`` fields are parsed exactly as ``wbclf train`` parses them; the model, data
and loss come from the same run set-up (:class:`wbclf.training.run.Run`), so the suggestion
is for the run those fields describe.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from wbclf.config import ConfigError, parse_tokens
from wbclf.tracking.loggers import MultiLogger
from wbclf.tracking.lr_find_log import log_range_test_to_wandb, plot_range_test
from wbclf.training.lr_find import range_test
from wbclf.training.run import Run

USAGE = ("usage: wbclf lr-find [--config FILE.yaml] [--key=value ...] [--steps N] "
         "[--start-lr LR] [--end-lr LR] [--plot PNG] [--json]")
_OPTIONS = {"steps": int, "start_lr": float, "end_lr": float, "plot": str}


def _own_options(argv: Sequence[str]) -> tuple[dict, bool, list[str]]:
    """Split lr-find's options from the RunConfig fields."""
    options: dict = {}
    as_json = False
    rest: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        token = items[i]
        i += 1
        key, has_value, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if token == "--json":
            as_json = True
            continue
        if not token.startswith("--") or key not in _OPTIONS:
            rest.append(token)
            continue
        if not has_value:
            if i >= len(items):
                raise ConfigError(f"--{key.replace('_', '-')} needs a value")
            value, i = items[i], i + 1
        try:
            options[key] = _OPTIONS[key](value)
        except ValueError:
            raise ConfigError(f"--{key.replace('_', '-')}={value!r} is not a "
                              f"{_OPTIONS[key].__name__}") from None
    return options, as_json, rest


def main(argv: Sequence[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + "\n\nAny `wbclf train` field (see `wbclf train --help`); the test runs "
              "--steps (100) steps from --start-lr (1e-7) to --end-lr (10).")
        return 0
    options, as_json, rest = _own_options(argv)
    steps = options.get("steps", 100)
    start, end = options.get("start_lr", 1e-7), options.get("end_lr", 10.0)
    if steps < 10 or not 0 < start < end:
        raise ConfigError(f"--steps={steps} --start-lr={start} --end-lr={end} is not a range; "
                          "allowed: steps >= 10 and 0 < start-lr < end-lr")
    cfg = parse_tokens(rest).config
    if cfg.lr == "auto":
        cfg = cfg.replace(lr=1e-3)  # the ramp sets every lr itself
    out = Path(cfg.out_dir)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"lr-find-{Path(cfg.dataset).name}-{cfg.model}-"
                  f"{cfg.strategy}")
    run = Run(cfg, out / name, MultiLogger([]))
    result = range_test(run.plan, cfg, run.criterion, run.normalizer, start=start, end=end,
                        steps=steps).to_dict()
    plot = Path(options.get("plot") or out / f"{name}.png")
    plot_range_test(result, plot, f"{name}: {result['steps']} steps")
    result["plot"] = str(plot)
    (out / name).mkdir(parents=True, exist_ok=True)
    result["wandb"] = log_range_test_to_wandb(cfg, out / name, result, plot)
    if as_json:
        print(json.dumps(result))
    else:
        print(f"suggested lr: {result['suggested_lr']:.3g} (rule {result['rule']}: a tenth of "
              f"the lr at the smoothed loss's minimum, {result['min_loss_lr']:.3g}); steepest "
              f"descent at {result['steepest_lr']:.3g}; {result['steps']} steps, stopped: "
              f"{result['stopped']}\nplot: {plot}\ntrain with: wbclf train ... "
              f"--lr={result['suggested_lr']:.3g}")
    return 0
