"""train_size: stratified, nested training subsets; val and test never change."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from wbclf.config import ConfigError, build_config
from wbclf.data.datasets import prepare_data


def _splits(dataset, tmp_path, **kw):
    cfg = build_config({"dataset": str(dataset), "image_size": 32, "cache_images": False,
                        "out_dir": str(tmp_path), **kw})
    data = prepare_data(cfg)
    return {name: [s.path for s in samples] for name, samples in data.splits.items()}, data


def test_subsets_are_nested_stratified_and_leave_val_and_test_alone(toy_lesions, tmp_path):
    full, data = _splits(toy_lesions, tmp_path)
    per_class = Counter(s.label for s in data.splits["train"])
    previous: set[str] = set()
    for size in (0.1, 0.25, 0.5, 1.0):
        splits, sub = _splits(toy_lesions, tmp_path, train_size=size)
        train = set(splits["train"])
        assert previous <= train and len(train) > len(previous)  # nested, growing
        counts = Counter(s.label for s in sub.splits["train"])
        for label, n in per_class.items():
            assert counts[label] == max(1, round(size * n))  # stratified
        assert splits["val"] == full["val"] and splits["test"] == full["test"]
        previous = train
    assert previous == set(full["train"])
    ten, _ = _splits(toy_lesions, tmp_path, train_size=10)
    assert set(ten["train"]) <= set(_splits(toy_lesions, tmp_path, train_size=20)[0]["train"])
    assert len(ten["train"]) == 10 * len(per_class)
    other_seed, _ = _splits(toy_lesions, tmp_path, train_size=10, seed=1)
    assert set(other_seed["train"]) != set(ten["train"])


@pytest.mark.parametrize("bad", ["0", "-0.5", "2.5"])
def test_bad_train_size_is_one_line(bad):
    with pytest.raises(ConfigError, match="train_size") as err:
        build_config({"train_size": bad})
    assert "\n" not in str(err.value)


def test_report_plots_the_curves_and_says_where_they_cross(tmp_path):
    from tests.test_report import _write_run, parse_html
    from wbclf.reporting.main import write_local_report

    root = tmp_path / "runs"
    accs = {"frozen": (0.80, 0.85, 0.87), "scratch": (0.60, 0.80, 0.90)}
    for strategy, values in accs.items():
        for size, images, acc in zip((0.1, 0.5, 1.0), (100, 500, 1000), values):
            for seed in (0, 1):
                name = f"{strategy}-{size}-{seed}"
                config = {"dataset": "melanoma", "model": "tf_efficientnet_lite0",
                          "strategy": strategy, "train_size": size, "seed": seed,
                          "run_name": name}
                summary = {"status": "finished", "val/acc": acc + seed / 100,
                           "test/acc": acc, "data/train_images": images, "best_epoch": 1}
                _write_run(root / name, config, summary, [{"epoch": 1, "val/acc": acc}])
    out = tmp_path / "report.html"
    write_local_report(root, out)
    page = parse_html(out)
    assert any(h.startswith("Data efficiency") for h in page.headings)
    assert any("cross between 500 and 1000 training images" in f
               and "frozen leads below, scratch above" in f for f in page.findings)
    assert any(p.name.endswith("efficiency.png") for p in (tmp_path / "report_files").iterdir())
    assert "(log x; mean and ± 1 std over its runs at each size)." in out.read_text()
    # a second learning rate: each point now averages over it, and the caption says so
    for name in [p.name for p in root.iterdir()]:
        config = yaml.safe_load((root / name / "config.yaml").read_text())
        summary = json.loads((root / name / "summary.json").read_text())
        _write_run(root / f"{name}-lr", {**config, "lr": 1e-1, "run_name": f"{name}-lr"},
                   {**summary, "val/acc": 0.5}, [{"epoch": 1, "val/acc": 0.5}])
    write_local_report(root, out)
    assert "std over its runs at each size, whatever their lr)." in out.read_text()


@pytest.mark.slow
def test_real_runs_at_two_sizes_give_a_report_with_the_curve(toy_lesions, tmp_path):
    """The data_efficiency study in miniature: 2 strategies x 2 sizes, trained for real."""
    from tests.test_report import parse_html
    from wbclf.reporting.main import write_local_report
    from wbclf.training.run import train_run

    root = tmp_path / "runs"
    for strategy in ("scratch", "frozen"):
        images = {}
        for size in (0.25, 1.0):
            cfg = build_config({"dataset": str(toy_lesions), "model": "tf_efficientnet_lite0",
                                "strategy": strategy, "train_size": size, "image_size": 32,
                                "epochs": 1, "batch_size": 16, "log_samples": 0,
                                "out_dir": str(root), "run_name": f"{strategy}-{size}",
                                "wandb_mode": "disabled", "num_workers": "0"})
            images[size] = train_run(cfg)["data/train_images"]
        assert images[0.25] < images[1.0]
    out = tmp_path / "report.html"
    write_local_report(root, out)
    page = parse_html(out)
    assert any(h.startswith("Data efficiency") for h in page.headings)
    assert any("frozen" in f and "scratch" in f and "training images" in f
               and ("cross" in f or "level" in f) for f in page.findings), page.findings
    assert any(p.name.endswith("efficiency.png") for p in (tmp_path / "report_files").iterdir())


def test_crossings_skip_ties():
    from wbclf.reporting.curves import Point, crossings

    def curve(values):
        return [Point(s, n, v, 0.0, 1) for s, n, v in zip((0.1, 0.5, 1.0), (10, 50, 100),
                                                           values)]

    level = crossings({"frozen": curve((0.5, 0.6, 0.7)), "scratch": curve((0.5, 0.6, 0.7))},
                      "val/acc")
    assert level == ["frozen and scratch are level on val/acc at every size (10 to 100 "
                     "training images)."]
    tie_first = crossings({"frozen": curve((0.5, 0.8, 0.7)),
                           "scratch": curve((0.5, 0.6, 0.9))}, "val/acc")
    # any gap is a lead: the sentence says the crossing is untested
    assert tie_first == ["The frozen and scratch curves cross between 50 and 100 training "
                         "images: frozen leads below, scratch above (mean gaps at each size, "
                         "any margin, untested)."]
