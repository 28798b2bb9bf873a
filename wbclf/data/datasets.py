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

from wbclf.data.batch_augment import as_batch_augment, visit_order
from wbclf.data.cache import ImageCache, build_or_load, load_image, remembered
from wbclf.data.layouts import DatasetError, Sample, index_dataset
from wbclf.data.sources import resolve_dataset
from wbclf.data.dedup import FINGERPRINT_SETTINGS, fingerprints, has_match
from wbclf.data.splits import SPLITS, make_splits, subsample_train


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
    # per test image: a near-duplicate of a train or val image (wbclf.data.dedup)
    leaked_test: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

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
    """uint8 images with integer labels, read from the cache (or decoded on the fly).

    ``transform`` is a batch augmentation (:mod:`wbclf.data.batch_augment`) or an
    albumentations pipeline. The fast path is :meth:`read_batch`, one call per batch; indexing
    one item (``dataset[i]`` or ``dataset[(i, seed)]``) gives a CHW tensor and its label.
    """

    def __init__(self, *, paths: list[str], labels: np.ndarray, size: int,
                 cache: ImageCache | None = None, rows: np.ndarray | None = None,
                 transform=None) -> None:
        self.paths = paths
        self.labels = labels
        self.size = size
        self.cache = cache
        self.rows = rows
        self.transform = transform
        self.augment = as_batch_augment(transform)
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        # Workers re-open the memmap themselves; pickling it would copy every image.
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    @property
    def cached(self) -> bool:
        return self.cache is not None and self.rows is not None

    def array(self) -> np.ndarray:
        """The whole cache as an (N, S, S, 3) memmap, opened once per process."""
        if self._array is None:
            # a plain ndarray view (it keeps the memmap open): indexing a np.memmap builds a
            # memmap object per row, several times the cost of copying a small image
            self._array = np.asarray(self.cache.open())
        return self._array

    def image(self, i: int) -> np.ndarray | None:
        """The stored (un-augmented) HWC uint8 image ``i``."""
        if self.cached:
            return self.array()[self.rows[i]]
        return load_image(self.paths[i], self.size)

    def __getitem__(self, item: int | tuple[int, int]):
        images, labels = self.read_batch([item])
        if not len(labels):
            return None
        return images[0], int(labels[0])

    def read_batch(self, items: list[int] | list[tuple[int, int]], *,
                   channels_last: bool = False, pin_memory: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (uint8, N x 3 x S x S) and labels of ``items``, augmented when training.

        Args:
            channels_last: return a view of N x S x S x 3 memory (channels-last strides, no
                transpose) instead of a contiguous N x 3 x S x S tensor.
            pin_memory: allocate the batch in page-locked memory (CUDA only).
        """
        hwc = torch.empty((len(items), self.size, self.size, 3), dtype=torch.uint8,
                          pin_memory=pin_memory)
        count, labels = self.fill(items, hwc.numpy())
        return _as_nchw(hwc[:count], channels_last, pin_memory), labels

    def fill(self, items: list[int] | list[tuple[int, int]], out: np.ndarray
             ) -> tuple[int, torch.Tensor]:
        """Write the images of ``items`` into ``out[:count]`` (N x S x S x 3 uint8).

        The train sampler sends (index, seed) pairs: augmentation then depends only on the
        epoch and the sample, not on worker count or history, so a resumed run repeats
        exactly. Rows are read from the memmap in ascending order, straight into ``out``.
        Undecodable files (cache off) are left out, with a warning.

        Returns:
            How many images were written, and their labels.
        """
        index = np.array([it[0] if isinstance(it, tuple) else it for it in items], np.int64)
        seeds = np.array([it[1] if isinstance(it, tuple)
                          else (_fresh_seed() if self.augment else 0) for it in items], np.int64)
        if self.cached:
            source, rows = self.array(), self.rows[index]
        else:
            source, keep = self._decode(index)
            index, seeds, rows = index[keep], seeds[keep], np.arange(len(keep))
        if self.augment is not None:
            self.augment(source, rows, seeds, out)
        else:
            for k in visit_order(rows):
                out[k] = source[rows[k]]
        return len(rows), torch.from_numpy(self.labels[index])

    def _decode(self, index: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Decode the files of ``index``: (stacked images, positions that decoded)."""
        decoded = [load_image(self.paths[i], self.size) for i in index]
        keep = [k for k, image in enumerate(decoded) if image is not None]
        for k, image in enumerate(decoded):
            if image is None:
                warnings.warn(f"skipping undecodable image {self.paths[index[k]]}",
                              stacklevel=2)
        if not keep:
            return np.empty((0, self.size, self.size, 3), np.uint8), keep
        return np.stack([decoded[k] for k in keep]), keep


def _fresh_seed() -> int:
    """A seed for an item asked for without one (outside the seeded train sampler)."""
    return int(np.random.randint(0, 2**31 - 1))


def _as_nchw(hwc: torch.Tensor, channels_last: bool, pin_memory: bool) -> torch.Tensor:
    """N x 3 x S x S from N x S x S x 3: a view, or a contiguous copy."""
    nchw = hwc.permute(0, 3, 1, 2)
    if channels_last:
        return nchw
    return torch.empty(nchw.shape, dtype=nchw.dtype, pin_memory=pin_memory).copy_(nchw)


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


class EpochBatchSampler(Sampler):
    """The :class:`EpochSampler`'s (index, seed) pairs in lists of ``batch_size``."""

    def __init__(self, n: int, seed: int, batch_size: int, *, drop_last: bool) -> None:
        self.pairs = EpochSampler(n, seed)
        self.batch_size = batch_size
        self.drop_last = drop_last

    @property
    def epoch(self) -> int:
        return self.pairs.epoch

    def set_epoch(self, epoch: int) -> None:
        self.pairs.set_epoch(epoch)

    def __len__(self) -> int:
        n, b = self.pairs.n, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        pairs = list(self.pairs)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield pairs[start:start + self.batch_size]


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_workers(setting: str, *, augment: str, device: str | torch.device | None = None,
                    cores: int | None = None) -> int:
    """``num_workers=auto``: loader processes only where they buy time (docs/BENCHMARKS.md).

    - CPU training: none. The model's forward and backward passes cost tens to hundreds of
      times the augmentation of an image, and their intra-op threads already use every
      core: a worker only takes cycles from them (one worker made scratch-CNN epochs 1-4%
      slower on 2 cores, light and strong augmentation alike).
    - Accelerator training: the CPU's only job is feeding the device; augmentation then
      runs in every core but one (the training loop's), up to 12. A cached, un-augmented
      image is a memory copy (3 us at 128 px): 2 workers out-deliver what a GPU trains on.

    Args:
        device: the training device (``None``: CUDA if available, else CPU).
        cores: usable cores (default: this process's CPU affinity).
    """
    if setting != "auto":
        return int(setting)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cpu":
        return 0
    spare = (cores or available_cores()) - 1
    return max(0, min(spare, 2 if augment == "none" else 12))


class _SlotWriter(Dataset):
    """Worker side of :class:`BatchLoader`: item ``(slot, items)`` -> batch written in a slot."""

    def __init__(self, dataset: ImageDataset, slots: torch.Tensor) -> None:
        self.dataset = dataset
        self.slots = slots  # (slots, B, S, S, 3) uint8 in shared memory

    def __getitem__(self, task: tuple[int, list]) -> tuple[int, int, np.ndarray]:
        slot, items = task
        count, labels = self.dataset.fill(items, self.slots[slot].numpy())
        return slot, count, labels.numpy()  # a few bytes: pickled, not a shared tensor


def _as_is(task_result):
    """``collate_fn`` that leaves a worker's result alone (no array-to-tensor conversion)."""
    return task_result


class _SlotSampler(Sampler):
    """Hands each batch of the epoch a free slot of the loader's shared buffer."""

    def __init__(self, batches: EpochBatchSampler, free: list[int]) -> None:
        self.batches = batches
        self.free = free  # the loader's list of free slots, shared

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[int, list]]:
        for items in self.batches:
            if not self.free:  # cannot happen: the DataLoader keeps at most slots - 2 out
                raise RuntimeError("BatchLoader: no free batch slot")
            yield self.free.pop(), items


