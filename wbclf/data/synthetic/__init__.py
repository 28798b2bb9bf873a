"""Built-in synthetic datasets ``toy-lesions`` and ``toy-leaves``.

Both are written as real JPEG files in the exact folder layouts of the Kaggle datasets they
stand in for, so the data layer meets every quirk of the real data offline:

* ``toy-lesions`` (Melanoma Cancer Dataset): ``train/{Benign,Malignant}``, ``test/{...}``,
  no validation folder; the task follows the ABCD rule with overlapping classes.
* ``toy-leaves`` (New Plant Diseases Dataset): the nested ``...(Augmented)`` tree, its
  all-lowercase duplicate (hard links), ``train``/``valid``, class names with commas and
  parentheses, augmentation suffixes in file names and the unlabeled ``test/test`` folder.

Each source image is drawn with OpenCV from its own numpy Generator keyed by
(seed, dataset, split, class, index), so the bytes do not depend on the order of generation.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from pathlib import Path

import numpy as np

from wbclf.data.synthetic.leaves import (AUGMENTATIONS, DEFAULT_LEAK, LEAF_CLASSES, PLANT_TOP,
                                         LeafClass, leaked_copies, plan_leaves, render_leaf)
from wbclf.data.synthetic.lesions import plan_lesions, render_lesion
from wbclf.data.synthetic.plumbing import (MARKER, check_existing, mirror_tree, publish,
                                           remove_stale_partials, run_jobs)

__all__ = ["AUGMENTATIONS", "DEFAULT_LEAK", "DEFAULTS", "LEAF_CLASSES", "MARKER", "PLANT_TOP",
           "TOY_DATASETS", "LeafClass", "synthesize"]

TOY_DATASETS: tuple[str, ...] = ("toy-lesions", "toy-leaves")
DEFAULTS: dict[str, dict] = {
    # train ~ 1,000 images (550 benign / 450 malignant), test 166 + 166
    "toy-lesions": {"n": 500, "size": 128},
    # train ~ 2,050 + valid ~ 410 files over 8 classes (>= 2,400 for the benchmark)
    "toy-leaves": {"n": 256, "size": 128},
}

FORMAT_VERSION = 1  # bump when the drawings change, so cached copies can be told apart


def synthesize(name: str, out: str | Path, *, n: int | None = None, size: int | None = None,
               seed: int = 0, progress: bool = False, leak: float | None = None) -> Path:
    """Generate dataset `name` under `out` (which becomes the dataset root) and return the root.

    The files are written into a temporary sibling folder that is renamed to `out` at the
    end, so an interrupted run never leaves half a dataset at `out`. A complete dataset
    already at `out` (it holds ``.wbclf-synth.json``) is returned as is.

    Args:
        name: One of `TOY_DATASETS`.
        out: Dataset root to create.
        n: Images per class in train (roughly); other splits derive from it.
        size: Side of the square images in pixels.
        seed: Same seed and arguments give byte-identical files.
        progress: Show a progress bar.
        leak: toy-leaves: share of each class's valid files that are augmented copies of
            train leaves (default ``DEFAULT_LEAK``, like the real set; 0 = none). The
            marker lists every copy under ``leaks`` as (valid file, train original).

    Raises:
        ValueError: Unknown name or a bad argument.
        FileExistsError: `out` holds something other than this dataset.
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; allowed: {', '.join(TOY_DATASETS)}")
    n_eff = DEFAULTS[name]["n"] if n is None else int(n)
    size_eff = DEFAULTS[name]["size"] if size is None else int(size)
    if n_eff < 1 or size_eff < 32 or seed < 0:
        raise ValueError(f"toy dataset needs n >= 1, size >= 32 and seed >= 0; "
                         f"got n={n_eff}, size={size_eff}, seed={seed}")
    if leak is not None and not 0.0 <= leak < 1.0:
        raise ValueError(f"toy dataset leak must be in [0, 1); got leak={leak}")
    out = Path(out).expanduser().absolute()
    # leak only matters for toy-leaves; left as None it accepts whatever was generated
    if check_existing(out, name, n, size, seed,
                      leak if name == "toy-leaves" else None):
        return out

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out)
    # host and pid in the name let a later run recognise (and delete) a killed run's leftovers
    tag = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.partial.{tag}"
    try:
        tmp.mkdir()
        if name == "toy-lesions":
            jobs = plan_lesions(n_eff, seed)
            run_jobs(tmp, size_eff, jobs, render_lesion, {"": _identity}, progress=progress,
                     desc=name)
        else:
            jobs = plan_leaves(n_eff, seed, DEFAULT_LEAK if leak is None else leak)
            run_jobs(tmp, size_eff, jobs, render_leaf, AUGMENTATIONS, progress=progress,
                     desc=name)
        if name == "toy-leaves":
            mirror_tree(tmp / PLANT_TOP, tmp / PLANT_TOP.lower())
        marker = {"name": name, "n": n_eff, "size": size_eff, "seed": seed,
                  "version": FORMAT_VERSION, "files": sum(len(j.files) for j in jobs)}
        if name == "toy-leaves":
            marker["leak"] = DEFAULT_LEAK if leak is None else leak
            marker["leaks"] = [list(pair) for pair in leaked_copies(jobs)]
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _identity(image: np.ndarray) -> np.ndarray:
    return image
