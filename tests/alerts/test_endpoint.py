"""The webhook over real HTTP (uvicorn): authentication first, bounded bodies, clear errors,
503 for Alertmanager to retry, and the same endpoint mounted under the Slack bot's server."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bot.alerts.auth import Credentials
from bot.alerts.http import MAX_BODY, alerts_endpoint
from bot.alerts.intake import Intake
from bot.alerts.main import server_app
from bot.slack.app import Core, build_app
from bot.slack.main import asgi_app
from bot.slack.port import SlackSettings
from bot.slack.queue import CeleryQueue
from orchestrator.store.models import AlertGroup, Run
from orchestrator.store.repository import Store
from orchestrator.teams import load_teams
from tests.alerts.notifications import body, notification
from tests.alerts.test_intake import RecordingQueue

TOKEN = "alerts-token-0123456789abcdef"
USER, PASSWORD = "alertmanager", "basic-password-0123456789"


@contextmanager
def serve(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Site:
    def __init__(self, url: str, store: Store, queue: RecordingQueue) -> None:
        self.url, self.store, self.queue = url, store, queue

    def post(self, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        all_headers = {"content-type": "application/json", **(headers or {})}
        return httpx.post(self.url + "/alerts", content=content, headers=all_headers, timeout=30)

    def counts(self) -> tuple[int, int]:
        with self.store.sessions() as session:
            groups = session.scalar(select(func.count(AlertGroup.id)))
            runs = session.scalar(select(func.count(Run.id)))
        return int(groups or 0), int(runs or 0)


@pytest.fixture
def site(pg_url: str, alert_teams: Callable[..., Path]) -> Iterator[Site]:
    store, queue = Store(pg_url), RecordingQueue()
    intake = Intake(store, load_teams(alert_teams()), queue)
    credentials = Credentials(token=TOKEN, username=USER, password=PASSWORD)
    with serve(server_app(alerts_endpoint(intake, credentials))) as url:
        yield Site(url, store, queue)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-token-0123456789abcdef"),
        {"authorization": "Bearer"},
        basic(USER, "wrong-password-0123456789"),
        basic("mallory", PASSWORD),
        {"authorization": TOKEN},
        {"x-api-key": TOKEN},
    ],
)
def test_without_valid_credentials_401_and_nothing_starts(
    site: Site, headers: dict[str, str]
) -> None:
    response = site.post(body(notification()), headers)
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]
    assert response.json() == {"error": "authentication required: a bearer token or basic auth"}
    assert site.counts() == (0, 0) and site.queue.advanced == []


def test_bearer_token_starts_one_run_and_copies_start_nothing(site: Site) -> None:
    first = site.post(body(notification()), bearer())
    assert first.status_code == 200
    assert first.json()["outcome"] == "start" and first.json()["channel"] == "C0ONCALL01"
    again = site.post(body(notification()), basic(USER, PASSWORD))
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert again.json()["run_id"] == first.json()["run_id"]
    assert site.counts() == (1, 1)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"{not json", "not an Alertmanager v4 notification: the body is not JSON"),
        (b'{"version": "3"}', "not an Alertmanager v4 notification: version: expected '4'"),
    ],
)
def test_a_malformed_body_gets_400_naming_the_problem(
    site: Site, content: bytes, error: str
) -> None:
    response = site.post(content, bearer())
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    assert site.counts() == (0, 0)


def test_an_oversized_body_gets_413(site: Site) -> None:
    response = site.post(b" " * (MAX_BODY + 1), bearer())
    assert response.status_code == 413
    assert site.counts() == (0, 0)


def test_only_post(site: Site) -> None:
    response = httpx.get(site.url + "/alerts", headers=bearer())
    assert response.status_code == 405 and response.headers["allow"] == "POST"


def test_a_broker_outage_gets_503_and_the_retry_finishes_the_start(site: Site) -> None:
    site.queue.down = True
    assert site.post(body(notification()), bearer()).status_code == 503
    site.queue.down = False
    retry = site.post(body(notification()), bearer())
    assert retry.status_code == 200 and retry.json()["outcome"] == "resume"
    assert site.counts() == (1, 1) and len(site.queue.advanced) == 1


def test_health_metrics_and_unknown_paths(site: Site) -> None:
    site.post(body(notification()), bearer())
    assert httpx.get(site.url + "/healthz").json() == {"ok": True}
    metrics = httpx.get(site.url + "/metrics").text
    assert 'switchboard_runs_started_total{team="research"}' in metrics
    assert httpx.get(site.url + "/nope").status_code == 404


def test_mounted_under_the_slack_server(
    pg_url: str, alert_teams: Callable[..., Path], redis_url: str
) -> None:
    """With alert credentials set, the Slack bot's HTTP server answers /alerts too, and
    /slack/events stays Bolt's (an unsigned request is still refused)."""
    from celery import Celery

    store, queue = Store(pg_url), RecordingQueue()
    config = load_teams(alert_teams())
    celery = Celery("t", broker=redis_url)
    core = Core(store, config, CeleryQueue(celery))
    bolt = build_app(
        core, SlackSettings("xoxb-test", "signing-secret", None, "http://127.0.0.1:9/api/")
    )
    endpoint = alerts_endpoint(Intake(store, config, queue), Credentials(token=TOKEN))
    with serve(asgi_app(bolt, endpoint)) as url:
        site = Site(url, store, queue)
        assert site.post(body(notification())).status_code == 401
        response = site.post(body(notification()), bearer())
        assert response.status_code == 200 and response.json()["outcome"] == "start"
        unsigned = httpx.post(url + "/slack/events", content=b"{}", timeout=10)
        assert unsigned.status_code == 401
        assert httpx.get(url + "/healthz").status_code == 200
    assert site.counts() == (1, 1)


def test_the_intake_refuses_to_start_without_credentials(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_ALERTS_")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "alerts", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "switchboard: set SWITCHBOARD_ALERTS_TOKEN (bearer token) or SWITCHBOARD_ALERTS_USERNAME "
        "and SWITCHBOARD_ALERTS_PASSWORD (basic auth): the alert intake never runs unauthenticated"
    )
