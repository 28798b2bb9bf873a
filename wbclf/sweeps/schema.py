"""Read a W&B sweep YAML and check it before anything runs.

Every problem is collected (schema, parameters that are not RunConfig fields, values that do
not parse, combinations RunConfig refuses, forms a local sweep cannot run) and raised together
as one :class:`SweepError`, so a user fixes a file in one pass.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from wbclf.config import FIELDS, ConfigError, build_config, coerce, unknown_key_message
from wbclf.sweeps.space import candidate_values, grid_points, grid_size
from wbclf.sweeps.spec import ParamSpec, SweepError, SweepSpec

METHODS = ("grid", "random", "bayes")
TOP_LEVEL_KEYS = ("program", "method", "parameters", "metric", "early_terminate", "name",
                  "description", "project", "entity", "command", "run_cap", "controller",
                  "kind", "apiVersion")
DEFAULT_METRIC = ("val/acc", "maximize")

# W&B parameter forms and the keys each may hold.
RANGE_KEYS = {"min", "max", "distribution"}
FORM_KEYS: dict[str, set[str]] = {
    "constant": {"value", "distribution"},
    "categorical": {"values", "distribution"},
    "int_uniform": RANGE_KEYS,
    "uniform": RANGE_KEYS,
    "q_uniform": RANGE_KEYS | {"q"},
    "log_uniform": RANGE_KEYS,
    "log_uniform_values": RANGE_KEYS,
    "inv_log_uniform": RANGE_KEYS,
    "inv_log_uniform_values": RANGE_KEYS,
    "q_log_uniform": RANGE_KEYS | {"q"},
    "q_log_uniform_values": RANGE_KEYS | {"q"},
}
# Forms W&B knows that Optuna has no distribution for.
UNSUPPORTED = {
    "categorical_w_probabilities": "Optuna's samplers draw categories uniformly; drop "
                                   "probabilities or repeat a value in values",
    "normal": "use uniform or values", "q_normal": "use q_uniform or values",
    "log_normal": "use log_uniform_values or values",
    "q_log_normal": "use q_log_uniform_values or values",
    "beta": "use uniform or values", "q_beta": "use q_uniform or values",
}
GRID_FORMS = ("constant", "categorical", "int_uniform", "q_uniform")  # what W&B's grid takes
INT_FORMS = ("constant", "categorical", "int_uniform", "q_uniform", "q_log_uniform",
             "q_log_uniform_values")  # forms that can give whole numbers (with a whole q)
MAX_GRID = 100_000
_MACRO = re.compile(r"^\$\{([A-Za-z0-9_:]+)\}$")
READABLE_MACROS = ("env", "interpreter", "program", "args", "args_no_boolean_flags",
                   "args_json", "args_json_file", "args_no_equals")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _looks_numeric(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _field_kind(name: str) -> str:
    kind = FIELDS[name].type
    return kind if isinstance(kind, str) else kind.__name__


def infer_form(config: Mapping[str, Any]) -> str | None:
    """The W&B form of a parameter spec, inferred like W&B does when ``distribution`` is absent."""
    if "distribution" in config:
        form = config["distribution"]
        if form == "categorical" and "probabilities" in config:
            return "categorical_w_probabilities"
        return form if isinstance(form, str) else None
    if "value" in config:
        return "constant"
    if "values" in config:
        return "categorical_w_probabilities" if "probabilities" in config else "categorical"
    if "min" in config and "max" in config:
        if all(isinstance(config[k], int) and not isinstance(config[k], bool)
               for k in ("min", "max")):
            return "int_uniform"
        return "uniform"
    return None


def parse_pins(pins: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """``--set key=value`` texts -> ({field: typed value}, problems)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for text in pins:
        key, has_value, raw = text.partition("=")
        name = key.strip().lstrip("-").replace("-", "_")
        if not has_value or not name:
            problems.append(f"--set {text}: expected key=value")
            continue
        if name not in FIELDS:
            problems.append(f"--set {text}: {unknown_key_message(name)}")
            continue
        try:
            values[name] = coerce(name, raw)
        except ConfigError as err:
            problems.append(f"--set {text}: {err}")
    return values, problems


