"""MCP servers that are down, go away, come back, or must not see the worker's secrets."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.mcp_servers import THIS_FILE, free_port, stdio_server
from tests.tools.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
WORKER_SECRETS = {
    "OPENAI_API_KEY": "sk-test-not-for-servers",
    "ANTHROPIC_API_KEY": "sk-ant-not-for-servers",
    "SLACK_BOT_TOKEN": "xoxb-not-for-servers",
    "DISCORD_TOKEN": "discord-not-for-servers",
    "DATABASE_URL": "postgresql+psycopg://u:secret@db/x",
}


def call(tools: Any, name: str, **arguments: Any) -> dict[str, Any]:
    return json.loads(tools.execute(name, json.dumps(arguments)))


def test_a_stdio_server_sees_only_a_minimal_environment(
    tmp_path: Path, mcp_tools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in WORKER_SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NOTES_TOKEN", "tok-for-the-server")
    tools = mcp_tools(
        {
            "notes": stdio_server(
                tmp_path / "n.txt",
                env={
                    "MODE": "plain",
                    "TOKEN": "${NOTES_TOKEN}",
                    "AUTH": {"env": "NOTES_TOKEN", "prefix": "Bearer "},
                },
            )
        }
    )
    assert tools.start() == {"notes": None}
    env = call(tools, "notes__show_env")["structured_content"]
    for key in WORKER_SECRETS:
        assert key not in env
    assert not any("not-for-servers" in value for value in env.values())
    assert (env["MODE"], env["TOKEN"], env["AUTH"]) == (
        "plain",
        "tok-for-the-server",
        "Bearer tok-for-the-server",
    )
    # The SDK's safe defaults, what `env` names, and LC_CTYPE, which Python itself sets in
    # the server process when the locale is C (PEP 538).
    allowed = {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "MODE", "TOKEN", "AUTH"}
    assert set(env) - {"LC_CTYPE"} <= allowed
    assert env["PATH"] == os.environ["PATH"]


def test_a_stdio_server_runs_in_a_session_of_its_own(tmp_path: Path, mcp_tools: Any) -> None:
    tools = mcp_tools({"notes": stdio_server(tmp_path / "n.txt", tools={"show_process": "allow"})})
    tools.start()
    process = call(tools, "notes__show_process")["structured_content"]
    assert process["sid"] != os.getsid(0)
    assert process["pgid"] != os.getpgid(0)


WORKER = """
import json, sys
from orchestrator.tools.mcp_config import McpServer
from orchestrator.tools.mcp_tools import McpTools
sys.path.insert(0, {root!r})
from tests.support.mcp_servers import stdio_server
tools = McpTools({{"notes": McpServer(**stdio_server({notes!r}))}})
assert tools.start() == {{"notes": None}}
pid = json.loads(tools.execute("notes__show_process", "{{}}"))["structured_content"]["pid"]
print(pid, flush=True)
tools.execute("notes__slow_append", json.dumps({{"text": "finished", "seconds": 2}}))
print("returned", flush=True)
"""


def test_a_killed_worker_does_not_kill_the_call_in_flight(tmp_path: Path) -> None:
    """kill -9 of the worker's whole process group while a destructive call runs: the
    server is in its own session, and the keeper holds its stdin open until it answers, so
    the append happens exactly once and the server then exits."""
    notes = tmp_path / "notes.txt"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER.format(root=str(ROOT), notes=str(notes))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        assert worker.stdout is not None
        server_pid = int(worker.stdout.readline())
        started = Path(f"{notes}.started")
        eventually(started.exists, what="the call to reach the server")
        assert not notes.exists()
        os.killpg(worker.pid, signal.SIGKILL)
        assert worker.wait(10) == -signal.SIGKILL
        assert worker.stdout.read() == ""  # the worker never saw the result
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    eventually(lambda: notes.exists(), what="the append")
    calls = (tmp_path / "notes.txt.calls").read_text().splitlines()
    assert [json.loads(line)["text"] for line in calls] == ["finished"]
    assert notes.read_text() == "finished\n"
    eventually(lambda: not _alive(server_pid), what="the server to exit after the call")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_header_values_come_from_the_environment_and_are_not_logged(
    tmp_path: Path,
    mcp_tools: Any,
    http_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TEST_MCP_TOKEN", "tok-1234567890")
    monkeypatch.setenv("TEAM_NAME", "ops")
    server = http_server(tmp_path / "n.txt")
    headers = {
        "Authorization": {"env": "TEST_MCP_TOKEN", "prefix": "Bearer "},
        "X-Team": "team-${TEAM_NAME}",
    }
    missing = {"Authorization": {"env": "TEST_MCP_UNSET", "prefix": "Bearer "}}
    caplog.set_level(logging.DEBUG)
    tools = mcp_tools(
        {"web": server.entry(headers=headers), "nokey": server.entry(headers=missing)}
    )
    assert tools.start() == {
        "web": None,
        "nokey": "header Authorization needs $TEST_MCP_UNSET, which is not set",
    }
    seen = call(tools, "web__show_headers")["structured_content"]
    assert seen["authorization"] == "Bearer tok-1234567890"
    assert seen["x-team"] == "team-ops"
    assert "tok-1234567890" not in caplog.text


def test_a_rejected_token_is_named_as_such(
    tmp_path: Path, mcp_tools: Any, http_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOD_TOKEN", "tok-right-one")
    monkeypatch.setenv("BAD_TOKEN", "tok-wrong-one")
    server = http_server(tmp_path / "n.txt", token="tok-right-one")

    def auth(variable: str) -> dict[str, Any]:
        return {"Authorization": {"env": variable, "prefix": "Bearer "}}

    tools = mcp_tools(
        {
            "good": server.entry(headers=auth("GOOD_TOKEN")),
            "bad": server.entry(headers=auth("BAD_TOKEN")),
        }
    )
    assert tools.start() == {
        "good": None,
        "bad": f"HTTP 401 from {server.url} (check the credentials in its headers)",
    }
    assert call(tools, "good__read_notes")["structured_content"] == {"result": ""}


def test_an_unreachable_server_is_notes_and_error_results_until_it_comes_back(
    tmp_path: Path, mcp_tools: Any, http_server: Any
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    tools = mcp_tools({"web": {"url": url}}, ["web.read_notes", "web.append_note"])
    reason = tools.start()["web"]
    assert reason is not None and reason.startswith(f"cannot connect to {url}")
    assert tools.notes(["web.read_notes", "web.*"]) == [
        f"Tools of MCP server 'web' are unavailable: {reason}"
    ]
    # explicitly named tools stay offered, with a permissive schema; `web.*` adds nothing
    specs = tools.specs(["web.*", "web.read_notes"])
    assert [s["function"]["name"] for s in specs] == ["web__read_notes"]
    assert specs[0]["function"]["parameters"]["additionalProperties"] is True
    info = tools.info("web__read_notes")
    assert info is not None and (info.policy, info.read_only) == ("ask", False)
    assert call(tools, "web__read_notes") == {"error": f"MCP server 'web' is unavailable: {reason}"}
    # the server comes up: the next call connects and runs
    http_server(tmp_path / "n.txt", port=port)
    assert call(tools, "web__append_note", text="back") == {
        "content": "appended 5 bytes",
        "structured_content": {"result": "appended 5 bytes"},
    }
    assert tools.notes(["web.*"]) == []
    assert len(tools.specs(["web.*"])) > 10
    assert tools.info("web__read_notes").policy == "allow"  # type: ignore[union-attr]


def test_an_http_server_that_goes_away_and_comes_back(
    tmp_path: Path, mcp_tools: Any, http_server: Any
) -> None:
    server = http_server(tmp_path / "n.txt")
    tools = mcp_tools({"web": server.entry()})
    assert tools.start() == {"web": None}
    server.stop()
    out = call(tools, "web__append_note", text="lost")
    assert out["error"].startswith("MCP server 'web' ")
    assert tools.notes(["web.*"])[0].startswith("Tools of MCP server 'web' are unavailable:")
    assert tools.specs(["web.append_note"])  # still offered: the last listing is kept
    server.start()
    assert call(tools, "web__append_note", text="again")["content"] == "appended 6 bytes"
    assert (tmp_path / "n.txt").read_text() == "again\n"


def test_a_stdio_server_that_dies_while_idle_is_restarted_by_the_next_call(
    tmp_path: Path, mcp_tools: Any
) -> None:
    tools = mcp_tools({"notes": stdio_server(tmp_path / "n.txt")})
    tools.start()
    first = call(tools, "notes__show_process")["structured_content"]["pid"]
    os.kill(first, signal.SIGKILL)
    eventually(lambda: not tools.snapshot("notes").connected, what="noticing the exit")
    assert tools.notes(["notes.*"]) == [
        "Tools of MCP server 'notes' are unavailable: the connection to the server was lost"
    ]
    second = call(tools, "notes__show_process")["structured_content"]["pid"]
    assert second != first


def test_a_server_dying_mid_call_is_an_error_that_says_so(tmp_path: Path, mcp_tools: Any) -> None:
    tools = mcp_tools({"notes": stdio_server(tmp_path / "n.txt")})
    tools.start()
    assert call(tools, "notes__crash") == {
        "error": "MCP server 'notes' went away during the call to 'crash'; "
        "it may or may not have run"
    }
    assert "structured_content" in call(tools, "notes__read_notes")


def test_stdio_servers_that_cannot_start_say_why(tmp_path: Path, mcp_tools: Any) -> None:
    script = "import sys; print('cannot open /srv/data: permission denied', file=sys.stderr)"
    tools = mcp_tools(
        {
            "missing": {"command": str(tmp_path / "no-such-server")},
            "exits": {"command": sys.executable, "args": ["-c", script + "; sys.exit(1)"]},
            "mute": {
                "command": sys.executable,
                "args": ["-c", "import time; time.sleep(60)"],
                "connect_timeout_s": 1,
            },
            "notmcp": {"command": sys.executable, "args": [THIS_FILE, "--help"]},
        }
    )
    errors = tools.start()
    assert errors["missing"] == f"the server exited: command not found: {tmp_path}/no-such-server"
    assert errors["exits"] == "the server exited: cannot open /srv/data: permission denied"
    assert errors["mute"] == "no answer within 1 s"
    assert errors["notmcp"] is not None and errors["notmcp"].startswith("the server")


def test_a_forked_child_gets_its_own_loop_and_server(tmp_path: Path, mcp_tools: Any) -> None:
    """Celery's prefork pool forks after start-up: the child cannot use the parent's loop
    thread or pipes, so it connects a server of its own on first use."""
    tools = mcp_tools({"notes": stdio_server(tmp_path / "n.txt")})
    assert tools.start() == {"notes": None}
    parent_server = call(tools, "notes__show_process")["structured_content"]["pid"]
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write_end, tools.execute("notes__show_process", "{}").encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = json.loads(pipe.read())
    os.waitpid(child, 0)
    assert "structured_content" in answer, answer
    child_server = answer["structured_content"]["pid"]
    assert child_server != parent_server
    # the parent's connection is untouched
    assert call(tools, "notes__show_process")["structured_content"]["pid"] == parent_server
