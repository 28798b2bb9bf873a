"""Sweep-file validation (every problem at once, exit 2) and the W&B -> Optuna mapping."""

from __future__ import annotations

import math

import pytest
import yaml

from tests.conftest import run_cli
from wbclf.sweeps.schema import SweepError, check_sweep, parse_pins
from wbclf.sweeps.space import (
    candidate_values,
    dimension,
    grid_points,
    grid_values,
    max_epochs,
    pruner_settings,
)

BASE = {"program": "scripts/train.py", "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"}}


def check(parameters: dict, pins=(), **top) -> object:
    return check_sweep({**BASE, **top, "parameters": parameters}, "t.yaml", pins)


def problems(parameters: dict, pins=(), **top) -> list[str]:
    with pytest.raises(SweepError) as err:
        check(parameters, pins, **top)
    return err.value.problems


def test_every_problem_is_reported_at_once():
    found = problems(
        {"lrr": {"values": [1.0e-3]},                       # not a field
         "lr": {"values": [1.0e-3, "1e-2"]},                # YAML text, not a number
         "batch_norm": {"values": [True, "maybe"]},         # does not parse
         "width": {"distribution": "uniform", "min": 8, "max": 64},  # float form on an int
         "dropout": {"distribution": "normal", "mu": 0.1, "sigma": 0.1}},  # no Optuna twin
        pins=["epoch=3"], runcap=3)
    joined = "\n".join(found)
    assert len(found) >= 7, joined
    assert "lrr" in joined and "did you mean lr" in joined
    assert "'1e-2' is text in YAML" in joined
    assert "batch_norm='maybe' is not a boolean" in joined
    assert "parameters.width" in joined
    assert "normal has no Optuna equivalent" in joined
    assert "--set epoch=3" in joined and "did you mean epochs" in joined
    assert "runcap" in joined and "run_cap" in joined


