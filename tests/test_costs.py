"""Where a run's time goes, and a report that counts the frozen strategy's backbone pass.

Real runs on toy data: two frozen EfficientNet-Lite0 heads that share one feature store (the
first builds it, the second reuses it) and a scratch CNN that cannot learn (lr=1e-9). The
report built from them must show a cost for the frozen runs that includes their share of the
backbone pass, and must flag the scratch run as chance level.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_report import parse_html
from wbclf.config import build_config
from wbclf.reporting.collect import RunRecord
from wbclf.reporting.costs import cost_note, run_costs
from wbclf.reporting.main import write_local_report
from wbclf.training.run import train_run

BASE = {"image_size": 64, "epochs": 2, "batch_size": 8, "limit_per_class": 12,
        "log_samples": 4, "augment": "none", "wandb_mode": "disabled", "num_workers": "0",
        "scheduler": "none"}
FROZEN = {"model": "tf_efficientnet_lite0", "strategy": "frozen", "lr": 1e-2, "epochs": 3,
          "limit_per_class": 0}  # all 160 images: enough for the head to beat chance


def _train(dataset: Path, out: Path, name: str, **kw) -> dict:
    cfg = build_config({**BASE, "dataset": str(dataset), "out_dir": str(out),
                        "run_name": name, **kw})
    train_run(cfg)
    return json.loads((out / name / "summary.json").read_text())


@pytest.fixture(scope="module")
def study(toy_lesions, tmp_path_factory, monkeypatch_module) -> Path:
    root = tmp_path_factory.mktemp("costs") / "runs"
    # a cache of this module's own: the first frozen run must build the features
    monkeypatch_module.setenv("WBCLF_CACHE_DIR", str(root.parent / "cache"))
    _train(toy_lesions, root, "frozen-a", **FROZEN)
    _train(toy_lesions, root, "frozen-b", **{**FROZEN, "lr": 3e-3})
    _train(toy_lesions, root, "scratch-dead", model="scratch", strategy="scratch", width=4,
           depth=2, lr=1e-9, epochs=1)
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _summary(root: Path, name: str) -> dict:
    return json.loads((root / name / "summary.json").read_text())


@pytest.mark.slow
def test_every_run_records_where_its_time_went(study):
    built, reused = _summary(study, "frozen-a"), _summary(study, "frozen-b")
    for s in (built, reused, _summary(study, "scratch-dead")):
        for key in ("time/data_s", "time/train_s", "time/eval_s", "time/total_s"):
            assert s[key] > 0, key
        assert s["time/train_s"] == s["train/time_s"]
        parts = s["time/data_s"] + s["time/features_s"] + s["time/train_s"] + s["time/eval_s"]
        assert parts <= s["time/total_s"]
    assert built["features/reused"] is False and reused["features/reused"] is True
    # the builder spent the backbone pass; the reuser did not, but knows what it cost
    assert built["time/features_s"] >= built["features/store_build_s"] > 0
    assert reused["time/features_s"] < built["features/store_build_s"]
    assert reused["features/store_build_s"] == built["features/store_build_s"]
    assert reused["features/store"] == built["features/store"]
    assert _summary(study, "scratch-dead")["time/features_s"] == 0.0


@pytest.mark.slow
def test_report_amortizes_the_backbone_pass_and_flags_the_dead_run(study, tmp_path):
    out = tmp_path / "report.html"
    write_local_report(study, out)
    page = parse_html(out)
    build_s = _summary(study, "frozen-a")["features/store_build_s"]

    header = next(t for t in page.tables if "cost/run (s)" in t and "#" in t)
    for name in ("frozen-a", "frozen-b"):
        s = _summary(study, name)
        row = dict(zip(header, page.rows[name]))
        expected = s["time/train_s"] + s["time/eval_s"] + build_s / 2
        assert row["cost/run (s)"] == f"{expected:.1f}"
        assert float(row["cost/run (s)"]) > float(row["train time (s)"])
        assert row["note"] == ""
    dead = dict(zip(header, page.rows["scratch-dead"]))
    assert dead["note"] == "chance level"
    assert any("did not beat the majority-class baseline" in f and "scratch-dead" in f
               and "lr=1.0e-9" in f for f in page.findings)

    strategies = next(t for t in page.tables if "best configuration" in t)
    frozen = dict(zip(strategies, page.rows["strategy:toy-lesions-small:frozen"]))
    # the table shows tenths of a second: allow the rounding of the cell
    assert float(frozen["cost/run (s)"]) >= build_s / 2 - 0.05 and build_s > 0
    scratch = dict(zip(strategies, page.rows["strategy:toy-lesions-small:scratch"]))
    assert scratch["at chance"] == "1 of 1" and frozen["at chance"] == "0"
    html = out.read_text()
    assert f"({build_s:.1f} s over these 2 frozen runs)" in html
    assert '<tr data-run="scratch-dead" class="chance">' in html


def test_store_cost_is_shared_evenly_and_old_runs_keep_their_train_time():
    def record(name: str, **summary) -> RunRecord:
        return RunRecord(name=name, path=None, study="s", config={}, summary=summary)

    # three frozen seeds share the plain store (30 s); each built its own augmented views
    runs = [record(f"f{i}", **{"time/train_s": 0.5, "time/eval_s": 0.1,
                               "features/store": "k1", "features/store_build_s": 30.0,
                               "features/views_store": f"v{i}",
                               "features/views_store_build_s": 6.0})
            for i in range(3)]
    runs.append(record("old", **{"train/time_s": 12.0}))
    runs.append(record("other", **{"time/train_s": 1.0, "time/eval_s": 0.0,
                                   "features/store": "k2", "features/store_build_s": 8.0}))
    costs = run_costs(runs)
    assert costs["f0"].features_s == pytest.approx(10.0 + 6.0)
    assert costs["f0"].shared_by == (3, 1)
    assert costs["f0"].total_s == pytest.approx(16.6)
    assert costs["old"].total_s == 12.0 and costs["old"].stores == ()
    assert costs["other"].features_s == pytest.approx(8.0)
    note = cost_note(costs[r.name] for r in runs[:3])
    assert "the 4 feature stores they used took 48.0 s" in note
    assert "48.0 s over these 3 frozen runs" in note


def test_the_findings_give_what_a_frozen_run_cost_not_only_its_training():
    from wbclf.reporting import analysis as A
    from wbclf.reporting.collect import Study

    runs = []
    for i, lr in enumerate((1e-3, 3e-3, 1e-2)):
        runs.append(RunRecord(name=f"f{i}", path=None, study="s", config={"lr": lr}, summary={
            "status": "finished", "val/acc": 0.8 + 0.01 * i, "train/time_s": 0.3 + 0.1 * i,
            "time/train_s": 0.3 + 0.1 * i, "time/eval_s": 0.1,
            "features/store": "k1", "features/store_build_s": 30.0}))
    an = A.analyze(Study("s", Path("."), runs))
    text = " ".join(A.findings(an, run_costs(runs)))
    # 0.3 + 0.1 + 30 / 3 = 10.4 s for the fastest, 10.6 s for the slowest, 31.5 s in all
    assert ("Training epochs took 0.3 s (lr=1.0e-3) to 0.5 s (lr=1.0e-2) per run, 1 s in all; "
            "with evaluation and feature extraction (amortized), a run cost 10.4 s to 10.6 s, "
            "32 s in all.") in text
    # the best run (f2): 0.5 s of training, 10.6 s in all
    assert ", 0.5 s of training (10.6 s with evaluation and feature extraction)." in text
    alone = " ".join(A.findings(an))
    assert "per run, 1 s in all (training alone)." in alone
