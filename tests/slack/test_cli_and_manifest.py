"""`switchboard slack` as an operator runs it, and the manifest a workspace installs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from orchestrator.store.repository import Store
from tests.slack.conftest import SECRET, TOKEN, Bot, free_port
from tests.slack.fake_slack import FakeSlack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(
    tmp_path: Path, database: str, redis_broker: str, teams_file: Path, fake_slack: FakeSlack
) -> Iterator[Bot]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "BROKER_URL": redis_broker,
        "SWITCHBOARD_TEAMS_FILE": str(teams_file),
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake_slack.url,
    }
    env.pop("SLACK_APP_TOKEN", None)
    log = (tmp_path / "slack.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "slack", f"--port={port}"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    # Generous: a cold start imports litellm and Bolt, and the suite runs 4 files at once.
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, (tmp_path / "slack.log").read_text()
        assert time.monotonic() < deadline, "the bot did not serve /healthz within 120 s"
        time.sleep(0.1)
    yield Bot(url, Store(database), fake_slack)
    proc.terminate()
    proc.wait(15)
    log.close()


def test_switchboard_slack_serves_events_health_and_metrics(served: Bot) -> None:
    health = httpx.get(served.url + "/healthz")
    assert health.status_code == 200
    assert health.headers.get("server") == "uvicorn"  # the production server, not Bolt's
    reply = served.command("help", channel="CCLIHELP01")
    assert reply.status_code == 200 and "/agent status" in reply.json()["text"]
    assert served.command("help", channel="CCLIHELP01", sign=False).status_code == 401
    metrics = httpx.get(served.url + "/metrics")
    assert metrics.status_code == 200 and "switchboard_chat_api_errors" in metrics.text


def test_switchboard_slack_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "slack"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "SLACK_BOT_TOKEN" in result.stderr


def test_manifest_declares_what_the_adapter_uses() -> None:
    manifest = yaml.safe_load((ROOT / "bot" / "slack" / "manifest.yml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/agent"
    settings = manifest["settings"]
    assert settings["event_subscriptions"]["bot_events"] == ["app_mention"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is True
    paths = {
        command["url"],
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
    }
    assert len(paths) == 1 and paths.pop().endswith("/slack/events")
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "app_mentions:read", "usergroups:read"} <= scopes
    assert "users:read" in scopes  # display names (users.info)
    # Optional AI-app features: thread status and streamed progress.
    assert "assistant:write" in scopes and "assistant_view" in manifest["features"]


def test_slack_manifest_command_prints_the_manifest_from_any_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "slack", "manifest"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "bot" / "slack" / "manifest.yml").read_text()
    assert yaml.safe_load(result.stdout)["features"]["slash_commands"][0]["command"] == "/agent"
