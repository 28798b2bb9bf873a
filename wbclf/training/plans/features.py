"""Frozen-backbone feature cache and head training (``strategy=frozen``, ``cache_images=true``).

A frozen backbone maps an image to the same features in every epoch of every run that uses the
same weights, so it runs once: its pooled pre-logit features
(``model.forward_head(model.forward_features(x), pre_logits=True)``, eval mode, no gradients)
are stored as float16 next to the decoded-image cache and the epochs train only the head on
them. A store is keyed by the model name, the weight source, a hash of the backbone's weights,
the image cache (file list, sizes, mtimes, resolution), the normalization and the precision;
it is built under a temporary name, renamed when complete, and guarded by a file lock, like
the image cache. A touched or replaced file gives a new image cache key, hence new features.

Augmentation (the trade-off, see docs/TRANSFER.md): with ``augment=none`` the cached features
are exactly what the backbone would compute every epoch. Otherwise each train image also gets
``AUGMENTED_VIEWS - 1`` augmented views, drawn once with fixed seeds; every epoch picks one of
the ``AUGMENTED_VIEWS`` views (view 0 is the un-augmented image) per image, seeded by
(seed, epoch). A finite set of views regularizes less than fresh augmentation every epoch;
``cache_images=false`` gives the latter (the backbone then runs on every batch).

The head is the model's own classifier module, so checkpoints hold the full model and
``wbclf predict`` works on images.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wbclf.atomic import build_once, replacing
from wbclf.data.datasets import collate_skip_none, resolve_workers
from wbclf.data.transforms import DeviceNormalizer
from wbclf.errors import RunError, UserError
from wbclf.models import eval_mode
from wbclf.models.gradcam import FeatureMaps
from wbclf.training.engine import evaluate, train_one_epoch
from wbclf.training.optim import param_groups
from wbclf.training.plans.base import TrainingPlan

FEATURE_VERSION = 1
# Views per train image stored when augment != none: view 0 is the un-augmented image, the
# others are drawn from the augment preset. 4 keeps the one-off backbone cost at about 4x one
# epoch while giving the head varied inputs; see docs/TRANSFER.md.
AUGMENTED_VIEWS = 4
_VIEW_SEED = 5  # augmented views do not depend on the run's seed: trials share them
_FP16_MAX = 65504.0

# Process-wide count of backbone forward passes made to build features (tests read it).
BACKBONE_STATS: dict[str, int] = {"batches": 0, "images": 0}


def supports_feature_cache(model: nn.Module) -> bool:
    """Whether the model's logits are one classifier module applied to its pre-logits."""
    from wbclf.models import classifier_names

    try:
        return len(classifier_names(model)) == 1 and hasattr(model, "forward_head")
    except ValueError:
        return False


def weights_fingerprint(model: nn.Module, exclude: str = "") -> str:
    """SHA-256 of every tensor in the state dict outside module ``exclude`` (the head)."""
    h = hashlib.sha256()
    prefix = exclude + "." if exclude else None
    for name, tensor in getattr(model, "_orig_mod", model).state_dict().items():
        if prefix and name.startswith(prefix):
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


# --------------------------------------------------------------------------- the stores


@dataclass
class FeatureStore:
    """A complete store on disk: ``open()`` gives a (count, dim) float16 memmap."""

    data_path: Path
    count: int
    dim: int
    built: bool  # built by this process (False: reused)
    build_s: float = 0.0

    def open(self) -> np.ndarray:
        return np.memmap(self.data_path, dtype=np.float16, mode="r",
                         shape=(self.count, self.dim))


def _from_meta(meta: dict[str, Any], data_path: Path, count: int) -> FeatureStore | None:
    """The store ``meta`` describes if its data file agrees with it, else None."""
    dim = meta.get("dim")
    if meta.get("count") != count or not isinstance(dim, int) or not data_path.is_file() \
            or data_path.stat().st_size != count * dim * 2:
        return None
    return FeatureStore(data_path, count, dim, built=False, build_s=meta.get("build_s", 0.0))


Batches = Iterator[torch.Tensor]  # uint8 NCHW image batches, in row order


