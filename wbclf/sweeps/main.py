"""``wbclf sweep SWEEP.yaml``: run a W&B sweep file locally, resumably, in parallel.

The file is the same one ``wandb sweep`` takes; each trial runs the command ``wandb agent``
would run. The study (Optuna, SQLite in the output folder or ``--storage URL``) remembers what
ran: rerunning the same command continues it. See docs/SWEEPS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wbclf.atomic import write_text_atomic
from wbclf.errors import fail

USAGE = ("wbclf sweep SWEEP.yaml [--set key=value ...] [--count N] [--workers N] "
         "[--storage URL] [--out DIR] [--dry-run] [--skip-missing] [--max-failures N] "
         "[--retry-failed]")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbclf sweep", usage=USAGE,
        description="Run a W&B sweep file locally: grid, random or bayes (Optuna), hyperband "
                    "early termination; interrupt it and run the same command to continue.")
    parser.add_argument("sweep_file", help="a W&B sweep YAML, e.g. sweeps/scratch_bn.yaml")
    parser.add_argument("--set", dest="pins", action="append", default=[], metavar="KEY=VALUE",
                        help="pin a parameter to one value (or set a RunConfig field the file "
                             "does not mention); repeatable")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help="run at most N trials in this invocation")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="trials in parallel (one GPU each when there are GPUs; CPU cores "
                             "are split)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="database URL of the study, shared by several machines "
                             "(default: SQLite in the output folder)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default: runs/<sweep file name>)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and list the trials that would run; run nothing")
    parser.add_argument("--skip-missing", action="store_true",
                        help="run only the trials whose dataset and weights are there; record "
                             "the others as skipped (default: stop before any trial)")
    parser.add_argument("--max-failures", type=int, default=3, metavar="N",
                        help="stop after N trials in a row crash with the same error (0 = "
                             "never; default 3)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run the crashed and skipped trials again (same names), before "
                             "any new trial")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wbclf sweep``; returns the exit code.

    0: every trial this invocation ran finished (or was pruned, diverged or skipped);
    1: some trial crashed, or the failure guard stopped the sweep; 2: a bad file or option,
    or a missing input found by the pre-flight (nothing ran); 130: interrupted.
    """
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    from wbclf.sweeps.schema import SweepError, load_sweep
    from wbclf.sweeps.storage import StorageError

    if args.workers < 1 or (args.count is not None and args.count < 1):
        return fail("--workers and --count must be at least 1")
    if args.max_failures < 0:
        return fail(f"--max-failures must be 0 (never stop) or more, not {args.max_failures}")
    try:
        spec = load_sweep(args.sweep_file, args.pins)
        setup = _setup(spec, args)
    except SweepError as err:
        return fail(str(err))
    except StorageError as err:
        return fail(str(err))
    for notice in spec.notices:
        print(f"note: {notice}")
    if args.dry_run:
        return dry_run(spec, **setup)
    from wbclf.sweeps.prestart import Prestarted

    try:
        check_out_dir(spec, setup["out"], setup["url"], write=False)
    except SweepError as err:
        return fail(str(err))
    prestarted = None
    try:
        # The warm worker imports on another core while the pre-flight checks the inputs.
        prestarted = Prestarted.begin(spec, setup["program"], setup["out"])
        missing = run_preflight(spec)
        if missing and not args.skip_missing:
            return fail(preflight_message(spec, missing))
        check_out_dir(spec, setup["out"], setup["url"])
        return run_sweep(spec, workers=args.workers, count=args.count,
                         max_failures=args.max_failures, retry_failed=args.retry_failed,
                         skip=missing, prestarted=prestarted, **setup)
    except SweepError as err:
        return fail(str(err))
    except StorageError as err:
        return fail(str(err))
    finally:
        if prestarted is not None:  # a no-op once the runner took them
            prestarted.abort()


