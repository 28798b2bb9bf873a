"""WandbLogger against the real wandb library in offline mode, read back with wandb_offline."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from wbclf.config import build_config
from wbclf.errors import RunError
from wbclf.tracking.records import Evaluation, SamplePredictions
from wbclf.tracking.wandb_logger import (
    RUN_ID_FILE,
    WandbLogger,
    api_key_configured,
    resolve_wandb_mode,
)
from wbclf.tracking.wandb_offline import (
    OfflineRunError,
    iter_records,
    read_offline_run,
    segment_complete,
    wait_for_segment,
)

pytest.importorskip("wandb")

NAMES = ["Benign", "Malignant"]
SAMPLE_COLUMNS = ["image", "true", "pred", "confidence", "correct"]
_AUTH_ENV = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL",
             "WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_DISABLED",
             "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RESUME")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with no W&B credentials and no W&B environment: nothing reaches the real one."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in _AUTH_ENV + ("WANDB_MODE",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    return home


@pytest.fixture
def offline(home: Path, monkeypatch: pytest.MonkeyPatch):
    """wandb in offline mode with every directory it writes under tmp_path."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name, sub in (("WANDB_DIR", "wandb-dir"), ("WANDB_DATA_DIR", "wandb-data"),
                      ("WANDB_CACHE_DIR", "wandb-cache"), ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(name, str(home / sub))
    # wandb reads its environment once per process (its singleton): start each test afresh.
    wandb.teardown()
    yield home
    wandb.teardown()


def run_epochs(logger: WandbLogger, epochs, accs: dict[int, float]) -> None:
    for epoch in epochs:
        logger.log_epoch(epoch, {**epoch_metrics(epoch), "val/acc": accs[epoch],
                                 "val/loss": 1.0 - accs[epoch], "lr/backbone": 1e-4})


def table_files(run, key: str) -> list[Path]:
    prefix = f"{key}_"
    return [p for p in run.files if p.name.endswith(".table.json") and p.name.startswith(prefix)
            and "media/table" in p.as_posix()]


def make_cfg(tmp_path: Path, **changes):
    return build_config({"data_dir": str(tmp_path / "data"), "epochs": 4, **changes})


def epoch_metrics(epoch: int) -> dict[str, float]:
    return {"train/loss": 1.0 / epoch, "val/acc": 0.1 * epoch, "lr": 1e-3, "time_s": 0.5}


def make_evaluation(split: str, class_names: list[str], n: int = 40, seed: int = 0,
                    threshold: float | None = None) -> Evaluation:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(class_names)
    logits = rng.normal(size=(n, len(class_names)))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return Evaluation(split=split, labels=labels, probs=probs, loss=0.5, metrics={"acc": 0.7},
                      class_names=list(class_names), threshold=threshold)


