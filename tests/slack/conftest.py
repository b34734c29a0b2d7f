"""One Slack stack per module: fake Slack, model server, Redis, Postgres, a worker, the bot.

Starting a Celery worker costs seconds, so the acceptance tests share one stack and keep
apart by channel: every test uses its own channel id and reads only that channel's calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
import yaml
from celery import Celery

from bot.slack.app import Core, build_app
from bot.slack.main import asgi_app
from bot.slack.port import SlackSettings
from bot.slack.queue import CeleryQueue
from orchestrator.store.repository import Store
from orchestrator.teams import load_teams
from tests.conftest import DEFAULT_TEAMS, cloned_database
from tests.slack.fake_slack import FakeSlack
from tests.support.openai_server import OpenAIServer
from tests.support.workers import WorkerProcess

SECRET = "test-signing-secret"
TOKEN = "xoxb-test-token"
APPROVER = "UAPPROVER1"
GROUP_MEMBER = "UGROUPIE1"
APPROVER_GROUP = "S0APPROVERS"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack(usergroups={APPROVER_GROUP: [GROUP_MEMBER]}) as fake:
        yield fake


@pytest.fixture(scope="module")
def model_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def redis_broker(redis_port: int) -> str:
    """Database 1 of the session's private redis-server: per-test fixtures flush db 0, so
    this module's long-lived worker keeps its queue."""
    import redis

    redis.Redis(host="127.0.0.1", port=redis_port, db=1).flushdb()
    return f"redis://127.0.0.1:{redis_port}/1"


@pytest.fixture(scope="module")
def database(pg_template: str) -> Iterator[str]:
    with cloned_database(pg_template, "sb_slack") as url:
        yield url


@pytest.fixture(scope="module")
def teams_file(tmp_path_factory: pytest.TempPathFactory, model_server: OpenAIServer) -> Path:
    """Default teams on the local model server; engineering escalates at 3 steps."""
    data = yaml.safe_load(DEFAULT_TEAMS.read_text())
    tier = {"model": "openai/gpt-test", "api_base": model_server.url, "params": {}}
    data["tiers"] = {"cheap": dict(tier), "premium": dict(tier)}
    data["teams"]["engineering"]["limits"] = {
        "max_steps": 3,
        "stuck_window": 50,
        "grant_steps": 2,
    }
    data["approvers"] = {"users": [APPROVER], "slack_usergroups": [APPROVER_GROUP]}
    path = tmp_path_factory.mktemp("teams") / "teams.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory,
    database: str,
    redis_broker: str,
    teams_file: Path,
    fake_slack: FakeSlack,
) -> Iterator[WorkerProcess]:
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        "DATABASE_URL": database,
        "BROKER_URL": redis_broker,
        "SWITCHBOARD_TEAMS_FILE": str(teams_file),
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_API_URL": fake_slack.url,
        "OPENAI_API_KEY": "sk-test",
        "LOG_JSON": "false",
    }
    process = WorkerProcess(env, log_path).start()
    yield process
    process.kill()  # a warm shutdown would wait out the slowed model call of the ack test


def celery_for(broker: str) -> Celery:
    app = Celery("slack-tests", broker=broker)
    app.conf.update(
        task_default_queue="switchboard",
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=False,
        broker_connection_timeout=1,
    )
    return app