def _setup(spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Output folder, storage URL and the program path; SweepError if they do not work."""
    from wbclf.sweeps.command import resolve_program
    from wbclf.sweeps.schema import SweepError
    from wbclf.sweeps.storage import backend, normalize_url, sqlite_path, sqlite_url

    out = Path(args.out or Path("runs") / Path(args.sweep_file).stem).absolute()
    backend(args.storage or "sqlite://")  # a clear error for a malformed URL
    url = normalize_url(args.storage) if args.storage else sqlite_url(out / "study.db")
    sqlite_path(url)
    program = spec.program or ""
    if spec.command is None or "${program}" in spec.command:
        found = resolve_program(spec.program or "", spec.path)
        if found is None:
            raise SweepError(str(spec.path), [
                f"program: {spec.program} not found from {Path.cwd()} or next to the sweep "
                "file; run wbclf sweep from the repository root"])
        program = found
    return {"out": out, "url": url, "program": program}


def sweep_record(spec: Any, url: str) -> dict[str, Any]:
    """What ``sweep.json`` holds: the resolved study."""
    from wbclf.sweeps.storage import redact
    from wbclf.sweeps.study import fingerprint, study_name

    return {
        "name": spec.name,
        "file": str(spec.path.resolve()),
        "study": study_name(spec),
        "fingerprint": fingerprint(spec),
        "storage": redact(url),
        "method": spec.method,
        "metric": {"name": spec.metric, "goal": spec.goal, "target": spec.target},
        "pins": spec.pins,
        "parameters": {k: p.config for k, p in spec.parameters.items()},
        "early_terminate": spec.early_terminate,
        "run_cap": spec.run_cap,
        "command": spec.command,
        "program": spec.program,
    }


def check_out_dir(spec: Any, out: Path, url: str, *, write: bool = True) -> None:
    """Refuse an output folder that belongs to another study; else write ``sweep.json``
    (with ``write=False`` only the check)."""
    from wbclf.sweeps.schema import SweepError

    record = sweep_record(spec, url)
    path = out / "sweep.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        for key in ("study", "storage"):
            if old.get(key) not in (None, record[key]):
                raise SweepError(str(spec.path), [
                    f"{out} holds study {old.get('study')} ({old.get('storage')}), not "
                    f"{record['study']} ({record['storage']}): the file, its --set values or "
                    "--storage changed; use the same ones, or another --out"])
        record["created"] = old.get("created")
    if not write:
        return
    out.mkdir(parents=True, exist_ok=True)
    record["created"] = record.get("created") or datetime.now(timezone.utc).isoformat()
    write_text_atomic(path, json.dumps(record, indent=2, default=str) + "\n")


def run_preflight(spec: Any) -> list[Any]:
    """The study's missing inputs (datasets, weights), each checked once; see preflight.py."""
    from wbclf.sweeps.preflight import preflight

    print(f"{spec.name}: checking datasets and weights...", flush=True)
    return preflight(spec)


def preflight_message(spec: Any, missing: list[Any]) -> str:
    """One error listing every missing input and how to get it."""
    count = len(missing)
    lines = [f"{spec.path}: {count} missing input{'s' if count != 1 else ''}; no trial ran"]
    lines += [f"  {m.line()}" for m in missing]
    lines.append("  (--skip-missing runs only the trials whose inputs are there)")
    return "\n".join(lines)


def _describe(spec: Any) -> str:
    from wbclf.sweeps.space import grid_size, pruner_settings

    if spec.method == "grid":
        what = f"grid of {grid_size(spec.varying.values())} points"
    else:
        what = f"{spec.method} search over {', '.join(spec.varying) or 'nothing'}"
    if spec.run_cap:
        what += f", run_cap {spec.run_cap}"
    pruner = pruner_settings(spec)
    if pruner:
        what += (f", hyperband (rungs from epoch {pruner['min_resource']}, eta "
                 f"{pruner['reduction_factor']}, max {pruner['max_resource']} epochs)")
    return what


def run_sweep(spec: Any, *, out: Path, url: str, program: str, workers: int,
              count: int | None, max_failures: int = 3, retry_failed: bool = False,
              skip: list[Any] | None = None, prestarted: Any = None) -> int:
    from wbclf.sweeps.runner import SweepRunner
    from wbclf.sweeps.storage import redact
    from wbclf.sweeps.study import SweepStudy

    study = SweepStudy(spec, url)
    if retry_failed:
        again = study.retry_failed()
        print(f"{spec.name}: {len(again)} crashed or skipped trial(s) to run again first"
              + (f": {', '.join(again[:10])}" + (" ..." if len(again) > 10 else "")
                 if again else ""), flush=True)
    before = study.counts()
    print(f"{spec.name}: {_describe(spec)}; {before['finished'] + before['pruned']} done "
          f"before, {workers} worker{'s' if workers > 1 else ''}\n"
          f"  runs in {out}\n  study {study.name} in {redact(url)}", flush=True)
    if spec.method != "grid" and spec.run_cap is None and count is None:
        print("  no run_cap and no --count: it runs until you stop it (Ctrl-C)", flush=True)
    runner = SweepRunner(spec, study, out_dir=out, program=program, workers=workers,
                         count=count, max_failures=max_failures, skip=skip,
                         prestarted=prestarted)
    code = runner.run()
    print(summary_line(spec, study, out), flush=True)
    return sweep_exit_code(code, [o.status for _, o in runner.results])


def sweep_exit_code(runner_code: int, statuses: list[str]) -> int:
    """130 interrupted; 1 the guard stopped it or a trial crashed; else 0 (README, exit codes).

    Diverged trials are results (a learning rate too high is an answer), not crashes.
    """
    if runner_code != 0:
        return runner_code
    return 1 if "failed" in statuses else 0


def summary_line(spec: Any, study: Any, out: Path) -> str:
    c = study.counts()
    line = (f"{spec.name}: {c['finished']} finished, {c['pruned']} pruned, {c['failed']} "
            f"failed")
    if c["skipped"]:
        line += f", {c['skipped']} skipped"
    if c["running"] or c["waiting"]:
        line += f", {c['running'] + c['waiting']} unfinished"
    best = study.best()
    if best is not None:
        params = " ".join(f"{k}={v}" for k, v in best.user_attrs.get("args", {}).items())
        line += (f"; best {spec.metric}={best.value:.4f} "
                 f"({best.user_attrs.get('run_name')}: {params})")
    return line + f"\n  runs in {out}"


def dry_run(spec: Any, *, out: Path, url: str, program: str) -> int:
    """Print what would run (reading the study if it exists); change nothing."""
    from wbclf.sweeps.command import render_command, shell_line
    from wbclf.sweeps.space import grid_points, search_space

    print(f"{spec.name}: {_describe(spec)}\n  runs in {out}")
    if spec.pins:
        print("  pinned: " + " ".join(f"{k}={v}" for k, v in spec.pins.items()))
    first: dict[str, Any] = {}
    if spec.method == "grid":
        points = list(grid_points(spec.varying.values()))
        if (out / "sweep.json").is_file():
            from wbclf.sweeps.study import SweepStudy

            points = SweepStudy(spec, url).remaining_grid()
        print(f"{len(points)} trial(s) to run:")
        for i, point in enumerate(points[:200]):
            print("  " + "  ".join(f"{k}={v}" for k, v in point.items()))
        if len(points) > 200:
            print(f"  ... and {len(points) - 200} more")
        first = points[0] if points else {}
    else:
        for name, dim in search_space(spec).items():
            print(f"  {name}: {dim.distribution}" + (f" rounded to q={dim.q}" if dim.q else ""))
        first = _sample(search_space(spec))
    params = {k: first.get(k, spec.constants.get(k)) for k in spec.parameters}
    argv = render_command(spec.command, program=program, params=params,
                          args_json_file=str(out / "params" / "trial-0000.json"))
    argv += [f"--out_dir={out}", "--run_name=trial-0000"]
    print("a trial runs (e.g.):\n  " + shell_line(argv))
    return 0


def _sample(dimensions: dict[str, Any]) -> dict[str, Any]:
    """One random draw of every dimension (for showing a command line)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask({k: d.distribution for k, d in dimensions.items()})
    return {k: dimensions[k].render(v) for k, v in trial.params.items()}


if __name__ == "__main__":
    sys.exit(main())
