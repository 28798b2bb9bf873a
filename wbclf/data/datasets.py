"""From a RunConfig to batches: index, split, cache, then torch datasets and loaders."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from wbclf.data.cache import ImageCache, build_or_load, load_image
from wbclf.data.layouts import DatasetError, Sample, index_dataset
from wbclf.data.sources import resolve_dataset
from wbclf.data.splits import make_splits


@dataclass
class DataBundle:
    """Everything a run needs to know about its data."""

    root: Path
    layout: str
    classes: list[str]
    splits: dict[str, list[Sample]]
    image_size: int
    cache: ImageCache | None = None
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # split -> rows in the cache
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def labels(self, split: str) -> np.ndarray:
        return np.array([s.label for s in self.splits[split]], dtype=np.int64)

    def class_counts(self, split: str) -> np.ndarray:
        return np.bincount(self.labels(split), minlength=len(self.classes))

    def dataset(self, split: str, transform=None) -> ImageDataset:
        samples = self.splits[split]
        return ImageDataset(
            paths=[s.path for s in samples], labels=self.labels(split), size=self.image_size,
            cache=self.cache, rows=self.rows.get(split), transform=transform)


class ImageDataset(Dataset):
    """uint8 CHW images with integer labels, read from the cache (or decoded on the fly)."""

    def __init__(self, *, paths: list[str], labels: np.ndarray, size: int,
                 cache: ImageCache | None = None, rows: np.ndarray | None = None,
                 transform=None) -> None:
        self.paths = paths
        self.labels = labels
        self.size = size
        self.cache = cache
        self.rows = rows
        self.transform = transform
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        # Workers re-open the memmap themselves; pickling it would copy every image.
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def image(self, i: int) -> np.ndarray | None:
        """The stored (un-augmented) HWC uint8 image ``i``."""
        if self.cache is not None and self.rows is not None:
            if self._array is None:
                self._array = self.cache.open()
            return self._array[self.rows[i]]
        return load_image(self.paths[i], self.size)

    def __getitem__(self, item: int | tuple[int, int]):
        # The train sampler sends (index, seed): augmentation then depends only on the epoch
        # and the sample, not on worker count or history, so a resumed run repeats exactly.
        i, seed = item if isinstance(item, tuple) else (item, None)
        image = self.image(i)
        if image is None:
            warnings.warn(f"skipping undecodable image {self.paths[i]}", stacklevel=1)
            return None
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_seed(seed)
            image = self.transform(image=np.asarray(image))["image"]
        # copy: memmap rows are read-only, and torch wants memory it may own
        tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
        return tensor, int(self.labels[i])


def collate_skip_none(batch):
    """Default collation, minus the images that failed to decode (cache off)."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return torch.empty(0, 3, 1, 1, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    return torch.utils.data.default_collate(batch)


class EpochSampler(Sampler):
    """Shuffles with a generator seeded by (seed, epoch) and pairs each index with a seed."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n)
        seeds = rng.integers(0, 2**31 - 1, size=self.n)
        return iter(zip(order.tolist(), seeds.tolist()))


def resolve_workers(setting: str, *, augment: str) -> int:
    """``num_workers=auto``: no workers when there is nothing to compute per image.

    Reading a cached image is a memcpy, so worker processes only pay for themselves when
    augmentation runs; then use all cores but one (the training loop keeps one busy).
    """
    if setting != "auto":
        return int(setting)
    if augment == "none":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) - 1))


def make_train_loader(dataset: ImageDataset, *, batch_size: int, workers: int, seed: int,
                      pin_memory: bool = False) -> DataLoader:
    """Shuffled, seeded batches; call ``loader.sampler.set_epoch(e)`` before each epoch.

    The last partial batch is dropped when there is more than one batch (BatchNorm needs
    more than one image, and equal batches keep the loss scale even).
    """
    sampler = EpochSampler(len(dataset), seed)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler,
        drop_last=len(dataset) > batch_size, num_workers=workers, pin_memory=pin_memory,
        persistent_workers=workers > 0, collate_fn=collate_skip_none,
        prefetch_factor=4 if workers else None)


def iter_eval_batches(dataset: ImageDataset, batch_size: int
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Un-augmented batches in order: contiguous slices of the cache when there is one."""
    n = len(dataset)
    cached = dataset.cache is not None and dataset.rows is not None
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        labels = torch.from_numpy(dataset.labels[start:stop])
        if cached:
            if dataset._array is None:
                dataset._array = dataset.cache.open()
            rows = dataset.rows[start:stop]
            # one contiguous read when the rows are consecutive (they are, for eval splits)
            images = np.array(dataset._array[rows[0]:rows[-1] + 1]) \
                if rows[-1] - rows[0] == len(rows) - 1 else dataset._array[rows]
            yield torch.from_numpy(images).permute(0, 3, 1, 2), labels
        else:
            items = [dataset[i] for i in range(start, stop)]
            keep = [k for k, item in enumerate(items) if item is not None]
            if not keep:
                continue
            images = torch.stack([items[k][0] for k in keep])
            yield images, labels[keep]