def test_cli_prints_all_problems_and_exits_2(tmp_path):
    bad = {**BASE, "parameters": {"lrr": {"values": [1]}, "depth": {"values": ["deep"]}}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = run_cli("sweep", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "2 problems" in result.stderr
    assert "parameters.lrr" in result.stderr and "parameters.depth.values[0]" in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_yaml_and_missing_file_exit_2(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("method: grid\nparameters: {lr: [1\n")
    result = run_cli("sweep", str(path))
    assert result.returncode == 2 and "not valid YAML at line" in result.stderr
    assert run_cli("sweep", str(tmp_path / "none.yaml")).returncode == 2


def test_schema_problems():
    found = problems({"lr": {"values": []}, "seed": {"min": 3, "max": 1},
                      "depth": {"values": [2], "q": 1}},
                     method="hyperopt", metric={"name": "val/acc", "goal": "up"},
                     early_terminate={"type": "asha"})
    joined = "\n".join(found)
    assert "method: 'hyperopt' is not supported" in joined
    assert "metric.goal" in joined and "early_terminate.type" in joined
    assert "parameters.lr.values: must be a non-empty list" in joined
    assert "min 3 is not less than max 1" in joined
    assert "parameters.depth.q: not allowed with categorical" in joined


def test_grid_takes_only_what_wandbs_grid_takes():
    found = problems({"lr": {"distribution": "log_uniform_values", "min": 1.0e-4,
                             "max": 1.0e-2}})
    assert "grid search takes values, value, int_uniform or q_uniform" in found[0]
    spec = check({"depth": {"min": 2, "max": 4},
                  "width": {"distribution": "q_uniform", "min": 8, "max": 32, "q": 8}})
    assert [p for p in grid_points(spec.varying.values())][:2] == [
        {"depth": 2, "width": 8}, {"depth": 2, "width": 16}]
    assert len(list(grid_points(spec.varying.values()))) == 3 * 3  # q_uniform excludes max


def test_combinations_runconfig_refuses_are_caught():
    found = problems({"depth": {"values": [2, 6]}, "image_size": {"values": [32, 128]}})
    assert len(found) == 1
    assert "grid point {depth=6, image_size=32}" in found[0] and "depth <= 5" in found[0]
    found = problems({"model": {"value": "scratch"}, "strategy": {"values": ["frozen"]}})
    assert "impossible" in found[0]


def test_commands_wbclf_train_cannot_read_are_refused():
    found = problems({"lr": {"value": 0.1}},
                     command=["${env}", "python", "${program}", "${args_no_hyphens}"])
    assert "${args_no_hyphens}" in found[0]
    found = problems({"lr": {"value": 0.1}},
                     command=["${env}", "python", "${program}", "${args_json_file}"])
    assert "must follow the token --args_json_file" in found[0]
    assert check({"lr": {"value": 0.1}},
                 command=["${env}", "${interpreter}", "${program}", "${args_json}"])
    found = problems({"lr": {"value": 0.1}}, program=None)
    assert "program: required" in found[0]


def test_pins_replace_parameters_and_add_fields():
    spec = check({"lr": {"values": [1.0e-3, 1.0e-2]}, "width": {"values": [8, 16]}},
                 pins=["lr=3e-4", "limit_per_class=30", "batch-norm=false"])
    assert spec.constants == {"lr": 3.0e-4, "limit_per_class": 30, "batch_norm": False}
    assert list(spec.varying) == ["width"]
    values, errors = parse_pins(["seed", "nope=1", "seed=x"])
    assert values == {} and len(errors) == 3


def test_metric_defaults_and_requirements():
    spec = check({"lr": {"values": [0.1]}}, metric=None)
    assert (spec.metric, spec.goal) == ("val/acc", "maximize") and spec.notices
    found = problems({"lr": {"min": 0.1, "max": 0.2}}, method="bayes", metric=None)
    assert "metric: required" in found[0]
    spec = check({"lr": {"values": [0.1]}}, metric={"name": "val/loss"})
    assert spec.goal == "minimize"  # W&B's default goal


@pytest.mark.parametrize("config,field,kind,low,high,log,step", [
    ({"values": [1, 2]}, "depth", "Categorical", None, None, None, None),
    ({"min": 2, "max": 6}, "depth", "Int", 2, 6, False, 1),
    ({"min": 0.0, "max": 0.5}, "dropout", "Float", 0.0, 0.5, False, None),
    ({"distribution": "q_uniform", "min": 8, "max": 128, "q": 8}, "width", "Int", 8, 128,
     False, 8),
    ({"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 0.1}, "dropout", "Float", 0.0,
     0.5, False, 0.1),
    ({"distribution": "log_uniform_values", "min": 1.0e-4, "max": 1.0e-1}, "lr", "Float",
     1.0e-4, 1.0e-1, True, None),
    ({"distribution": "inv_log_uniform_values", "min": 1.0e-4, "max": 1.0e-1}, "lr", "Float",
     1.0e-4, 1.0e-1, True, None),
    ({"distribution": "log_uniform", "min": -9.21, "max": -2.3}, "lr", "Float",
     math.exp(-9.21), math.exp(-2.3), True, None),
    ({"distribution": "inv_log_uniform", "min": 2.3, "max": 9.21}, "lr", "Float",
     math.exp(-9.21), math.exp(-2.3), True, None),
    ({"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 1}, "batch_size",
     "Int", 16, 256, True, 1),
])
def test_wandb_forms_map_to_optuna(config, field, kind, low, high, log, step):
    spec = check({field: config}, method="random")
    dim = dimension(spec.parameters[field])
    dist = dim.distribution
    assert type(dist).__name__ == f"{kind}Distribution"
    if low is not None:
        assert math.isclose(dist.low, low) and math.isclose(dist.high, high)
        assert dist.log is log and (dist.step == step or math.isclose(dist.step, step))


def test_quantized_log_forms_render_multiples_of_q():
    spec = check({"batch_size": {"distribution": "q_log_uniform_values", "min": 16,
                                 "max": 256, "q": 8}}, method="random")
    dim = dimension(spec.parameters["batch_size"])
    assert dim.distribution.log and dim.q == 8
    assert dim.render(37.3) == 40 and isinstance(dim.render(37.3), int)
    spec = check({"lr": {"distribution": "q_log_uniform_values", "min": 1.0e-4, "max": 1.0e-1,
                         "q": 1.0e-4}}, method="random")
    assert dimension(spec.parameters["lr"]).render(0.012345) == 0.0123


def test_candidate_values_are_checked_as_rendered():
    spec = check({"dropout": {"distribution": "q_uniform", "min": 0.0, "max": 0.5,
                              "q": 0.1}})
    assert grid_values(spec.parameters["dropout"]) == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert candidate_values(spec.parameters["dropout"]) == [0.0, 0.4]
    found = problems({"dropout": {"min": 0.0, "max": 1.5}}, method="random")
    assert "dropout=1.5 must be in [0, 1)" in found[0]


@pytest.mark.parametrize("early,epochs,expected", [
    ({"type": "hyperband", "min_iter": 2}, 15, (2, 15, 3)),
    ({"type": "hyperband", "min_iter": 1, "eta": 2}, None, (1, 10, 2)),
    ({"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3}, 30, (3, 27, 3)),
])
def test_hyperband_maps_to_optuna(early, epochs, expected):
    params = {"lr": {"min": 1.0e-4, "max": 1.0e-2}}
    if epochs:
        params["epochs"] = {"values": [5, epochs]}
    spec = check(params, method="random", early_terminate=early)
    assert max_epochs(spec) == (epochs or 10)
    settings = pruner_settings(spec)
    assert (settings["min_resource"], settings["max_resource"],
            settings["reduction_factor"]) == expected


def test_hyperband_needs_a_whole_eta():
    found = problems({"lr": {"values": [0.1]}},
                     early_terminate={"type": "hyperband", "min_iter": 1, "eta": 1.5})
    assert "early_terminate.eta" in found[0]


def test_options_are_checked(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**BASE, "parameters": {"lr": {"values": [0.1]}}}))
    assert run_cli("sweep", str(good), "--workers", "0").returncode == 2
    assert run_cli("sweep", str(good), "--storage", "sqlite://").returncode == 2
    result = run_cli("sweep", str(good), "--storage", "nosuchdb://x/y")
    assert result.returncode == 2 and "wbclf: error:" in result.stderr
    assert run_cli("sweep", "--help").returncode == 0