def make_samples(class_names: list[str], n: int = 6, size: int = 32, cams: bool = False,
                 seed: int = 0) -> SamplePredictions:
    """Random images; every third prediction is wrong."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(class_names)
    preds = labels.copy()
    preds[::3] = (preds[::3] + 1) % len(class_names)
    return SamplePredictions(
        images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        labels=labels, preds=preds, confidences=rng.uniform(0.3, 1.0, n),
        class_names=list(class_names),
        cams=rng.uniform(0, 1, (n, size // 4, size // 4)) if cams else None)


# --------------------------------------------------------------------------- end to end


def test_offline_run_end_to_end(offline: Path, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, model="resnet18", strategy="finetune", dataset="toy-lesions")
    run_dir = tmp_path / "runs" / "toy-lesions-resnet18"
    logger = WandbLogger(mode="auto", project="wbclf-test", group="study", tags=["extra"])
    logger.start(cfg=cfg, run_dir=run_dir, class_names=NAMES, resume=False, start_epoch=1)
    accs = {1: 0.5, 2: 0.8, 3: 0.7}
    run_epochs(logger, [1, 2], accs)
    logger.log_samples(2, make_samples(NAMES, n=6, cams=True), "val_samples")
    logger.log_samples(3, make_samples(NAMES, n=2), "val_samples")  # before its epoch's row
    run_epochs(logger, [3], accs)
    logger.log_evaluation(make_evaluation("val", NAMES, threshold=0.4))
    logger.log_evaluation(make_evaluation("test", NAMES, seed=1, threshold=0.4))
    logger.log_samples(2, make_samples(NAMES, n=5), "best_samples")
    logger.log_mistakes(make_samples(NAMES, n=3))
    logger.log_summary({"val/acc": 0.8, "best_epoch": 2, "test/acc": 0.75,
                        "test/auc": float("nan"), "test/f1/Malignant": np.float32(0.5)})
    logger.finish("finished")

    run = read_offline_run(run_dir)
    assert run.run_id == (run_dir / RUN_ID_FILE).read_text().strip()
    assert run.exit_code == 0
    # Every call is a committed row; the epoch rows (those with val/acc) are one per epoch.
    epochs = run.rows_with("val/acc")
    assert [row["epoch"] for row in epochs] == [1, 2, 3]
    assert [row["val/acc"] for row in epochs] == [0.5, 0.8, 0.7]
    assert epochs[0]["lr/backbone"] == 1e-4
    assert [row["_step"] for row in run.history] == list(range(len(run.history)))
    samples_rows = run.rows_with("val_samples")
    assert [row["epoch"] for row in samples_rows] == [2, 3]
    assert samples_rows[0]["val_samples"]["_type"] == "table-file"
    assert samples_rows[0]["val_samples"]["nrows"] == 6
    assert samples_rows[1] is epochs[2]  # logged before log_epoch(3): the same row
    for key in ("best_samples", "test/worst_mistakes", "val/per_class", "test/per_class",
                "test/confusion_matrix_table", "test/roc_curve_table", "test/pr_curve_table"):
        (row,) = run.rows_with(key)
        assert row["epoch"] == 3, key  # end-of-run rows sit at the last epoch
    assert [row["epoch"] for row in run.history] == sorted(row["epoch"] for row in run.history)

    assert run.summary["val/acc"] == 0.8 == max(accs.values())
    assert run.summary["status"] == "finished"
    assert run.summary["best_epoch"] == 2 and run.summary["test/acc"] == 0.75
    assert run.summary["test/auc"] is None
    assert run.summary["test/f1/Malignant"] == 0.5

    expected = cfg.to_dict()
    assert {k: run.config[k] for k in expected} == expected
    assert run.project == "wbclf-test" and run.group == "study"
    assert run.display_name == run_dir.name
    assert run.tags == ["toy-lesions", "resnet18", "finetune", "extra"]
    defined = {m.get("name"): m for m in run.metrics}
    assert defined["val/acc"]["summary"] == {"max": True}
    assert defined["val/acc"]["stepMetric"] == "epoch"

    # The sample table: a file under files/media/table/ (images appear as their type there)...
    assert len(table_files(run, "val_samples")) == 2
    logged = samples_rows[0]["val_samples"]["path"]  # the epoch-2 table, relative to files/
    (path,) = [p for p in run.files if p.as_posix().endswith("/files/" + logged)]
    table = json.loads(path.read_text())
    assert table["columns"] == SAMPLE_COLUMNS + ["cam"]
    assert len(table["data"]) == 6
    assert [row[1:3] for row in table["data"][:2]] == [["Benign", "Malignant"],
                                                       ["Malignant", "Malignant"]]
    (best,) = table_files(run, "best_samples")
    assert json.loads(best.read_text())["columns"] == SAMPLE_COLUMNS
    # ... and the full table with its images in the run_table artifact wandb stages for sync.
    artifact = next(a for a in run.artifacts if a["name"] == f"run-{run.run_id}-val_samples")
    images = [p for p in artifact["entries"] if p.startswith("media/images/")]
    assert len(images) == 12  # 6 images + 6 Grad-CAM overlays
    staged = Path(artifact["entries"]["val_samples.table.json"])
    assert staged.is_relative_to(offline)
    assert json.loads(staged.read_text())["columns"] == SAMPLE_COLUMNS + ["cam"]


def test_sample_images_are_encoded_once_and_every_table_shows_them(
        offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The val samples of every logged epoch are the same pictures: one PNG encode each per
    run, yet each epoch's table still points at files holding exactly those pixels."""
    import wandb
    from PIL import Image as PILImage

    made: list[int] = []
    encode = wandb.Image.__init__

    def counted(self, *args, **kwargs) -> None:
        made.append(1)
        encode(self, *args, **kwargs)

    monkeypatch.setattr(wandb.Image, "__init__", counted)
    run_dir = tmp_path / "runs" / "samples"
    logger = WandbLogger(mode="offline", project="wbclf-test")
    logger.start(cfg=make_cfg(tmp_path), run_dir=run_dir, class_names=NAMES, resume=False,
                 start_epoch=1)
    samples = make_samples(NAMES, n=4)
    for epoch in (1, 2, 3):
        logger.log_samples(epoch, samples, "val_samples")
        run_epochs(logger, [epoch], {epoch: 0.5})
    logger.log_samples(2, samples, "best_samples")
    logger.finish("finished")
    assert len(made) == 4  # not 16: four pictures, four tables

    # Each logged table is staged with its images in a run_table artifact: read them back.
    run = read_offline_run(run_dir)
    staged = [a for a in run.artifacts
              if a["name"] in (f"run-{run.run_id}-val_samples", f"run-{run.run_id}-best_samples")]
    assert len(staged) == 4
    for artifact in staged:
        entries = artifact["entries"]
        (table,) = [p for p in entries if p.endswith(".table.json")]
        rows = json.loads(Path(entries[table]).read_text())["data"]
        assert len(rows) == 4
        for k, row in enumerate(rows):
            shown = np.asarray(PILImage.open(entries[row[0]["path"]]).convert("RGB"))
            assert np.array_equal(shown, samples.images[k])


