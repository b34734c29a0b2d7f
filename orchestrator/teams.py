"""Teams as configuration: model tiers and supervisor-led teams, validated with pydantic.

A bad file must be reported as one line naming the file, the team and the field, because
operators edit it by hand and need to know exactly where to look.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.alerts import AlertsConfig
from orchestrator.tools.mcp_config import McpServer, parse_tool_ref

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"
MAX_DOLLARS = 1_000_000.0


class _Strict(BaseModel):
    # allow_inf_nan=False: "inf" or "1e400" written as a string must not become a budget.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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

    # Upper bounds keep every figure inside its database column (extra_steps is a 32-bit
    # integer that each Approve adds grant_steps to) and far above any sane policy.
    max_steps: int = Field(default=20, ge=1, le=10_000)
    max_duration_s: float = Field(default=1800.0, gt=0, le=30 * 86_400)
    similarity_threshold: float = Field(default=0.95, gt=0, le=1)
    stuck_window: int = Field(default=3, ge=2, le=1_000)
    review_failures_before_shift: int = Field(default=3, ge=1, le=1_000)
    max_tokens_per_run: int | None = Field(default=None, ge=1, le=10**12)
    max_dollars_per_run: float | None = Field(default=None, gt=0, le=MAX_DOLLARS)
    max_dollars_per_team_day: float | None = Field(default=None, gt=0, le=MAX_DOLLARS)
    max_dollars_per_channel_day: float | None = Field(default=None, gt=0, le=MAX_DOLLARS)
    grant_steps: int = Field(default=10, ge=1, le=10_000)
    grant_dollars: float = Field(default=2.0, gt=0, le=MAX_DOLLARS)
    grant_tokens: int = Field(default=50_000, ge=1, le=10**9)
    summary_threshold_tokens: int = Field(default=2_000, ge=100, le=10**8)
    keep_last_messages: int = Field(default=6, ge=1, le=10_000)


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


# --- reading the file: every way a hand-edited file can be wrong gets one line ----------

MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 32  # the deepest real teams file nests 6 levels
MAX_VALUES = 100_000  # after anchors and aliases are expanded
LARGEST_INT = 2**63 - 1  # the widest integer column
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """A problem found while reading, with the line it is on (1-based) when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping.

    Plain YAML keeps the last of two `research:` teams or `cheap:` tiers and drops the other
    without a word; an operator must hear about it instead. Keys brought in by a merge
    (`<<: *base`) may still be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # an unhashable key: SafeConstructor reports it
                if duplicate:
                    raise _Refused(
                        f"duplicate key {key!r} (the second would silently replace the first)",
                        key_node.start_mark.line + 1,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_text(path: Path) -> str:
    """The file as text; a directory, FIFO or device is refused without blocking on it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _Refused("no such file") from None
    except PermissionError:
        raise _Refused("permission denied") from None
    except OSError as exc:
        raise _Refused(f"cannot open it: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise _Refused("is a directory, not a teams file")
        if not stat.S_ISREG(info.st_mode):
            raise _Refused("is not a regular file (a FIFO, socket or device)")
        if info.st_size > MAX_FILE_BYTES:
            raise _Refused(f"is {info.st_size:,} bytes; a teams file may be {MAX_FILE_BYTES:,}")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _Refused(f"cannot read it: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise _Refused(f"is larger than {MAX_FILE_BYTES:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _Refused(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8", line
        ) from None
    return text.removeprefix("\ufeff")


def _check_nesting(text: str) -> None:
    """Refuse absurd nesting from the event stream, before anything recurses over it."""
    depth = 0
    for event in yaml.parse(text, Loader=UniqueKeyLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", _line(event))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _line(item: yaml.Event | yaml.Node) -> int | None:
    return item.start_mark.line + 1 if item.start_mark is not None else None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_values(loader: UniqueKeyLoader, root: yaml.Node) -> None:
    """Count values as they would be after aliases expand (a few lines of anchors can stand
    for a billion values), refuse an alias that contains itself, and refuse numbers no
    setting can hold: infinite, NaN, or wider than any database column."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_VALUES:
                raise _Refused(f"expands to more than {MAX_VALUES:,} values", _line(node))
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise _Refused("an alias refers to a value that contains it", _line(node))
        if isinstance(node, yaml.ScalarNode):
            _check_number(loader, node)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _check_number(loader: UniqueKeyLoader, node: yaml.ScalarNode) -> None:
    if node.tag == "tag:yaml.org,2002:float":
        value = loader.construct_yaml_float(node)
        if not math.isfinite(value):
            raise _Refused(f"{node.value!r} is not a finite number", _line(node))
    elif node.tag == "tag:yaml.org,2002:int" and (
        len(node.value) > 64 or abs(loader.construct_yaml_int(node)) > LARGEST_INT
    ):
        raise _Refused(f"{node.value[:24]!r} is too large a number", _line(node))


def _parse(text: str) -> Any:
    _check_nesting(text)
    loader = UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_values(loader, root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def load_teams(path: Path | str) -> TeamsConfig:
    """Parse and validate a teams file, raising TeamsFileError with a one-line message."""
    path = Path(path)
    try:
        raw = _parse(_read_text(path))
    except _Refused as exc:
        where = f"line {exc.line}" if exc.line else "(file)"
        raise TeamsFileError(path, None, where, str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None)
        raise TeamsFileError(path, None, where, f"not valid YAML ({problem or 'syntax'})") from None
    except RecursionError:  # belt and braces: nesting is checked before anything recurses
        raise TeamsFileError(path, None, "(file)", "nested too deeply") from None
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
