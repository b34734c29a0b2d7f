"""`switchboard teams validate --connect` as an operator runs it: a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.mcp_servers import free_port, stdio_server

ROOT = Path(__file__).resolve().parents[2]


def teams_file(tmp_path: Path, servers: dict[str, Any], tools: list[str]) -> Path:
    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    data["mcp_servers"] = servers
    data["teams"]["research"]["workers"][0]["tools"] = tools
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def validate(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "teams", "validate", str(path), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={**os.environ, "SWITCHBOARD_TEAMS_FILE": str(path)},
    )


def test_reachable_servers_are_listed_with_their_tools(tmp_path: Path) -> None:
    path = teams_file(
        tmp_path,
        {"notes": stdio_server(tmp_path / "n.txt")},
        ["notes.read_notes", "notes.*"],
    )
    result = validate(path, "--connect")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if "mcp server" in x)
    assert line.startswith(f"{path}: mcp server 'notes': ok (12 tools: add_tool, append_note,")


def test_an_unreachable_server_exits_2_naming_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    path = teams_file(
        tmp_path,
        {"notes": stdio_server(tmp_path / "n.txt"), "tickets": {"url": url}},
        ["notes.*", "tickets.*"],
    )
    assert validate(path).returncode == 0  # without --connect nothing is started
    result = validate(path, "--connect")
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert errors == [
        f"switchboard: {path}: mcp_servers.tickets: unavailable: cannot connect to {url}: "
        "All connection attempts failed"
    ]
    assert "mcp server 'notes': ok" in result.stdout


def test_a_tool_the_server_does_not_list_exits_2_naming_the_worker(tmp_path: Path) -> None:
    path = teams_file(tmp_path, {"notes": stdio_server(tmp_path / "n.txt")}, ["notes.erase"])
    result = validate(path, "--connect")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"switchboard: {path}: team 'research' worker 'researcher': notes.erase: "
        "MCP server 'notes' lists no such tool"
    )


def test_without_servers_connect_says_so(tmp_path: Path) -> None:
    result = validate(ROOT / "teams" / "default.yaml", "--connect")
    assert result.returncode == 0, result.stderr
    assert "no MCP servers to connect to" in result.stdout
