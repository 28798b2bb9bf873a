"""What an augmentation pipeline does, as a picture: ``wbclf data preview`` and run start.

A grid: one row per image (class-balanced picks from the train split), the first column the
image as the cache stores it, then ``views`` augmented versions, each from its own seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wbclf.data.batch_augment import AlbumentationsAugment
from wbclf.data.datasets import DataBundle
from wbclf.data.splits import class_balanced_picks
from wbclf.data.transforms import AugmentPipeline
from wbclf.errors import UserError

_GAP = 2  # white pixels between tiles


class PreviewError(UserError):
    """A bad ``wbclf data preview`` argument."""


def pick_images(bundle: DataBundle, n: int, seed: int = 0) -> np.ndarray:
    """``n`` train images (HWC uint8), round-robin over the classes, seeded."""
    chosen = class_balanced_picks(bundle.labels("train"), n, np.random.default_rng([seed, 18]))
    dataset = bundle.dataset("train")
    images = [dataset.image(i) for i in chosen]
    return np.stack([image for image in images if image is not None])


def augmented_views(images: np.ndarray, pipeline: AugmentPipeline, views: int, seed: int = 0
                    ) -> np.ndarray:
    """(n, views, S, S, 3): each image through the pipeline with seeds drawn from ``seed``."""
    n = len(images)
    out = np.empty((n, views, *images.shape[1:]), dtype=np.uint8)
    if pipeline.compose is None:
        out[...] = images[:, None]
        return out
    seeds = np.random.default_rng([seed, 19]).integers(0, 2**31 - 1, size=(views, n))
    augment = AlbumentationsAugment(pipeline.compose)
    for v in range(views):
        augment(images, np.arange(n), seeds[v], out[:, v])
    return out


def preview_grid(images: np.ndarray, pipeline: AugmentPipeline, views: int, seed: int = 0
                 ) -> np.ndarray:
    """One uint8 RGB image: a row per image, the original then ``views`` augmented copies."""
    tiles = np.concatenate([images[:, None], augmented_views(images, pipeline, views, seed)],
                           axis=1)
    rows, cols, size = tiles.shape[0], tiles.shape[1], tiles.shape[2]
    step = size + _GAP
    grid = np.full((rows * step - _GAP, cols * step - _GAP, 3), 255, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            grid[r * step:r * step + size, c * step:c * step + size] = tiles[r, c]
    return grid


def preview_title(pipeline: AugmentPipeline, dataset: str, views: int) -> str:
    """The figure's title: the pipeline, its transforms and what the columns are."""
    names = _transform_names(pipeline.serialized.get("transform", {}))
    listed = ", ".join(names) if names else "no transforms"
    return (f"augment={pipeline.name} on {dataset}: original + {views} views "
            f"({listed})")


def save_preview(grid: np.ndarray, title: str, path: str | Path) -> Path:
    """Write the grid with its title as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wbclf.atomic import replacing

    height, width = grid.shape[:2]
    dpi = 100
    fig = plt.figure(figsize=(max(width / dpi, 4.0), height / dpi + 0.6), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + 60)))
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=8, wrap=True, y=0.995, va="top")
    path = Path(path)
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


def write_preview(dataset: str, data_dir: str, augment: str, *, n: int = 8, views: int = 6,
                  size: int = 128, seed: int = 0, out: str | Path = "preview.png") -> Path:
    """``wbclf data preview``: the grid for ``augment`` on ``dataset``'s train images."""
    from wbclf.config import build_config
    from wbclf.data.datasets import prepare_data
    from wbclf.data.transforms import resolve_augment

    if n < 1 or views < 1:
        raise PreviewError(f"--n {n} --views {views}: both must be at least 1")
    # the config parser checks the values as `wbclf train` would (augment, image_size, ...)
    cfg = build_config({"dataset": dataset, "data_dir": data_dir, "augment": augment,
                        "image_size": size, "seed": seed, "cache_images": False})
    pipeline = resolve_augment(cfg.augment, cfg.image_size)  # fails before reading images
    bundle = prepare_data(cfg)
    grid = preview_grid(pick_images(bundle, n, seed), pipeline, views, seed)
    return save_preview(grid, preview_title(pipeline, Path(dataset).name, views), out)


def _transform_names(node: dict) -> list[str]:
    names = []
    for child in node.get("transforms") or []:
        inner = _transform_names(child)
        name = child.get("__class_fullname__", "?")
        names.append(f"{name}({' | '.join(inner)})" if inner else name)
    return names
