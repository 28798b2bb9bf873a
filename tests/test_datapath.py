"""The fast data path stays correct: batched reads, batch augmentation, loader, worker rules.

No timings here: speed is measured by scripts/benchmark.py, never asserted in tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wbclf.config import build_config
from wbclf.data.batch_augment import AlbumentationsAugment
from wbclf.data.datasets import (EpochBatchSampler, EpochSampler, iter_eval_batches,
                                 make_train_loader, prepare_data, resolve_workers)
from wbclf.data.transforms import resolve_augment
from wbclf.training.engine import _check_losses
from wbclf.errors import DivergedError

SIZE = 32


@pytest.fixture(scope="module")
def bundle(toy_lesions):
    cfg = build_config({"dataset": str(toy_lesions), "image_size": SIZE, "limit_per_class": 20})
    return prepare_data(cfg, progress=False)


def _light():
    return resolve_augment("light", SIZE).compose


def _items(n: int, seed: int = 3) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    pairs = zip(rng.permutation(n), rng.integers(0, 2**31, n), strict=True)
    return [(int(i), int(s)) for i, s in pairs]


# ------------------------------------------------------------------ batched reads


@pytest.mark.parametrize("preset", ["none", "light", "strong"])
def test_batched_read_equals_per_sample_reads(bundle, preset):
    ds = bundle.dataset("train", resolve_augment(preset, SIZE).compose)
    items = _items(len(ds))[:12]
    images, labels = ds.read_batch(items)
    assert images.dtype == torch.uint8 and images.shape == (12, 3, SIZE, SIZE)
    for k, item in enumerate(items):
        image, label = ds[item]
        torch.testing.assert_close(images[k], image, rtol=0, atol=0)
        assert labels[k] == label == ds.labels[item[0]]


def test_augmentation_depends_only_on_index_and_seed(bundle):
    ds = bundle.dataset("train", _light())
    items = _items(len(ds))[:10]
    forward, _ = ds.read_batch(items)
    backward, _ = ds.read_batch(items[::-1])
    torch.testing.assert_close(forward, backward.flip(0), rtol=0, atol=0)
    other_seed, _ = ds.read_batch([(i, s + 1) for i, s in items])
    assert not torch.equal(forward, other_seed)


def test_unaugmented_batch_is_the_cache_and_layouts_agree(bundle):
    ds = bundle.dataset("train")
    index = [5, 0, 3, 1]
    contiguous, labels = ds.read_batch(index)
    view, _ = ds.read_batch(index, channels_last=True)
    assert contiguous.is_contiguous()
    assert view.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(contiguous, view, rtol=0, atol=0)
    expected = np.stack([ds.image(i) for i in index]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(contiguous.numpy(), expected)
    np.testing.assert_array_equal(labels.numpy(), ds.labels[index])


def test_cache_off_reads_decode_the_same_pixels(bundle):
    cached = bundle.dataset("val")
    uncached = cached.__class__(paths=cached.paths, labels=cached.labels, size=SIZE)
    a, la = cached.read_batch([0, 1, 2])
    b, lb = uncached.read_batch([0, 1, 2])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(la, lb, rtol=0, atol=0)


def test_albumentations_pipeline_works_as_a_batch_augment(bundle):
    """A plain albumentations Compose (what the feature cache passes) keeps working."""
    compose = resolve_augment("strong", SIZE).compose
    ds = bundle.dataset("train", compose)
    assert isinstance(ds.augment, AlbumentationsAugment)
    image, _ = ds[(2, 11)]
    again, _ = ds[(2, 11)]
    torch.testing.assert_close(image, again, rtol=0, atol=0)


# ------------------------------------------------------------------ sampler and loader


def test_epoch_batch_sampler_batches_the_epoch_sampler():
    batches = EpochBatchSampler(70, 4, 16, drop_last=True)
    batches.set_epoch(3)
    pairs = EpochSampler(70, 4)
    pairs.set_epoch(3)
    flat = [pair for batch in batches for pair in batch]
    assert len(batches) == 4 and all(len(b) == 16 for b in batches)
    assert flat == list(pairs)[:64]
    assert len(EpochBatchSampler(70, 4, 16, drop_last=False)) == 5
    first = list(batches)
    batches.set_epoch(4)
    assert list(batches) != first


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("channels_last", [True, False])
def test_loader_delivers_uint8_nchw_with_the_right_labels(bundle, workers, channels_last):
    ds = bundle.dataset("train", _light())
    loader = make_train_loader(ds, batch_size=8, workers=workers, seed=1,
                               channels_last=channels_last)
    for epoch in (2, 3):  # a second epoch reuses the persistent workers and the batch slots
        loader.sampler.set_epoch(epoch)
        expected = list(loader.sampler)
        delivered = list(loader)  # every batch kept: none may be overwritten later
        assert len(delivered) == len(expected) == len(ds) // 8
        seen = []
        for (images, labels), items in zip(delivered, expected, strict=True):
            assert images.dtype == torch.uint8 and images.shape == (8, 3, SIZE, SIZE)
            assert images.is_contiguous(memory_format=torch.channels_last
                                        if channels_last else torch.contiguous_format)
            assert labels.dtype == torch.int64
            np.testing.assert_array_equal(labels.numpy(), ds.labels[[i for i, _ in items]])
            reference, _ = ds.read_batch(items)
            torch.testing.assert_close(images, reference, rtol=0, atol=0)
            seen.extend(i for i, _ in items)
        assert len(set(seen)) == len(seen)


def test_abandoned_epoch_leaves_the_next_one_whole(bundle):
    ds = bundle.dataset("train", _light())
    loader = make_train_loader(ds, batch_size=4, workers=2, seed=0)
    loader.sampler.set_epoch(1)
    next(iter(loader))  # stop after one batch, tasks still in flight
    loader.sampler.set_epoch(2)
    expected = list(loader.sampler)
    for (images, _), items in zip(loader, expected, strict=True):
        torch.testing.assert_close(images, ds.read_batch(items)[0], rtol=0, atol=0)


def test_eval_batches_are_the_cache_in_order(bundle):
    ds = bundle.dataset("test")
    batches = list(iter_eval_batches(ds, 7))
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(),
                                  np.stack([ds.image(i) for i in range(len(ds))]))
    np.testing.assert_array_equal(labels.numpy(), ds.labels)


# ------------------------------------------------------------------ worker count


def test_auto_workers_rules():
    assert resolve_workers("3", augment="light", device="cpu") == 3
    # CPU: the model's own threads use every core; augmentation stays in the main process
    assert resolve_workers("auto", augment="light", device="cpu", cores=64) == 0
    # an accelerator: every core but the training loop's, up to 12
    assert resolve_workers("auto", augment="light", device="cuda", cores=2) == 1
    assert resolve_workers("auto", augment="strong", device="cuda", cores=16) == 12
    assert resolve_workers("auto", augment="none", device="cuda", cores=16) == 2
    assert resolve_workers("auto", augment="light", device="cuda", cores=1) == 0


# ------------------------------------------------------------------ the loop


def test_delayed_loss_check_names_the_first_bad_step():
    from torch import nn

    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    good = [(1, torch.tensor(0.5)), (2, torch.tensor(0.4))]
    _check_losses(good, 1, optimizer)
    assert good == []
    bad = [(3, torch.tensor(0.5)), (5, torch.tensor(float("nan"))),
           (6, torch.tensor(float("inf")))]
    with pytest.raises(DivergedError, match="epoch 1, step 5 "):
        _check_losses(bad, 1, optimizer)
