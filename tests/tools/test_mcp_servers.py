"""MCP tools against real servers written with the SDK, over stdio and streamable HTTP:
discovery, names, policies, calls and results, errors as results, and list changes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.tools.mcp_config import McpServer
from orchestrator.tools.mcp_tools import McpTools
from tests.support.mcp_servers import HttpServer, stdio_server
from tests.tools.conftest import eventually

SERVER_TOOLS = {
    "read_notes",
    "append_note",
    "slow_append",
    "show_env",
    "show_process",
    "show_headers",
    "fail",
    "slow",
    "big",
    "picture",
    "crash",
    "add_tool",
}


class Served:
    def __init__(self, tools: McpTools, notes: dict[str, Path]) -> None:
        self.tools = tools
        self.notes = notes

    def call(self, name: str, **arguments: Any) -> dict[str, Any]:
        return json.loads(self.tools.execute(name, json.dumps(arguments)))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One stdio and one HTTP server, with policies set in the teams-file way:
    `notes` (stdio): show_process denied, fail allowed (it has no annotations);
    `web` (HTTP): everything ask, big allowed, append_note denied."""
    tmp = tmp_path_factory.mktemp("mcp")
    notes = {"notes": tmp / "stdio-notes.txt", "web": tmp / "http-notes.txt"}
    http = HttpServer(notes["web"]).start()
    servers = {
        "notes": McpServer(
            **stdio_server(notes["notes"], tools={"show_process": "deny", "fail": "allow"})
        ),
        "web": McpServer(**http.entry(policy="ask", tools={"big": "allow", "append_note": "deny"})),
    }
    tools = McpTools(servers, ["notes.read_notes", "web.append_note"])
    try:
        assert tools.start() == {"notes": None, "web": None}
        yield Served(tools, notes)
    finally:
        tools.close()
        http.stop()


def names(specs: list[dict[str, Any]]) -> list[str]:
    return [spec["function"]["name"] for spec in specs]


def test_discovery_offers_prefixed_provider_safe_function_tools(served: Served) -> None:
    specs = served.tools.specs(["notes.*"])
    assert set(names(specs)) == {f"notes__{t}" for t in SERVER_TOOLS - {"show_process"}}
    for spec in specs:
        assert spec["type"] == "function"
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", spec["function"]["name"])
        assert spec["function"]["parameters"]["type"] == "object"
        assert "MCP server 'notes'" in spec["function"]["description"]
    append = next(s for s in specs if s["function"]["name"] == "notes__append_note")
    assert append["function"]["parameters"]["required"] == ["text"]
    assert "Append one line" in append["function"]["description"]
    info = served.tools.info("notes__append_note")
    assert info is not None and (info.label, info.server) == ("notes.append_note", "notes")
    assert served.tools.info("notes__nothing") is None


def test_specs_follow_the_workers_list_once_each(served: Served) -> None:
    specs = served.tools.specs(["notes.read_notes", "notes.*", "web.big", "web.big"])
    listed = names(specs)
    assert listed[0] == "notes__read_notes"
    assert len(listed) == len(set(listed))
    assert "web__big" in listed and "web__slow" not in listed


def test_policies_tool_over_server_over_annotations(served: Served) -> None:
    def policy(name: str) -> tuple[str, bool]:
        info = served.tools.info(name)
        assert info is not None, name
        return info.policy, info.read_only

    assert policy("notes__read_notes") == ("allow", True)  # readOnlyHint
    assert policy("notes__append_note") == ("ask", False)  # destructiveHint
    assert policy("notes__add_tool") == ("ask", False)  # no hint at all
    assert policy("notes__fail") == ("allow", False)  # the tool's own setting
    assert policy("notes__show_process") == ("deny", True)
    assert policy("web__read_notes") == ("ask", True)  # the server's over the annotation
    assert policy("web__big") == ("allow", True)  # the tool's over the server's
    assert policy("web__append_note") == ("deny", False)


def test_deny_is_never_offered_and_never_runs(served: Served) -> None:
    everything = names(served.tools.specs(["notes.*", "web.*", "web.append_note"]))
    assert "notes__show_process" not in everything
    assert "web__append_note" not in everything
    assert served.tools.specs(["notes.show_process"]) == []
    out = served.call("web__append_note", text="should not happen")
    assert out == {"error": "web.append_note is denied by the teams file"}
    assert not served.notes["web"].exists()


