"""The types a sweep file becomes: shared by the reader (:mod:`.schema`), the search space
(:mod:`.space`), the study and the runner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wbclf.config import RunConfig
from wbclf.errors import UserError


class SweepError(UserError):
    """A sweep that cannot run as given; ``problems`` lists every reason, one line each."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{source}: {count} problem{'s' if count != 1 else ''}"
        super().__init__(head + "".join(f"\n  {p}" for p in self.problems))


@dataclass(frozen=True)
class ParamSpec:
    """One sweep parameter: its W&B form and the spec as written (``distribution`` filled)."""

    name: str
    form: str
    config: dict[str, Any]

    @property
    def is_constant(self) -> bool:
        return self.form == "constant"


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file with the ``--set`` pins applied."""

    path: Path
    name: str
    method: str
    metric: str
    goal: str  # "maximize" or "minimize"
    parameters: dict[str, ParamSpec]  # file order; pins replace or add constants
    pins: dict[str, Any] = field(default_factory=dict)
    target: float | None = None
    early_terminate: dict[str, Any] | None = None
    run_cap: int | None = None
    command: list[str] | None = None  # None: the agent's default command
    program: str | None = None
    project: str | None = None
    entity: str | None = None
    notices: tuple[str, ...] = ()

    @property
    def varying(self) -> dict[str, ParamSpec]:
        """Parameters that differ between trials."""
        return {k: p for k, p in self.parameters.items() if not p.is_constant}

    def choices(self, name: str) -> list[Any]:
        """Every value parameter ``name`` can take when it is listed (``value``/``values``);
        [] for a distribution or a parameter the sweep does not set."""
        param = self.parameters.get(name)
        if param is None:
            return []
        if param.is_constant:
            return [param.config["value"]]
        return list(param.config.get("values", []))

    def field_values(self, name: str) -> list[Any] | None:
        """Every value RunConfig field ``name`` takes in this sweep: :meth:`choices` where
        the sweep lists it, RunConfig's default where it does not set it, None for a
        distribution."""
        if name not in self.parameters:
            return [getattr(RunConfig(), name)]
        listed = self.choices(name)
        return listed if listed or "values" in self.parameters[name].config else None

    @property
    def constants(self) -> dict[str, Any]:
        """Parameters that are the same in every trial (``value:`` and pins)."""
        return {k: p.config["value"] for k, p in self.parameters.items() if p.is_constant}