class BatchLoader:
    """Shuffled, seeded, augmented uint8 batches; call ``loader.sampler.set_epoch(e)`` first.

    With ``workers`` = 0 each batch is made in this process, one :meth:`ImageDataset.fill`
    call (OpenCV's own threads parallelize the warps). With workers, each batch is made by
    one call in one worker process, written into a slot of a shared-memory buffer allocated
    once; this process copies it out (into page-locked memory when ``pin_memory``) and frees
    the slot. Why: a fresh shared-memory batch per step, as torch's DataLoader makes them,
    costs page faults that took more time than augmenting half the batch (one worker
    delivered 11k instead of 22k images/s at 128 px; docs/BENCHMARKS.md).

    The last partial batch is dropped when there is more than one batch (BatchNorm needs
    more than one image, and equal batches keep the loss scale even).
    """

    def __init__(self, dataset: ImageDataset, *, batch_size: int, workers: int, seed: int,
                 pin_memory: bool = False, channels_last: bool = False,
                 prefetch: int = 2) -> None:
        self.dataset = dataset
        self.sampler = EpochBatchSampler(len(dataset), seed, batch_size,
                                         drop_last=len(dataset) > batch_size)
        self.workers = workers
        self.pin_memory = pin_memory
        self.channels_last = channels_last
        self._free: list[int] = []
        self._loader: DataLoader | None = None
        if workers > 0:
            # The DataLoader keeps at most workers * prefetch tasks out, and one batch is
            # being copied out here: two spare slots are one more than ever needed.
            count = workers * prefetch + 2
            size = dataset.size
            self._slots = torch.empty((count, batch_size, size, size, 3),
                                      dtype=torch.uint8).share_memory_()
            self._loader = DataLoader(
                _SlotWriter(dataset, self._slots), batch_size=None,
                sampler=_SlotSampler(self.sampler, self._free), collate_fn=_as_is,
                num_workers=workers, persistent_workers=True, prefetch_factor=prefetch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._loader is None:
            for items in self.sampler:
                yield self.dataset.read_batch(items, channels_last=self.channels_last,
                                              pin_memory=self.pin_memory)
            return
        # a new epoch: the DataLoader finishes (and drops) the last one's tasks first
        self._free[:] = range(len(self._slots))
        for slot, count, labels in self._loader:
            hwc = torch.empty((count, *self._slots.shape[2:]), dtype=torch.uint8,
                              pin_memory=self.pin_memory)
            # numpy's copy: one thread. torch's wakes the intra-op thread pool, whose spinning
            # threads then hold the cores the workers need (measured: 1.7x slower loading).
            np.copyto(hwc.numpy(), self._slots[slot, :count].numpy())
            self._free.append(slot)
            labels = torch.from_numpy(labels)
            if self.pin_memory:
                labels = labels.pin_memory()
            yield _as_nchw(hwc, self.channels_last, self.pin_memory), labels


def make_train_loader(dataset: ImageDataset, *, batch_size: int, workers: int, seed: int,
                      pin_memory: bool = False, channels_last: bool = False) -> BatchLoader:
    """The training batches of ``dataset`` (see :class:`BatchLoader`).

    Args:
        channels_last: deliver N x 3 x S x S views of N x S x S x 3 memory (what a
            channels-last model wants, and no transpose in the loader).
    """
    return BatchLoader(dataset, batch_size=batch_size, workers=workers, seed=seed,
                       pin_memory=pin_memory, channels_last=channels_last)


def iter_eval_batches(dataset: ImageDataset, batch_size: int, *, pin_memory: bool = False
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Un-augmented batches in order: contiguous slices of the cache when there is one.

    Images come as N x 3 x S x S views of channels-last memory (no transpose); with
    ``pin_memory`` each batch is copied to page-locked memory, so the copy to the device can
    overlap with compute.
    """
    n = len(dataset)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        if dataset.cached:
            labels = torch.from_numpy(dataset.labels[start:stop])
            rows = dataset.rows[start:stop]
            # one contiguous read when the rows are consecutive (they are, for eval splits)
            images = np.array(dataset.array()[rows[0]:rows[-1] + 1]) \
                if rows[-1] - rows[0] == len(rows) - 1 else dataset.array()[rows]
            batch = torch.from_numpy(images).permute(0, 3, 1, 2)
        else:
            batch, labels = dataset.read_batch(list(range(start, stop)), channels_last=True)
            if not len(labels):
                continue
        yield (batch.pin_memory(), labels.pin_memory()) if pin_memory else (batch, labels)


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
    splits["train"] = subsample_train(splits["train"], cfg.train_size, cfg.seed)
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
    bundle.leaked_test = find_test_leaks(bundle)
    return bundle


def find_test_leaks(bundle: DataBundle) -> np.ndarray:
    """Which test images near-duplicate a train or val image (read from the cache when
    there is one): the leak-free test figure leaves these out.

    With the image cache the answer is remembered per split (the cache's key covers every
    file's path, size and mtime): the trials of a study share their splits, and the check
    reads and fingerprints every image.
    """
    if bundle.cache is None:
        return _test_leaks(bundle)
    key = {"images": bundle.cache.data_path.name, "method": FINGERPRINT_SETTINGS,
           **{split: _rows_digest(bundle.rows[split]) for split in SPLITS}}
    leaked, _ = remembered("test-leaks", key, lambda: _test_leaks(bundle).tolist(),
                           bundle.cache.data_path.parents[1])
    return np.asarray(leaked, dtype=bool).reshape(len(bundle.splits["test"]))


def _test_leaks(bundle: DataBundle) -> np.ndarray:
    prints = {}
    for split in SPLITS:
        dataset = bundle.dataset(split)
        prints[split] = fingerprints((dataset.image(i) for i in range(len(dataset))),
                                     len(dataset))
    seen = np.concatenate([prints["train"], prints["val"]])
    return has_match(prints["test"], seen)


def _rows_digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:24]


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
