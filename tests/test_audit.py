"""`wbclf data audit`: near-duplicates found against known ground truth."""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import run_cli
from wbclf.data.audit import PAIR_NAMES, audit, load_audit_images
from wbclf.data.layouts import index_dataset, source_leaf
from wbclf.data.synthetic import MARKER, synthesize


@pytest.fixture(scope="module")
def leaky_leaves(tmp_path_factory) -> Path:
    return synthesize("toy-leaves", tmp_path_factory.mktemp("leaky") / "toy", n=32, size=96,
                      leak=0.25)


def _true_pairs(root: Path) -> set[frozenset[str]]:
    """Every two files drawn from one source leaf (same class folder, same source name)."""
    index = index_dataset(root)
    by_source: dict[tuple[int, str], list[str]] = {}
    for samples in index.splits.values():
        for s in samples:
            by_source.setdefault((s.label, source_leaf(s.path)), []).append(s.path)
    return {frozenset(pair) for paths in by_source.values()
            for pair in itertools.combinations(paths, 2)}


def test_audit_finds_toy_leaves_leaks_with_high_recall_and_precision(leaky_leaves):
    images, info = load_audit_images(str(leaky_leaves), leaky_leaves.parent, val_fraction=0.15,
                                     seed=0)
    result = audit(images)
    found = {frozenset((p["a"], p["b"])) for p in result["pairs"]}
    truth = _true_pairs(leaky_leaves)
    hits = len(found & truth)
    assert hits / len(truth) >= 0.95, f"recall {hits / len(truth):.3f}"
    assert hits / len(found) >= 0.95, f"precision {hits / len(found):.3f}"

    # the generator's own list of leaked copies: each is found as a pair across splits
    marker = json.loads((leaky_leaves / MARKER).read_text())
    base = leaky_leaves
    leaks = {frozenset((str(base / valid), str(base / train))) for valid, train in
             marker["leaks"]}
    assert len(leaks) >= 8
    across = {frozenset((p["a"], p["b"])) for p in result["pairs"]
              if p["splits"][0] != p["splits"][1]}
    assert len(leaks & across) / len(leaks) >= 0.95
    assert result["leaked_images"]["test"] >= 0.95 * len(leaks)
    # the leaf-grouped val carve leaks nothing into val
    assert result["counts"]["train-val"] == 0 and result["leaked_images"]["val"] == 0
    assert info["images"]["val"] > 0


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_CONSTANT)


def _reencode(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


COPIES = {  # how a planted copy is changed from its train original
    "flip": lambda img: cv2.flip(img, 1),
    "vflip": lambda img: cv2.flip(img, 0),
    "rot90": lambda img: cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE),
    "rot180": lambda img: cv2.rotate(img, cv2.ROTATE_180),
    "rot25": lambda img: _rotate(img, 25.0),
    "jpeg40": lambda img: _reencode(img, 40),
    "smaller": lambda img: cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA),
    "larger": lambda img: cv2.resize(img, None, fx=1.3, fy=1.3, interpolation=cv2.INTER_CUBIC),
}


def test_audit_finds_copies_planted_in_an_imagefolder(toy_lesions, tmp_path):
    root = tmp_path / "folder"
    shutil.copytree(toy_lesions / "train", root / "train")
    shutil.copytree(toy_lesions / "test", root / "test")
    originals = sorted((root / "train" / "Benign").glob("*.jpg"))[:len(COPIES)]
    planted = set()
    for (name, change), source in zip(COPIES.items(), originals):
        split = "val" if name in ("flip", "rot25") else "test"
        target = root / split / "Benign" / f"copy_{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), change(cv2.imread(str(source))))
        planted.add(frozenset((str(source), str(target))))
    # a val image needs a val folder for every class of the tree
    shutil.copytree(toy_lesions / "test" / "Malignant", root / "val" / "Malignant")

    images, _ = load_audit_images(str(root), tmp_path, val_fraction=0.15, seed=0)
    result = audit(images)
    across = {frozenset((p["a"], p["b"])) for p in result["pairs"]
              if p["splits"][0] != p["splits"][1]}
    missed = [sorted(Path(p).name for p in pair) for pair in planted - across]
    assert not missed
    # the Malignant test images copied into val are exact copies: found too, and nothing
    # else is paired across splits
    copied_val = len(list((root / "val" / "Malignant").iterdir()))
    assert result["counts"]["val-test"] == copied_val
    assert len(across) == len(planted) + copied_val


def test_audit_cli_json_shape_and_contact_sheet(leaky_leaves, tmp_path):
    sheet = tmp_path / "sheet.png"
    proc = run_cli("data", "audit", str(leaky_leaves), "--json", "--sheet", str(sheet))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["counts"]) == set(PAIR_NAMES)
    assert result["pairs"] and all(
        set(p) == {"a", "b", "splits", "distance"} and isinstance(p["distance"], float)
        and len(p["splits"]) == 2 for p in result["pairs"])
    assert sum(result["counts"].values()) == len(result["pairs"])
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[0] > 100

    text = run_cli("data", "audit", str(leaky_leaves), "--sheet", str(sheet))
    assert text.returncode == 0 and "train-test" in text.stdout

    bad = run_cli("data", "audit", str(leaky_leaves), "--threshold", "5")
    assert bad.returncode == 2 and "threshold" in bad.stderr and "\n" not in bad.stderr.strip()


def test_tree_searches_match_brute_force_at_the_threshold():
    from wbclf.data.dedup import DEFAULT_THRESHOLD, has_match, near_pairs

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((2000, 576)).astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    query = rng.standard_normal((300, 576)).astype(np.float32)
    # copies with noise spread across the threshold: some inside, some just outside
    noise = rng.uniform(0, 0.006, (60, 1)) * rng.standard_normal((60, 576))
    query[:60] = reference[:60] + noise
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    brute = (1.0 - query @ reference.T).min(axis=1) <= DEFAULT_THRESHOLD
    assert 10 < brute.sum() < 60
    assert (has_match(query, reference) == brute).all()

    both = np.concatenate([reference, query])
    distance = 1.0 - both @ both.T
    rows, cols = np.nonzero(np.triu(distance <= DEFAULT_THRESHOLD, k=1))
    assert {(p.a, p.b) for p in near_pairs(both)} == set(zip(rows.tolist(), cols.tolist()))


def test_the_cli_names_the_audit_threshold_it_uses():
    """`wbclf data audit --help` gives the default the audit applies (it said 0.02 while the
    audit used 0.005)."""
    from wbclf import cli
    from wbclf.data.dedup import DEFAULT_THRESHOLD

    assert cli.AUDIT_THRESHOLD == DEFAULT_THRESHOLD
    audit = cli._data_parser()._subparsers._group_actions[0].choices["audit"]
    threshold = next(a for a in audit._actions if "--threshold" in a.option_strings)
    assert f"(default {DEFAULT_THRESHOLD})" in threshold.help
