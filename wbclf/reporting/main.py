"""``wbclf report``: compare runs in a self-contained HTML report (and Markdown), or in W&B.

    wbclf report RUNS_DIR [-o report.html] [--title TEXT]
    wbclf report --wandb ENTITY/PROJECT --sweep SWEEP_ID [--sweep-file FILE.yaml] [--dry-run]

The local report reads every run directory under RUNS_DIR (a sweep folder, several, or any
folder of runs); what it shows follows from what varied between the runs (see
docs/REPORTS.md). The HTML file embeds its figures; the Markdown twin links PNG files in a
``<name>_files/`` folder beside it. Exit codes: 0 written, 2 a usage or input error (one line
on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wbclf.errors import UserError, fail

USAGE = ("wbclf report RUNS_DIR [-o report.html] [--title TEXT]\n"
         "       wbclf report --wandb ENTITY/PROJECT --sweep SWEEP_ID "
         "[--sweep-file FILE.yaml] [--findings findings.json] [--title TEXT] [--dry-run]")


class ReportUsageError(UserError):
    """A bad command line or input folder; one line for the user."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbclf report", usage=USAGE,
        description="Compare the runs of a study: a self-contained HTML report with a Markdown "
                    "twin, or a W&B Report of a sweep.")
    parser.add_argument("runs_dir", nargs="?", help="folder of run directories (e.g. a sweep's "
                        "--out folder, or runs/)")
    parser.add_argument("-o", "--output", default=None,
                        help="HTML file to write (default: RUNS_DIR/report.html); the Markdown "
                             "goes beside it with the same name")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None,
                        help="build a W&B Report in this project instead")
    parser.add_argument("--sweep", metavar="SWEEP_ID", default=None,
                        help="with --wandb: the sweep to report on")
    parser.add_argument("--sweep-file", default=None,
                        help="with --wandb: the sweep's YAML; its parameters define the panels "
                             "(no network needed to build the report)")
    parser.add_argument("--findings", default=None, metavar="FINDINGS_JSON",
                        help="with --wandb: add the tested findings of `wbclf report` on the "
                             "same runs (its findings.json) to the W&B report")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --wandb: build the report and print its outline; save nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wbclf report``; returns the exit code."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    from wbclf.reporting.wandb_report import ReportError

    try:
        if args.wandb:
            return wandb_main(args)
        if args.sweep or args.sweep_file or args.dry_run:
            raise ReportUsageError("--sweep, --sweep-file and --dry-run go with --wandb "
                                   "ENTITY/PROJECT")
        if not args.runs_dir:
            raise ReportUsageError(f"give a folder of runs or --wandb; usage: {USAGE}")
        result = write_local_report(args.runs_dir, args.output, title=args.title)
    except (ReportUsageError, ReportError) as err:
        return fail(str(err))
    print(result.describe())
    return 0


# --------------------------------------------------------------------------- local report


@dataclass
class LocalReport:
    """What :func:`write_local_report` wrote."""

    html: Path
    markdown: Path
    assets: Path
    images: int
    best_line: str

    def describe(self) -> str:
        size = self.html.stat().st_size / 1e6
        return (f"report: {self.html} (self-contained, {size:.1f} MB)\n"
                f"markdown: {self.markdown} (+ {self.images} PNG files in {self.assets}/)\n"
                + "\n".join(f"  {line}" for line in self.best_line.splitlines()))


