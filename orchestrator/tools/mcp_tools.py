"""The MCP servers of a teams file as one tool source: specs, policies, notes and calls.

Servers are connected when the worker process starts; one that cannot be reached is logged
in one line and the process starts anyway. Its explicitly named tools (`server.tool`) stay
offered with a permissive schema, calling one retries the connection and returns the error
if the server is still down, and `notes` tells the model which tools are unavailable and why.
Nothing here blocks the caller's event loop: specs, info and notes read the last listing.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mcp.types as mt

from orchestrator.tools import mcp_results
from orchestrator.tools.mcp_client import McpConnection, Mode, Snapshot
from orchestrator.tools.mcp_config import McpServer, parse_tool_ref
from orchestrator.tools.mcp_loop import McpLoop, shared_loop
from orchestrator.tools.mcp_specs import (
    function_spec,
    label,
    name_prefix,
    placeholder_spec,
    provider_name,
)

if TYPE_CHECKING:
    from orchestrator.nodes.context import ToolInfo

log = logging.getLogger(__name__)


def _read_only_hint(tool: mt.Tool | None) -> bool | None:
    if tool is None or tool.annotations is None:
        return None
    return tool.annotations.read_only_hint


class McpTools:
    """Every configured MCP server behind the ToolBox methods."""

    def __init__(
        self,
        servers: Mapping[str, McpServer],
        named: Iterable[str] = (),
        *,
        loop: Callable[[], McpLoop] = shared_loop,
        mode: Mode = "auto",
        environ: dict[str, str] | None = None,
    ) -> None:
        self.servers = dict(servers)
        self._mode, self._environ, self._pid = mode, environ, os.getpid()
        self._loop = loop() if self.servers else None
        self._connections = {
            name: McpConnection(name, cfg, self._loop, mode=mode, environ=environ)
            for name, cfg in self.servers.items()
            if self._loop is not None
        }
        # Tools the teams file names one by one: offered even while their server is down.
        self._named: dict[str, tuple[str, str]] = {}
        for ref in named:
            parsed = parse_tool_ref(ref)
            if parsed and parsed[1] != "*" and parsed[0] in self.servers:
                self._named[provider_name(*parsed)] = parsed

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, names: Iterable[str] | None = None) -> dict[str, str | None]:
        """Connect the given servers (all by default) in parallel and wait for each, up to
        its connect timeout; the reason per server that failed (None when it is up)."""
        self._after_fork()
        wanted = [n for n in (self.servers if names is None else names) if n in self._connections]
        if not wanted or self._loop is None:
            return {}
        futures = {name: self._loop.spawn(self._connections[name].aconnect()) for name in wanted}
        budget = max(self.servers[n].connect_timeout_s for n in wanted) + 15
        results: dict[str, str | None] = {}
        for name, future in futures.items():
            try:
                results[name] = future.result(budget)
            except Exception as exc:  # the bound above elapsed: report, do not hang start-up
                results[name] = f"no answer in time ({type(exc).__name__})"
        for name, error in results.items():
            if error is None:
                log.info("MCP server %r is ready", name)
            else:
                log.error("MCP server %r is unavailable: %s", name, error)
        return results

    def close(self) -> None:
        """Close every connection, in parallel, within a bounded time."""
        if self._loop is None or not self._connections or self._pid != os.getpid():
            return

        async def close_all() -> None:
            await asyncio.gather(*(c.aclose() for c in self._connections.values()))

        try:
            self._loop.run(close_all(), 15)
        except (TimeoutError, RuntimeError) as exc:
            log.warning("MCP servers did not all close cleanly: %s", exc)

    def _after_fork(self) -> None:
        """A forked child (Celery's prefork pool) cannot use the parent's loop thread or
        its pipes: it gets a loop and connections of its own, connected on first use."""
        if self._pid == os.getpid() or self._loop is None:
            return
        self._pid = os.getpid()
        self._loop = shared_loop()
        self._connections = {
            name: McpConnection(
                name,
                cfg,
                self._loop,
                mode=self._mode,
                environ=self._environ,
                known_tools=self._connections[name].snapshot().tools,
            )
            for name, cfg in self.servers.items()
        }

    # --- lookups ------------------------------------------------------------------------

    def snapshot(self, server: str) -> Snapshot | None:
        self._after_fork()
        connection = self._connections.get(server)
        return connection.snapshot() if connection else None

    def _tool_info(self, server: str, tool: str, listed: mt.Tool | None) -> ToolInfo:
        # Imported here: the engine's context module loads litellm, which `teams validate
        # --connect` (and a worker stand-in in tests) should not pay for.
        from orchestrator.nodes.context import ToolInfo

        hint = _read_only_hint(listed)
        return ToolInfo(
            name=provider_name(server, tool),
            label=label(server, tool),
            server=server,
            policy=self.servers[server].policy_for(tool, hint),
            read_only=hint is True,
            available=listed is not None,
        )

    def resolve(self, name: str) -> tuple[str, str] | None:
        """(server, tool) for a name the model called; None when no such tool is known."""
        self._after_fork()
        if name in self._named:
            return self._named[name]
        for server, connection in self._connections.items():
            for tool in connection.snapshot().tools:
                if provider_name(server, tool) == name:
                    return server, tool
        return None

    def info(self, name: str) -> ToolInfo | None:
        found = self.resolve(name)
        if found is None:
            return None
        server, tool = found
        return self._tool_info(server, tool, self._connections[server].snapshot().tools.get(tool))

    # --- what the model is offered ---------------------------------------------------------

    def specs(self, names: list[str]) -> list[dict[str, Any]]:
        self._after_fork()
        out: list[dict[str, Any]] = []
        seen: set[str] = set()

        def offer(spec: dict[str, Any]) -> None:
            name = spec["function"]["name"]
            if name not in seen:
                seen.add(name)
                out.append(spec)

        for ref in names:
            parsed = parse_tool_ref(ref)
            if parsed is None or parsed[0] not in self._connections:
                continue
            server, wanted = parsed
            connection = self._connections[server]
            snap = connection.snapshot()
            if not snap.connected:
                connection.poke()
            listed = list(snap.tools.values()) if wanted == "*" else []
            if wanted != "*":
                tool = snap.tools.get(wanted)
                if tool is not None:
                    listed = [tool]
                elif not snap.connected:
                    if self.servers[server].policy_for(wanted, None) != "deny":
                        offer(placeholder_spec(server, wanted, snap.error or "not connected"))
                    continue
            for tool in listed:
                info = self._tool_info(server, tool.name, tool)
                if info.policy == "deny":
                    continue
                offer(function_spec(info.name, _description(tool, server), tool.input_schema))
        return out

    def notes(self, names: list[str]) -> list[str]:
        self._after_fork()
        lines: list[str] = []
        reported: set[str] = set()
        for ref in names:
            parsed = parse_tool_ref(ref)
            if parsed is None:
                continue
            server, wanted = parsed
            connection = self._connections.get(server)
            if connection is None:
                if server not in reported:
                    reported.add(server)
                    lines.append(f"MCP server {server!r} is not configured in the teams file.")
                continue
            snap = connection.snapshot()
            if not snap.connected:
                connection.poke()
                if server not in reported:
                    reported.add(server)
                    lines.append(f"Tools of MCP server {server!r} are unavailable: {snap.error}")
            elif wanted != "*" and wanted not in snap.tools:
                lines.append(f"MCP server {server!r} has no tool {wanted!r}.")
        return lines

    # --- calls ----------------------------------------------------------------------------

    def execute(self, name: str, arguments: str) -> str:
        found = self.resolve(name)
        if found is None and self._connect_down(name):
            found = self.resolve(name)  # a server that was down may list it now
        if found is None:
            return mcp_results.error(f"unknown tool {name!r}")
        server, tool = found
        info = self.info(name)
        if info is not None and info.policy == "deny":
            return mcp_results.error(f"{label(server, tool)} is denied by the teams file")
        try:
            args = json.loads(arguments) if arguments and arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return mcp_results.error(f"arguments are not valid JSON: {exc.msg}")
        if not isinstance(args, dict):
            return mcp_results.error("arguments must be a JSON object")
        return self._connections[server].call(tool, args)

    def _connect_down(self, name: str) -> bool:
        """Blocking: connect the servers that are down and whose tools' names start like
        `name`; whether there were any."""
        down = [
            c
            for server, c in self._connections.items()
            if name.startswith(name_prefix(server)) and not c.snapshot().connected
        ]
        if not down or self._loop is None:
            return False
        budget = max(c.config.connect_timeout_s for c in down) + 15

        async def connect_all() -> None:
            await asyncio.gather(*(c.aconnect() for c in down))

        with contextlib.suppress(TimeoutError):
            self._loop.run(connect_all(), budget)
        return True


def _description(tool: mt.Tool, server: str) -> str:
    text = tool.description or tool.title or tool.name
    return f"{text}\n(MCP server {server!r}, tool {tool.name!r})"


@dataclass
class ServerCheck:
    """What `teams validate --connect` found for one server."""

    name: str
    error: str | None
    tools: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "team/worker: server.tool" not listed


def check_servers(
    servers: Mapping[str, McpServer],
    named: Mapping[str, list[str]],
    *,
    mode: Mode = "auto",
    environ: dict[str, str] | None = None,
) -> list[ServerCheck]:
    """Connect to every server once, list its tools and close again.

    `named` maps "team/worker" to that worker's tool references, so a `server.tool` the
    server does not list is reported too.
    """
    tools = McpTools(servers, mode=mode, environ=environ)
    try:
        results = tools.start()
        checks = []
        for name in servers:
            snap = tools.snapshot(name)
            listed = sorted(snap.tools) if snap else []
            check = ServerCheck(name, results.get(name), listed)
            if check.error is None:
                for who, refs in named.items():
                    for ref in refs:
                        parsed = parse_tool_ref(ref)
                        if parsed and parsed[0] == name and parsed[1] not in ("*", *listed):
                            check.missing.append(f"{who}: {ref}")
            checks.append(check)
        return checks
    finally:
        tools.close()


def close_at_exit(tools: McpTools) -> None:
    """Close the servers' connections when the process exits, so stdio servers see their
    stdin close and end on their own rather than being orphaned mid-write."""
    atexit.register(tools.close)
