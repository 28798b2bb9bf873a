"""The Logger protocol's local implementations: run directory, memory, fan-out; the plots."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from wbclf.config import build_config
from wbclf.tracking.loggers import (
    LocalRunLogger,
    Logger,
    MemoryLogger,
    MultiLogger,
    read_metrics,
    write_text_atomic,
)
from wbclf.tracking.records import Evaluation, SamplePredictions

PLANT_NAMES = ["Corn_(maize)___Common_rust_", "Pepper,_bell___Bacterial_spot",
               "Tomato___Spider_mites Two-spotted_spider_mite"]


def make_cfg(tmp_path: Path, **changes):
    return build_config({"data_dir": str(tmp_path / "data"), "epochs": 3, **changes})


def make_evaluation(split: str, class_names: list[str], n: int = 40, seed: int = 0,
                    threshold: float | None = None) -> Evaluation:
    rng = np.random.default_rng(seed)
    c = len(class_names)
    labels = np.arange(n) % c
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return Evaluation(split=split, labels=labels, probs=probs, loss=0.5,
                      metrics={"acc": 0.7}, class_names=list(class_names), threshold=threshold)


def make_samples(class_names: list[str], n: int = 6, size: int = 32, cams: bool = False,
                 seed: int = 0) -> SamplePredictions:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(class_names)
    preds = labels.copy()
    preds[::3] = (preds[::3] + 1) % len(class_names)  # a few mistakes
    return SamplePredictions(
        images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        labels=labels, preds=preds, confidences=rng.uniform(0.3, 1.0, n),
        class_names=list(class_names), paths=[f"img{i}.jpg" for i in range(n)],
        cams=rng.uniform(0, 1, (n, size // 4, size // 4)) if cams else None)


def start(logger, tmp_path: Path, names: list[str], *, resume: bool = False, start_epoch: int = 1,
          run_dir: Path | None = None) -> Path:
    run_dir = run_dir or tmp_path / "runs" / "r1"
    logger.start(cfg=make_cfg(tmp_path), run_dir=run_dir, class_names=names, resume=resume,
                 start_epoch=start_epoch)
    return run_dir


def leftovers(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.rglob("*") if ".tmp" in p.name]


def epoch_metrics(epoch: int) -> dict[str, float]:
    return {"train/loss": 1.0 / epoch, "val/acc": 0.1 * epoch, "lr": 1e-3, "time_s": 0.5}


# --------------------------------------------------------------------------- LocalRunLogger


def test_local_logger_writes_the_run_directory(tmp_path: Path) -> None:
    names = ["Benign", "Malignant"]
    logger = LocalRunLogger(dpi=60)
    run_dir = start(logger, tmp_path, names)
    for epoch in (1, 2, 3):
        logger.log_epoch(epoch, epoch_metrics(epoch))
    logger.log_samples(2, make_samples(names), "val_samples")
    logger.log_evaluation(make_evaluation("val", names, threshold=0.4))
    logger.log_evaluation(make_evaluation("test", names, seed=1, threshold=0.4))
    logger.log_samples(2, make_samples(names, cams=True), "best_samples")
    logger.log_mistakes(make_samples(names, n=3))
    logger.log_summary({"val/acc": 0.3, "test/acc": 0.7, "best_epoch": 3})
    logger.finish("finished")

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1]["val/acc"] == pytest.approx(0.2) and rows[1]["lr"] == 1e-3
    for name in ("confusion_matrix.png", "confusion_matrix_val.png", "roc.png", "samples.png",
                 "mistakes.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not (run_dir / "val_samples.png").exists()  # per-epoch grids are left to W&B

    with open(run_dir / "per_class.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["split", "class", "key", "precision", "recall", "f1", "support"]
    assert [(r["split"], r["class"]) for r in table] == [
        ("val", "Benign"), ("val", "Malignant"), ("test", "Benign"), ("test", "Malignant")]
    assert sum(int(r["support"]) for r in table if r["split"] == "test") == 40

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == {"best_epoch": 3, "status": "finished", "test/acc": 0.7, "val/acc": 0.3}
    assert list(summary) == sorted(summary)
    assert leftovers(run_dir) == []


def test_local_logger_many_long_class_names(tmp_path: Path) -> None:
    names = [f"{n}_{i}" for i in range(13) for n in PLANT_NAMES][:38]
    logger = LocalRunLogger(dpi=40)
    run_dir = start(logger, tmp_path, names)
    logger.log_evaluation(make_evaluation("test", names, n=120))
    logger.finish("finished")  # figures are written in the background until then
    import cv2

    image = cv2.imread(str(run_dir / "confusion_matrix.png"))
    assert image is not None and image.std() > 0  # a real, non-blank PNG
    # every class is labelled, in display form, and no label runs off the figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from wbclf.tracking.figure_layout import tick_labels
    from wbclf.tracking.plots import confusion_matrix_figure, display_name

    fig = confusion_matrix_figure(np.eye(38, dtype=int) * 3, names)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    ax = fig.axes[0]
    shown = [t.get_text() for t in tick_labels(ax, "bottom")]
    assert shown == [display_name(n, 48) for n in names]
    box = fig.bbox
    for label in tick_labels(ax, "bottom") + tick_labels(ax, "left"):
        extent = label.get_window_extent(renderer)
        assert extent.x0 >= box.x0 - 1 and extent.y0 >= box.y0 - 1, label.get_text()
        assert extent.x1 <= box.x1 + 1 and extent.y1 <= box.y1 + 1, label.get_text()
    # and the saved figure is the one drawn: the same size at the logger's dpi
    height, width = image.shape[:2]
    assert (width, height) == pytest.approx((fig.get_figwidth() * 40, fig.get_figheight() * 40),
                                            abs=2)
    assert not (run_dir / "roc.png").exists()  # binary only
    with open(run_dir / "per_class.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert table[1]["class"] == "Pepper,_bell___Bacterial_spot_0"  # the comma survives CSV
    assert table[1]["key"] == "Pepper__bell___Bacterial_spot_0"


def _count_saves(monkeypatch) -> dict[str, list[list[str]]]:
    """``{file name: [panel titles of each save]}`` of every figure the logger saves."""
    from wbclf.tracking.figure_writer import FigureWriter

    saves: dict[str, list[list[str]]] = {}
    real = FigureWriter.save

    def counted(self, fig, path, **kwargs):
        saves.setdefault(Path(path).name, []).append([ax.get_title() for ax in fig.axes])
        return real(self, fig, path, **kwargs)

    # every figure of the run directory goes through its FigureWriter
    monkeypatch.setattr(FigureWriter, "save", counted)
    return saves


def test_reliability_diagram_is_drawn_once_per_run(tmp_path: Path, monkeypatch) -> None:
    """Val then test arrive; the diagram of both is drawn once, when test does."""
    saves = _count_saves(monkeypatch)
    names = ["Benign", "Malignant"]
    logger = LocalRunLogger(dpi=40)
    run_dir = start(logger, tmp_path, names)
    logger.log_evaluation(make_evaluation("val", names))
    logger.log_evaluation(make_evaluation("test", names, seed=1))
    logger.log_samples(2, make_samples(names), "best_samples")
    logger.log_mistakes(make_samples(names, n=3))
    logger.finish("finished")
    drawn = saves["reliability.png"]
    assert len(drawn) == 1, f"reliability.png drawn {len(drawn)} times"
    assert [t.split(":")[0] for t in drawn[0]] == ["val", "test"]  # both curves, one figure
    assert all(len(v) == 1 for v in saves.values()), saves
    assert (run_dir / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_run_that_fails_after_val_still_gets_its_reliability_diagram(tmp_path: Path,
                                                                     monkeypatch) -> None:
    saves = _count_saves(monkeypatch)
    names = ["Benign", "Malignant"]
    logger = LocalRunLogger(dpi=40)
    run_dir = start(logger, tmp_path, names)
    logger.log_evaluation(make_evaluation("val", names))
    assert "reliability.png" not in saves  # test may still come
    logger.finish("failed")
    assert [[t.split(":")[0] for t in titles] for titles in saves["reliability.png"]] == [["val"]]
    assert (run_dir / "reliability.png").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    # a run without evaluations draws none
    other = LocalRunLogger(dpi=40)
    start(other, tmp_path, names, run_dir=tmp_path / "r2")
    other.finish("failed")
    assert not (tmp_path / "r2" / "reliability.png").exists()


def test_resume_truncates_metrics_so_each_epoch_appears_once(tmp_path: Path) -> None:
    names = ["a", "b"]
    first = LocalRunLogger()
    run_dir = start(first, tmp_path, names)
    for epoch in (1, 2, 3, 4):  # the checkpoint of epoch 4 was never written
        first.log_epoch(epoch, epoch_metrics(epoch))
    # A torn line (a hand edit, a foreign tool) must not stop the resume.
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 5, "val/a')

    second = LocalRunLogger()
    start(second, tmp_path, names, resume=True, start_epoch=4, run_dir=run_dir)
    assert [r["epoch"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    for epoch in (4, 5):
        second.log_epoch(epoch, {**epoch_metrics(epoch), "val/acc": 0.9})
    second.log_epoch(5, {**epoch_metrics(5), "val/acc": 0.95})  # the same epoch again
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == [1, 2, 3, 4, 5]
    assert json.loads(lines[-1])["val/acc"] == 0.95
    assert leftovers(run_dir) == []


def test_fresh_start_in_a_used_directory_forgets_old_metrics(tmp_path: Path) -> None:
    logger = LocalRunLogger()
    run_dir = start(logger, tmp_path, ["a", "b"])
    logger.log_epoch(1, epoch_metrics(1))
    start(LocalRunLogger(), tmp_path, ["a", "b"], run_dir=run_dir)
    assert (run_dir / "metrics.jsonl").read_text() == ""


def test_summary_json_is_json_safe(tmp_path: Path) -> None:
    logger = LocalRunLogger()
    run_dir = start(logger, tmp_path, ["a", "b"])
    logger.log_epoch(1, {"train/loss": float("nan"), "val/acc": np.float32(0.5)})
    logger.log_summary({"test/auc": float("nan"), "val/loss": float("inf"),
                        "model/params": np.int64(12), "data/skipped_files": ["x.jpg"],
                        "ok": np.bool_(True), "error": "boom"})
    logger.log_summary({"error": "later"})  # merged, later wins
    logger.finish("diverged")
    text = (run_dir / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert summary == {"test/auc": None, "val/loss": None, "model/params": 12,
                       "data/skipped_files": ["x.jpg"], "ok": True, "error": "later",
                       "status": "diverged"}
    row = json.loads((run_dir / "metrics.jsonl").read_text())
    assert row == {"epoch": 1, "train/loss": None, "val/acc": 0.5}


def test_finish_rejects_unknown_status(tmp_path: Path) -> None:
    logger = LocalRunLogger()
    start(logger, tmp_path, ["a", "b"])
    with pytest.raises(ValueError, match="allowed: finished, pruned"):
        logger.finish("done")


def test_write_text_atomic_leaves_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "summary.json"
    write_text_atomic(path, "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("wbclf.atomic.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_importing_loggers_does_not_import_wandb() -> None:
    import subprocess

    code = ("import sys, wbclf.tracking.loggers, wbclf.tracking.records; "
            "print(sorted(m for m in ('wandb', 'torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- memory, fan-out


def test_memory_logger_records_everything(tmp_path: Path) -> None:
    mem = MemoryLogger()
    assert isinstance(mem, Logger)
    start(mem, tmp_path, ["a", "b"])
    mem.log_epoch(1, {"val/acc": 0.5})
    mem.log_epoch(2, {"val/acc": 0.6})
    samples = make_samples(["a", "b"])
    mem.log_samples(2, samples, "val_samples")
    mem.log_evaluation(make_evaluation("test", ["a", "b"]))
    mem.log_mistakes(samples)
    mem.log_summary({"val/acc": 0.6})
    mem.finish("pruned")
    assert mem.history == [{"epoch": 1, "val/acc": 0.5}, {"epoch": 2, "val/acc": 0.6}]
    assert mem.samples == [(2, "val_samples", samples)]
    assert set(mem.evaluations) == {"test"}
    assert mem.summary == {"val/acc": 0.6, "status": "pruned"}
    assert mem.status == "pruned"
    assert mem.calls[0] == "start" and mem.calls[-1] == "finish"
    # A resume forgets the epochs that will run again.
    mem.start(cfg=mem.started["cfg"], run_dir=tmp_path, class_names=["a", "b"], resume=True,
              start_epoch=2)
    assert list(mem.epochs) == [1]


def test_multi_logger_fans_out_and_always_finishes_all(tmp_path: Path) -> None:
    a, b = MemoryLogger(), MemoryLogger()
    multi = MultiLogger([a, b])
    assert isinstance(multi, Logger)
    start(multi, tmp_path, ["a", "b"])
    multi.log_epoch(1, {"val/acc": 0.5})
    multi.log_samples(1, make_samples(["a", "b"]), "val_samples")
    multi.log_evaluation(make_evaluation("val", ["a", "b"]))
    multi.log_mistakes(make_samples(["a", "b"]))
    multi.log_summary({"x": 1})
    for mem in (a, b):
        assert mem.calls == ["start", "log_epoch", "log_samples", "log_evaluation",
                             "log_mistakes", "log_summary"]

    class Broken(MemoryLogger):
        def finish(self, status: str = "finished") -> None:
            raise RuntimeError("cannot finish")

    c = MemoryLogger()
    with pytest.raises(RuntimeError, match="cannot finish"):
        MultiLogger([Broken(), c]).finish("failed")
    assert c.status == "failed"


# --------------------------------------------------------------------------- plots


def test_cam_overlay_shape_and_weighting() -> None:
    from wbclf.tracking.plots import cam_overlay

    image = np.full((32, 48, 3), 100, np.uint8)
    cam = np.zeros((8, 12))
    cam[:4] = 1.0  # top half "looked at"
    out = cam_overlay(image, cam)
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    assert np.array_equal(out[-4:], image[-4:])  # CAM 0: the plain image
    assert not np.array_equal(out[:4], image[:4])
    gray = cam_overlay(np.full((16, 16), 50, np.uint8), np.full((16, 16), np.nan))
    assert gray.shape == (16, 16, 3)


def test_display_name_is_readable_and_bounded() -> None:
    from wbclf.tracking.plots import display_name

    assert display_name("Corn_(maize)___Common_rust_") == "Corn (maize) / Common rust"
    long = display_name("Tomato___Spider_mites Two-spotted_spider_mite_and_more_words", 30)
    assert len(long) == 30 and "…" in long and long.startswith("Tomato")


def test_roc_figure_handles_one_class(tmp_path: Path) -> None:
    from wbclf.tracking.plots import roc_figure, save_figure_atomic

    fig = roc_figure(np.zeros(5, int), np.linspace(0, 1, 5), threshold=0.5)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() is None]
    assert texts == ["undefined: one class only", "undefined: no positives"]
    save_figure_atomic(fig, tmp_path / "roc.png", dpi=40)
    import cv2

    image = cv2.imread(str(tmp_path / "roc.png"))
    assert image is not None and image.shape[:2] == (round(4.6 * 40), 10 * 40)


def test_figures_are_written_with_the_fastest_png_compression(tmp_path: Path) -> None:
    """The pixels of matplotlib's own PNG (less its alpha channel, opaque on a white figure;
    printed by the same line-at-a-time canvas), written at zlib's fastest level."""
    import struct

    from PIL import Image

    from wbclf.tracking.line_text import LineCanvasAgg
    from wbclf.tracking.plots import confusion_matrix_figure, save_figure_atomic

    cm = np.array([[5, 1], [2, 7]])
    fast = save_figure_atomic(confusion_matrix_figure(cm, ["a", "b"]), tmp_path / "cm.png")
    default = tmp_path / "default.png"
    reference = confusion_matrix_figure(cm, ["a", "b"])
    LineCanvasAgg(reference)
    reference.savefig(default, dpi=110, facecolor="white")
    data = fast.read_bytes()
    at = 8
    while data[at + 4:at + 8] != b"IDAT":
        at += 12 + struct.unpack(">I", data[at:at + 4])[0]
    assert data[at + 9] >> 6 == 0  # the zlib header's FLEVEL: 0 = fastest
    ours, theirs = np.asarray(Image.open(fast)), np.asarray(Image.open(default))
    assert ours.shape[2] == 3 and (theirs[..., 3] == 255).all()
    assert np.array_equal(ours, theirs[..., :3])


def test_grad_cam_overlays_are_blended_once_for_every_logger(tmp_path, monkeypatch):
    """samples.png and the W&B table show the same overlays: each is made once."""
    from wbclf.tracking import plots
    from wbclf.tracking.wandb_logger import WandbLogger

    made: list[int] = []
    blend = plots.cam_overlay

    def counted(image, cam, *args, **kwargs):
        made.append(1)
        return blend(image, cam, *args, **kwargs)

    monkeypatch.setattr(plots, "cam_overlay", counted)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    samples = make_samples(["a", "b"], n=5, cams=True)
    multi = MultiLogger([LocalRunLogger(), WandbLogger(mode="offline", project="wbclf-test")])
    start(multi, tmp_path, ["a", "b"])
    multi.log_samples(2, samples, "best_samples")
    multi.finish("finished")
    assert len(made) == 5
    assert plots.sample_overlay(samples, 3) is plots.sample_overlay(samples, 3)
    assert np.array_equal(plots.sample_overlay(samples, 3),
                          blend(samples.images[3], samples.cams[3]))
    with pytest.raises(ValueError, match="no Grad-CAM"):
        plots.sample_overlay(make_samples(["a", "b"], n=2), 0)