def build_or_load_store(folder: Path, key: str, count: int, batches: Callable[[], Batches],
                        encode: Callable[[torch.Tensor], np.ndarray], meta: dict[str, Any], *,
                        progress: bool = False, desc: str = "caching features"
                        ) -> FeatureStore:
    """Return the store ``key`` of ``count`` rows, encoding ``batches()`` first if needed."""
    data_path = folder / f"{key}.f16"

    def build() -> dict[str, Any]:
        start = time.perf_counter()
        dim = _write_store(data_path, count, batches(), encode, progress, desc)
        return {**meta, "version": FEATURE_VERSION, "count": count, "dim": dim,
                "dtype": "float16", "build_s": round(time.perf_counter() - start, 3)}

    store, built = build_once(folder / f"{key}.json",
                              lambda m: _from_meta(m, data_path, count), build)
    store.built = built
    return store


def _write_store(data_path: Path, count: int, batches: Batches,
                 encode: Callable[[torch.Tensor], np.ndarray], progress: bool, desc: str) -> int:
    from tqdm.auto import tqdm

    out: np.ndarray | None = None
    row = 0
    with replacing(data_path) as tmp_path, \
            tqdm(total=count, desc=desc, unit="img", disable=not progress, leave=False,
                 dynamic_ncols=True) as bar:
        for images in batches:
            feats = encode(images)
            if out is None:  # the width is known after the first batch
                out = np.memmap(tmp_path, dtype=np.float16, mode="w+",
                                shape=(count, feats.shape[1]))
            out[row:row + len(feats)] = feats
            row += len(feats)
            bar.update(len(feats))
        if out is None or row != count:
            raise RuntimeError(f"feature cache: encoded {row} images, expected {count}")
        dim = out.shape[1]
        out.flush()
        del out
    return dim


# --------------------------------------------------------------------------- the backbone


class BackboneEncoder:
    """Pooled pre-logit features of a frozen model for uint8 image batches, counted.

    The first batch also checks that the head applied to these features gives the model's own
    logits (no extra backbone pass: both come from the same feature map), so a model whose
    classifier is not fed by ``pre_logits`` fails loudly instead of training on the wrong input.
    """

    def __init__(self, model: nn.Module, head: nn.Module, data_config: dict[str, Any], hw
                 ) -> None:
        self.model = getattr(model, "_orig_mod", model)
        self.head = head
        self.hw = hw
        self.normalizer = DeviceNormalizer(data_config["mean"], data_config["std"],
                                           channels_last=hw.channels_last).to(hw.device)
        self.images = 0
        self._checked = False

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with eval_mode(self.model):
            x = self.normalizer(images.to(self.hw.device, non_blocking=True))
            with self.hw.autocast():
                fmap = self.model.forward_features(x)
                feats = self.model.forward_head(fmap, pre_logits=True)
                if not self._checked:
                    self._check(fmap, feats)
        BACKBONE_STATS["batches"] += 1
        BACKBONE_STATS["images"] += len(images)
        self.images += len(images)
        feats = feats.float().flatten(1)
        if feats.abs().max() > _FP16_MAX:
            raise RunError("feature cache: backbone features exceed the float16 range; "
                               "train with cache_images=false")
        return feats.cpu().numpy().astype(np.float16)

    def _check(self, fmap: torch.Tensor, feats: torch.Tensor) -> None:
        own = self.model.forward_head(fmap).float()
        ours = self.head(feats).float()
        scale = float(own.abs().max()) + 1e-6
        if own.shape != ours.shape or float((own - ours).abs().max()) > 1e-3 + 2e-2 * scale:
            raise RunError(f"feature cache: {type(self.model).__name__}'s classifier does "
                               "not take forward_head(pre_logits=True) as input; train it with "
                               "cache_images=false")
        self._checked = True


# --------------------------------------------------------------------------- the plan


