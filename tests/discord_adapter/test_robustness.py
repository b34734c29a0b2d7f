"""Discord at its edges (issue 13): bad requests, who sees a run, a worker whose first login
fails, the REST and gateway URLs, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import discord.http
import pytest

from bot.discord.port import DiscordPort
from orchestrator.store.models import RunStatus
from tasks import bridge, runtime
from tests.discord_adapter.conftest import APPROVER_ROLE
from tests.discord_adapter.fake_discord import (
    APP,
    GUILD,
    FakeDiscord,
    member,
    slash,
    text_channel,
)

ALICE = "1100000000000000101"
MALLORY = "1100000000000000666"
OTHER_CHANNEL = "1100000000000000050"
ROOT = Path(__file__).resolve().parents[2]


def _answer(h, payload):  # type: ignore[no-untyped-def]
    return h.fake.wait_for(lambda: h.followups(payload), what="the follow-up")[0]["content"]


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        ("hello\x00world", "contains a NUL character"),
        ("x" * 8001, "characters long; the limit is 8,000"),
    ],
)
def test_a_request_discord_cannot_store_gets_a_visible_answer(
    make_harness, request_text: str, expected: str
) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    payload = h.dispatch(slash(member(ALICE, "alice", []), "run", {"request": request_text}))
    callback = h.callback(payload)
    assert callback["type"] == 4 and callback["data"]["flags"] & 64
    assert expected in callback["data"]["content"]
    assert "Something went wrong" not in callback["data"]["content"]
    assert h.store.recent_runs(limit=5) == []


def test_status_from_another_channel_reveals_nothing(make_harness) -> None:  # type: ignore[no-untyped-def]
    h = make_harness()
    payload = h.dispatch(
        slash(member(ALICE, "alice", []), "run", {"request": "the secret plan", "team": "research"})
    )
    run_id = int(_answer(h, payload).split("#", 1)[1].split()[0])
    h.wait_run(run_id, lambda r: r.status == RunStatus.FINISHED)

    def status(who: dict, channel: str) -> str:  # type: ignore[type-arg]
        asked = slash(who, "status", {"run_id": run_id})
        asked.update(channel_id=channel, channel=text_channel(channel))
        return _answer(h, h.dispatch(asked))

    assert "the secret plan" in status(member(MALLORY, "mallory", []), h.run(run_id).channel)
    for who in (member(MALLORY, "mallory", []), member(ALICE, "alice", [])):
        assert status(who, OTHER_CHANNEL) == f"There is no run {run_id} here."
    assert "the secret plan" in status(member(MALLORY, "mal", [APPROVER_ROLE]), OTHER_CHANNEL)


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    fake = FakeDiscord()
    yield fake
    fake.close()


@pytest.fixture
def worker_env(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A worker's environment: only DISCORD_API_URL says where Discord is."""
    monkeypatch.setattr(discord.http.Route, "BASE", "https://discord.invalid/api/v10")
    monkeypatch.setenv("DISCORD_TOKEN", "test-token")
    monkeypatch.setenv("DISCORD_API_URL", f"{fake.url}/api")  # the version is added
    monkeypatch.setattr(runtime, "PORT_RETRY_S", 0.3)
    runtime._ports.pop("discord", None)
    runtime._port_failures.discard("discord")  # an earlier test's process had no token
    runtime._port_retry.clear()
    yield
    port = runtime._ports.pop("discord", None)
    if isinstance(port, DiscordPort):
        bridge.run(port.http.close())
    runtime._port_retry.clear()


def test_a_worker_whose_first_login_fails_logs_in_later_exactly_once(
    fake: FakeDiscord, worker_env: None
) -> None:
    fake.refuse_logins = 1
    assert runtime.port_for("discord") is None  # refused: 401
    assert runtime.port_for("discord") is None  # too soon to try again: no second login
    assert len(fake.find("GET", "/users/@me")) == 1

    got: list[object] = []
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            port = runtime.port_for("discord")
            if port is not None:
                got.append(port)
                return
            time.sleep(0.01)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and len({id(p) for p in got}) == 1  # one port, shared
    assert len(fake.find("GET", "/users/@me")) == 2  # the refused login, then exactly one


def _bot(tmp_path: Path, fake: FakeDiscord, **env: str) -> subprocess.Popen[str]:
    environ = {
        **{k: v for k, v in os.environ.items() if k not in ("BROKER_URL", "DISCORD_API_URL")},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "DISCORD_TOKEN": "test-token",
        "DISCORD_GUILD_ID": GUILD,
        "DISCORD_API_URL": f"{fake.url}/api/v10",
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "LOG_JSON": "false",
        "PYTHONWARNINGS": "always::ResourceWarning",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "discord"],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_bot_uses_the_configured_urls_and_stops_cleanly_on_sigterm(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    bot = _bot(tmp_path, fake)
    try:
        identify = fake.wait_for(fake.identified, timeout=60, what="IDENTIFY on the gateway")
        assert identify[0]["token"] == "test-token"
        assert identify[0]["intents"] == 1  # guilds only: no privileged intents
        assert fake.find("PUT", f"/applications/{APP}/guilds/{GUILD}/commands")
        bot.send_signal(signal.SIGTERM)
        output, _ = bot.communicate(timeout=30)
    finally:
        if bot.poll() is None:
            bot.kill()
    assert bot.returncode == 0, output
    assert "shutting down on a signal" in output
    for bad in ("Traceback", "Unclosed client session", "Unclosed connector", "Task was destroyed"):
        assert bad not in output, output
    assert fake.wait_for(lambda: fake.gateway_closed, 10, "the gateway close") == [1000]


def test_a_refused_token_is_one_line_not_a_traceback(tmp_path: Path, fake: FakeDiscord) -> None:
    fake.refuse_logins = 1
    bot = _bot(tmp_path, fake)
    output, _ = bot.communicate(timeout=60)
    assert bot.returncode == 1
    assert "Discord refused DISCORD_TOKEN (401 Unauthorized)" in output
    assert "Traceback" not in output
