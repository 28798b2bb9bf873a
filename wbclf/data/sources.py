"""Where datasets come from: named datasets under ``data_dir``, toy ones generated on first
use, the two Kaggle datasets through kagglehub, or any folder the user points at."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from wbclf.data.layouts import DatasetError, detect_layout

KAGGLE_HANDLES = {
    "plant-disease": "vipoooool/new-plant-diseases-dataset",
    "melanoma": "bhaveshmittal/melanoma-cancer-dataset",
}
EXPECTED_LAYOUT = {"plant-disease": "plant-disease", "melanoma": "melanoma"}
TOY_NAMES = ("toy-lesions", "toy-leaves")
NAMED = tuple(KAGGLE_HANDLES) + TOY_NAMES


def resolve_dataset(dataset: str, data_dir: str | Path, *, progress: bool = False) -> Path:
    """Return the root folder for ``dataset`` (a name or a path), generating toy data."""
    data_dir = Path(data_dir).expanduser()
    if dataset in TOY_NAMES:
        from wbclf.data.synthetic import synthesize

        return synthesize(dataset, data_dir / dataset, progress=progress)
    if dataset in KAGGLE_HANDLES:
        root = data_dir / dataset
        if not root.exists():
            raise DatasetError(f"dataset '{dataset}' is not under {data_dir}; run `wbclf data "
                               f"download {dataset}` (needs Kaggle access) or pass "
                               "--dataset=/path/to/its/root")
        return root
    path = Path(dataset).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset '{dataset}' is neither a named dataset ("
                           f"{', '.join(NAMED)}) nor an existing folder")
    return path


def install_downloaded(name: str, downloaded: str | Path, data_dir: str | Path) -> Path:
    """Check a downloaded tree has the expected layout and link it as ``data_dir/name``."""
    layout, _ = detect_layout(downloaded)
    expected = EXPECTED_LAYOUT[name]
    if layout != expected:
        raise DatasetError(f"the download of '{name}' at {downloaded} has layout '{layout}', "
                           f"expected '{expected}'; the Kaggle dataset may have changed")
    target = Path(data_dir).expanduser() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        if target.resolve() == Path(downloaded).resolve():
            return target
        raise DatasetError(f"{target} already exists; remove it to install a new download")
    os.symlink(Path(downloaded).resolve(), target, target_is_directory=True)
    return target


def download(name: str, data_dir: str | Path,
             fetch: Callable[[str], str] | None = None) -> Path:
    """Download Kaggle dataset ``name`` with kagglehub and install it under ``data_dir``."""
    if name not in KAGGLE_HANDLES:
        raise DatasetError(f"cannot download '{name}'; allowed: {', '.join(KAGGLE_HANDLES)}")
    if fetch is None:
        import kagglehub

        fetch = kagglehub.dataset_download
    try:
        downloaded = fetch(KAGGLE_HANDLES[name])
    except Exception as err:  # kagglehub raises many kinds; the user needs one line
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(f"download of '{name}' ({KAGGLE_HANDLES[name]}) failed: {first}; "
                           "check the network and Kaggle credentials (~/.kaggle/kaggle.json "
                           "or KAGGLE_USERNAME/KAGGLE_KEY)") from None
    return install_downloaded(name, downloaded, data_dir)
