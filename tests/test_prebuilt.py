"""Pretrained models built once per process: a copy with the random draws replayed is the
build it replaces (the same tensors, the same head init, the same draws after it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from wbclf.models import create_backbone, prebuilt

LITE0 = "tf_efficientnet_lite0"


def _build(seed: int, layout: torch.memory_format = torch.channels_last
           ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A run's build: seeded, the model with its new head in the layout the run converts it
    to (wbclf.training.plans.factory), then the generator's next draws."""
    torch.manual_seed(seed)
    model, source = create_backbone(LITE0, 3, pretrained=True, head_hidden=8)
    assert source.kind == "packaged"
    model = model.to(memory_format=layout)
    return dict(model.state_dict()), torch.rand(16)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """The same values in the same memory layout (strides: the kernels a layout picks)."""
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) and a[k].stride() == b[k].stride() for k in a)


def test_a_copy_is_the_build_it_replaces():
    first, first_draws = _build(0)  # a single build keeps nothing
    second, second_draws = _build(0)  # built again: kept from here on
    assert prebuilt.copies_made() == 0
    copied, copied_draws = _build(0)
    assert prebuilt.copies_made() == 1
    assert _same(copied, first) and _same(copied, second)
    assert torch.equal(copied_draws, first_draws) and torch.equal(second_draws, first_draws)
    other, other_draws = _build(1)  # another start state: built, not copied
    assert prebuilt.copies_made() == 1
    assert not torch.equal(other_draws, first_draws)
    assert not _same(other, first)  # the head is drawn from the seed
    flat, flat_draws = _build(0, torch.contiguous_format)  # hardware without channels_last
    assert prebuilt.copies_made() == 2
    prebuilt.forget()
    fresh_flat, fresh_draws = _build(0, torch.contiguous_format)
    assert _same(flat, fresh_flat) and torch.equal(flat_draws, fresh_draws)


def test_a_copy_is_the_callers_own():
    _build(0)
    _build(0)
    torch.manual_seed(0)
    model, _ = create_backbone(LITE0, 3, pretrained=True)
    assert prebuilt.copies_made() == 1
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.zero_()  # a caller changing its model (training) changes no later copy
    again, _ = _build(0)
    assert prebuilt.copies_made() == 2
    assert any(v.abs().sum() > 0 for k, v in again.items() if k.startswith("conv_stem"))


FORKED = """
import os, sys, torch
from wbclf.sweeps.warm import SEEDS_ENV, preload
seeds = os.environ.pop(SEEDS_ENV)
preload()  # the imports (some libraries start their threads here)
before = len(os.listdir("/proc/self/task"))
os.environ[SEEDS_ENV] = seeds
preload()  # what a warm sweep worker does with the sweep's models and seeds: builds them
print("threads", len(os.listdir("/proc/self/task")) - before,
      torch.get_num_threads() == int(sys.argv[1]), flush=True)
from wbclf.models import create_backbone, prebuilt
from wbclf.training.plans.features import weights_fingerprint

def build():
    torch.manual_seed(7)
    model, _ = create_backbone("tf_efficientnet_lite0", 3, pretrained=True)
    return weights_fingerprint(model) + str(torch.rand(4).tolist()), model

read, write = os.pipe()
pid = os.fork()
if pid == 0:  # a trial: takes the worker's model as it is, no copy
    print_, model = build()
    os.write(write, f"{print_} {prebuilt.copies_made()} {len(prebuilt._KEPT)}".encode())
    os._exit(0)
os.waitpid(pid, 0)
child = os.read(read, 65536).decode()
kept_in_worker = len(prebuilt._KEPT)
prebuilt.forget()
fresh, _ = build()  # the worker, without its kept build: the build a cold trial makes
print("child", child)
print("fresh", fresh, 0, kept_in_worker - 1)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork + /proc")
def test_a_warm_worker_builds_once_and_its_trials_take_the_build():
    """The worker builds the sweep's models for its seeds on one thread (no OpenMP pool
    before a fork) and restores the thread count; a forked trial that seeds alike gets the
    worker's model itself: the same weights and draws as a cold trial's build."""
    from wbclf.sweeps.warm import MODELS_ENV, SEEDS_ENV

    threads = str(torch.get_num_threads())
    done = subprocess.run([sys.executable, "-c", FORKED, threads], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                                    MODELS_ENV: f"{LITE0},resnet18",
                                                    SEEDS_ENV: "3,7"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["threads"] == "0 True"  # no thread started; the count as it was
    child, fresh = lines["child"].rsplit(" ", 2), lines["fresh"].rsplit(" ", 2)
    assert child[0] == fresh[0]  # same weights, head and draws after
    assert child[1] == "1"  # the trial's build was the worker's
    assert child[2] == fresh[2] == "1"  # handed over, not kept twice; seed 3's still kept


def test_the_worker_keeps_every_build_it_was_asked_for():
    """One model for three seeds (more than a study keeps unasked): each seed's run copies."""
    def build(name: str) -> tuple[torch.nn.Module, str]:
        return torch.nn.Linear(4, 2), "random"

    threads = torch.get_num_threads()
    assert prebuilt.prebuild(["tiny"], [1, 2, 3], build) == ["tiny"]
    assert torch.get_num_threads() == threads
    for seed in (3, 1, 2):
        torch.manual_seed(seed)
        copy, _ = prebuilt.built_once("tiny", lambda: build("tiny"))
        after_copy = torch.rand(3)
        torch.manual_seed(seed)
        fresh, _ = build("tiny")
        assert torch.equal(copy.weight, fresh.weight) and torch.equal(after_copy, torch.rand(3))
    assert prebuilt.copies_made() == 3
