"""Pretrained models built once per process and copied, with their random draws replayed.

Building a pretrained timm model initializes weights it then throws away: timm's hub attempt
initializes a model before its download fails (offline), and the packaged-weights path
initializes another before loading the file. Those draws still move torch's random
generator, and the new head is initialized from where they leave it. A copy of an earlier
build is therefore the same run only when the generator also ends where a build would leave
it: each build is remembered with the generator state it started from and the state it left.
A later build of the same model from the same state (every trial of a study seeds alike)
gets a copy of the model and the remembered end state: the same tensors and the same head
init, in ~0.03 s instead of ~0.2 s.

Only the CPU generator moves (building happens on the CPU; the Python and NumPy generators
are not drawn from), and only it is replayed. A model is kept from its second build in a
process on (a single ``wbclf train`` never pays for a copy), or from the first when a warm
sweep worker asks for it with :func:`prebuild`.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

MAX_KEPT = 2  # builds kept at once unasked: a study compares a few; each is the model's size

# (name, digest of the generator state it started from) -> (pristine model, its weight
# source, the generator state it left, the pid that kept it); keyed by the start state too,
# so nothing assumes the weights do not depend on it
_KEPT: dict[tuple[str, str], tuple[nn.Module, Any, torch.Tensor, int]] = {}
_BUILDS: dict[tuple[str, str], int] = {}  # builds per key in this process
_COPIES = {"hits": 0}


def _digest(state: torch.Tensor) -> str:
    return hashlib.blake2b(state.numpy().tobytes(), digest_size=16).hexdigest()


def built_once(name: str, build: Callable[[], tuple[nn.Module, Any]], *, keep: bool = False
               ) -> tuple[nn.Module, Any]:
    """``build()``'s ``(model, source)`` for model ``name``, or a copy of an earlier one.

    ``build`` must be a pure function of ``name`` and torch's CPU generator state (it is for
    timm's constructors and fixed weight files). The caller owns the returned model.
    ``keep``: remember this build even if it is the first.
    """
    key = (name, _digest(torch.get_rng_state()))
    if key in _KEPT:
        model, source, end, keeper = _KEPT[key]
        torch.set_rng_state(end)
        _COPIES["hits"] += 1
        if keeper != os.getpid():
            # A fork of the process that kept it (a warm worker's trial): the model is this
            # process's own copy-on-write copy, so it is handed over as it is. Copying it here
            # would cost more than in the keeper (every page it reads is shared, ~0.14 s).
            del _KEPT[key]
            return model, source
        return copy.deepcopy(model), source
    model, source = build()
    _BUILDS[key] = _BUILDS.get(key, 0) + 1
    if keep or _BUILDS[key] > 1:
        while len(_KEPT) >= MAX_KEPT and not keep:  # what was asked for is never dropped
            _KEPT.pop(next(iter(_KEPT)))  # the oldest
        # kept in channels_last, the layout CPU and CUDA runs convert every model to
        # (wbclf.device): their conversion of a copy is then a walk, not a copy of every
        # weight (~0.06-0.09 s); a run on other hardware converts it back
        kept = copy.deepcopy(model).to(memory_format=torch.channels_last)
        _KEPT[key] = (kept, source, torch.get_rng_state(), os.getpid())
    return model, source


def copies_made() -> int:
    """How many builds this process answered with a copy (tests, benchmarks)."""
    return _COPIES["hits"]


def forget() -> None:
    """Drop every kept model and remembered state (tests)."""
    _KEPT.clear()
    _BUILDS.clear()
    _COPIES["hits"] = 0


def prebuild(names: Sequence[str], seeds: Sequence[int],
             build: Callable[[str], tuple[nn.Module, Any]]) -> list[str]:
    """Build each model once per seed, as a run seeded with it would, and keep them.

    For a warm sweep worker before it forks trials: a trial that seeds with one of ``seeds``
    and builds one of ``names`` gets a copy. The worker must not start OpenMP's thread pool
    (a fork does not copy it), so torch runs on one thread meanwhile; the generator state is
    restored afterwards. A model that cannot be built is skipped (its trial reports why).
    Returns the names built.
    """
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    built: list[str] = []
    torch.set_num_threads(1)
    try:
        for name in names:
            for seed in seeds:
                torch.default_generator.manual_seed(int(seed))  # CPU only: never CUDA here
                try:
                    built_once(name, lambda: build(name), keep=True)
                except Exception:  # noqa: BLE001 -- the trial builds it and reports the error
                    break
            else:
                built.append(name)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(state)
    return built
