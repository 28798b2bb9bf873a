"""model/latency_ms and model/throughput: measured on the run's model and device."""
from __future__ import annotations

import json

import pytest
import torch

from wbclf.config import build_config
from wbclf.device import resolve_hardware
from wbclf.models import create_model
from wbclf.training.run import train_run
from wbclf.training.speed import BATCH, measure_speed, model_speed


def test_measuring_speed_puts_the_models_mode_back():
    """Real timings of two models: positive figures; the training and grad modes are as
    before (which is faster is not asserted: that would be a timing test)."""
    hw = resolve_hardware("cpu", "auto")
    small = create_model("scratch", 2, build_config({"width": 4, "depth": 2}))
    big = create_model("scratch", 2, build_config({"width": 64, "depth": 4,
                                                  "blocks_per_stage": 2}))
    small.train()
    fast = measure_speed(small, 64, hw)
    slow = measure_speed(big, 64, hw)
    assert small.training  # the training mode is put back
    for figures in (fast, slow):
        assert figures["model/latency_ms"] > 0 and figures["model/throughput"] > 0
    assert torch.is_grad_enabled()


def test_speed_times_one_image_and_a_batch_in_eval_mode(monkeypatch):
    """What is timed, and how the figures follow from the timings (a fixed clock: the
    arithmetic, not this machine's load, is under test)."""
    import wbclf.training.speed as S

    model = create_model("scratch", 2, build_config({"width": 4, "depth": 2}))
    model.train()
    seen: list[tuple[int, bool]] = []
    model.register_forward_hook(lambda m, args, out: seen.append((args[0].shape[0],
                                                                  m.training)))
    ticks = iter(range(1_000_000))
    monkeypatch.setattr(S.time, "perf_counter", lambda: next(ticks) * 0.004)  # 4 ms a call
    figures = measure_speed(model, 32, resolve_hardware("cpu", "auto"))
    # a warm-up call, then REPEATS timed calls at batch 1 and two at BATCH; all in eval mode
    assert seen == [(1, False)] * (S.REPEATS + 1) + [(BATCH, False)] * 3
    assert model.training
    assert figures == {"model/latency_ms": pytest.approx(4.0),
                       "model/throughput": pytest.approx(BATCH / 0.004)}


def test_every_run_records_latency_and_throughput(toy_lesions, tmp_path):
    cfg = build_config({"dataset": str(toy_lesions), "image_size": 32, "width": 8, "depth": 3,
                        "epochs": 1, "batch_size": 32, "limit_per_class": 30,
                        "log_samples": 0, "out_dir": str(tmp_path), "run_name": "r",
                        "wandb_mode": "disabled", "num_workers": "0"})
    summary = train_run(cfg)
    on_disk = json.loads((tmp_path / "r" / "summary.json").read_text())
    for key in ("model/latency_ms", "model/throughput"):
        assert on_disk[key] == summary[key] > 0


def test_speed_is_measured_once_per_model_and_setting(tmp_path, monkeypatch):
    """A study's trials share their model: the first measures, the others reuse; another
    architecture or input size measures again."""
    import wbclf.training.speed as S

    measured: list[int] = []
    measure = S.measure_speed
    monkeypatch.setattr(S, "measure_speed",
                        lambda *a, **k: measured.append(1) or measure(*a, **k))
    hw = resolve_hardware("cpu", "auto")
    model = create_model("scratch", 2, build_config({"width": 4, "depth": 2}))
    first = model_speed(model, 32, hw, cache_dir=str(tmp_path))
    again = model_speed(model, 32, hw, cache_dir=str(tmp_path))
    assert measured == [1]
    assert first.pop("model/speed_reused") is False and again.pop("model/speed_reused") is True
    assert first == again
    model_speed(model, 48, hw, cache_dir=str(tmp_path))
    wider = create_model("scratch", 2, build_config({"width": 8, "depth": 2}))
    model_speed(wider, 32, hw, cache_dir=str(tmp_path))
    assert len(measured) == 3
    # a dropout head (Sequential(Dropout, Linear)) runs as the bare Linear in eval mode
    dropout = create_model("scratch", 2, build_config({"width": 4, "depth": 2, "dropout": 0.3}))
    assert model_speed(dropout, 32, hw, cache_dir=str(tmp_path))["model/speed_reused"] is True
    assert len(measured) == 3


def test_report_names_the_pareto_optimal_runs(tmp_path):
    from tests.test_report import _write_run, parse_html
    from wbclf.reporting.main import write_local_report

    # (width, val/acc, params, flops, latency ms): w16 is dominated by w8 on every cost
    runs = [(4, 0.70, 1e4, 1e6, 1.0), (8, 0.80, 4e4, 4e6, 2.0), (16, 0.78, 1.6e5, 1.6e7, 4.0),
            (32, 0.85, 6.4e5, 6.4e7, 9.0)]
    root = tmp_path / "runs"
    for width, acc, params, flops, latency in runs:
        _write_run(root / f"w{width}", {"dataset": "melanoma", "width": width,
                                        "run_name": f"w{width}"},
                   {"status": "finished", "val/acc": acc, "test/acc": acc,
                    "model/params": params, "model/flops": flops,
                    "model/latency_ms": latency, "model/throughput": 1000 / latency,
                    "best_epoch": 1}, [{"epoch": 1, "val/acc": acc}])
    out = tmp_path / "report.html"
    write_local_report(root, out)
    page = parse_html(out)
    assert "Accuracy against cost" in page.headings
    latency = next(f for f in page.findings if "against latency" in f)
    assert all(f"w{w} " in latency for w in (4, 8, 32)) and "w16" not in latency
    assert any("against FLOPs" in f for f in page.findings)
    assert "(single runs, differences untested)" in latency
    assert any(p.name.endswith("cost.png") for p in (tmp_path / "report_files").iterdir())

    # a second dataset that scores higher everywhere has its own front: it never hides
    # melanoma's runs
    for width, acc, params, flops, latency in runs:
        _write_run(root / f"p{width}", {"dataset": "plant-disease", "width": width,
                                        "run_name": f"p{width}"},
                   {"status": "finished", "val/acc": acc + 0.1, "test/acc": acc + 0.1,
                    "model/params": params, "model/flops": flops,
                    "model/latency_ms": latency, "model/throughput": 1000 / latency,
                    "best_epoch": 1}, [{"epoch": 1, "val/acc": acc + 0.1}])
    write_local_report(root, out)
    fronts = [f for f in parse_html(out).findings if "against latency" in f]
    assert len(fronts) == 2
    melanoma = next(f for f in fronts if f.startswith("On melanoma: "))
    assert all(f"w{w} " in melanoma for w in (4, 8, 32)) and "p" not in melanoma.split(":")[2]


def test_the_pareto_front_of_a_metric_to_minimize():
    from wbclf.reporting.collect import RunRecord
    from wbclf.reporting.pareto import pareto_runs

    runs = []
    for name, loss, params in (("a", 0.5, 1e4), ("b", 0.9, 2e4), ("c", 0.3, 4e4)):
        run = RunRecord(name=name, path=None, study="s", config={})
        run.summary = {"val/loss": loss, "model/params": params}
        runs.append(run)
    assert [r.name for r in pareto_runs(runs, "model/params", "val/loss", "minimize")] == \
        ["a", "c"]
    assert [r.name for r in pareto_runs(runs, "model/params", "val/loss")] == ["a", "b"]
