"""Teams as configuration: model tiers and supervisor-led teams, validated with pydantic.

A bad file must be reported as one line naming the file, the team and the field, because
operators edit it by hand and need to know exactly where to look.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.alerts import AlertsConfig
from orchestrator.tools.mcp_config import McpServer, parse_tool_ref

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Strict):
    """A litellm model string plus call parameters and optional fallbacks.

    `protocol` says how the router and supervisor are asked for decisions: native tool
    calls, a JSON-schema response format, or JSON in plain text; `auto` asks litellm what
    the model supports. Prices, when given, replace litellm's map for this tier's models
    (a model with no price anywhere makes dollar limits meaningless, so it is warned about).
    """

    model: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    fallbacks: list[str] = Field(default_factory=list)
    api_base: str | None = None
    protocol: Literal["auto", "tools", "json", "text"] = "auto"
    input_cost_per_token: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    output_cost_per_token: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_tokens_cap: int | None = Field(default=None, ge=16, le=1_000_000)


class Supervisor(_Strict):
    tier: str
    prompt: str = Field(min_length=1)


class Worker(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    role: str = Field(min_length=1)
    tier: str
    tools: list[str] = Field(default_factory=list)

    @field_validator("tools")
    @classmethod
    def _tool_refs(cls, tools: list[str]) -> list[str]:
        for ref in tools:
            if ref not in BUILTIN_TOOLS and parse_tool_ref(ref) is None:
                raise ValueError(
                    f"unknown tool {ref!r} (use {', '.join(sorted(BUILTIN_TOOLS))}, "
                    "SERVER.TOOL or SERVER.* for an MCP server's tools)"
                )
        return tools


BUILTIN_TOOLS = frozenset({"run_code"})


class Limits(_Strict):
    """Guard and budget policy; Approve grants `grant_steps` / `grant_dollars` more."""

    max_steps: int = Field(default=20, ge=1, le=10_000)
    max_duration_s: float = Field(default=1800.0, gt=0)
    similarity_threshold: float = Field(default=0.95, gt=0, le=1)
    stuck_window: int = Field(default=3, ge=2)
    review_failures_before_shift: int = Field(default=3, ge=1)
    max_tokens_per_run: int | None = Field(default=None, ge=1)
    max_dollars_per_run: float | None = Field(default=None, gt=0)
    max_dollars_per_team_day: float | None = Field(default=None, gt=0)
    max_dollars_per_channel_day: float | None = Field(default=None, gt=0)
    grant_steps: int = Field(default=10, ge=1)
    grant_dollars: float = Field(default=2.0, gt=0)
    grant_tokens: int = Field(default=50_000, ge=1)
    summary_threshold_tokens: int = Field(default=2_000, ge=100)
    keep_last_messages: int = Field(default=6, ge=1)


class Approvers(_Strict):
    """Who may press Approve: platform user ids, Slack user groups, Discord roles."""

    users: list[str] = Field(default_factory=list)
    slack_usergroups: list[str] = Field(default_factory=list)
    discord_roles: list[str] = Field(default_factory=list)


class Team(_Strict):
    description: str = Field(min_length=1)
    supervisor: Supervisor
    workers: list[Worker] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    approvers: Approvers | None = None

    def worker(self, name: str) -> Worker:
        for worker in self.workers:
            if worker.name == name:
                return worker
        raise KeyError(name)


class TeamsConfig(_Strict):
    tiers: dict[str, Tier] = Field(min_length=1)
    approvers: Approvers = Field(default_factory=Approvers)
    teams: dict[str, Team] = Field(min_length=1)
    router_tier: str = "cheap"
    summary_tier: str = "cheap"
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)  # alert groups → investigations
    mcp_servers: dict[str, McpServer] = Field(default_factory=dict)

    def approvers_for(self, team: str) -> Approvers:
        chosen = self.teams[team].approvers if team in self.teams else None
        return chosen or self.approvers


class TeamsFileError(ValueError):
    """One-line, operator-facing description of what is wrong and where."""

    def __init__(self, path: Path | str, team: str | None, field: str, message: str) -> None:
        where = f"team {team!r}: " if team else ""
        super().__init__(f"{path}: {where}{field}: {message}")
        self.path, self.team, self.field = str(path), team, field


def _first_error(path: Path, error: ValidationError) -> TeamsFileError:
    detail = error.errors()[0]
    loc = [str(part) for part in detail["loc"]]
    team = None
    if len(loc) >= 2 and loc[0] == "teams":
        team, loc = loc[1], loc[2:]
    field = ".".join(loc) or "(top level)"
    message = detail["msg"].removeprefix("Value error, ")
    return TeamsFileError(path, team, field, message)


def _check_references(path: Path, config: TeamsConfig) -> None:
    for field in ("router_tier", "summary_tier"):
        tier = getattr(config, field)
        if tier not in config.tiers:
            raise TeamsFileError(path, None, field, f"unknown tier {tier!r}")
    for server in config.mcp_servers:
        if not _matches_name(server):
            raise TeamsFileError(
                path, None, f"mcp_servers.{server}", "use lower-case letters, digits, - or _"
            )
    for name, team in config.teams.items():
        if not _matches_name(name):
            raise TeamsFileError(path, name, "name", "use lower-case letters, digits, - or _")
        if team.supervisor.tier not in config.tiers:
            raise TeamsFileError(
                path, name, "supervisor.tier", f"unknown tier {team.supervisor.tier!r}"
            )
        seen: set[str] = set()
        for index, worker in enumerate(team.workers):
            if worker.tier not in config.tiers:
                raise TeamsFileError(
                    path, name, f"workers.{index}.tier", f"unknown tier {worker.tier!r}"
                )
            if worker.name in seen:
                raise TeamsFileError(
                    path, name, f"workers.{index}.name", f"duplicate worker {worker.name!r}"
                )
            seen.add(worker.name)
            for position, ref in enumerate(worker.tools):
                parsed = parse_tool_ref(ref)
                if parsed is not None and parsed[0] not in config.mcp_servers:
                    defined = ", ".join(sorted(config.mcp_servers)) or "none defined"
                    raise TeamsFileError(
                        path,
                        name,
                        f"workers.{index}.tools.{position}",
                        f"unknown MCP server {parsed[0]!r} in {ref!r} (mcp_servers: {defined})",
                    )
    for index, route in enumerate(config.alerts.routes):
        if route.team is not None and route.team not in config.teams:
            raise TeamsFileError(
                path, None, f"alerts.routes.{index}.team", f"unknown team {route.team!r}"
            )


def _matches_name(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None


def load_teams(path: Path | str) -> TeamsConfig:
    """Parse and validate a teams file, raising TeamsFileError with a one-line message."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TeamsFileError(path, None, "(file)", "no such file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        raise TeamsFileError(path, None, where, "not valid YAML") from None
    if not isinstance(raw, dict):
        raise TeamsFileError(
            path, None, "(top level)", "expected a mapping with 'tiers' and 'teams'"
        )
    try:
        config = TeamsConfig.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(path, exc) from None
    _check_references(path, config)
    return config
