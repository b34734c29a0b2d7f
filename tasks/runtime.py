"""Per-process wiring of the core for tasks: store, teams, gateway, engine, chat ports."""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
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
# How to tell one person privately that a start failed after the platform was acked
# (Slack: the slash command's response_url, or an ephemeral message).
REPLIERS = {"slack": "bot.slack.replies:reply"}
# A port whose factory raised (a failed login, the platform down) is tried again after this
# many seconds, doubling up to PORT_RETRY_MAX_S; one that returned None is not configured.
PORT_RETRY_S = 5.0
PORT_RETRY_MAX_S = 300.0


@dataclass
class Runtime:
    settings: Settings
    store: Store
    config: TeamsConfig
    engine: Engine


_lock = threading.Lock()
_runtime: Runtime | None = None
_ports: dict[str, ChatPort] = {}
_port_failures: set[str] = set()  # not configured here: never asked again
_port_retry: dict[str, tuple[float, float]] = {}  # platform -> (next attempt, current wait)
_port_locks: dict[str, threading.Lock] = {}


def build(settings: Settings | None = None, tools: Any = None) -> Runtime:
    settings = settings or get_settings()
    store = Store(settings.database_url, snapshot_every=settings.snapshot_every)
    config = load_teams(settings.teams_file)
    for warning in config_warnings(config):
        log.warning("teams file %s: %s", settings.teams_file, warning)
    gateway = LLMGateway(
        config.tiers,
        store,
        timeout_s=settings.model_timeout_s,
        retries=settings.model_retries,
        direct=settings.llm_direct,
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


def may_deliver(platform: str) -> bool:
    """Whether this process has, or may make, a port for `platform` (no I/O): a step of a
    run on a platform without one pays no thread hop for delivery."""
    return platform in _ports or (platform in PORT_FACTORIES and platform not in _port_failures)


def port_for(platform: str) -> ChatPort | None:
    """This process's port for `platform`, made once, by one thread at a time.

    Pool threads ask concurrently; without the lock two of them would each log in (two
    sessions, one leaked). A factory that raised is retried after a growing wait instead
    of never again, so a worker whose first login met an outage recovers by itself.
    """
    port = _ports.get(platform)
    if port is not None:
        return port
    target = PORT_FACTORIES.get(platform)
    if target is None or platform in _port_failures:
        return None
    with _lock:
        lock = _port_locks.setdefault(platform, threading.Lock())
    with lock:
        port = _ports.get(platform)
        if port is not None:
            return port
        if platform in _port_failures:
            return None
        next_try, wait = _port_retry.get(platform, (0.0, 0.0))
        if time.monotonic() < next_try:
            return None
        module_name, _, attr = target.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
            port = factory()
        except Exception as exc:  # an outage or a bad token: try again later, say when
            wait = min(max(wait * 2, PORT_RETRY_S), PORT_RETRY_MAX_S)
            _port_retry[platform] = (time.monotonic() + wait, wait)
            log.warning(
                "no %s chat port yet (%s: %s); trying again in %.0fs",
                platform,
                type(exc).__name__,
                exc,
                wait,
            )
            return None
        _port_retry.pop(platform, None)
        if port is None:  # not configured in this process: someone else delivers
            log.info("no %s chat port in this process (not configured)", platform)
            _port_failures.add(platform)
            return None
        _ports[platform] = port
        return port


def tell(platform: str, reply_to: dict[str, Any] | None, text: str) -> bool:
    """Say `text` privately to whoever `reply_to` names; False when nobody could be told."""
    target = REPLIERS.get(platform)
    if not reply_to or target is None:
        log.warning("cannot tell the %s user (no reply address): %s", platform, text)
        return False
    module_name, _, attr = target.partition(":")
    try:
        getattr(importlib.import_module(module_name), attr)(reply_to, text)
    except Exception as exc:
        log.warning(
            "could not tell the %s user %r: %s: %s", platform, text, type(exc).__name__, exc
        )
        return False
    return True
