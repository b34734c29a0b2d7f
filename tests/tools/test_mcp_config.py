"""MCP servers in the teams file: parsing, references, policies, secrets and tool names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.teams import TeamsFileError, load_teams
from orchestrator.tools.mcp_config import EnvRef, McpServer, MissingVariable, resolve
from orchestrator.tools.mcp_specs import function_spec, name_prefix, provider_name

ROOT = Path(__file__).resolve().parents[2]


def teams_file(tmp_path: Path, servers: dict[str, Any], tools: list[str]) -> Path:
    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    data["mcp_servers"] = servers
    data["teams"]["research"]["workers"][0]["tools"] = tools
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_servers_and_worker_tool_references_load(tmp_path: Path) -> None:
    path = teams_file(
        tmp_path,
        {
            "files": {
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-filesystem", "/srv"],
                "env": {"NODE_ENV": "production", "TOKEN": {"env": "FILES_TOKEN"}},
                "cwd": "/srv",
                "policy": "ask",
                "tools": {"read_text_file": "allow", "write_file": "deny"},
                "timeout_s": 20,
            },
            "github": {
                "url": "https://api.example.com/mcp/",
                "headers": {
                    "Authorization": {"env": "GITHUB_TOKEN", "prefix": "Bearer "},
                    "X-Team": "${TEAM_ID}",
                },
            },
        },
        ["run_code", "files.read_text_file", "github.*"],
    )
    config = load_teams(path)
    files = config.mcp_servers["files"]
    assert files.transport == "stdio" and files.timeout_s == 20
    assert files.env["TOKEN"] == EnvRef(env="FILES_TOKEN")
    assert config.mcp_servers["github"].transport == "http"
    assert config.teams["research"].workers[0].tools == [
        "run_code",
        "files.read_text_file",
        "github.*",
    ]


@pytest.mark.parametrize(
    ("servers", "tools", "team", "field", "words"),
    [
        ({}, ["files.read"], "research", "workers.0.tools.0", "unknown MCP server 'files'"),
        (
            {"files": {"command": "x"}},
            ["run_code", "web.*"],
            "research",
            "workers.0.tools.1",
            "unknown MCP server 'web'",
        ),
        ({}, ["rm_rf"], "research", "workers.0.tools", "unknown tool 'rm_rf'"),
        ({"Files": {"command": "x"}}, [], None, "mcp_servers.Files", "lower-case"),
        ({"files": {}}, [], None, "mcp_servers.files", "either 'command'"),
        (
            {"files": {"command": "x", "url": "http://h/mcp"}},
            [],
            None,
            "mcp_servers.files",
            "either 'command'",
        ),
        (
            {"files": {"url": "http://h/mcp", "env": {"A": "b"}}},
            [],
            None,
            "mcp_servers.files",
            "stdio servers",
        ),
        (
            {"files": {"command": "x", "policy": "maybe"}},
            [],
            None,
            "mcp_servers.files.policy",
            "allow",
        ),
        (
            {"files": {"command": "x", "tools": {"write": "sometimes"}}},
            [],
            None,
            "mcp_servers.files.tools.write",
            "deny",
        ),
        (
            {"web": {"url": "http://h/mcp", "headers": {"Authorization": "Bearer ${1TOKEN}"}}},
            [],
            None,
            "mcp_servers.web.headers",
            "bad variable reference",
        ),
        ({"web": {"url": "ftp://h/mcp"}}, [], None, "mcp_servers.web.url", "pattern"),
        ({"web": {"url": "http://h/mcp", "colour": 1}}, [], None, "mcp_servers.web.colour", ""),
    ],
)
def test_bad_server_config_is_one_line_naming_file_team_and_field(
    tmp_path: Path,
    servers: dict[str, Any],
    tools: list[str],
    team: str | None,
    field: str,
    words: str,
) -> None:
    path = teams_file(tmp_path, servers, tools)
    with pytest.raises(TeamsFileError) as info:
        load_teams(path)
    message = str(info.value)
    assert "\n" not in message
    where = f"team {team!r}: " if team else ""
    assert message.startswith(f"{path}: {where}{field}:"), message
    assert words in message


def test_policy_precedence_tool_then_server_then_annotations() -> None:
    plain = McpServer(command="srv")
    assert plain.policy_for("read", True) == "allow"  # readOnlyHint
    assert plain.policy_for("write", False) == "ask"  # not read-only (destructive or not)
    assert plain.policy_for("anything", None) == "ask"  # no hint
    server_wide = McpServer(command="srv", policy="deny", tools={"read": "allow"})
    assert server_wide.policy_for("read", False) == "allow"  # the tool's own setting wins
    assert server_wide.policy_for("other", True) == "deny"  # then the server's
    trusting = McpServer(command="srv", policy="allow", tools={"drop": "ask"})
    assert trusting.policy_for("write", None) == "allow"
    assert trusting.policy_for("drop", True) == "ask"


def test_header_and_env_values_are_read_from_the_environment_at_resolve_time() -> None:
    environ = {"GITHUB_TOKEN": "ghp_abc", "TEAM": "ops"}
    assert resolve(EnvRef(env="GITHUB_TOKEN", prefix="Bearer "), "h", environ) == "Bearer ghp_abc"
    assert resolve("team=${TEAM}; cost=$$5", "h", environ) == "team=ops; cost=$5"
    assert resolve("plain $HOME stays", "h", environ) == "plain $HOME stays"
    with pytest.raises(MissingVariable) as info:
        resolve("Bearer ${NOPE}", "header Authorization", environ)
    assert str(info.value) == "header Authorization needs $NOPE, which is not set"


def test_secrets_are_never_in_the_loaded_config(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_supersecret")
    path = teams_file(
        tmp_path,
        {"gh": {"url": "https://h/mcp", "headers": {"Authorization": "Bearer ${GITHUB_TOKEN}"}}},
        ["gh.*"],
    )
    config = load_teams(path)
    assert "ghp_supersecret" not in config.model_dump_json()


def test_provider_names_are_safe_unique_and_stable() -> None:
    assert provider_name("notes", "append_note") == "notes__append_note"
    odd = provider_name("files", "read.file/v2")
    long = provider_name("files", "x" * 100)
    ambiguous = [provider_name("a__b", "c"), provider_name("a", "b__c")]
    for name in (odd, long, *ambiguous):
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name), name
    assert len(set(ambiguous)) == 2
    assert provider_name("files", "x" * 100) == long  # a function of the label only
    assert provider_name("files", "x" * 101) != long
    assert odd.startswith("files__read_file_v2_")
    assert ambiguous[0].startswith(name_prefix("a__b")) and long.startswith(name_prefix("files"))


def test_function_spec_keeps_the_schema_and_makes_it_an_object() -> None:
    spec = function_spec(
        "notes__read",
        "Read it.",
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
    )
    assert spec == {
        "type": "function",
        "function": {
            "name": "notes__read",
            "description": "Read it.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