def write_local_report(runs_dir: str | Path, output: str | Path | None = None, *,
                       title: str | None = None) -> LocalReport:
    """Read the runs under ``runs_dir`` and write the HTML report, its Markdown and PNGs.

    Every file is written to a temporary name and renamed, so a reader never sees half a
    report; PNGs of an earlier report that this one no longer has are removed.
    """
    from wbclf.atomic import write_bytes_atomic, write_text_atomic
    from wbclf.reporting.collect import collect_studies
    from wbclf.reporting.document import build_document
    from wbclf.reporting.html import render_html
    from wbclf.reporting.markdown import render_markdown

    root = Path(runs_dir).absolute()
    if not root.is_dir():
        raise ReportUsageError(f"RUNS_DIR {runs_dir} is not a folder")
    html_path = Path(output) if output else root / "report.html"
    if html_path.suffix.lower() == ".md":
        raise ReportUsageError(f"-o {output}: give the HTML file; the Markdown is written "
                               "beside it")
    studies = collect_studies(root)
    if not studies:
        raise ReportUsageError(f"no run directories under {runs_dir} (folders with "
                               "config.yaml or summary.json)")
    doc = build_document(root, studies, title=title)
    md_path = html_path.with_suffix(".md")
    assets = html_path.with_name(f"{html_path.stem}_files")
    assets.mkdir(parents=True, exist_ok=True)
    for image in doc.images:
        write_bytes_atomic(assets / image.name, image.png)
    keep = {image.name for image in doc.images}
    for stale in assets.glob("*.png"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    write_text_atomic(md_path, render_markdown(doc, assets.name))
    write_text_atomic(findings_path(html_path), findings_json(doc.claims))
    write_text_atomic(html_path, render_html(doc))
    return LocalReport(html_path, md_path, assets, len(keep), doc.best_line)


def findings_path(html_path: Path) -> Path:
    """``findings.json`` beside ``report.html``; ``NAME.findings.json`` beside ``NAME.html``."""
    name = "findings.json" if html_path.stem == "report" else f"{html_path.stem}.findings.json"
    return html_path.with_name(name)


def findings_json(claims: Sequence[Any]) -> str:
    """The tested findings, one object per claim (the report's machine-readable twin)."""
    import json

    return json.dumps([c.to_json() for c in claims], indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- W&B report


def read_findings_texts(path: str | Path) -> list[str]:
    """The sentences of a ``findings.json``; a one-line error when it is not one."""
    import json

    try:
        claims = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ReportUsageError(f"--findings {path}: cannot read it as JSON "
                               f"({type(err).__name__})") from None
    if not isinstance(claims, list) or not all(
            isinstance(c, dict) and isinstance(c.get("text"), str) for c in claims):
        raise ReportUsageError(f"--findings {path}: expected the findings.json written by "
                               "`wbclf report` (a list of objects with a 'text')")
    return [c["text"] for c in claims]


def _entity_project(text: str) -> tuple[str, str]:
    parts = text.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise ReportUsageError(f"--wandb {text}: expected ENTITY/PROJECT, e.g. "
                               "--wandb my-team/wbclf")
    return parts[0], parts[1]


def wandb_main(args: argparse.Namespace) -> int:
    """Build (and unless --dry-run, save) the W&B Report of a sweep."""
    from wbclf.reporting import wandb_report as W

    entity, project = _entity_project(args.wandb)
    if args.runs_dir or args.output:
        raise ReportUsageError("--wandb builds a W&B report: RUNS_DIR and -o are for the local "
                               "report")
    if not args.sweep:
        raise ReportUsageError("--wandb needs --sweep SWEEP_ID (printed by `wandb sweep`)")
    sweep_id = args.sweep.strip("/").split("/")[-1]  # ENTITY/PROJECT/ID works too
    if args.sweep_file:
        params = W.sweep_params_from_file(args.sweep_file)
    else:
        params = W.sweep_params_from_api(entity, project, sweep_id)
    findings = read_findings_texts(args.findings) if args.findings else []
    report = W.build_wandb_report(entity, project, sweep_id, params, title=args.title,
                                  findings=findings)
    if args.dry_run:
        print(W.outline(report))
        print("dry run: the report was built, not saved")
        return 0
    print(f'saving W&B report "{report.title}" to {entity}/{project} ...', flush=True)
    url = W.save_report(report)
    print(f"saved: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
