"""FigureWriter: the files save_figure_atomic / save_chart_atomic write, encoded on a
background thread, in place (whole) by wait(); failures raised there; the last save wins."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from tests.test_plots import _grid_and_curves
from wbclf.tracking import plots
from wbclf.tracking.figure_writer import FigureWriter


def test_the_same_files_the_synchronous_savers_write(tmp_path: Path) -> None:
    writer = FigureWriter()
    for k, (ours, theirs) in enumerate(zip(_grid_and_curves(), _grid_and_curves())):
        chart = k > 0  # the grid is a picture, the others charts
        writer.save(ours, tmp_path / f"bg{k}.png", dpi=60, chart=chart)
        saver = plots.save_chart_atomic if chart else plots.save_figure_atomic
        saver(theirs, tmp_path / f"fg{k}.png", dpi=60)
    writer.wait()
    for k in range(len(_grid_and_curves())):
        assert (tmp_path / f"bg{k}.png").read_bytes() == (tmp_path / f"fg{k}.png").read_bytes()
    writer.save(_grid_and_curves()[1], tmp_path / "chart.svg", dpi=60, chart=True)  # at once
    assert (tmp_path / "chart.svg").read_bytes().lstrip().startswith(b"<?xml")
    writer.close()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_encoding_runs_on_another_thread_and_the_last_save_wins(tmp_path, monkeypatch):
    threads: list[str] = []
    write = plots.write_png

    def spied(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return write(*args, **kwargs)

    monkeypatch.setattr("wbclf.tracking.figure_writer.write_png", spied)
    writer = FigureWriter()
    for text in ("first", "second"):
        fig = Figure(figsize=(2, 1))
        fig.text(0.1, 0.5, text)
        writer.save(fig, tmp_path / "one.png", dpi=50)
    writer.close()
    assert len(threads) == 2 and all(t.startswith("wbclf-png") for t in threads)
    last = Figure(figsize=(2, 1))
    last.text(0.1, 0.5, "second")
    plots.save_figure_atomic(last, tmp_path / "ref.png", dpi=50)
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "ref.png").read_bytes()


def test_a_failed_write_is_raised_by_wait_and_the_others_land(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    writer = FigureWriter()
    writer.save(_grid_and_curves()[1], blocked / "roc.png", dpi=40, chart=True)
    writer.save(_grid_and_curves()[1], tmp_path / "fine.png", dpi=40, chart=True)
    with pytest.raises(OSError):
        writer.wait()
    assert (tmp_path / "fine.png").is_file()
    writer.wait()  # reported once
    writer.close()


def test_the_run_directory_has_every_figure_when_finish_returns(tmp_path, monkeypatch):
    """LocalRunLogger hands its figures to a FigureWriter; finish waits for them, and a
    figure that cannot be written still leaves the status in summary.json."""
    import json

    from tests.test_loggers import make_evaluation, make_samples, start
    from wbclf.tracking.loggers import LocalRunLogger

    names = ["Benign", "Malignant"]
    logger = LocalRunLogger(dpi=40)
    run_dir = start(logger, tmp_path, names)
    logger.log_evaluation(make_evaluation("val", names))
    logger.log_evaluation(make_evaluation("test", names, seed=1))
    logger.log_samples(2, make_samples(names, cams=True), "best_samples")
    logger.finish("finished")
    for name in ("confusion_matrix_val.png", "confusion_matrix.png", "roc.png",
                 "reliability.png", "samples.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert logger._figures is None  # its thread is gone

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("wbclf.tracking.figure_writer.write_png", refuse)
    other = LocalRunLogger(dpi=40)
    run_dir = start(other, tmp_path, names, run_dir=tmp_path / "full")
    other.log_evaluation(make_evaluation("val", names))
    with pytest.raises(OSError, match="No space left"):
        other.finish("failed")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert np.all([".tmp-" not in p.name for p in run_dir.iterdir()])


def test_a_figure_that_cannot_be_written_fails_the_run(toy_lesions, tmp_path, monkeypatch):
    """The error of a background write reaches the run before its status: summary.json and
    W&B say failed (so --resume will redo it), not finished with a figure missing."""
    import json

    from wbclf.config import build_config
    from wbclf.tracking.wandb_offline import read_offline_run
    from wbclf.training.run import train_run

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("wbclf.tracking.figure_writer.write_png", refuse)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = build_config({"dataset": str(toy_lesions), "image_size": 32, "width": 8, "depth": 2,
                        "epochs": 1, "limit_per_class": 12, "log_samples": 4,
                        "num_workers": "0", "out_dir": str(tmp_path), "run_name": "full",
                        "wandb_mode": "offline"})
    with pytest.raises(OSError, match="No space left"):
        train_run(cfg)
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    assert read_offline_run(tmp_path / "full").summary["status"] == "failed"
