"""Per-process wiring of the core for tasks: store, teams, gateway, engine, chat ports."""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from orchestrator.engine import Engine
from orchestrator.llm.checks import config_warnings
from orchestrator.llm.gateway import LLMGateway
from orchestrator.ports import ChatPort
from orchestrator.settings import Settings, get_settings
from orchestrator.store.repository import Store
from orchestrator.teams import TeamsConfig, load_teams

log = logging.getLogger(__name__)

# Ports for platforms whose API a worker can reach on its own; resolved lazily by name so
# tasks/ holds no import of bot/ (the console registers its port in-process instead).
PORT_FACTORIES = {
    "slack": "bot.slack.port:port_from_settings",
    "discord": "bot.discord.port:port_from_settings",
}


@dataclass
class Runtime:
    settings: Settings
    store: Store
    config: TeamsConfig
    engine: Engine


_lock = threading.Lock()
_runtime: Runtime | None = None
_ports: dict[str, ChatPort] = {}
_port_failures: set[str] = set()


def build(settings: Settings | None = None, tools: Any = None) -> Runtime:
    settings = settings or get_settings()
    store = Store(settings.database_url, snapshot_every=settings.snapshot_every)
    config = load_teams(settings.teams_file)
    for warning in config_warnings(config):
        log.warning("teams file %s: %s", settings.teams_file, warning)
    gateway = LLMGateway(
        config.tiers, store, timeout_s=settings.model_timeout_s, retries=settings.model_retries
    )
    if tools is None:
        tools = _default_tools(config)
    engine = Engine(
        store,
        gateway,
        config,
        owner=f"{socket.gethostname()}:{os.getpid()}",
        lease_s=settings.step_lease_s,
        escalation_ttl_s=settings.escalation_ttl_s,
        tools=tools,
    )
    return Runtime(settings, store, config, engine)


def _default_tools(config: TeamsConfig) -> Any:
    """run_code and the teams file's MCP servers, connected now (worker start); a server
    that cannot be reached is logged and its tools report the error when called."""
    from orchestrator.tools import toolbox_from_env

    return toolbox_from_env(config=config)


_with_tools = True


def without_tools() -> None:
    """This process never runs a step (beat): its runtime connects no MCP server."""
    global _with_tools
    _with_tools = False


def get() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build() if _with_tools else build(tools=_NoTools())
        return _runtime


class _NoTools:
    """The tool box of a process that runs no steps."""

    def specs(self, names: list[str]) -> list[dict[str, Any]]:
        return []

    def info(self, name: str) -> None:
        return None

    def notes(self, names: list[str]) -> list[str]:
        return []

    def execute(self, name: str, arguments: str) -> str:
        return '{"error": "this process runs no tools"}'


def install(runtime: Runtime) -> None:
    """Use an explicitly built runtime (the in-process mode and tests)."""
    global _runtime
    with _lock:
        _runtime = runtime


def register_port(platform: str, port: ChatPort) -> None:
    _ports[platform] = port


def port_for(platform: str) -> ChatPort | None:
    if platform in _ports:
        return _ports[platform]
    target = PORT_FACTORIES.get(platform)
    if target is None or platform in _port_failures:
        return None
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
        port = factory()
    except Exception as exc:  # not configured in this process: someone else delivers
        log.info("no %s chat port in this process: %s", platform, exc)
        _port_failures.add(platform)
        return None
    if port is None:
        _port_failures.add(platform)
        return None
    _ports[platform] = port
    return port
