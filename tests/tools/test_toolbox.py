"""The combined tool box the engine uses: run_code and the teams file's MCP servers, wired
in by the runtime at worker start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from orchestrator.nodes.context import ToolBox, ToolInfo
from orchestrator.teams import load_teams
from orchestrator.tools import WorkerToolBox, toolbox_from_env
from tests.support.drive import build
from tests.support.mcp_servers import stdio_server

ROOT = Path(__file__).resolve().parents[2]


def teams_with_servers(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    data["mcp_servers"] = {
        "notes": stdio_server(tmp_path / "notes.txt", tools={"fail": "deny"}),
        # defined but named by no worker: never started
        "spare": {"command": str(tmp_path / "not-installed")},
    }
    data["teams"]["research"]["workers"][0]["tools"] = ["notes.*", "run_code"]
    data["teams"]["research"]["workers"][1]["tools"] = ["notes.read_notes"]
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_box_offers_run_code_and_mcp_tools_behind_one_seam(tmp_path: Path) -> None:
    config = load_teams(teams_with_servers(tmp_path))
    box = toolbox_from_env({"SANDBOX_BACKEND": "bwrap"}, config=config)
    try:
        assert isinstance(box, WorkerToolBox)
        seam: ToolBox = box  # the engine's Protocol
        names = [s["function"]["name"] for s in seam.specs(["run_code", "notes.*"])]
        assert names[0] == "run_code"
        assert "notes__append_note" in names and "notes__fail" not in names
        assert [s["function"]["name"] for s in seam.specs(["notes.read_notes"])] == [
            "notes__read_notes"
        ]
        assert seam.info("run_code") == ToolInfo(
            name="run_code", label="run_code", server=None, policy="allow", read_only=True
        )
        assert seam.info("notes__append_note") == ToolInfo(
            name="notes__append_note",
            label="notes.append_note",
            server="notes",
            policy="ask",
            read_only=False,
        )
        assert seam.info("nothing") is None
        assert seam.notes(["run_code", "notes.*"]) == []
        out = json.loads(seam.execute("notes__append_note", json.dumps({"text": "from the box"})))
        assert out["content"] == "appended 13 bytes"
        assert (tmp_path / "notes.txt").read_text() == "from the box\n"
        assert json.loads(seam.execute("nothing", "{}")) == {"error": "unknown tool 'nothing'"}
        assert box._chosen is False  # no sandbox was looked for: no code ran
        # the unused server was never started
        assert box.mcp is not None
        spare = box.mcp.snapshot("spare")
        assert spare is not None and spare.error == "not connected yet"
    finally:
        box.close()


def test_without_servers_the_box_is_run_code_only() -> None:
    box = toolbox_from_env({}, config=load_teams(ROOT / "teams" / "default.yaml"))
    assert box.mcp is None
    assert [s["function"]["name"] for s in box.specs(["run_code"])] == ["run_code"]
    assert box.notes(["run_code"]) == []
    assert json.loads(box.execute("x__y", "{}")) == {"error": "unknown tool 'x__y'"}


def test_the_runtime_connects_the_servers_at_worker_start(
    tmp_path: Path, sqlite_url: str, caplog: Any
) -> None:
    rt = build(sqlite_url, teams_with_servers(tmp_path))
    tools = rt.engine.services.tools
    try:
        assert isinstance(tools, WorkerToolBox) and tools.mcp is not None
        snap = tools.mcp.snapshot("notes")
        assert snap is not None and snap.connected and "read_notes" in snap.tools
    finally:
        if isinstance(tools, WorkerToolBox):
            tools.close()


def test_a_server_down_at_worker_start_is_logged_and_the_worker_starts(
    tmp_path: Path, sqlite_url: str, caplog: Any
) -> None:
    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    data["mcp_servers"] = {"tickets": {"command": str(tmp_path / "not-installed")}}
    data["teams"]["research"]["workers"][0]["tools"] = ["tickets.search"]
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(data))
    rt = build(sqlite_url, path)
    tools = rt.engine.services.tools
    assert isinstance(tools, WorkerToolBox)
    try:
        reason = f"the server exited: command not found: {tmp_path}/not-installed"
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert f"MCP server 'tickets' is unavailable: {reason}" in errors
        assert tools.notes(["tickets.search"]) == [
            f"Tools of MCP server 'tickets' are unavailable: {reason}"
        ]
        assert [s["function"]["name"] for s in tools.specs(["tickets.search"])] == [
            "tickets__search"
        ]
        assert json.loads(tools.execute("tickets__search", '{"q": "outage"}')) == {
            "error": f"MCP server 'tickets' is unavailable: {reason}"
        }
    finally:
        tools.close()


def test_the_example_ops_team_loads() -> None:
    config = load_teams(ROOT / "teams" / "examples" / "ops.yaml")
    assert "ops" in config.teams
    assert config.mcp_servers
    refs: list[str] = [ref for w in config.teams["ops"].workers for ref in w.tools]
    assert any("." in ref for ref in refs)
