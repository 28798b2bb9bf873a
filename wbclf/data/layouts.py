"""Detect a dataset's folder layout and index its images as (path, label, group) samples.

Layouts:
- ``plant-disease``: Kaggle's New Plant Diseases tree (nested, duplicated in lower case;
  ``valid`` is the test split; ``test/test`` is unlabeled and ignored).
- ``melanoma``: ``train/{Benign,Malignant}`` and ``test/...``, no validation split.
- ``imagefolder``: ``train/<class>/`` with optional ``val``/``valid``/``validation`` and ``test``.
- ``imagefolder-flat``: class folders at the root; all three splits are carved later.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from wbclf.data.integrity import check_image_file
from wbclf.errors import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VAL_NAMES = ("val", "valid", "validation")
TEST_NAMES = ("test",)
PLANT_MARKER = "plant diseases dataset"
# "<uuid>___<code> <n><augmentation suffix>": the source leaf is everything up to the last
# " <digits>" run, so "x___FREC_Scab 3335_new30degFlipLR" and "x___FREC_Scab 3335" match.
_SOURCE_LEAF = re.compile(r"^(.*\s\d+)")


class DatasetError(UserError):
    """A dataset that cannot be used as given; the message is one line."""


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``group`` ties together files that must share a split."""

    path: str
    label: int
    group: str


@dataclass
class DatasetIndex:
    """Every usable image of a dataset, by split, plus what was skipped and why."""

    root: Path
    layout: str
    classes: list[str]
    splits: dict[str, list[Sample]]  # "train" always; "val"/"test" when the layout has them
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split, per class image counts (classes in index order, zeros included)."""
        out: dict[str, dict[str, int]] = {}
        for split, samples in self.splits.items():
            counts = dict.fromkeys(self.classes, 0)
            for s in samples:
                counts[self.classes[s.label]] += 1
            out[split] = counts
        return out


def source_leaf(path: str | Path) -> str:
    """The source image a plant-disease file was augmented from (its file stem, minus suffix)."""
    stem = Path(path).stem
    match = _SOURCE_LEAF.match(stem)
    return match.group(1) if match else stem


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not _is_hidden(p.name))


def _find_child(path: Path, names: tuple[str, ...]) -> Path | None:
    """The first child folder whose lower-cased name is in ``names``."""
    for child in _subdirs(path):
        if child.name.lower() in names:
            return child
    return None


def _has_images(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(Path(e.name).suffix.lower() in IMAGE_EXTENSIONS for e in entries if e.is_file())


def _descend_single_child(root: Path) -> Path:
    """Step through wrapper folders (e.g. ``archive/melanoma_cancer_dataset/``)."""
    current = root
    for _ in range(4):
        children = _subdirs(current)
        if len(children) != 1 or _has_images(current):
            break
        only = children[0]
        if only.name.lower() in ("train",) + VAL_NAMES + TEST_NAMES:
            break
        current = only
    return current


def _plant_tree(root: Path) -> Path | None:
    """The folder holding train/ and valid/ of one plant tree, preferring the original case."""
    candidates = []
    for depth_one in _subdirs(root):
        for folder in [depth_one, *_subdirs(depth_one)]:
            lowered = str(folder.relative_to(root)).lower()
            if PLANT_MARKER in lowered and _find_child(folder, ("train",)) \
                    and _find_child(folder, VAL_NAMES):
                candidates.append(folder)
    if not candidates:
        return None
    # The Kaggle archive carries an all-lowercase duplicate of the tree: use exactly one,
    # the one with capitals in its path (the original), so nothing is counted twice.
    candidates.sort(key=lambda p: (str(p.relative_to(root)).islower(), str(p)))
    return candidates[0]


def detect_layout(root: str | Path) -> tuple[str, Path]:
    """Name the layout of ``root`` and return it with the folder the splits hang from."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset path '{root}' does not exist; allowed: a named dataset "
                           "(plant-disease, melanoma, toy-lesions, toy-leaves) or a folder")
    if not root.is_dir():
        raise DatasetError(f"dataset path '{root}' is a file; expected a folder of class "
                           "folders or train/ (val/) (test/) folders")
    root = _descend_single_child(root)
    plant = _plant_tree(root)
    if plant is not None:
        return "plant-disease", plant
    train = _find_child(root, ("train",))
    if train is not None:
        names = {p.name.lower() for p in _subdirs(train)}
        if names == {"benign", "malignant"} and _find_child(root, VAL_NAMES) is None:
            return "melanoma", root
        return "imagefolder", root
    if _subdirs(root):
        return "imagefolder-flat", root
    raise DatasetError(f"no class folders found in '{root}'; expected <root>/<class>/*.jpg or "
                       "<root>/train/<class>/*.jpg")


def _scan_split(split_dir: Path, group_by_leaf: bool, skipped: list[dict[str, str]],
                warnings: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Map class name -> [(path, group)] for the class folders of one split."""
    by_class: dict[str, list[tuple[str, str]]] = {}
    for class_dir in _subdirs(split_dir):
        files: list[tuple[str, str]] = []
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
            for name in sorted(filenames):
                if _is_hidden(name):
                    continue
                path = os.path.join(dirpath, name)
                if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped.append({"path": path, "reason": "not an image file (extension)"})
                    continue
                reason = check_image_file(path)
                if reason:
                    skipped.append({"path": path, "reason": reason})
                    continue
                group = source_leaf(name) if group_by_leaf else path
                files.append((path, f"{class_dir.name}/{group}" if group_by_leaf else group))
        if not files:
            warnings.append(f"class folder '{class_dir}' has no usable images; ignored")
            continue
        by_class[class_dir.name] = files
    return by_class


def index_dataset(root: str | Path) -> DatasetIndex:
    """Find the layout of ``root`` and list every usable image by split and class."""
    layout, base = detect_layout(root)
    skipped: list[dict[str, str]] = []
    warnings: list[str] = []
    grouped = layout == "plant-disease"
    split_dirs: dict[str, Path] = {}
    if layout == "imagefolder-flat":
        split_dirs["train"] = base
    else:
        split_dirs["train"] = _find_child(base, ("train",))  # type: ignore[assignment]
        val = _find_child(base, VAL_NAMES)
        test = _find_child(base, TEST_NAMES)
        if layout == "plant-disease":
            # Kaggle's `valid` is the labelled hold-out: it is our test split; validation is
            # carved from train. The unlabeled `test/test` folder is not used at all.
            split_dirs["test"] = val  # type: ignore[assignment]
        else:
            if val is not None:
                split_dirs["val"] = val
            if test is not None and _subdirs(test):
                split_dirs["test"] = test
    scanned = {s: _scan_split(d, grouped, skipped, warnings) for s, d in split_dirs.items()}
    classes = sorted(set().union(*(set(c) for c in scanned.values())))
    if not classes:
        raise DatasetError(f"no usable images found under '{base}'")
    label_of = {name: i for i, name in enumerate(classes)}
    splits = {
        split: [Sample(path, label_of[cls], group)
                for cls in sorted(by_class) for path, group in by_class[cls]]
        for split, by_class in scanned.items()
    }
    for split, by_class in scanned.items():
        missing = [c for c in classes if c not in by_class]
        if missing and split != "train":
            warnings.append(f"split '{split}' has no images of: {', '.join(missing)}")
    return DatasetIndex(root=base, layout=layout, classes=classes, splits=splits,
                        skipped=skipped, warnings=warnings)