def prepare_data(cfg, *, progress: bool | None = None, cache_dir: str | None = None
                 ) -> DataBundle:
    """Resolve, index, split and (optionally) cache the dataset named by ``cfg``."""
    root = resolve_dataset(cfg.dataset, cfg.data_dir, progress=bool(progress))
    index = index_dataset(root)
    if len(index.classes) < 2:
        raise DatasetError(f"dataset '{cfg.dataset}' has one class ({index.classes[0]}); "
                           "classification needs at least 2 class folders")
    splits = make_splits(index, val_fraction=cfg.val_fraction, seed=cfg.seed,
                         limit_per_class=cfg.limit_per_class)
    for name in ("train", "val", "test"):
        if not splits[name]:
            raise DatasetError(f"split '{name}' of dataset '{cfg.dataset}' is empty; each "
                               "class needs images in train (and val/test, or enough to carve)")
    bundle = DataBundle(root=index.root, layout=index.layout, classes=index.classes,
                        splits=splits, image_size=cfg.image_size, skipped=list(index.skipped),
                        warnings=list(index.warnings))
    bundle.warnings.extend(_duplicate_warnings(splits))
    if cfg.cache_images:
        _attach_cache(bundle, progress, cache_dir)
    return bundle


def _attach_cache(bundle: DataBundle, progress: bool | None, cache_dir: str | None) -> None:
    """Build/load the cache for all split files; drop files that failed to decode."""
    order = [(name, s) for name in ("train", "val", "test") for s in bundle.splits[name]]
    paths = [s.path for _, s in order]
    workers = min(4, os.cpu_count() or 1)
    cache = build_or_load(paths, bundle.image_size, cache_dir, workers=workers,
                          progress=progress)
    kept: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    rows: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for row, (name, sample) in enumerate(order):
        if row in cache.failed:
            bundle.skipped.append({"path": sample.path, "reason": cache.failed[row]})
            continue
        kept[name].append(sample)
        rows[name].append(row)
    bundle.splits = kept
    bundle.rows = {name: np.array(r, dtype=np.int64) for name, r in rows.items()}
    bundle.cache = cache


def _duplicate_warnings(splits: dict[str, list[Sample]]) -> list[str]:
    """Identical files in two splits leak evaluation data into training: say so.

    Files are grouped by size, then by a hash of their first 4 KiB, and only files that
    still collide across splits are hashed whole: a stat and a small read per file.
    """
    by_size: dict[int, list[tuple[str, str]]] = {}
    for name, samples in splits.items():
        for s in samples:
            try:
                by_size.setdefault(os.path.getsize(s.path), []).append((name, s.path))
            except OSError:
                continue
    clashes = 0
    example = ""
    for entries in by_size.values():
        if len({name for name, _ in entries}) < 2:
            continue
        seen: dict[str, str] = {}
        heads: dict[bytes, set[str]] = {}
        for name, path in entries:
            with open(path, "rb") as fh:
                heads.setdefault(fh.read(4096), set()).add(name)
        for name, path in entries:
            with open(path, "rb") as fh:
                if len(heads[fh.read(4096)]) < 2:
                    continue
            digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()
            other = seen.setdefault(digest, name)
            if other != name:
                clashes += 1
                example = example or f"{Path(path).name} in {other} and {name}"
    if clashes:
        return [f"{clashes} file(s) in more than one split have identical bytes, e.g. {example}"]
    return []
