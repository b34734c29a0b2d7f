"""Fixtures for the MCP tool tests: real servers (tests/support/mcp_servers.py) over stdio
and streamable HTTP, and an McpTools connected to them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.tools.mcp_config import McpServer
from orchestrator.tools.mcp_tools import McpTools
from tests.support.mcp_servers import HttpServer


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[Callable[..., HttpServer]]:
    """Start HTTP servers for a test (`http_server(notes)`); all stopped afterwards."""
    started: list[HttpServer] = []

    def start(notes: Path | None = None, port: int | None = None, token: str = "") -> HttpServer:
        server = HttpServer(notes or tmp_path / "http-notes.txt", port, token)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def mcp_tools() -> Iterator[Callable[..., McpTools]]:
    """Build McpTools from plain dicts (as in a teams file); all closed afterwards."""
    made: list[McpTools] = []

    def build(servers: dict[str, dict[str, Any]], named: list[str] = (), **kw: Any) -> McpTools:  # type: ignore[assignment]
        tools = McpTools({k: McpServer(**v) for k, v in servers.items()}, named, **kw)
        made.append(tools)
        return tools

    yield build
    for tools in made:
        tools.close()


def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.1)