@dataclass
class Bot:
    url: str
    store: Store
    fake: FakeSlack

    def post(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        sign: bool = True,
        secret: str = SECRET,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST to /slack/events signed the way Slack signs (v0:timestamp:body, HMAC-SHA256)."""
        ts = str(timestamp if timestamp is not None else int(time.time()))
        all_headers = {"content-type": content_type, **(headers or {})}
        if sign:
            digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256)
            all_headers["X-Slack-Request-Timestamp"] = ts
            all_headers["X-Slack-Signature"] = "v0=" + digest.hexdigest()
        return httpx.post(self.url + "/slack/events", content=body, headers=all_headers, timeout=15)

    def command(
        self,
        text: str,
        *,
        channel: str,
        user: str = "UREQUEST1",
        response_url: str = "https://hooks.invalid/commands/1",
        **kw: Any,
    ) -> httpx.Response:
        body = urlencode(
            {
                "token": "legacy",
                "team_id": "T0TESTTEAM",
                "team_domain": "test",
                "channel_id": channel,
                "channel_name": "test",
                "user_id": user,
                "user_name": user,
                "command": "/agent",
                "text": text,
                "api_app_id": "A0TEST",
                "response_url": response_url,
                "trigger_id": f"trig.{uuid.uuid4().hex}",
            }
        )
        return self.post(body, "application/x-www-form-urlencoded", **kw)

    def click(
        self,
        action_id: str,
        escalation_id: int,
        *,
        channel: str,
        message_ts: str,
        thread_ts: str,
        user: str,
        trigger: str | None = None,
    ) -> httpx.Response:
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": user, "team_id": "T0TESTTEAM"},
            "api_app_id": "A0TEST",
            "token": "legacy",
            "team": {"id": "T0TESTTEAM", "domain": "test"},
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": trigger or f"trig.{uuid.uuid4().hex}",
            "channel": {"id": channel, "name": "test"},
            "message": {
                "type": "message",
                "ts": message_ts,
                "thread_ts": thread_ts,
                "text": "paused",
            },
            "response_url": "https://hooks.invalid/actions/1",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "b1",
                    "value": str(escalation_id),
                    "type": "button",
                    "action_ts": str(time.time()),
                }
            ],
        }
        body = urlencode({"payload": json.dumps(payload)})
        return self.post(body, "application/x-www-form-urlencoded")

    def submit_view(
        self, view: dict[str, Any], values: dict[str, str], *, user: str
    ) -> httpx.Response:
        """A view_submission as Slack sends it when someone presses the modal's submit:
        each input's value under state.values[block_id][action_id]."""
        state = {
            block["block_id"]: {
                block["element"]["action_id"]: {
                    "type": block["element"]["type"],
                    "value": values.get(block["block_id"]),
                }
            }
            for block in view.get("blocks", [])
            if block.get("type") == "input"
        }
        payload = {
            "type": "view_submission",
            "team": {"id": "T0TESTTEAM", "domain": "test"},
            "user": {"id": user, "username": user, "team_id": "T0TESTTEAM"},
            "api_app_id": "A0TEST",
            "token": "legacy",
            "trigger_id": f"trig.{uuid.uuid4().hex}",
            "view": {**view, "state": {"values": state}},
            "response_urls": [],
        }
        body = urlencode({"payload": json.dumps(payload)})
        return self.post(body, "application/x-www-form-urlencoded")

    def event(self, event: dict[str, Any], *, event_id: str, retry: int = 0) -> httpx.Response:
        body = json.dumps(
            {
                "token": "legacy",
                "team_id": "T0TESTTEAM",
                "api_app_id": "A0TEST",
                "event": event,
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(time.time()),
                "authorizations": [
                    {"team_id": "T0TESTTEAM", "user_id": "UBOTSWITCH", "is_bot": True}
                ],
            }
        )
        headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        return self.post(body, "application/json", headers=headers if retry else None)


@pytest.fixture(scope="module")
def bot(
    database: str,
    redis_broker: str,
    teams_file: Path,
    fake_slack: FakeSlack,
    worker: WorkerProcess,
) -> Iterator[Bot]:
    """The real ASGI app (Bolt's handler, signature checks) on uvicorn, in this process."""
    store = Store(database)
    core = Core(store, load_teams(teams_file), CeleryQueue(celery_for(redis_broker)))
    settings = SlackSettings(TOKEN, SECRET, None, fake_slack.url)
    app = asgi_app(build_app(core, settings))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield Bot(f"http://127.0.0.1:{port}", store, fake_slack)
    server.should_exit = True
    thread.join(10)
