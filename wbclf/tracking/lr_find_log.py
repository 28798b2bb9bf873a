"""The range test's record: its plot (PNG) and, when W&B is on, a W&B run of its own."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from wbclf.atomic import write_bytes_atomic
from wbclf.config import RunConfig


def plot_range_test(result: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Loss (raw and smoothed) against learning rate on a log axis, the suggestion marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.add_subplot()
    ax.plot(result["lrs"], result["losses"], color="0.75", linewidth=0.8, label="loss")
    ax.plot(result["lrs"], result["smoothed_losses"], color="C0", label="smoothed loss")
    ax.axvline(result["suggested_lr"], color="C3", linestyle="--",
               label=f"suggested {result['suggested_lr']:.2g} ({result['rule']})")
    ax.axvline(result["min_loss_lr"], color="0.4", linestyle=":",
               label=f"min loss at {result['min_loss_lr']:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    # the runaway tail would squash the interesting part
    low = min(result["smoothed_losses"])
    start = result["smoothed_losses"][0]
    ax.set_ylim(low - 0.1 * abs(start - low) - 1e-3, max(start, low) * 1.5 + 1e-3)
    ax.set_title(title or "learning-rate range test")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return write_bytes_atomic(path, buf.getvalue())


def log_range_test_to_wandb(cfg: RunConfig, run_dir: Path, result: dict[str, Any],
                            plot: Path) -> str | None:
    """A W&B run (job type ``lr-find``) with the curve, the plot and the suggestion;
    returns the mode it ran in, None when W&B is off."""
    if cfg.wandb_mode == "disabled":
        return None
    from wbclf.tracking.wandb_logger import WandbLogger

    logger = WandbLogger(mode=cfg.wandb_mode, project=cfg.project, job_type="lr-find",
                         tags=("lr-find",))
    logger.start(cfg=cfg, run_dir=run_dir, class_names=[], resume=False, start_epoch=1)
    if logger.run is None:
        return None
    import wandb

    status = "failed"
    try:
        for step, (lr, loss, smooth) in enumerate(zip(result["lrs"], result["losses"],
                                                      result["smoothed_losses"])):
            logger.run.log({"lr_find/lr": lr, "lr_find/loss": loss,
                            "lr_find/smoothed_loss": smooth}, step=step)
        logger.run.log({"lr_find/plot": wandb.Image(str(plot))}, step=len(result["lrs"]))
        logger.log_summary({"lr_find/suggested_lr": result["suggested_lr"],
                            "lr_find/rule": result["rule"],
                            "lr_find/min_loss_lr": result["min_loss_lr"],
                            "lr_find/stopped": result["stopped"]})
        status = "finished"
    finally:
        logger.finish(status)
    return logger.mode