class _Checker:
    """Collects problems while reading one sweep file."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.notices: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # ------------------------------------------------------------------ top level

    def top_level(self, raw: Mapping[str, Any]) -> None:
        for key in raw:
            if key not in TOP_LEVEL_KEYS:
                guess = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
                hint = f"; did you mean {guess[0]}?" if guess else ""
                self.add(str(key), f"unknown sweep key{hint} (allowed: "
                                   f"{', '.join(TOP_LEVEL_KEYS)})")
        method = raw.get("method")
        if method is None:
            self.add("method", "required; one of grid, random, bayes")
        elif method not in METHODS:
            self.add("method", f"{method!r} is not supported locally; allowed: "
                               f"{', '.join(METHODS)}")
        for key in ("name", "description", "project", "entity", "program"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                self.add(key, f"must be text, got {raw[key]!r}")
        if "run_cap" in raw:
            cap = raw["run_cap"]
            if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
                self.add("run_cap", f"must be a whole number >= 1, got {cap!r}")
        controller = raw.get("controller")
        if controller is not None and not isinstance(controller, Mapping):
            self.add("controller", "must be a mapping like {type: local}")

    def metric(self, raw: Mapping[str, Any]) -> tuple[str, str, float | None]:
        metric = raw.get("metric")
        if metric is None:
            if raw.get("method") == "bayes" or raw.get("early_terminate"):
                self.add("metric", "required for bayes and early_terminate, e.g. "
                                   "{name: val/acc, goal: maximize}")
            else:
                self.notices.append(f"no metric given; trials are compared on "
                                    f"{DEFAULT_METRIC[0]} ({DEFAULT_METRIC[1]})")
            return (*DEFAULT_METRIC, None)
        if not isinstance(metric, Mapping):
            self.add("metric", "must be a mapping like {name: val/acc, goal: maximize}")
            return (*DEFAULT_METRIC, None)
        for key in metric:
            if key not in ("name", "goal", "target", "impute"):
                self.add(f"metric.{key}", "unknown key (allowed: name, goal, target, impute)")
        name = metric.get("name")
        if not isinstance(name, str) or not name:
            self.add("metric.name", "required text, e.g. val/acc")
            name = DEFAULT_METRIC[0]
        goal = metric.get("goal", "minimize")  # W&B's default
        if goal not in ("minimize", "maximize"):
            self.add("metric.goal", f"{goal!r} is not allowed; allowed: minimize, maximize")
            goal = "minimize"
        target = metric.get("target")
        if target is not None and not is_number(target):
            self.add("metric.target", f"must be a number, got {target!r}")
            target = None
        return name, goal, target

    def command(self, raw: Mapping[str, Any]) -> list[str] | None:
        command = raw.get("command")
        if command is None:
            uses_program = True
        elif not isinstance(command, list) or not command:
            self.add("command", "must be a non-empty list, e.g. [${env}, ${interpreter}, "
                                "${program}, ${args}]")
            return None
        else:
            command = [str(c) for c in command]
            uses_program = "${program}" in command
            for i, chunk in enumerate(command):
                match = _MACRO.match(chunk)
                if match is None:
                    continue
                macro = match.group(1)
                if macro.startswith("envvar:"):
                    continue
                if macro not in READABLE_MACROS:
                    self.add(f"command[{i}]", f"{chunk} renders arguments `wbclf train` "
                                              f"cannot read; use ${{args}}, "
                                              "${args_no_boolean_flags} or ${args_json}")
                elif macro == "args_json_file" and (i == 0 or command[i - 1] !=
                                                    "--args_json_file"):
                    self.add(f"command[{i}]", "${args_json_file} must follow the token "
                                              "--args_json_file")
            if not any(_MACRO.match(c) and c.startswith("${args") for c in command):
                self.notices.append("command has no ${args...}: trials get their parameters "
                                    "only from WANDB_SWEEP_PARAM_PATH")
        if uses_program and not raw.get("program"):
            self.add("program", "required (the command runs ${program}); e.g. "
                                "scripts/train.py")
        return command

    def early_terminate(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        et = raw.get("early_terminate")
        if et is None:
            return None
        if not isinstance(et, Mapping):
            self.add("early_terminate", "must be a mapping like {type: hyperband, min_iter: 1}")
            return None
        where = "early_terminate"
        for key in et:
            if key not in ("type", "min_iter", "max_iter", "s", "eta"):
                self.add(f"{where}.{key}", "unknown key (allowed: type, min_iter, max_iter, s, "
                                           "eta)")
        if et.get("type") != "hyperband":
            self.add(f"{where}.type", f"{et.get('type')!r} is not supported; allowed: hyperband")
        eta = et.get("eta", 3)
        if not is_number(eta) or eta != int(eta) or eta < 2:
            self.add(f"{where}.eta", f"{eta!r}: a local sweep needs a whole number >= 2 "
                                     "(Optuna's reduction_factor)")
        has_min = "min_iter" in et
        has_max = "max_iter" in et and "s" in et
        if not has_min and not has_max:
            self.add(where, "give min_iter, or max_iter and s")
        for key in ("min_iter", "max_iter", "s"):
            value = et.get(key)
            if key in et and (not isinstance(value, int) or isinstance(value, bool)
                              or value < 1):
                self.add(f"{where}.{key}", f"must be a whole number >= 1, got {value!r}")
        return dict(et)

    # ------------------------------------------------------------------ parameters

    def parameters(self, raw: Mapping[str, Any], method: str) -> dict[str, ParamSpec]:
        params = raw.get("parameters")
        if params is None:
            self.add("parameters", "required; a mapping of RunConfig field -> spec")
            return {}
        if not isinstance(params, Mapping) or not params:
            self.add("parameters", "must be a non-empty mapping of RunConfig field -> spec")
            return {}
        out: dict[str, ParamSpec] = {}
        for name, config in params.items():
            spec = self.parameter(str(name), config, method)
            if spec is not None:
                out[spec.name] = spec
        return out

    def parameter(self, name: str, config: Any, method: str) -> ParamSpec | None:
        where = f"parameters.{name}"
        if name not in FIELDS:
            self.add(where, unknown_key_message(name))
            return None
        if not isinstance(config, Mapping):
            self.add(where, f"must be a mapping like {{values: [...]}} or {{value: x}}, "
                            f"got {config!r}")
            return None
        if "parameters" in config:
            self.add(where, "nested parameters are not supported: RunConfig is flat")
            return None
        form = infer_form(config)
        if form is None:
            self.add(where, "cannot tell the distribution: give values, value, or min and max "
                            "(with a distribution)")
            return None
        if form in UNSUPPORTED:
            self.add(where, f"distribution {form} has no Optuna equivalent; "
                            f"{UNSUPPORTED[form]}")
            return None
        if form not in FORM_KEYS:
            self.add(f"{where}.distribution", f"{form!r} is not a W&B distribution")
            return None
        for key in config:
            if key not in FORM_KEYS[form]:
                self.add(f"{where}.{key}", f"not allowed with {form} (allowed: "
                                           f"{', '.join(sorted(FORM_KEYS[form]))})")
        filled = {**config, "distribution": form}
        if form.startswith("q_"):
            filled.setdefault("q", 1.0)  # W&B's default
        if method == "grid" and form not in GRID_FORMS:
            self.add(where, f"grid search takes values, value, int_uniform or q_uniform, not "
                            f"{form}; list the points with values: [...] or use method "
                            "random/bayes")
        kind = _field_kind(name)
        if kind in ("bool", "str") and form not in ("constant", "categorical"):
            self.add(where, f"{name} takes {'true/false' if kind == 'bool' else 'text'}: use "
                            "values: [...] or value: x")
            return None
        if form == "constant":
            self.value(f"{where}.value", name, config.get("value"))
        elif form == "categorical":
            values = config.get("values")
            if not isinstance(values, list) or not values:
                self.add(f"{where}.values", "must be a non-empty list")
                return None
            for i, value in enumerate(values):
                self.value(f"{where}.values[{i}]", name, value)
        else:
            if not self.ranged(where, name, form, filled):
                return None
        return ParamSpec(name, form, filled)

    def value(self, where: str, name: str, value: Any) -> bool:
        """Check one value as the agent renders it (``str(value)``); False on a problem."""
        if isinstance(value, (list, dict)):
            self.add(where, f"{value!r}: lists and mappings are not RunConfig values")
            return False
        if _field_kind(name) in ("int", "float") and _looks_numeric(value):
            self.add(where, f"{value!r} is text in YAML; write it as a number (e.g. 1.0e-3, "
                            "not 1e-3) so W&B samples and renders a number")
            return False
        try:
            coerce(name, str(value) if value is not None else "None")
        except ConfigError as err:
            self.add(where, str(err))
            return False
        return True

    def ranged(self, where: str, name: str, form: str, config: Mapping[str, Any]) -> bool:
        ok = True
        for key in ("min", "max") + (("q",) if form.startswith("q_") else ()):
            value = config.get(key)
            if key not in config:
                self.add(where, f"{form} needs {key}")
                ok = False
            elif not is_number(value):
                hint = " (it is text in YAML; write e.g. 1.0e-3, not 1e-3)" \
                    if _looks_numeric(value) else ""
                self.add(f"{where}.{key}", f"must be a number, got {value!r}{hint}")
                ok = False
        if not ok:
            return False
        low, high = config["min"], config["max"]
        if low >= high:
            self.add(where, f"min {low} is not less than max {high}")
            ok = False
        if form == "int_uniform" and not (isinstance(low, int) and isinstance(high, int)):
            self.add(where, "int_uniform needs whole-number min and max")
            ok = False
        if form.endswith("_values") and low <= 0:
            self.add(f"{where}.min", f"{form} needs min > 0, got {low}")
            ok = False
        if "q" in config and config["q"] <= 0:
            self.add(f"{where}.q", f"must be > 0, got {config['q']}")
            ok = False
        if _field_kind(name) == "int":
            whole_q = "q" not in config or float(config["q"]).is_integer()
            if form not in INT_FORMS or not whole_q:
                self.add(where, f"{name} is a whole number: use int_uniform, q_uniform or "
                                "q_log_uniform_values with a whole q, or values: [...]")
                ok = False
        # the bounds themselves (as sampled, quantized) go through RunConfig in
        # combination_problems
        return ok


def load_yaml(path: str | Path) -> Any:
    """The parsed YAML of a sweep file; problems raise :class:`SweepError`."""
    p = Path(path)
    if not p.is_file():
        raise SweepError(str(path), ["file not found"])
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(err, "problem", None) or (str(err).splitlines() or ["syntax error"])[0]
        raise SweepError(str(path), [f"not valid YAML{where}: {what}"]) from None


def load_sweep(path: str | Path, pins: Iterable[str] = ()) -> SweepSpec:
    """Read, validate and pin a sweep file.

    Args:
        path: The sweep YAML.
        pins: ``key=value`` texts (``--set``): each replaces that parameter with one value
            or adds a RunConfig field the file does not mention.

    Raises:
        SweepError: with every problem found.
    """
    raw = load_yaml(path)
    return check_sweep(raw, path, pins)


def check_sweep(raw: Any, path: str | Path, pins: Iterable[str] = ()) -> SweepSpec:
    """Validate an already parsed sweep config (see :func:`load_sweep`)."""
    source = str(path)
    if not isinstance(raw, Mapping):
        raise SweepError(source, ["must be a mapping with method, parameters, metric, ..."])
    check = _Checker()
    check.top_level(raw)
    method = raw.get("method") if raw.get("method") in METHODS else "random"
    metric, goal, target = check.metric(raw)
    command = check.command(raw)
    early = check.early_terminate(raw)
    params = check.parameters(raw, method)
    pinned, pin_problems = parse_pins(pins)
    check.problems.extend(pin_problems)
    for name, value in pinned.items():
        params[name] = ParamSpec(name, "constant", {"value": value, "distribution": "constant"})
    for name in ("out_dir", "run_name"):
        if name in params:
            check.notices.append(f"parameter {name} is replaced by wbclf sweep "
                                 f"(runs go to the sweep's output folder)")
    if not check.problems:
        combination_problems(params, method, check)
    if check.problems:
        raise SweepError(source, check.problems)
    name = raw.get("name") or Path(path).stem
    return SweepSpec(
        path=Path(path), name=re.sub(r"[^A-Za-z0-9_.-]+", "_", name), method=raw["method"],
        metric=metric, goal=goal, target=target, parameters=params, pins=pinned,
        early_terminate=early, run_cap=raw.get("run_cap"), command=command,
        program=raw.get("program"), project=raw.get("project"), entity=raw.get("entity"),
        notices=tuple(check.notices))


def combination_problems(params: Mapping[str, ParamSpec], method: str, check: _Checker) -> None:
    """Build RunConfigs from the values a study will use, to catch impossible combinations.

    Grid: every point. Random/bayes: each candidate value (or range bound) of one parameter
    with the first value of every other parameter.
    """
    constants = {k: p.config["value"] for k, p in params.items() if p.is_constant}
    varying = {k: p for k, p in params.items() if not p.is_constant}
    if method == "grid":
        size = grid_size(varying.values())
        if size > MAX_GRID:
            check.add("parameters", f"the grid has {size} points; more than {MAX_GRID} is "
                                    "surely a mistake")
            return
        points: Iterable[dict[str, Any]] = grid_points(varying.values())
    else:
        first = {k: candidate_values(p)[0] for k, p in varying.items()}
        points = ({**first, name: value} for name, p in varying.items()
                  for value in candidate_values(p))
    seen: dict[str, int] = {}
    examples: dict[str, str] = {}
    for point in itertools.islice(points, MAX_GRID):
        try:
            build_config(_rendered({**constants, **point}))
        except ConfigError as err:
            message = str(err)
            seen[message] = seen.get(message, 0) + 1
            examples.setdefault(message, ", ".join(f"{k}={v}" for k, v in point.items()))
    for message, count in seen.items():
        where = f"grid point {{{examples[message]}}}" if method == "grid" \
            else f"with {examples[message]}"
        more = f" (and {count - 1} more points)" if count > 1 else ""
        check.add(where, message + more)


def _rendered(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values as the program receives them from the agent's ``--key=str(value)``."""
    return {k: ("None" if v is None else str(v)) for k, v in values.items()}
