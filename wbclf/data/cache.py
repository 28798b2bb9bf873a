"""Decoded-image cache: every image decoded once, stored as a memory-mapped uint8 array.

A cache is keyed by its file list (paths, sizes, mtimes) and resolution, so every run and
sweep trial asking for the same images shares it, and a touched file makes a new one. It is
built under a temporary name and renamed when complete: a build killed half-way is never read.
A file lock makes concurrent runs build it once and both use it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from wbclf.atomic import build_once, replacing, write_text_atomic

T = TypeVar("T")

CACHE_VERSION = 1
_CHUNK = 256


def default_cache_dir() -> Path:
    """``$WBCLF_CACHE_DIR`` or the user cache dir."""
    env = os.environ.get("WBCLF_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("wbclf")) / "cache"


def load_image(path: str, size: int) -> np.ndarray | None:
    """Decode ``path`` to RGB uint8, resize its short side to ``size`` and centre-crop.

    Returns None when the file cannot be decoded. Grayscale, RGBA, CMYK and 16-bit files all
    come out as 8-bit RGB (OpenCV's IMREAD_COLOR converts them).
    """
    flags = cv2.IMREAD_COLOR
    try:
        # Let libjpeg decode huge JPEGs at 1/2, 1/4 or 1/8 scale: far faster, same result
        # after the INTER_AREA resize below.
        big = os.path.getsize(path) > 1_000_000  # only big files can be worth a header read
        height, width = (_jpeg_size(path) if big else None) or (0, 0)
        short = min(height, width)
        for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if short and short // factor >= size * 2:
                flags = reduced
                break
        image = cv2.imread(path, flags)
    except (cv2.error, OSError):
        return None
    if image is None or image.size == 0:
        return None
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return resize_center_crop(image, size)


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Short side to ``size`` (area interpolation when shrinking), then a centre crop."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    if scale != 1.0:
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interp)
        h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def _jpeg_size(path: str) -> tuple[int, int] | None:
    """(height, width) from a JPEG's SOF marker without decoding; None if not found."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(65536)
    except OSError:
        return None
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xC0, 0xC1, 0xC2):
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9],
                                                                             "big")
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def cache_key(paths: Sequence[str], size: int) -> str:
    """Hash of the file list (path, size, mtime) and resolution."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{size}|".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


@dataclass
class ImageCache:
    """A complete cache on disk: ``images`` is an (N, S, S, 3) uint8 memmap."""

    data_path: Path
    size: int
    count: int
    failed: dict[int, str]  # index -> reason the file could not be decoded

    def open(self) -> np.ndarray:
        """Memory-map the images read-only (cheap; call once per process)."""
        return np.memmap(self.data_path, dtype=np.uint8, mode="r",
                         shape=(self.count, self.size, self.size, 3))


def _decode_chunk(args: tuple[str, int, int, int, list[str]]) -> dict[int, str]:
    """Worker: decode ``paths`` into rows ``start..`` of the temporary memmap."""
    tmp_path, count, size, start, paths = args
    out = np.memmap(tmp_path, dtype=np.uint8, mode="r+", shape=(count, size, size, 3))
    failed: dict[int, str] = {}
    for offset, path in enumerate(paths):
        image = load_image(path, size)
        if image is None:
            failed[start + offset] = "could not be decoded"
            continue
        out[start + offset] = image
    out.flush()
    del out
    return failed


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="caching images", unit="img", disable=not enabled,
                leave=False, dynamic_ncols=True)


def build_or_load(paths: Sequence[str], size: int, cache_dir: str | Path | None = None, *,
                  workers: int = 0, progress: bool | None = None) -> ImageCache:
    """Return the cache for ``paths`` at ``size``, building it first if needed."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = root / "images"
    key = cache_key(paths, size)
    data_path = folder / f"{key}.u8"

    def build() -> dict:
        failed = _build(paths, size, data_path, workers, progress)
        return {"version": CACHE_VERSION, "count": len(paths), "size": size,
                "failed": {str(k): v for k, v in failed.items()},
                "paths": [os.path.abspath(p) for p in paths]}

    cache, _ = build_once(folder / f"{key}.json",
                          lambda meta: _from_meta(meta, data_path, len(paths), size), build)
    return cache


def _build(paths: Sequence[str], size: int, data_path: Path, workers: int,
           progress: bool | None) -> dict[int, str]:
    count = len(paths)
    show = sys.stderr.isatty() if progress is None else progress
    failed: dict[int, str] = {}
    with replacing(data_path) as tmp_path, _progress(count, show) as bar:
        # Create the file at full length up front; workers fill their own rows.
        np.memmap(tmp_path, dtype=np.uint8, mode="w+",
                  shape=(max(count, 1), size, size, 3)).flush()
        jobs = [(str(tmp_path), max(count, 1), size, start, list(paths[start:start + _CHUNK]))
                for start in range(0, count, _CHUNK)]
        if workers > 1 and len(jobs) > 1:
            # spawn, not fork: a forked child of a process that already ran OpenCV's thread
            # pool can deadlock inside OpenCV (seen with opencv 5.0 here).
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                for job, result in zip(jobs, pool.map(_decode_chunk, jobs)):
                    failed.update(result)
                    bar.update(len(job[4]))
        else:
            for job in jobs:
                failed.update(_decode_chunk(job))
                bar.update(len(job[4]))
    return failed


def _from_meta(meta: dict, data_path: Path, count: int, size: int) -> ImageCache | None:
    """The cache ``meta`` describes if its data file is complete and consistent, else None."""
    if not data_path.is_file():
        return None
    expected_bytes = max(count, 1) * size * size * 3
    if meta.get("count") != count or meta.get("size") != size \
            or data_path.stat().st_size != expected_bytes:
        return None
    failed = {int(k): v for k, v in meta.get("failed", {}).items()}
    return ImageCache(data_path, size, count, failed)


# --------------------------------------------------------------------------- small figures

MEMO_VERSION = 1


def remembered(kind: str, key: dict[str, Any], compute: Callable[[], T],
               cache_dir: str | Path | None = None) -> tuple[T, bool]:
    """``compute()``'s JSON value, computed once per ``key`` and kept under the cache dir.

    For figures every trial of a study would otherwise compute again with the same result
    (the test-leak check of one split, a model's FLOPs) or measure again under the same
    conditions (its inference speed). Returns ``(value, reused)``. An unreadable entry counts
    as missing; a cache dir that cannot be written costs the time, never the run.
    """
    text = json.dumps({"v": MEMO_VERSION, "kind": kind, **key}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    path = (Path(cache_dir) if cache_dir else default_cache_dir()) / "memo" / kind \
        / f"{digest}.json"
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == text:
            return stored["value"], True
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    # Through JSON and back, so a fresh value and a remembered one are alike (lists, floats).
    value = json.loads(json.dumps(compute()))
    try:
        write_text_atomic(path, json.dumps({"key": text, "value": value}))
    except OSError:
        pass
    return value, False
