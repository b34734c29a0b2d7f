"""MCP servers in the teams file: how to reach each one and how far to trust its tools.

Secrets never live in the file: a header or environment value is either plain text, a
`${VAR}` template or `{env: VAR, prefix: "Bearer "}`, and the variables are read only when
the connection is made. A missing variable makes that server unavailable with a one-line
reason that names the variable, never a value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Policy = Literal["allow", "ask", "deny"]

ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TEMPLATE = re.compile(r"\$\$|\$\{(" + ENV_NAME + r")\}|\$\{([^}]*)\}?")


class MissingVariable(LookupError):
    """A header or env value names an environment variable that is not set."""

    def __init__(self, variable: str, where: str) -> None:
        super().__init__(f"{where} needs ${variable}, which is not set")
        self.variable = variable


class EnvRef(BaseModel):
    """`{env: GITHUB_TOKEN, prefix: "Bearer "}`: the value of a variable, read at connect time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str = Field(pattern=f"^{ENV_NAME}$")
    prefix: str = ""


def _check_template(value: str) -> str:
    for match in _TEMPLATE.finditer(value):
        if match.group(0) != "$$" and match.group(1) is None:
            raise ValueError(
                f"bad variable reference {match.group(0)!r}: use ${{NAME}} (or $$ for a literal $)"
            )
    return value


Template = Annotated[str, Field(max_length=4096)]
Value = Template | EnvRef


def resolve(value: Value, where: str, environ: Mapping[str, str] | None = None) -> str:
    """The text a header or env value stands for now; raises MissingVariable naming the gap."""
    env = os.environ if environ is None else environ
    if isinstance(value, EnvRef):
        if value.env not in env:
            raise MissingVariable(value.env, where)
        return value.prefix + env[value.env]

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name not in env:
            raise MissingVariable(name, where)
        return env[name]

    return _TEMPLATE.sub(substitute, value)


class McpServer(BaseModel):
    """One MCP server: a command run over stdio, or a streamable-HTTP URL.

    `policy` is the server-wide default for its tools and `tools` sets single tools; both
    override the default read from the tool's MCP annotations (readOnlyHint → allow,
    anything else → ask).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str | None = Field(default=None, min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, Value] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    headers: dict[str, Value] = Field(default_factory=dict)
    policy: Policy | None = None
    tools: dict[str, Policy] = Field(default_factory=dict)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    connect_timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, Value]) -> dict[str, Value]:
        for name, value in env.items():
            if not re.fullmatch(ENV_NAME, name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if isinstance(value, str):
                _check_template(value)
        return env

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, Value]) -> dict[str, Value]:
        for name, value in headers.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            if isinstance(value, str):
                _check_template(value)
        return headers

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, tools: dict[str, Policy]) -> dict[str, Policy]:
        for name in tools:
            if not name or len(name) > 128 or re.search(r"\s", name):
                raise ValueError(f"{name!r} is not an MCP tool name")
        return tools

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either 'command' (a stdio server) or 'url' (streamable HTTP)")
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("'args', 'env' and 'cwd' are for stdio servers (with 'command')")
        if self.command is not None and self.headers:
            raise ValueError("'headers' are for HTTP servers (with 'url')")
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command is not None else "http"

    def where(self) -> str:
        """What the server is, for people: the command or the URL without credentials."""
        if self.command is not None:
            return " ".join([self.command, *self.args])
        return strip_userinfo(self.url or "")

    def policy_for(self, tool: str, read_only_hint: bool | None) -> Policy:
        """The tool's own setting, else the server's, else the default from its annotations."""
        if tool in self.tools:
            return self.tools[tool]
        if self.policy is not None:
            return self.policy
        return "allow" if read_only_hint is True else "ask"


def strip_userinfo(url: str) -> str:
    return re.sub(r"^(\w+://)[^/@]*@", r"\1", url)


def parse_tool_ref(ref: str) -> tuple[str, str] | None:
    """`server.tool` or `server.*` as (server, tool or "*"); None for anything else."""
    server, dot, tool = ref.partition(".")
    if not dot or not server or not tool or re.search(r"\s", ref) or len(tool) > 128:
        return None
    return server, tool


def referenced_servers(tool_refs: list[str]) -> list[str]:
    """Servers named by a worker's `tools:` list, in order of first mention."""
    seen: dict[str, None] = {}
    for ref in tool_refs:
        parsed = parse_tool_ref(ref)
        if parsed is not None:
            seen.setdefault(parsed[0], None)
    return list(seen)