@pytest.mark.parametrize("symlinks", ["", "true"])
def test_pictures_read_back_exactly_and_their_files_go_with_the_run(
        offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, symlinks: str) -> None:
    """The PNGs wbclf hands wandb (OpenCV, fast zlib level) hold the exact pixels: a logged
    image, table images and Grad-CAM overlays; the folder holding them is gone at finish,
    and wandb copied them even where it was told it may link media files instead."""
    from PIL import Image as PILImage

    if symlinks:
        monkeypatch.setenv("WANDB_ALLOW_MEDIA_SYMLINK", symlinks)

    from wbclf.tracking.plots import cam_overlay

    run_dir = tmp_path / "runs" / "pictures"
    logger = WandbLogger(mode="offline", project="wbclf-test")
    logger.start(cfg=make_cfg(tmp_path), run_dir=run_dir, class_names=NAMES, resume=False,
                 start_epoch=1)
    media = Path(logger._media.name)
    rng = np.random.default_rng(3)
    grid = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    logger.log_augment_preview(grid, "preview")
    samples = make_samples(NAMES, n=3, cams=True)
    logger.log_samples(1, samples, "val_samples")
    run_epochs(logger, [1], {1: 0.5})
    assert len(list(media.glob("*.png"))) == 7  # the grid, 3 pictures, 3 overlays
    logger.finish("finished")
    assert not media.exists()

    run = read_offline_run(run_dir)
    (row,) = run.rows_with("augment/preview")
    (preview,) = [p for p in run.files if p.as_posix().endswith(row["augment/preview"]["path"])]
    assert not preview.is_symlink()
    assert np.array_equal(np.asarray(PILImage.open(preview)), grid)
    artifact = next(a for a in run.artifacts if a["name"] == f"run-{run.run_id}-val_samples")
    entries = artifact["entries"]
    (table,) = [p for p in entries if p.endswith(".table.json")]
    rows = json.loads(Path(entries[table]).read_text())["data"]
    for k, row in enumerate(rows):
        picture = np.asarray(PILImage.open(entries[row[0]["path"]]).convert("RGB"))
        overlay = np.asarray(PILImage.open(entries[row[-1]["path"]]).convert("RGB"))
        assert np.array_equal(picture, samples.images[k])
        assert np.array_equal(overlay, cam_overlay(samples.images[k], samples.cams[k]))


