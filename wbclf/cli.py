"""The ``wbclf`` command line.

``train`` takes ``--key=value`` RunConfig fields (the W&B agent's form) through the one config
parser; the other subcommands use argparse. Every expected failure is one line on stderr,
``wbclf: error: ...``, and exit code 2; a diverged run exits 3; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from wbclf.errors import exit_code_for, fail

# wbclf.data.dedup.DEFAULT_THRESHOLD, written here so that `wbclf --help` does not import numpy
# (tests/test_audit.py checks the two agree)
AUDIT_THRESHOLD = 0.005

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

USAGE = """usage: wbclf COMMAND ...

commands:
  train    [--config FILE.yaml] [--key=value ...] [--print-config] [--resume RUN_DIR]
  lr-find  [--key=value ...] [--steps N] [--start-lr LR] [--end-lr LR] [--plot PNG] [--json]
  sweep    SWEEP.yaml [--set key=value ...] [--count N] [--workers N] [--storage URL] [--out DIR]
  report   RUNS_DIR [-o report.html] |
           --wandb ENTITY/PROJECT --sweep ID [--sweep-file FILE.yaml] [--dry-run]
  data     synth {toy-lesions|toy-leaves} --out DIR [--leak R] | inspect PATH_OR_NAME [--json] |
           audit PATH_OR_NAME [--json] [--threshold T] [--sheet PNG] |
           download {plant-disease|melanoma} |
           preview DATASET [--augment X] [--n 8] [--views 6] [-o preview.png]
  predict  RUN_DIR IMAGE_OR_DIR... [-o predictions.csv] [--top-k K] [--tta] [--cam DIR]
  export   RUN_DIR --format {onnx|torchscript}

