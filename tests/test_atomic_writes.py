"""Files a user or a resume reads are written to a temporary name and renamed into place.

Each writer below is run for real; ``wbclf.atomic``'s rename is watched (not replaced), so a
writer that opens its target directly makes its test fail.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from wbclf import atomic
from wbclf.sweeps.command import write_args_json_file, write_param_file
from wbclf.sweeps.main import check_out_dir
from wbclf.sweeps.schema import load_sweep


@pytest.fixture
def renamed(monkeypatch) -> list[Path]:
    """Targets that reached their place through ``wbclf.atomic``'s rename."""
    targets: list[Path] = []
    real = os.replace

    def watched(src, dst):
        assert Path(src).name.startswith(f".{Path(dst).name}.tmp-")
        targets.append(Path(dst))
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", watched)
    return targets


def test_sweep_json_is_renamed_into_place(tmp_path, renamed):
    spec = load_sweep(REPO / "sweeps" / "scratch_bn.yaml")
    check_out_dir(spec, tmp_path, f"sqlite:///{tmp_path / 'study.db'}")
    assert renamed == [tmp_path / "sweep.json"]
    assert json.loads((tmp_path / "sweep.json").read_text())["study"]


def test_trial_parameter_files_are_renamed_into_place(tmp_path, renamed):
    params = {"lr": 0.01, "batch_norm": True}
    write_args_json_file(tmp_path / "params" / "trial-0000.json", params)
    write_param_file(tmp_path / "params" / "trial-0000.yaml", params)
    assert renamed == [tmp_path / "params" / "trial-0000.json",
                       tmp_path / "params" / "trial-0000.yaml"]
    assert json.loads((tmp_path / "params" / "trial-0000.json").read_text())["lr"] == 0.01
    written = yaml.safe_load((tmp_path / "params" / "trial-0000.yaml").read_text())
    assert written["lr"]["value"] == 0.01 and written["batch_norm"]["value"] is True
    assert sorted(p.name for p in (tmp_path / "params").iterdir()) == [
        "trial-0000.json", "trial-0000.yaml"]  # no temporary file left behind


def test_predictions_csv_is_renamed_into_place(tmp_path, renamed):
    import numpy as np

    from wbclf.inference.predict import Prediction, PredictionResult, write_predictions_csv

    result = PredictionResult(class_names=["a", "b"], predictions=[
        Prediction("x.jpg", np.array([0.3, 0.7]), 1)], unreadable=[])
    out = write_predictions_csv(tmp_path / "p.csv", result, top_k=1)
    assert renamed == [tmp_path / "p.csv"] and Path(out) == tmp_path / "p.csv"
    assert (tmp_path / "p.csv").read_text().splitlines()[1].startswith("x.jpg,b,")


def test_checkpoints_are_serialized_once_and_renamed_into_place_in_order(tmp_path, renamed):
    import torch

    from wbclf.checkpoint import load_checkpoint, save_atomic
    from wbclf.errors import RunError

    state = {"model": {"w": torch.arange(6.0)}, "epoch": 3}
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    save_atomic(state, best, last)
    assert renamed == [best, last]  # best first: a kill between the two keeps a best.pt
    for path in (best, last):
        assert torch.equal(load_checkpoint(path)["model"]["w"], state["model"]["w"])
    assert best.read_bytes() == last.read_bytes()
    assert best.stat().st_ino == last.stat().st_ino  # written once, linked
    save_atomic({"epoch": 5}, last)  # an epoch that did not improve: best.pt stays
    assert load_checkpoint(best)["epoch"] == 3 and load_checkpoint(last)["epoch"] == 5
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(RunError, match="could not write .*no earlier copy exists"):
        save_atomic({"epoch": 4}, best, blocked / "last.pt")
    assert load_checkpoint(best)["epoch"] == 4


@pytest.mark.parametrize("code", ["EXDEV", "EPERM", "ENOSYS", "EACCES"])
def test_checkpoints_are_copied_where_hard_links_are_refused(tmp_path, monkeypatch, code):
    import errno

    import torch

    from wbclf import checkpoint
    from wbclf.checkpoint import load_checkpoint, save_atomic

    def refuse(src, dst):
        raise OSError(getattr(errno, code), "no hard links here")

    monkeypatch.setattr(checkpoint.os, "link", refuse)
    best, last = tmp_path / "best.pt", tmp_path / "runs" / "last.pt"
    save_atomic({"w": torch.ones(3)}, best, last)
    assert best.stat().st_ino != last.stat().st_ino
    assert torch.equal(load_checkpoint(last)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["best.pt", "last.pt", "runs"]
