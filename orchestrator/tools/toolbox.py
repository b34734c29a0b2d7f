"""The workers' tool box: sandboxed code and MCP servers' tools behind the ToolBox seam.

The sandbox is chosen lazily on the first tool call, so a worker that never runs code never
pings a Docker engine. Backend, image and limits are operator configuration only. MCP
servers come from the teams file and are connected when the box is built (worker start).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.nodes.context import ToolInfo
from orchestrator.telemetry.metrics import SANDBOX_RUNS
from orchestrator.tools import run_code
from sandbox.base import Limits, Sandbox
from sandbox.factory import select_sandbox

if TYPE_CHECKING:
    from orchestrator.teams import TeamsConfig
    from orchestrator.tools.mcp_tools import McpTools

RUN_CODE = ToolInfo(
    name=run_code.NAME, label=run_code.NAME, server=None, policy="allow", read_only=True
)

MIB = 1024 * 1024


def limits_from_env(env: Mapping[str, str]) -> Limits:
    defaults = Limits()
    return Limits(
        wall_time_s=float(env.get("SANDBOX_TIME_LIMIT_S", defaults.wall_time_s)),
        memory_bytes=int(float(env.get("SANDBOX_MEMORY_MB", defaults.memory_bytes // MIB)) * MIB),
        cpus=float(env.get("SANDBOX_CPUS", defaults.cpus)),
        pids=int(env.get("SANDBOX_PIDS", defaults.pids)),
        output_bytes=int(env.get("SANDBOX_OUTPUT_BYTES", defaults.output_bytes)),
    )


def _count(backend: str, outcome: str) -> None:
    SANDBOX_RUNS.labels(backend=backend, outcome=outcome).inc()


class WorkerToolBox:
    """run_code (always allowed: it runs in the sandbox) plus the MCP servers' tools."""

    def __init__(
        self,
        select: Callable[[], Sandbox | None],
        limits: Limits,
        mcp: McpTools | None = None,
    ) -> None:
        self._select = select
        self.limits = limits
        self.mcp = mcp
        self._sandbox: Sandbox | None = None
        self._chosen = False
        self._lock = threading.Lock()

    def _box(self) -> Sandbox | None:
        with self._lock:
            if not self._chosen:
                self._sandbox = self._select()
                self._chosen = True
            return self._sandbox

    def specs(self, names: list[str]) -> list[dict[str, Any]]:
        specs = [run_code.SCHEMA] if run_code.NAME in names else []
        if self.mcp is not None:
            specs += self.mcp.specs(names)
        return specs

    def info(self, name: str) -> ToolInfo | None:
        if name == run_code.NAME:
            return RUN_CODE
        return self.mcp.info(name) if self.mcp is not None else None

    def notes(self, names: list[str]) -> list[str]:
        return self.mcp.notes(names) if self.mcp is not None else []

    def execute(self, name: str, arguments: str) -> str:
        if name != run_code.NAME:
            if self.mcp is not None:
                return self.mcp.execute(name, arguments)
            return json.dumps({"error": f"unknown tool {name!r}"})
        try:
            box = self._box()
        except Exception as exc:  # misconfigured backend: tell the model, never run on the host
            return json.dumps({"error": f"code execution unavailable: {exc}"})
        return json.dumps(run_code.execute(arguments, box, self.limits, on_outcome=_count))

    def close(self) -> None:
        if self.mcp is not None:
            self.mcp.close()


def mcp_tools_for(config: TeamsConfig, *, connect: bool = True) -> McpTools | None:
    """The MCP tool source for a teams file, with the servers its workers use connected
    (a server that fails is logged; the process starts anyway). None without servers."""
    if not config.mcp_servers:
        return None
    from orchestrator.tools.mcp_tools import McpTools, close_at_exit

    refs = [ref for team in config.teams.values() for w in team.workers for ref in w.tools]
    tools = McpTools(config.mcp_servers, refs)
    close_at_exit(tools)
    if connect:
        used = {ref.partition(".")[0] for ref in refs if "." in ref}
        tools.start([name for name in config.mcp_servers if name in used])
    return tools


def toolbox_from_env(
    env: Mapping[str, str] | None = None, config: TeamsConfig | None = None
) -> WorkerToolBox:
    """The box a worker process uses: sandbox settings from `env`, MCP servers from `config`."""
    env = dict(os.environ if env is None else env)
    mcp = mcp_tools_for(config) if config is not None else None
    return WorkerToolBox(lambda: select_sandbox(env), limits_from_env(env), mcp)
