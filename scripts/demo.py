"""`make demo`: a small local study on toy data, then its report.

Runs the batch-norm x learning-rate study (sweeps/scratch_bn.yaml) pinned to the built-in
toy-lesions dataset at 64 px for a few epochs -- a few minutes on 2 CPU cores, no account,
no network -- and writes the HTML report of the study.

    python scripts/demo.py [--out runs/demo] [--epochs 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

from wbclf.cli import main as wbclf  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo-scratch_bn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--wandb-mode", default="offline",
                        help="offline (default; `wandb sync` uploads later), online, disabled")
    args = parser.parse_args()
    out = Path(args.out)
    start = time.perf_counter()
    code = wbclf([
        "sweep", "sweeps/scratch_bn.yaml",
        "--set", "dataset=toy-lesions", "--set", f"epochs={args.epochs}",
        "--set", "image_size=64", "--set", "limit_per_class=300",
        "--set", f"wandb_mode={args.wandb_mode}",
        "--out", str(out),
    ])
    if code != 0:
        return code
    report = out / "report.html"
    code = wbclf(["report", str(out), "-o", str(report)])
    if code != 0:
        return code
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndemo finished in {minutes:.1f} min")
    print(f"  runs:   {out}/trial-*/ (config.yaml, metrics.jsonl, summary.json, checkpoints/)")
    print(f"  report: {report} (and {report.with_suffix('.md')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
