"""The test figure with and without test images that duplicate a training image.

Every run knows which test images near-duplicate a train or val image
(``DataBundle.leaked_test``). The test split is evaluated once; the leak-free figure is the
same predictions without those images. ``test_dedup`` decides which one is *the* test
figure (``test/*``); the summary records both views when there are leaks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wbclf import metrics as M
from wbclf.errors import UserError
from wbclf.tracking.records import Evaluation


def subset(ev: Evaluation, keep: np.ndarray) -> Evaluation:
    """``ev`` restricted to the images where ``keep`` is true, its metrics recomputed."""
    labels, probs = ev.labels[keep], ev.probs[keep]
    metrics = M.compute_metrics(labels, probs, ev.class_names, threshold=ev.threshold)
    # the plain cross-entropy of the kept images (per-image losses are not kept)
    picked = probs[np.arange(len(labels)), labels]
    metrics["loss"] = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
    return Evaluation(split=ev.split, labels=labels, probs=probs, loss=metrics["loss"],
                      metrics=metrics, class_names=ev.class_names, threshold=ev.threshold,
                      paths=[p for p, k in zip(ev.paths, keep) if k])


def leak_views(test: Evaluation, leaked: np.ndarray, dedup: bool
               ) -> tuple[Evaluation, dict[str, Any]]:
    """The test evaluation to report, and the summary figures about leaks.

    Returns ``data/leaked_test_images`` always; with leaks, ``test_with_leaks/{acc,
    macro_f1}`` and ``test_leak_free/{acc,macro_f1}`` (the latter when any image is left).
    """
    figures: dict[str, Any] = {"data/leaked_test_images": int(leaked.sum()),
                               "data/test_dedup": dedup}
    if not leaked.any():
        return test, figures
    clean = ~leaked
    if dedup and not clean.any():
        raise UserError(f"every one of the {len(leaked)} test images duplicates a train or "
                        "val image; test_dedup=true leaves nothing to evaluate")
    keys = ("acc", "macro_f1")
    figures.update({f"test_with_leaks/{k}": test.metrics[k] for k in keys})
    if clean.any():
        leak_free = subset(test, clean)
        figures.update({f"test_leak_free/{k}": leak_free.metrics[k] for k in keys})
        if dedup:
            return leak_free, figures
    return test, figures
