"""A trial's command line and parameter file, made exactly as ``wandb agent`` makes them.

The agent (``wandb/wandb_agent.py``, ``Agent._command_run``) fills the sweep's ``command``
(default ``${env} ${interpreter} ${program} ${args}``) from
``wandb.sdk.launch.sweeps.utils.create_sweep_command_args`` and writes the parameters to the
YAML file named by ``WANDB_SWEEP_PARAM_PATH``. Local sweeps do the same with W&B's own
functions, so every local trial exercises the cloud agent's path. The one difference: the
agent's ``${interpreter}`` is ``python`` from ``PATH``; locally it is this interpreter
(``sys.executable``), so trials run in the same environment as ``wbclf sweep``.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wbclf.atomic import replacing, write_text_atomic

DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")


def agent_arguments(params: Mapping[str, Any]) -> dict[str, Any]:
    """``create_sweep_command_args`` for ``params``: every rendering the agent offers."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    return create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})


def render_command(command: Sequence[str] | None, *, program: str,
                   params: Mapping[str, Any], args_json_file: str = "",
                   interpreter: str | None = None) -> list[str]:
    """The argv the agent would run for a trial with ``params``.

    Args:
        command: The sweep file's ``command`` (None: the agent's default).
        program: The sweep file's ``program`` (as the agent passes it: not resolved).
        params: Parameter name -> value for this trial.
        args_json_file: Where ``${args_json_file}`` points (the file is written by the
            caller, see :func:`write_args_json_file`).
        interpreter: ``${interpreter}``; default this Python.
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command

    # create_sweep_command fills ${envvar:NAME} in place: give it a copy
    template = create_sweep_command(list(command) if command else list(DEFAULT_COMMAND))
    variables = agent_arguments(params)
    variables["interpreter"] = [interpreter or sys.executable]
    variables["program"] = [program]
    variables["args_json_file"] = [args_json_file]
    if platform.system() != "Windows":
        variables["env"] = ["/usr/bin/env"]
    argv: list[str] = []
    for chunk in map(str, template):
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += variables.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv


def uses_args_json_file(command: Sequence[str] | None) -> bool:
    return bool(command) and "${args_json_file}" in [str(c) for c in command or ()]


def write_args_json_file(path: str | Path, params: Mapping[str, Any]) -> None:
    """The file behind ``${args_json_file}`` (the agent writes ``args_json`` into it)."""
    # atomic: a resumed or retried trial reads this file again
    write_text_atomic(path, agent_arguments(params)["args_json"][0])


def write_param_file(path: str | Path, params: Mapping[str, Any]) -> None:
    """The ``WANDB_SWEEP_PARAM_PATH`` file, written by W&B's own function like the agent."""
    from wandb.sdk.lib.config_util import save_config_file_from_dict

    with replacing(path) as tmp:
        save_config_file_from_dict(str(tmp), {k: {"value": v} for k, v in params.items()})


def shell_line(argv: Sequence[str]) -> str:
    """A copy-pasteable rendering of ``argv``."""
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def resolve_program(program: str, sweep_file: Path) -> str | None:
    """``program`` as the trials will run it, or None if it cannot be found.

    The agent runs ``program`` relative to its working directory (the repository root for
    this project's files). From elsewhere, look next to the sweep file and its parents
    (``sweeps/../scripts/train.py``) and use that absolute path.
    """
    if Path(program).is_file():
        return program
    for folder in [sweep_file.resolve().parent, *sweep_file.resolve().parents]:
        candidate = folder / program
        if candidate.is_file():
            return str(candidate)
    return None
