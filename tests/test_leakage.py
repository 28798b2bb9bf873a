"""Leaked test images: counted in every run, left out of the test figure with test_dedup."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_report import _write_run, parse_html
from wbclf.config import build_config
from wbclf.reporting.main import write_local_report
from wbclf.data.datasets import prepare_data
from wbclf.data.synthetic import MARKER, synthesize
from wbclf.tracking.wandb_offline import read_offline_run
from wbclf.training.run import train_run


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> Path:
    return synthesize("toy-leaves", tmp_path_factory.mktemp("leaky") / "toy", n=24, size=64,
                      leak=0.4)


def _cfg(dataset: Path, out: Path, **kw):
    base = {"dataset": str(dataset), "image_size": 32, "width": 8, "depth": 3, "epochs": 1,
            "batch_size": 32, "log_samples": 0, "out_dir": str(out), "wandb_mode": "offline",
            "num_workers": "0"}
    return build_config({**base, **kw})


def test_the_leak_mask_matches_the_generators_copies(leaky, tmp_path):
    data = prepare_data(_cfg(leaky, tmp_path))
    marker = json.loads((leaky / MARKER).read_text())
    copies = {str(leaky / valid) for valid, _ in marker["leaks"]}
    flagged = {s.path for s, bad in zip(data.splits["test"], data.leaked_test) if bad}
    assert len(copies) >= 8 and flagged == copies


def test_the_leak_check_is_remembered_per_split_and_redone_when_a_file_changes(
        leaky, tmp_path, monkeypatch):
    """The trials of a study share their splits: the second one reads the mask back; a
    touched image (a new image cache) or another seed (other splits) checks again."""
    import wbclf.data.datasets as D

    checked: list[int] = []
    check = D._test_leaks
    monkeypatch.setattr(D, "_test_leaks", lambda b: checked.append(1) or check(b))
    monkeypatch.setenv("WBCLF_CACHE_DIR", str(tmp_path / "cache"))
    first = prepare_data(_cfg(leaky, tmp_path))
    again = prepare_data(_cfg(leaky, tmp_path))
    assert len(checked) == 1 and first.leaked_test.any()
    assert np.array_equal(first.leaked_test, again.leaked_test)
    prepare_data(_cfg(leaky, tmp_path, seed=1))
    assert len(checked) == 2
    image = Path(first.splits["train"][0].path)
    image.touch()  # a new mtime: the image cache key changes, so does the memo's
    try:
        prepare_data(_cfg(leaky, tmp_path))
    finally:
        image.touch()
    assert len(checked) == 3


@pytest.mark.parametrize("dedup", [False, True])
def test_runs_record_leaked_test_images_and_dedup_drops_them(leaky, tmp_path, dedup):
    summary = train_run(_cfg(leaky, tmp_path, run_name="run", test_dedup=dedup))
    marker = json.loads((leaky / MARKER).read_text())
    leaked = len(marker["leaks"])
    total = sum(1 for p in (leaky / marker["leaks"][0][0]).parents[1].rglob("*.*"))
    assert summary["data/leaked_test_images"] == leaked
    assert summary["data/test_images"] == (total - leaked if dedup else total)
    chosen = "test_leak_free" if dedup else "test_with_leaks"
    assert summary["test/acc"] == summary[f"{chosen}/acc"]
    assert summary["test/macro_f1"] == summary[f"{chosen}/macro_f1"]
    # the leak-free figure is the same predictions without the copies
    per_image = summary["test_with_leaks/acc"] * total
    assert 0 <= per_image - summary["test_leak_free/acc"] * (total - leaked) <= leaked + 1e-6
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["data/leaked_test_images"] == leaked
    wandb_summary = read_offline_run(tmp_path / "run").summary
    assert wandb_summary["data/leaked_test_images"] == leaked
    assert wandb_summary["test_leak_free/acc"] == pytest.approx(summary["test_leak_free/acc"])
    # the report says so
    write_local_report(tmp_path, tmp_path / "report.html")
    findings = parse_html(tmp_path / "report.html").findings
    assert any(f"up to {leaked}" in f and "near-duplicate" in f for f in findings)


def test_report_shows_both_test_figures_when_they_differ(tmp_path):
    root = tmp_path / "runs"
    for name, leak_free in (("a", 0.70), ("b", 0.80)):
        summary = {"status": "finished", "val/acc": 0.8, "test/acc": 0.9, "test/macro_f1": 0.9,
                   "data/leaked_test_images": 7, "data/test_images": 50,
                   "data/test_dedup": False, "test_with_leaks/acc": 0.9,
                   "test_leak_free/acc": leak_free, "best_epoch": 1}
        _write_run(root / name, {"dataset": "toy-leaves", "lr": 1e-3 if name == "a" else 1e-2,
                                 "run_name": name}, summary, [{"epoch": 1, "val/acc": 0.8}])
    write_local_report(root, tmp_path / "report.html")
    page = parse_html(tmp_path / "report.html")
    header = next(t for t in page.tables if "test_leak_free/acc" in t)
    assert "test_with_leaks/acc" in header
    row = dict(zip(header, page.rows[next(r for r in page.rows if r.endswith("b"))]))
    assert row["test_leak_free/acc"] == "0.8000" and row["test_with_leaks/acc"] == "0.9000"
    assert any("up to 7 of 50" in f and "test_dedup=true" in f for f in page.findings)


def test_no_leaks_records_zero(toy_lesions, tmp_path):
    data = prepare_data(_cfg(toy_lesions, tmp_path))
    assert len(data.leaked_test) == len(data.splits["test"]) and not np.any(data.leaked_test)
