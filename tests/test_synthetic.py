"""Toy datasets: real files on disk in the exact layouts of the Kaggle datasets."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from wbclf.data import synthetic
from wbclf.data.synthetic import plumbing
from wbclf.data.synthetic import DEFAULTS, MARKER, PLANT_TOP, TOY_DATASETS, synthesize

REPO = Path(__file__).resolve().parents[1]
CLASSES = [c.name for c in synthetic.LEAF_CLASSES]
SOURCE_RE = re.compile(r"^(.*\s\d+)")  # the data layer's rule for the source leaf
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
LEAF_FILE_RE = re.compile(UUID + r"___[^\d]+ \d+(_[A-Za-z0-9]+)?\.(JPG|jpg)")


def files_under(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file below `root`."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def split_dirs(root: Path) -> Path:
    return root / PLANT_TOP / PLANT_TOP


@pytest.fixture(scope="module")
def leaves(tmp_path_factory) -> Path:
    return synthesize("toy-leaves", tmp_path_factory.mktemp("leaves") / "toy", n=12, size=64)


@pytest.fixture(scope="module")
def lesions(tmp_path_factory) -> Path:
    return synthesize("toy-lesions", tmp_path_factory.mktemp("lesions") / "toy", n=12, size=48)


def test_public_names():
    assert TOY_DATASETS == ("toy-lesions", "toy-leaves")
    assert set(DEFAULTS) == set(TOY_DATASETS)
    assert all(set(d) == {"n", "size"} for d in DEFAULTS.values())


def test_unknown_name_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError) as err:
        synthesize("toy-cats", tmp_path / "x")
    message = str(err.value)
    assert "\n" not in message and "toy-cats" in message
    assert all(name in message for name in TOY_DATASETS)
    assert not (tmp_path / "x").exists()


def test_lesions_layout(lesions):
    assert sorted(p.name for p in lesions.iterdir()) == [MARKER, "test", "train"]
    counts = {split: {c: len(list((lesions / split / c).iterdir()))
                      for c in ("Benign", "Malignant")} for split in ("train", "test")}
    assert sorted(p.name for p in (lesions / "train").iterdir()) == ["Benign", "Malignant"]
    assert sorted(p.name for p in (lesions / "test").iterdir()) == ["Benign", "Malignant"]
    assert counts["train"]["Benign"] > counts["train"]["Malignant"]  # mildly imbalanced
    assert counts["test"]["Benign"] == counts["test"]["Malignant"] == 12 // 3
    marker = json.loads((lesions / MARKER).read_text())
    assert {k: marker[k] for k in ("name", "n", "size", "seed")} == {
        "name": "toy-lesions", "n": 12, "size": 48, "seed": 0}


def test_lesion_files_decode_to_the_requested_size(lesions):
    paths = sorted(lesions.rglob("*.jpg"))
    assert len(paths) == 13 + 11 + 4 + 4
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape == (48, 48, 3) and img.dtype == np.uint8


def test_leaves_layout(leaves):
    top = {p.name for p in leaves.iterdir()}
    assert top == {PLANT_TOP, PLANT_TOP.lower(), "test", MARKER}
    for outer in (PLANT_TOP, PLANT_TOP.lower()):
        assert [p.name for p in (leaves / outer).iterdir()] == [PLANT_TOP]
        splits = leaves / outer / PLANT_TOP
        assert sorted(p.name for p in splits.iterdir()) == ["train", "valid"]
        for split in ("train", "valid"):
            assert sorted(p.name for p in (splits / split).iterdir()) == sorted(CLASSES)
    assert any("," in c for c in CLASSES) and any("(" in c and ")" in c for c in CLASSES)
    assert any(c.endswith("_") for c in CLASSES)


def test_leaves_split_sizes(leaves):
    root = split_dirs(leaves)
    train = {c: len(list((root / "train" / c).iterdir())) for c in CLASSES}
    valid = {c: len(list((root / "valid" / c).iterdir())) for c in CLASSES}
    for c in CLASSES:
        assert 0.85 * 12 <= train[c] <= 1.15 * 12
        assert valid[c] == max(1, round(0.2 * train[c]))


def test_unlabeled_test_folder(leaves):
    assert [p.name for p in (leaves / "test").iterdir()] == ["test"]
    files = sorted((leaves / "test" / "test").iterdir())
    assert len(files) == 33 and all(p.is_file() for p in files)
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+\d+\.JPG", p.name) for p in files)
    assert {"AppleScab1.JPG", "TomatoHealthy2.JPG", "CornCommonRust3.JPG"} <= {
        p.name for p in files}


def test_duplicate_tree_mirrors_the_main_one(leaves):
    main, dup = leaves / PLANT_TOP, leaves / PLANT_TOP.lower()
    main_files = sorted(p.relative_to(main) for p in main.rglob("*") if p.is_file())
    dup_files = sorted(p.relative_to(dup) for p in dup.rglob("*") if p.is_file())
    assert main_files == dup_files and main_files
    for rel in main_files[:50]:  # hard links where the file system has them, else copies
        assert (main / rel).read_bytes() == (dup / rel).read_bytes()
    assert os.path.samefile(main / main_files[0], dup / main_files[0])


def leaf_files(leaves: Path) -> list[tuple[str, str, Path]]:
    """(split, class, path) of every labelled file in the main tree."""
    root = split_dirs(leaves)
    return [(split, c, p) for split in ("train", "valid") for c in CLASSES
            for p in sorted((root / split / c).iterdir())]


def test_leaf_file_names_follow_the_real_pattern(leaves):
    exts = defaultdict(int)
    for _, _, path in leaf_files(leaves):
        assert LEAF_FILE_RE.fullmatch(path.name), path.name
        exts[path.suffix] += 1
        source = SOURCE_RE.match(path.stem).group(1)
        assert path.stem[len(source):] in synthetic.AUGMENTATIONS
    assert exts[".JPG"] > exts[".jpg"] > 0


def test_variants_of_a_source_leaf_share_split_and_class(leaves):
    homes, originals = defaultdict(set), defaultdict(int)
    for split, cls, path in leaf_files(leaves):
        source = SOURCE_RE.match(path.stem).group(1)
        homes[source].add((split, cls))
        originals[source] += path.stem == source
    assert all(len(h) == 1 for h in homes.values())
    assert all(count == 1 for count in originals.values())  # one original per source
    n_files = len(leaf_files(leaves))
    assert len(homes) < n_files  # some sources really have augmented variants


def test_variants_are_the_named_transform_of_their_source(leaves):
    by_source = defaultdict(dict)
    for _, _, path in leaf_files(leaves):
        source = SOURCE_RE.match(path.stem).group(1)
        by_source[source][path.stem[len(source):]] = path
    seen = set()
    for variants in by_source.values():
        original = cv2.imread(str(variants[""])).astype(np.float32)
        for suffix, path in variants.items():
            if not suffix:
                continue
            seen.add(suffix)
            img = cv2.imread(str(path)).astype(np.float32)
            expected = synthetic.AUGMENTATIONS[suffix](original)
            # only JPEG noise (and interpolation for the 30 degree turn) may separate them
            assert np.abs(img - expected).mean() < 4.0, path.name
            assert np.abs(img - expected).mean() < np.abs(img - original).mean()
    assert len(seen) >= 4


def test_leaf_files_decode_to_the_requested_size(leaves):
    paths = [p for _, _, p in leaf_files(leaves)] + sorted((leaves / "test" / "test").iterdir())
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape == (64, 64, 3), path.name


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_same_seed_same_bytes_other_seed_differs(tmp_path, name):
    a = files_under(synthesize(name, tmp_path / "a", n=4, size=40, seed=3))
    b = files_under(synthesize(name, tmp_path / "b", n=4, size=40, seed=3))
    c = files_under(synthesize(name, tmp_path / "c", n=4, size=40, seed=4))
    assert a == b
    assert a != c
    # the same file names (lesions) must still hold other pixels
    shared = set(a) & set(c) - {MARKER}
    assert all(a[k] != c[k] for k in shared if k.endswith((".jpg", ".JPG")))


def test_existing_complete_dataset_is_reused(tmp_path):
    root = synthesize("toy-lesions", tmp_path / "toy", n=3, size=32)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    time.sleep(0.01)
    assert synthesize("toy-lesions", root, n=3, size=32) == root
    assert synthesize("toy-lesions", str(root)) == root  # n/size not given: whatever is there
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_existing_other_dataset_is_refused(tmp_path):
    root = synthesize("toy-lesions", tmp_path / "toy", n=3, size=32)
    with pytest.raises(FileExistsError, match="n=3"):
        synthesize("toy-lesions", root, n=5, size=32)
    with pytest.raises(FileExistsError):
        synthesize("toy-leaves", root)
    stranger = tmp_path / "mine"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a complete toy dataset"):
        synthesize("toy-lesions", stranger, n=3, size=32)
    assert (stranger / "notes.txt").read_text() == "keep me"


def test_empty_out_folder_is_filled(tmp_path):
    (tmp_path / "toy").mkdir()
    root = synthesize("toy-lesions", tmp_path / "toy", n=3, size=32)
    assert (root / MARKER).is_file()


def test_bad_sizes_are_refused(tmp_path):
    for kwargs in ({"n": 0}, {"size": 8}, {"seed": -1}):
        with pytest.raises(ValueError):
            synthesize("toy-lesions", tmp_path / "x", **kwargs)


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def boom(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(*args)

    original = plumbing.write_job
    monkeypatch.setattr(plumbing, "write_job", boom)
    with pytest.raises(KeyboardInterrupt):
        synthesize("toy-leaves", tmp_path / "toy", n=6, size=32)
    assert list(tmp_path.iterdir()) == []


def test_killed_generation_leaves_no_dataset_and_does_not_block_the_next(tmp_path):
    out = tmp_path / "toy"
    code = ("import sys; from wbclf.data.synthetic import synthesize; "
            "synthesize('toy-leaves', sys.argv[1], n=5000, size=64)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not any(tmp_path.glob(".toy.partial.*/**/*.JPG")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftovers = list(tmp_path.glob(".toy.partial.*"))
    assert leftovers and not out.exists()
    root = synthesize("toy-leaves", out, n=4, size=32)
    assert (root / MARKER).is_file()
    assert not list(tmp_path.glob(".toy.partial.*"))  # the dead run's folder is cleaned up


def test_leftover_of_a_live_run_is_left_alone(tmp_path):
    # Another process (here: this one) may still be writing it.
    live = tmp_path / f".toy.partial.{socket.gethostname()}.{os.getpid()}.abcd1234"
    (live / "train").mkdir(parents=True)
    synthesize("toy-lesions", tmp_path / "toy", n=3, size=32)
    assert live.is_dir()


def test_progress_bar_does_not_change_the_files(tmp_path):
    quiet = files_under(synthesize("toy-lesions", tmp_path / "a", n=3, size=32))
    loud = files_under(synthesize("toy-lesions", tmp_path / "b", n=3, size=32, progress=True))
    assert quiet == loud


def test_leaves_leak_augmented_train_copies_into_valid_at_the_given_rate(tmp_path):
    root = synthesize("toy-leaves", tmp_path / "toy", n=24, size=32, leak=0.4)
    marker = json.loads((root / MARKER).read_text())
    assert marker["leak"] == 0.4
    leaks = marker["leaks"]
    by_class = defaultdict(int)
    for valid, train in leaks:
        assert (root / valid).is_file() and (root / train).is_file()
        assert "/valid/" in valid and "/train/" in train
        valid_source = SOURCE_RE.match(Path(valid).stem).group(1)
        assert valid_source == Path(train).stem  # a copy of that train leaf ...
        suffix = Path(valid).stem[len(valid_source):]
        assert suffix in synthetic.AUGMENTATIONS and suffix  # ... flipped or rotated
        train_variants = {p.stem for p in (root / train).parent.iterdir()}
        assert Path(valid).stem not in train_variants  # a variant train does not have
        by_class[Path(valid).parent.name] += 1
    trees = split_dirs(root)
    for leaf in synthetic.LEAF_CLASSES:
        n_train = len(list((trees / "train" / leaf.name).iterdir()))
        n_valid = len(list((trees / "valid" / leaf.name).iterdir()))
        assert n_valid == max(1, round(0.2 * n_train))  # the valid size stays as it was
        assert by_class[leaf.name] == round(0.4 * n_valid)
    # the sources in both splits are exactly the leaked ones
    homes = defaultdict(set)
    for split, cls, path in leaf_files(root):
        homes[(cls, SOURCE_RE.match(path.stem).group(1))].add(split)
    both = {key for key, splits in homes.items() if len(splits) == 2}
    assert both == {(Path(v).parent.name, Path(t).stem) for v, t in leaks}
    with pytest.raises(FileExistsError, match="leak"):
        synthesize("toy-leaves", root, n=24, size=32, leak=0.0)
    assert synthesize("toy-leaves", root) == root  # leak left out accepts what is there


def test_leaves_leak_by_default_like_the_real_set(tmp_path):
    root = synthesize("toy-leaves", tmp_path / "toy", n=40, size=32)
    marker = json.loads((root / MARKER).read_text())
    assert marker["leak"] == synthetic.DEFAULT_LEAK > 0 and marker["leaks"]
    none = synthesize("toy-leaves", tmp_path / "clean", n=40, size=32, leak=0.0)
    assert json.loads((none / MARKER).read_text())["leaks"] == []
