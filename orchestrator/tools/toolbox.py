"""The workers' tool box: tool specs for litellm and their sandboxed execution.

The sandbox is chosen lazily on the first tool call, so a worker that never runs code never
pings a Docker engine. Backend, image and limits are operator configuration only.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.nodes.context import ToolInfo
from orchestrator.telemetry.metrics import SANDBOX_RUNS
from orchestrator.tools import run_code
from sandbox.base import Limits, Sandbox
from sandbox.factory import select_sandbox

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


class SandboxToolBox:
    def __init__(self, select: Callable[[], Sandbox | None], limits: Limits) -> None:
        self._select = select
        self.limits = limits
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
        return [run_code.SCHEMA for name in names if name == "run_code"]

    def info(self, name: str) -> ToolInfo | None:
        if name != run_code.NAME:
            return None
        # Sandboxed code changes nothing outside its throw-away sandbox.
        return ToolInfo(run_code.NAME, run_code.NAME, None, "allow", read_only=True)

    def notes(self, names: list[str]) -> list[str]:
        return []

    def execute(self, name: str, arguments: str) -> str:
        if name != "run_code":
            return json.dumps({"error": f"unknown tool {name!r}"})
        try:
            box = self._box()
        except Exception as exc:  # misconfigured backend: tell the model, never run on the host
            return json.dumps({"error": f"code execution unavailable: {exc}"})
        return json.dumps(run_code.execute(arguments, box, self.limits, on_outcome=_count))


def toolbox_from_env(env: Mapping[str, str] | None = None) -> SandboxToolBox:
    env = dict(os.environ if env is None else env)
    return SandboxToolBox(lambda: select_sandbox(env), limits_from_env(env))
