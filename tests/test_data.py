"""Data layer on real JPEG files: layouts, splits, unreadable files, the decoded-image cache."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import run_cli
from wbclf.config import build_config
from wbclf.data.cache import build_or_load, cache_key, load_image
from wbclf.data.datasets import prepare_data
from wbclf.data.integrity import check_image_file
from wbclf.data.layouts import DatasetError, detect_layout, index_dataset, source_leaf
from wbclf.data.sources import install_downloaded
from wbclf.data.splits import leaked_groups, load_splits, make_splits, save_splits


def _write_jpeg(path: Path, value: int = 128, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((size, size, 3), value, np.uint8)
    image[: size // 2] = 255 - value
    cv2.imwrite(str(path), image)
    return path


# ------------------------------------------------------------------ layouts


def test_toy_lesions_is_melanoma_layout(toy_lesions):
    index = index_dataset(toy_lesions)
    assert index.layout == "melanoma"
    assert index.classes == ["Benign", "Malignant"]
    assert set(index.splits) == {"train", "test"}  # no validation split on disk
    counts = index.counts()
    assert counts["test"]["Benign"] == counts["test"]["Malignant"]  # balanced like Kaggle's


def test_toy_leaves_is_plant_layout_counted_once(toy_leaves):
    index = index_dataset(toy_leaves)
    assert index.layout == "plant-disease"
    # the original-case tree is used, not its all-lowercase duplicate
    assert "New Plant Diseases Dataset(Augmented)" in str(index.root)
    files_on_disk = sum(1 for p in Path(index.root, "train").rglob("*") if p.is_file())
    assert len(index.splits["train"]) == files_on_disk
    all_paths = [s.path for split in index.splits.values() for s in split]
    assert len(all_paths) == len(set(all_paths))
    assert not any("new plant diseases dataset(augmented)" in p.split(os.sep)[-5:][0]
                   for p in all_paths)
    # `valid` is the test split; the unlabeled test/test folder is ignored entirely
    assert set(index.splits) == {"train", "test"}
    assert not any("/test/test/" in p for p in all_paths)
    assert "Pepper,_bell___Bacterial_spot" in index.classes
    assert "Corn_(maize)___Common_rust_" in index.classes


def test_source_leaf_strips_augmentation_suffix():
    base = "0a1b___GCREC_Bact.Sp 5807"
    for suffix in ("", "_flipLR", "_180deg", "_new30degFlipLR", "_flipTB"):
        assert source_leaf(f"{base}{suffix}.JPG") == base


def test_generic_imagefolder_layouts(tmp_path):
    flat = tmp_path / "flat"
    for cls in ("cat", "dog"):
        for i in range(6):
            _write_jpeg(flat / cls / f"{i}.JPEG", value=20 * i)
    assert detect_layout(flat)[0] == "imagefolder-flat"
    splits = make_splits(index_dataset(flat), val_fraction=0.2, seed=0)
    assert all(len(s) > 0 for s in splits.values())
    nested = tmp_path / "nested"
    for split in ("train", "validation", "test"):
        for cls in ("a", "b"):
            _write_jpeg(nested / split / cls / "x.png")
    index = index_dataset(nested)
    assert index.layout == "imagefolder" and set(index.splits) == {"train", "val", "test"}


def test_missing_path_is_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        index_dataset(tmp_path / "nope")


# ------------------------------------------------------------------ splits


def test_splits_are_deterministic_stratified_and_grouped(toy_leaves):
    index = index_dataset(toy_leaves)
    a = make_splits(index, val_fraction=0.2, seed=3)
    b = make_splits(index, val_fraction=0.2, seed=3)
    c = make_splits(index, val_fraction=0.2, seed=4)
    assert a == b and a["val"] != c["val"]
    # every class present in val, roughly val_fraction of each class
    for label in range(len(index.classes)):
        n_train = sum(s.label == label for s in a["train"])
        n_val = sum(s.label == label for s in a["val"])
        assert n_val > 0 and 0.08 < n_val / (n_train + n_val) < 0.4
    # no source leaf (with its augmented copies) on both sides
    assert not leaked_groups({"train": a["train"], "val": a["val"]})
    groups_with_copies = {s.group for s in a["train"]} & {s.group for s in index.splits["train"]}
    assert groups_with_copies


def test_limit_per_class_and_saved_splits(toy_lesions, tmp_path):
    index = index_dataset(toy_lesions)
    splits = make_splits(index, val_fraction=0.2, seed=0, limit_per_class=5)
    for samples in splits.values():
        assert max(np.bincount([s.label for s in samples])) <= 5
    same = make_splits(index, val_fraction=0.2, seed=0, limit_per_class=5)
    assert splits == same
    path = tmp_path / "splits.json"
    save_splits(path, splits, index)
    classes, loaded = load_splits(path)
    assert classes == index.classes and loaded == splits


# ------------------------------------------------------------------ unreadable files


def _corrupt_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    for cls in ("a", "b"):
        for i in range(5):
            _write_jpeg(root / "train" / cls / f"{i}.jpg", value=40 * i)
    (root / "train" / "a" / "empty.jpg").write_bytes(b"")
    good = (root / "train" / "a" / "0.jpg").read_bytes()
    (root / "train" / "a" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "train" / "b" / "notes.jpg").write_text("not an image at all")
    (root / "train" / "b" / "readme.txt").write_text("hello")
    return root


def test_corrupt_files_are_skipped_and_listed(tmp_path):
    root = _corrupt_dataset(tmp_path)
    index = index_dataset(root)
    reasons = {Path(item["path"]).name: item["reason"] for item in index.skipped}
    assert reasons["empty.jpg"].startswith("empty file")
    assert reasons["truncated.jpg"].startswith("truncated JPEG")
    assert reasons["notes.jpg"].startswith("not an image")
    assert reasons["readme.txt"].startswith("not an image file")
    assert len(index.splits["train"]) == 10
    result = run_cli("data", "inspect", str(root), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {Path(s["path"]).name for s in report["skipped"]} == set(reasons)


def test_check_image_file_accepts_good_files(tmp_path):
    assert check_image_file(_write_jpeg(tmp_path / "x.jpg")) is None
    png = tmp_path / "y.png"
    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    assert check_image_file(png) is None


# ------------------------------------------------------------------ cache


def test_cache_is_reused_and_invalidated(toy_lesions, tmp_path):
    paths = [s.path for s in index_dataset(toy_lesions).splits["test"]][:20]
    cache_dir = tmp_path / "cache"
    first = build_or_load(paths, 32, cache_dir, progress=False)
    mtime = first.data_path.stat().st_mtime_ns
    second = build_or_load(paths, 32, cache_dir, progress=False)
    assert second.data_path == first.data_path and second.data_path.stat().st_mtime_ns == mtime
    images = first.open()
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[3], load_image(paths[3], 32))
    # a touched file changes the key: a new cache is built
    copy_dir = tmp_path / "copy"
    copies = []
    for p in paths:
        dst = copy_dir / Path(p).name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy2(p, dst)
        copies.append(str(dst))
    key = cache_key(copies, 32)
    os.utime(copies[0], ns=(time.time_ns(), time.time_ns()))
    assert cache_key(copies, 32) != key


def test_killed_cache_build_is_never_read(toy_lesions, tmp_path):
    """kill -9 a process mid-build: no complete cache appears; the next build succeeds."""
    paths = [s.path for s in index_dataset(toy_lesions).splits["train"]]
    cache_dir = tmp_path / "cache"
    reached = tmp_path / "reached"
    # The child decodes 10 images, says so, and then blocks: it is killed mid-build for sure
    # (not when a sleep happens to line up), with its temporary file half written.
    script = (
        "import sys, json, threading; from pathlib import Path; from wbclf.data import cache as c\n"
        "orig, done = c.load_image, []\n"
        "def gated(p, s):\n"
        "    done.append(p)\n"
        "    if len(done) == 10:\n"
        "        Path(sys.argv[2]).write_text('mid-build')\n"
        "        threading.Event().wait()\n"
        "    return orig(p, s)\n"
        "c.load_image = gated\n"
        f"c.build_or_load(json.load(open(sys.argv[1])), 24, {str(cache_dir)!r}, progress=False)\n"
    )
    list_file = tmp_path / "paths.json"
    list_file.write_text(json.dumps(paths))
    proc = subprocess.Popen([sys.executable, "-c", script, str(list_file), str(reached)])
    deadline = time.monotonic() + 300
    while not reached.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # waits for the child's signal, never for a guessed moment
    assert reached.exists(), "the child never reached the middle of the build"
    folder = cache_dir / "images"
    assert len(list(folder.glob(".*.u8.tmp-*"))) == 1  # the half-written data file
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(folder.glob("*.json")), "a killed build must not look complete"
    cache = build_or_load(paths, 24, cache_dir, progress=False)
    np.testing.assert_array_equal(cache.open()[-1], load_image(paths[-1], 24))


def test_prepare_data_end_to_end(toy_lesions):
    cfg = build_config({"dataset": str(toy_lesions), "image_size": 32, "limit_per_class": 10})
    bundle = prepare_data(cfg, progress=False)
    assert bundle.cache is not None
    for split in ("train", "val", "test"):
        ds = bundle.dataset(split)
        image, label = ds[0]
        assert image.shape == (3, 32, 32) and image.dtype.is_floating_point is False
        assert label in (0, 1)


def test_install_downloaded_tree(toy_leaves, tmp_path):
    target = install_downloaded("plant-disease", toy_leaves, tmp_path / "data")
    assert index_dataset(target).layout == "plant-disease"
    with pytest.raises(DatasetError, match="expected 'melanoma'"):
        install_downloaded("melanoma", toy_leaves, tmp_path / "data2")


def test_data_synth_and_inspect_cli(tmp_path):
    out = tmp_path / "lesions"
    result = run_cli("data", "synth", "toy-lesions", "--out", str(out), "--n", "20",
                     "--size", "48")
    assert result.returncode == 0, result.stderr
    result = run_cli("data", "inspect", str(out), "--json")
    report = json.loads(result.stdout)
    assert report["layout"] == "melanoma" and report["classes"] == ["Benign", "Malignant"]
    assert set(report["splits"]) == {"train", "val", "test"} and report["splits"]["val"] == {}
    assert report["skipped"] == []


def test_download_installs_what_the_fetcher_returns(toy_lesions, tmp_path):
    from wbclf.data.sources import KAGGLE_HANDLES, download

    asked: list[str] = []

    def fetch(handle: str) -> str:  # stands in for kagglehub.dataset_download (no network)
        asked.append(handle)
        return str(toy_lesions)

    target = download("melanoma", tmp_path / "data", fetch)
    assert asked == [KAGGLE_HANDLES["melanoma"]]
    assert target == tmp_path / "data" / "melanoma" and target.resolve() == toy_lesions.resolve()
    assert index_dataset(target).layout == "melanoma"
    assert download("melanoma", tmp_path / "data", fetch) == target  # again: the same install


def test_download_failures_and_wrong_layouts_are_one_line(toy_leaves, tmp_path):
    from wbclf.data.sources import download

    def offline(handle: str) -> str:
        raise ConnectionError("Temporary failure in name resolution\nmore detail")

    with pytest.raises(DatasetError) as failed:
        download("melanoma", tmp_path / "data", offline)
    assert "download of 'melanoma'" in str(failed.value) and "\n" not in str(failed.value)
    assert "Temporary failure in name resolution" in str(failed.value)
    with pytest.raises(DatasetError, match="has layout 'plant-disease', expected 'melanoma'"):
        download("melanoma", tmp_path / "data", lambda handle: str(toy_leaves))
    assert not (tmp_path / "data" / "melanoma").exists()