@pytest.mark.parametrize("server", ["notes", "web"])
def test_calls_return_the_tools_results(served: Served, server: str) -> None:
    if server == "notes":
        assert served.call("notes__append_note", text="first line") == {
            "content": "appended 11 bytes",
            "structured_content": {"result": "appended 11 bytes"},
        }
        assert served.notes["notes"].read_text() == "first line\n"
    read = served.call(f"{server}__read_notes")
    expected = served.notes[server].read_text() if served.notes[server].exists() else ""
    assert read["structured_content"] == {"result": expected}
    picture = served.call(f"{server}__picture")
    assert picture["content"] == "a red dot\n[image: image/png, 8 bytes]"
    big = served.call(f"{server}__big", size=200_000)
    assert big["truncated"] is True and len(json.dumps(big)) <= 64 * 1024


@pytest.mark.parametrize("server", ["notes", "web"])
def test_tool_errors_come_back_as_results(served: Served, server: str) -> None:
    assert served.call(f"{server}__fail", message="disk full") == {
        "error": f"{server}.fail failed: Error executing tool fail: disk full"
    }
    wrong = served.call(f"{server}__slow", seconds="soon")
    assert wrong["error"].startswith(f"{server}.slow failed:")
    assert "seconds" in wrong["error"]
    assert served.tools.execute(f"{server}__slow", "[1, 2]") == json.dumps(
        {"error": "arguments must be a JSON object"}
    )
    assert json.loads(served.tools.execute(f"{server}__slow", "{oops"))["error"].startswith(
        "arguments are not valid JSON"
    )
    assert served.call(f"{server}__nonexistent") == {
        "error": f"unknown tool '{server}__nonexistent'"
    }
    # the connection is still good after all that
    assert "structured_content" in served.call(f"{server}__read_notes")


def test_a_named_tool_the_server_lacks_is_a_note_not_a_spec(served: Served) -> None:
    assert served.tools.specs(["notes.nosuch"]) == []
    assert served.tools.notes(["notes.nosuch", "notes.*", "web.*"]) == [
        "MCP server 'notes' has no tool 'nosuch'."
    ]


def test_a_call_past_its_timeout_is_an_error_and_the_server_stays(
    tmp_path: Path, mcp_tools: Any
) -> None:
    tools = mcp_tools({"notes": stdio_server(tmp_path / "n.txt", timeout_s=1)})
    assert tools.start() == {"notes": None}
    pid = json.loads(tools.execute("notes__show_process", "{}"))["structured_content"]["pid"]
    out = json.loads(tools.execute("notes__slow", json.dumps({"seconds": 30})))
    assert out == {
        "error": "MCP server 'notes' did not answer 'slow' within 1 s; "
        "the call may or may not have run"
    }
    again = json.loads(tools.execute("notes__show_process", "{}"))["structured_content"]["pid"]
    assert again == pid  # the same server process answers the next call


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_tools_are_relisted_when_the_server_says_they_changed(
    tmp_path: Path, mcp_tools: Any, http_server: Any, mode: str, transport: str
) -> None:
    """`auto` settles on the 2026 protocol with these servers (changes arrive on a
    subscriptions/listen stream); `legacy` is how most servers in the wild talk today
    (notifications/tools/list_changed on the connection)."""
    notes = tmp_path / "notes.txt"
    entry = stdio_server(notes) if transport == "stdio" else http_server(notes).entry()
    tools = mcp_tools({"notes": entry}, mode=mode)
    assert tools.start() == {"notes": None}
    assert "notes__shout" not in names(tools.specs(["notes.*"]))
    assert tools.execute("notes__add_tool", json.dumps({"name": "shout"})) == json.dumps(
        {"content": "added shout", "structured_content": {"result": "added shout"}}
    )
    eventually(lambda: "notes__shout" in names(tools.specs(["notes.*"])), what="re-listing")
    assert json.loads(tools.execute("notes__shout", json.dumps({"text": "hi"}))) == {
        "content": "hi",
        "structured_content": {"result": "hi"},
    }
    info = tools.info("notes__shout")
    assert info is not None and info.policy == "ask"