def test_resume_continues_the_same_run_without_repeating_epochs(offline: Path,
                                                                tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    run_dir = tmp_path / "runs" / "resumed"
    accs = {1: 0.4, 2: 0.6, 3: 0.5, 4: 0.55}
    first = WandbLogger(mode="offline", project="wbclf-test")
    first.start(cfg=cfg, run_dir=run_dir, class_names=NAMES, resume=False, start_epoch=1)
    run_epochs(first, [1, 2, 3], accs)  # the checkpoint of epoch 3 was never written
    first.finish("interrupted")
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()

    second = WandbLogger(mode="offline", project="wbclf-test")
    second.start(cfg=cfg, run_dir=run_dir, class_names=NAMES, resume=True, start_epoch=3)
    assert second.run.id == run_id
    run_epochs(second, [3, 4], {**accs, 3: 0.45})  # epoch 3 again, another result
    second.log_evaluation(make_evaluation("test", NAMES))
    second.finish("pruned")  # ends early without log_summary

    run = read_offline_run(run_dir)
    assert run.run_id == run_id and len(run.segments) == 2
    epochs = run.rows_with("val/acc")
    assert [row["epoch"] for row in epochs] == [1, 2, 3, 4]
    assert epochs[2]["val/acc"] == 0.5  # W&B keeps what it had for epoch 3
    # The second segment continues the step axis (wandb sync needs growing steps).
    steps = [row["_step"] for row in run.history]
    assert steps == list(range(len(run.history)))
    assert run.exit_code == 0
    assert run.summary["status"] == "pruned"
    # No log_summary: the sweep metric is still a plain number, the best of both segments
    # (the second one alone only saw 0.45 and 0.55).
    assert run.summary["val/acc"] == 0.6

    # One segment folder given: its sibling segment is merged too.
    assert read_offline_run(run.segments[1]).history == run.history


def test_fresh_start_in_a_used_run_dir_gets_a_new_run(offline: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "again"
    (run_dir).mkdir(parents=True)
    (run_dir / RUN_ID_FILE).write_text("oldrun01\n")
    logger = WandbLogger(mode="offline")
    logger.start(cfg=make_cfg(tmp_path), run_dir=run_dir, class_names=NAMES, resume=False,
                 start_epoch=1)
    logger.finish("failed")
    new_id = (run_dir / RUN_ID_FILE).read_text().strip()
    assert new_id != "oldrun01" and len(new_id) == 8
    assert read_offline_run(run_dir).exit_code == 1


def test_under_the_sweep_agent_wandb_chooses_the_run(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun")
    wandb.teardown()
    run_dir = tmp_path / "runs" / "swept"
    run_dir.mkdir(parents=True)
    (run_dir / RUN_ID_FILE).write_text("stale000\n")
    logger = WandbLogger(mode="auto")
    logger.start(cfg=make_cfg(tmp_path), run_dir=run_dir, class_names=NAMES, resume=True,
                 start_epoch=1)
    run_epochs(logger, [1], {1: 0.5})
    logger.finish("finished")
    assert (run_dir / RUN_ID_FILE).read_text().strip() == "agentrun"
    assert read_offline_run(run_dir).run_id == "agentrun"


def test_disabled_logger_does_nothing(home: Path, tmp_path: Path) -> None:
    logger = WandbLogger(mode="disabled")
    run_dir = tmp_path / "runs" / "quiet"
    logger.start(cfg=make_cfg(tmp_path), run_dir=run_dir, class_names=NAMES, resume=False,
                 start_epoch=1)
    run_epochs(logger, [1], {1: 0.5})
    logger.log_samples(1, make_samples(NAMES), "val_samples")
    logger.log_evaluation(make_evaluation("test", NAMES))
    logger.log_mistakes(make_samples(NAMES))
    logger.log_summary({"val/acc": 0.5})
    logger.finish("finished")
    assert logger.run is None
    assert not (run_dir / "wandb").exists() and not (run_dir / RUN_ID_FILE).exists()


def test_online_without_a_key_fails_instead_of_prompting(home: Path, tmp_path: Path) -> None:
    logger = WandbLogger(mode="online")
    with pytest.raises(RunError, match="no W&B API key"):
        logger.start(cfg=make_cfg(tmp_path), run_dir=tmp_path / "r", class_names=NAMES,
                     resume=False, start_epoch=1)


# --------------------------------------------------------------------------- mode


def test_auto_is_offline_with_a_notice_without_a_key(home: Path) -> None:
    assert not api_key_configured()
    mode, notice = resolve_wandb_mode("auto")
    assert mode == "offline"
    assert notice and "\n" not in notice and "wandb sync" in notice


def test_auto_is_online_with_an_env_key(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == ("online", None)


def test_auto_finds_the_netrc_entry_of_the_wandb_host(home: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = home / ".netrc"
    netrc.write_text("machine example.org\n  login user\n  password abc\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode("auto")[0] == "offline"  # another host's entry does not count
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert resolve_wandb_mode("auto") == ("online", None)
    # A self-hosted server: the entry must be for its host.
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert resolve_wandb_mode("auto")[0] == "offline"
    settings = home / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text("[default]\nbase_url = https://example.org\n")
    monkeypatch.delenv("WANDB_BASE_URL")
    netrc.write_text("machine example.org\n  login user\n  password abc\n")
    assert resolve_wandb_mode("auto")[0] == "online"


def test_mode_settings_and_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_wandb_mode("offline") == ("offline", None)
    assert resolve_wandb_mode("online") == ("online", None)
    assert resolve_wandb_mode("Disabled") == ("disabled", None)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode("auto") == ("offline", None)
    mode, notice = resolve_wandb_mode("online")
    assert mode == "offline" and "WANDB_MODE=offline" in notice
    assert resolve_wandb_mode("disabled") == ("disabled", None)
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's old name for offline
    assert resolve_wandb_mode("auto") == ("offline", None)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == ("disabled", None)
    with pytest.raises(ValueError, match="allowed: auto, online, offline, disabled"):
        resolve_wandb_mode("shared")


# --------------------------------------------------------------------------- the reader


def test_reader_rejects_what_is_not_an_offline_run(tmp_path: Path) -> None:
    with pytest.raises(OfflineRunError, match="no offline W&B run"):
        read_offline_run(tmp_path)
    folder = tmp_path / "wandb" / "offline-run-20250101_000000-abc"
    folder.mkdir(parents=True)
    (folder / "run-abc.wandb").write_bytes(b"not a wandb file")
    with pytest.raises(OfflineRunError, match="bad header"):
        read_offline_run(tmp_path)


def test_reader_survives_a_truncated_file_and_large_records(offline: Path,
                                                            tmp_path: Path) -> None:
    import wandb

    # A config value larger than a 32 KiB block is written in FIRST/MIDDLE/LAST fragments.
    big = "x" * 70_000
    run = wandb.init(project="p", dir=str(tmp_path), config={"big": big}, mode="offline",
                     settings=wandb.Settings(silent=True, console="off"))
    for step in range(5):
        run.log({"v": step, "nan": math.nan})
    run.finish()
    assert wait_for_segment(run.settings.sync_dir, timeout_s=30)
    data = read_offline_run(tmp_path)
    assert data.config["big"] == big
    assert [row["v"] for row in data.history] == [0, 1, 2, 3, 4]
    assert math.isnan(data.history[0]["nan"])

    (path,) = data.segments[0].glob("run-*.wandb")
    full = list(iter_records(path))
    assert segment_complete(data.segments[0])
    path.write_bytes(path.read_bytes()[:-10])  # a killed process leaves a torn last record
    assert len(list(iter_records(path))) == len(full) - 1
    assert not segment_complete(data.segments[0])  # the exit record was the last one
    assert read_offline_run(tmp_path).exit_code is None


def test_reader_takes_a_file_not_written_yet_as_empty(tmp_path: Path) -> None:
    folder = tmp_path / "wandb" / "offline-run-20250101_000000-abc"
    folder.mkdir(parents=True)
    for content in (b"", b":W&"):
        (folder / "run-abc.wandb").write_bytes(content)
        run = read_offline_run(tmp_path)
        assert run.run_id == "abc" and run.history == [] and run.exit_code is None
        assert not segment_complete(folder)


def test_an_inherited_wandb_service_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from wbclf.tracking.wandb_service import drop_inherited_service

    own = f"3-{os.getpid()}-unix-/tmp/wandb-socket"
    monkeypatch.setenv("WANDB_SERVICE", own)
    drop_inherited_service()
    assert os.environ["WANDB_SERVICE"] == own  # this process's own service stays
    monkeypatch.setenv("WANDB_SERVICE", f"3-{os.getpid() + 1}-tcp-localhost-4242")
    drop_inherited_service()
    assert "WANDB_SERVICE" not in os.environ