class _AsFloat(nn.Module):
    """Stands in for the image normalizer: stored float16 features -> float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


class FeaturePlan(TrainingPlan):
    """Frozen backbone run once into the feature cache; epochs train only the head."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from wbclf.models import classifier_names

        cfg, data = self.cfg, self.data
        if data.cache is None:
            raise UserError("the feature cache needs the image cache (cache_images=true)")
        inner = getattr(self.model, "_orig_mod", self.model)
        (self.head_name,) = classifier_names(inner)
        self.head = inner.get_submodule(self.head_name)
        self.views = 1 if self.augment.compose is None else AUGMENTED_VIEWS
        self.encoder = BackboneEncoder(inner, self.head, self.data_config, self.hw)
        self._as_float = _AsFloat()
        # the backbone's inference batch: what evaluation of the pixel path uses
        self.encode_batch = max(64, cfg.batch_size * 2)
        self.eval_batch = 1024  # head-only evaluation on stored features
        start = time.perf_counter()
        base, views = self._build_stores(inner)
        # The backbone is frozen (see TrainingPlan.frozen_feature_maps): its feature maps of
        # the sample images are kept beside the feature stores, for every run that shares it.
        self.frozen_feature_maps = FeatureMaps(folder=base.data_path.parent.parent
                                               / "feature_maps" / _key(self._backbone_key))
        self.build_s = time.perf_counter() - start
        self.features_s = self.build_s
        self.reused = not base.built and (views is None or not views.built)
        # What each backbone pass cost when its store was built (now or by an earlier run),
        # and which store it is: a report divides a store's cost among the runs sharing it.
        # The un-augmented store is shared by every run on the same images; the augmented
        # views also depend on the train split, hence on the seed.
        self.store_costs = {"store": (base.data_path.stem, base.build_s)}
        if views is not None:
            self.store_costs["views_store"] = (views.data_path.stem, views.build_s)
        self._load(base, views)
        what = "reused" if self.reused else \
            f"computed ({self.encoder.images} backbone passes, {self.build_s:.1f}s)"
        print(f"frozen {cfg.model}: features {what}; {self.views} view(s) per train image",
              flush=True)

    @property
    def backbone_images(self) -> int:
        """Images this plan sent through the backbone (0 when the features were reused)."""
        return self.encoder.images

    # ------------------------------------------------------------------ building

    def _build_stores(self, inner: nn.Module) -> tuple[FeatureStore, FeatureStore | None]:
        cfg, data, cache = self.cfg, self.data, self.data.cache
        folder = cache.data_path.parent.parent / "features"
        parts = {
            "version": FEATURE_VERSION,
            "model": cfg.model,
            "weights": {"kind": self.weight_source.get("kind", ""),
                        "detail": self.weight_source.get("detail", ""),
                        "sha256": weights_fingerprint(inner, exclude=self.head_name)},
            "images": cache.data_path.stem,  # the image cache key: files, mtimes, image size
            "image_size": cache.size,
            "data_config": {k: self.data_config.get(k) for k in ("mean", "std",
                                                                 "interpolation")},
            "precision": str(self.hw.autocast_dtype),
        }
        # what a feature map depends on: not which images are cached (a map is per image)
        self._backbone_key = {k: v for k, v in parts.items() if k not in ("images", "image_size")}
        self._backbone_key["device"] = self.hw.device.type
        import timm

        # another timm or torch may lay a backbone's feature map out differently
        self._backbone_key["versions"] = [timm.__version__, torch.__version__]
        base = build_or_load_store(folder, _key(parts), cache.count, self._cache_batches,
                                   self.encoder, {"key": parts}, progress=self.progress)
        if self.views == 1:
            return base, None
        train_rows = data.rows["train"]
        # the pipeline itself, not its name: an edited file or preset gives new views
        aug_parts = {**parts, "augment": self.augment.fingerprint, "views": self.views,
                     "train_rows": hashlib.sha256(train_rows.tobytes()).hexdigest()[:16]}
        print(f"frozen + augment={self.augment.name}: {self.views - 1} augmented views per train "
              "image are cached (fresh augmentation every epoch: cache_images=false)",
              flush=True)
        views = build_or_load_store(folder, _key(aug_parts), (self.views - 1) * len(train_rows),
                                    self._augmented_batches, self.encoder, {"key": aug_parts},
                                    progress=self.progress, desc="caching augmented views")
        return base, views

    def _cache_batches(self) -> Batches:
        """Every row of the image cache, un-augmented, in contiguous slices."""
        images = self.data.cache.open()
        for start in range(0, len(images), self.encode_batch):
            chunk = np.array(images[start:start + self.encode_batch])
            yield torch.from_numpy(chunk).permute(0, 3, 1, 2)

    def _augmented_batches(self) -> Batches:
        """Views 1..K-1 of every train image, view-major, each from its own fixed seed."""
        cfg = self.cfg
        n = len(self.data.splits["train"])
        seeds = np.random.default_rng(_VIEW_SEED).integers(0, 2**31 - 1, size=(self.views - 1, n))
        order = [(i, int(seeds[v, i])) for v in range(self.views - 1) for i in range(n)]
        dataset = self.data.dataset("train", self.augment.compose)
        workers = resolve_workers(cfg.num_workers, augment=self.augment.name)
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.encode_batch, sampler=order,
                                             num_workers=workers, collate_fn=collate_skip_none,
                                             pin_memory=self.hw.pin_memory)
        for images, _ in loader:
            yield images

    def _load(self, base: FeatureStore, views: FeatureStore | None) -> None:
        """Stored features -> tensors: (views, n_train, dim) for train, (n, dim) for eval."""
        stored = base.open()
        rows = self.data.rows
        train = [np.asarray(stored[rows["train"]])]
        if views is not None:
            extra = views.open().reshape(self.views - 1, len(rows["train"]), views.dim)
            train += list(np.asarray(extra))
        # Small enough for the device in any realistic study (70k images x 4 views x 1280
        # float16 = 0.7 GB); larger stores stay in host memory and move per batch.
        row_bytes = stored.itemsize * stored.shape[1]
        nbytes = sum(t.nbytes for t in train) + row_bytes * (len(rows["val"]) + len(rows["test"]))
        where = self.hw.device if nbytes < 4 * 2**30 else torch.device("cpu")
        self._train = torch.from_numpy(np.stack(train)).to(where)
        splits = ("train", "val", "test")
        self._labels = {s: torch.from_numpy(self.data.labels(s)) for s in splits}
        self._eval = {s: torch.from_numpy(np.asarray(stored[rows[s]])).to(where)
                      for s in ("val", "test")}

    # ------------------------------------------------------------------ the plan interface

    @property
    def param_groups(self) -> list[dict]:
        return param_groups(self.head.named_parameters(), self.cfg.lr, self.cfg.weight_decay,
                            name="head")

    @property
    def steps_per_epoch(self) -> int:
        n = self._train.shape[1]
        # the same batches as the image loader: the last partial batch dropped if not the only
        return n // self.cfg.batch_size if n > self.cfg.batch_size else 1

    def _train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = self._train.shape[1], self.cfg.batch_size
        # Seeded by (seed, epoch) only: a resumed run sees the same batches. The permutation
        # is the image loader's (EpochSampler), so with augment=none both paths match.
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = torch.from_numpy(rng.permutation(n))
        view = torch.from_numpy(rng.integers(0, self.views, size=n)) if self.views > 1 \
            else torch.zeros(n, dtype=torch.int64)
        labels = self._labels["train"]
        for step in range(self.steps_per_epoch):
            idx = order[step * bs:(step + 1) * bs]
            where = self._train.device
            yield self._train[view[idx].to(where), idx.to(where)], labels[idx]

    def train_epoch(self, epoch: int, *, optimizer, scheduler, criterion, normalizer,
                    scaler=None) -> dict[str, float]:
        return train_one_epoch(self.head, self._train_batches(epoch), optimizer=optimizer,
                               scheduler=scheduler, criterion=criterion,
                               normalizer=self._as_float, hw=self.hw, epoch=epoch,
                               grad_clip=self.cfg.grad_clip, scaler=scaler,
                               progress=self.progress, total=self.steps_per_epoch)

    def evaluate(self, split: str, *, criterion, normalizer
                 ) -> tuple[float, np.ndarray, np.ndarray]:
        feats, labels = self._eval[split], self._labels[split]
        batches = ((feats[i:i + self.eval_batch], labels[i:i + self.eval_batch])
                   for i in range(0, len(labels), self.eval_batch))
        return evaluate(self.head, batches, criterion=criterion, normalizer=self._as_float,
                        hw=self.hw)

    def extra_summary(self) -> dict[str, Any]:
        out = {"features/reused": self.reused, "features/backbone_images": self.backbone_images,
               "features/build_s": self.build_s, "features/views": self.views}
        for name, (key, build_s) in self.store_costs.items():
            out[f"features/{name}"] = key
            out[f"features/{name}_build_s"] = build_s
        return out
