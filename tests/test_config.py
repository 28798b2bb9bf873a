"""RunConfig: typed coercion, the agent's renderings, errors, precedence, the CLI contract."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import run_cli
from wbclf.config import FIELDS, ConfigError, RunConfig, build_config, coerce, parse_tokens


def test_defaults_match_design_table():
    cfg = RunConfig()
    assert (cfg.dataset, cfg.image_size, cfg.model, cfg.strategy) == ("toy-lesions", 128,
                                                                      "scratch", "scratch")
    assert (cfg.width, cfg.depth, cfg.blocks_per_stage) == (32, 4, 1)
    assert cfg.batch_norm is True and cfg.residual is False
    assert cfg.lr == 1.0e-3 and cfg.weight_decay == 1.0e-4 and cfg.backbone_lr_mult == 0.1
    assert (cfg.optimizer, cfg.scheduler, cfg.augment) == ("adamw", "cosine", "light")
    assert (cfg.epochs, cfg.batch_size, cfg.log_samples) == (10, 64, 32)
    assert (cfg.device, cfg.precision, cfg.num_workers, cfg.wandb_mode) == ("auto", "auto",
                                                                           "auto", "auto")
    design_fields = """dataset data_dir image_size model strategy width depth blocks_per_stage
        batch_norm residual dropout head_hidden backbone_lr_mult unfreeze_epoch optimizer lr
        weight_decay scheduler warmup_epochs epochs batch_size label_smoothing class_weighting
        augment val_fraction limit_per_class early_stopping seed device precision num_workers
        cache_images log_samples wandb_mode project out_dir run_name""".split()
    assert set(design_fields) <= set(FIELDS)


def test_config_is_frozen():
    with pytest.raises(Exception):
        RunConfig().lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("text,expected", [
    ("true", True), ("True", True), ("1", True), ("false", False), ("False", False), ("0", False),
])
def test_boolean_renderings(text, expected):
    assert coerce("batch_norm", text) is expected


@pytest.mark.parametrize("text", ["yes", "maybe", "2", "tru"])
def test_bad_boolean_is_one_line_error(text):
    with pytest.raises(ConfigError) as err:
        coerce("batch_norm", text)
    message = str(err.value)
    assert "batch_norm" in message and "true/false" in message and "\n" not in message


@pytest.mark.parametrize("text,expected", [("1e-3", 1e-3), ("0.001", 1e-3), ("3", 3.0),
                                           (1, 1.0), ("1.0e-2", 1e-2)])
def test_float_parsing(text, expected):
    assert coerce("lr", text) == pytest.approx(expected)


def test_int_parsing_accepts_whole_floats_only():
    assert coerce("epochs", "3") == 3
    assert coerce("epochs", 3.0) == 3
    with pytest.raises(ConfigError, match="epochs='2.5' is not an integer"):
        coerce("epochs", "2.5")


def test_choice_fields_list_allowed_values():
    with pytest.raises(ConfigError, match="allowed: adamw, sgd"):
        coerce("optimizer", "adam")
    assert coerce("precision", 32) == "32"
    assert coerce("precision", 32.0) == "32"


def test_none_rendering_for_optional_strings():
    assert coerce("pretrained_file", "None") == ""
    assert coerce("run_name", None) == ""


@pytest.mark.parametrize("key,guess", [("lerning_rate", "lr"), ("learning_rate", "lr"),
                                       ("batchsize", "batch_size"), ("epoch", "epochs"),
                                       ("batch_nrom", "batch_norm")])
def test_unknown_key_suggests_closest(key, guess):
    with pytest.raises(ConfigError) as err:
        parse_tokens([f"--{key}=1"])
    assert f"did you mean {guess}?" in str(err.value)


def test_impossible_combination():
    with pytest.raises(ConfigError, match="model=scratch with strategy=frozen"):
        build_config({"strategy": "frozen"})
    cfg = build_config({"model": "resnet18", "strategy": "frozen"})
    assert cfg.pretrained


def test_range_checks():
    for bad in ({"lr": 0}, {"val_fraction": 1.5}, {"dropout": 1.0}, {"depth": 8, "image_size": 64},
                {"device": "tpu"}, {"num_workers": "many"}, {"warmup_epochs": 3, "epochs": 3}):
        with pytest.raises(ConfigError):
            build_config(bad)


def test_precedence_defaults_file_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"lr": "1e-2", "width": 16, "epochs": 3}))
    parsed = parse_tokens(["--config", str(path), "--width=64"])
    cfg = parsed.config
    assert cfg.lr == 1e-2 and cfg.epochs == 3  # from the file (1e-2 read as a string by YAML)
    assert cfg.width == 64  # the command line wins
    assert cfg.depth == 4  # default


def test_wandb_value_wrapped_file(tmp_path):
    path = tmp_path / "config-defaults.yaml"
    path.write_text("wandb_version: 1\nlr:\n  desc: null\n  value: 0.01\n")
    assert parse_tokens(["--config", str(path)]).config.lr == 0.01


def test_agent_param_file_is_honoured(tmp_path, monkeypatch):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"width": {"value": 48}, "lr": {"value": 0.02}}))
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(path))
    cfg = parse_tokens(["--lr=0.03"]).config
    assert cfg.width == 48 and cfg.lr == 0.03  # the command line still wins


def test_args_json_and_bare_boolean_flags():
    parsed = parse_tokens(["--args_json", json.dumps({"lr": 0.5, "batch_norm": False}),
                           "--residual"])
    assert parsed.config.lr == 0.5 and parsed.config.batch_norm is False
    assert parsed.config.residual is True


def test_cli_print_config_contract():
    result = run_cli("train", "--batch_norm=False", "--lr=1e-3", "--print-config")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["batch_norm"] is False and data["lr"] == 0.001
    assert '"batch_norm": false' in result.stdout and '"lr": 0.001' in result.stdout


@pytest.mark.parametrize("args,needle", [
    (["--lerning_rate=3e-4"], "did you mean lr?"),
    (["--batch_norm=maybe"], "batch_norm='maybe' is not a boolean"),
    (["--model=scratch", "--strategy=frozen"], "model=scratch with strategy=frozen"),
    (["--optimizer=adam"], "allowed: adamw, sgd"),
])
def test_cli_errors_exit_2_with_one_line(args, needle):
    result = run_cli("train", *args, "--print-config")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("wbclf: error:")