`wbclf train --help` lists every RunConfig field with its type, default and meaning.
"""


def cmd_train(argv: Sequence[str]) -> int:
    """``wbclf train``: parse --key=value, then print the config or train."""
    from wbclf.config import field_help, parse_tokens

    if any(a in ("-h", "--help") for a in argv):
        print("usage: wbclf train [--config FILE.yaml] [--key=value ...] [--print-config] "
              "[--resume RUN_DIR]\n\nfields (--name=default  type  meaning):\n\n" + field_help())
        return 0
    parsed = parse_tokens(argv)
    if parsed.print_config:
        print(json.dumps(parsed.config.to_dict(), indent=2))
        return 0
    from wbclf.training.run import resume_run, train_run
    from wbclf.sweeps.trial import callback_from_env

    callback = callback_from_env()  # reports to the local sweep's pruner; None otherwise
    if parsed.resume:
        summary = resume_run(parsed.resume, overrides=parsed.overrides, epoch_callback=callback)
    else:
        summary = train_run(parsed.config, epoch_callback=callback)
    return 0 if summary is not None else 1


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wbclf data")
    sub = parser.add_subparsers(dest="action", required=True)
    synth = sub.add_parser("synth", help="generate a toy dataset")
    synth.add_argument("name", choices=["toy-lesions", "toy-leaves"])
    synth.add_argument("--out", required=True)
    synth.add_argument("--n", type=int, default=None, help="train images per class")
    synth.add_argument("--size", type=int, default=None, help="image side in px")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--leak", type=float, default=None,
                       help="toy-leaves: share of valid files copied from train (default 0.1)")
    inspect = sub.add_parser("inspect", help="layout, classes, split counts, skipped files")
    inspect.add_argument("dataset")
    inspect.add_argument("--json", action="store_true")
    inspect.add_argument("--data-dir", default=None)
    audit = sub.add_parser("audit", help="near-duplicate images within and across splits")
    audit.add_argument("dataset")
    audit.add_argument("--json", action="store_true")
    audit.add_argument("--threshold", type=float, default=None,
                       help=f"max fingerprint distance of a pair (default {AUDIT_THRESHOLD})")
    audit.add_argument("--sheet", default="audit_pairs.png",
                       help="contact sheet of the worst pairs (PNG)")
    audit.add_argument("--val-fraction", type=float, default=0.15)
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--data-dir", default=None)
    download = sub.add_parser("download", help="fetch a Kaggle dataset with kagglehub")
    download.add_argument("name", choices=["plant-disease", "melanoma"])
    download.add_argument("--data-dir", default=None)
    preview = sub.add_parser("preview", help="a grid of augmented views of train images")
    preview.add_argument("dataset")
    preview.add_argument("--augment", default="light",
                         help="a preset (none, light, strong) or a pipeline file")
    preview.add_argument("--n", type=int, default=8, help="images (rows)")
    preview.add_argument("--views", type=int, default=6, help="augmented views per image")
    preview.add_argument("--image-size", type=int, default=128)
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("-o", "--out", default="preview.png")
    preview.add_argument("--data-dir", default=None)
    return parser


def cmd_data(argv: Sequence[str]) -> int:
    from wbclf.config import default_data_dir

    args = _data_parser().parse_args(argv)
    if args.action == "synth":
        import time

        from wbclf.data.synthetic import synthesize

        start = time.perf_counter()
        root = synthesize(args.name, args.out, n=args.n, size=args.size, seed=args.seed,
                          progress=sys.stderr.isatty(), leak=args.leak)
        print(f"{args.name} written to {root} in {time.perf_counter() - start:.1f}s")
        return 0
    if args.action == "inspect":
        from wbclf.data.inspect import inspect_dataset, render_inspection

        report = inspect_dataset(args.dataset, args.data_dir or default_data_dir())
        print(json.dumps(report, indent=2) if args.json else render_inspection(report))
        return 0
    if args.action == "preview":
        from wbclf.data.preview import write_preview

        path = write_preview(args.dataset, args.data_dir or default_data_dir(), args.augment,
                             n=args.n, views=args.views, size=args.image_size,
                             seed=args.seed, out=args.out)
        print(f"preview written to {path}")
        return 0
    if args.action == "audit":
        from wbclf.data.audit import run_audit
        from wbclf.data.dedup import DEFAULT_THRESHOLD

        threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        print(run_audit(args.dataset, args.data_dir or default_data_dir(), threshold=threshold,
                        sheet=args.sheet, val_fraction=args.val_fraction, seed=args.seed,
                        as_json=args.json))
        return 0
    from wbclf.data.sources import download

    root = download(args.name, args.data_dir or default_data_dir())
    print(f"{args.name} installed at {root}")
    return 0


def cmd_lr_find(argv: Sequence[str]) -> int:
    from wbclf.training.lr_find_main import main as lr_find_main

    return lr_find_main(argv)


def cmd_sweep(argv: Sequence[str]) -> int:
    from wbclf.sweeps.main import main as sweep_main

    return sweep_main(argv)


def cmd_report(argv: Sequence[str]) -> int:
    from wbclf.reporting.main import main as report_main

    return report_main(argv)


def cmd_predict(argv: Sequence[str]) -> int:
    from wbclf.inference.predict import main as predict_main

    return predict_main(argv)


def cmd_export(argv: Sequence[str]) -> int:
    from wbclf.inference.export import main as export_main

    return export_main(argv)


COMMANDS = {
    "train": cmd_train,
    "lr-find": cmd_lr_find,
    "sweep": cmd_sweep,
    "report": cmd_report,
    "data": cmd_data,
    "predict": cmd_predict,
    "export": cmd_export,
}


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler, a sweep runner, `kill`) stops like Ctrl-C: loggers finish, the
    W&B run is marked, and the last complete checkpoint stays as it was."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wbclf`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        guess = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        return fail(f"unknown command '{command}'{hint} (allowed: {', '.join(COMMANDS)})")
    _sigterm_as_interrupt()
    try:
        return COMMANDS[command](rest)
    except KeyboardInterrupt:
        print("wbclf: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 -- known errors become one line; others re-raise
        code = exit_code_for(err)
        if code is None:
            raise
        return fail(str(err).splitlines()[0] if str(err) else type(err).__name__, code)


if __name__ == "__main__":
    sys.exit(main())
