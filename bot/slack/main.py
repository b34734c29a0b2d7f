"""`switchboard slack`: Socket Mode with SLACK_APP_TOKEN, else HTTP served by uvicorn.

HTTP mode serves three paths from one ASGI app: /slack/events (events, slash commands and
interactivity, through Bolt's own ASGI adapter and its signature verification), /healthz,
and /metrics. With no BROKER_URL the bot runs an embedded worker, as `switchboard chat` does,
so a laptop needs nothing but the Slack app.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from slack_bolt.adapter.asgi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp

from bot.alerts.http import ALERTS_PATH
from bot.alerts.main import mounted_endpoint
from bot.slack.app import Core, build_app
from bot.slack.port import SlackSettings
from bot.slack.queue import CeleryQueue
from orchestrator.settings import get_settings
from orchestrator.telemetry.metrics import make_asgi_app, serve_metrics
from orchestrator.telemetry.tracing import setup_tracing

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

EVENTS_PATH = "/slack/events"


def asgi_app(bolt: AsyncApp, alerts: ASGIApp | None = None) -> ASGIApp:
    """Route /healthz and /metrics ourselves; everything else is Bolt's (it 404s the rest).

    `alerts` is the alert intake's endpoint (bot.alerts), served at /alerts when given.
    """
    slack = AsyncSlackRequestHandler(bolt, path=EVENTS_PATH)
    metrics = make_asgi_app()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if alerts is not None and scope["type"] == "http" and scope["path"] == ALERTS_PATH:
            await alerts(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] == "/healthz":
            body = b'{"ok": true}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["path"] == "/metrics":
            await metrics(scope, receive, send)
            return
        await slack(scope, receive, send)

    return app


def _core() -> tuple[Core, Any]:
    from orchestrator.settings import get_settings
    from orchestrator.store.repository import Store
    from orchestrator.teams import load_teams

    settings = get_settings()
    embedded = None
    if not settings.broker_url:
        from orchestrator.store.db import upgrade
        from tasks import runtime
        from tasks.inprocess import EmbeddedWorker

        upgrade(settings.database_url)
        runtime.install(runtime.build(settings))
        embedded = EmbeddedWorker(concurrency=settings.inprocess_concurrency)
        embedded.start()
        log.info("no BROKER_URL: running an embedded worker in this process")
    core = Core(Store(settings.database_url), load_teams(settings.teams_file), CeleryQueue())
    return core, embedded


async def _socket_mode(bolt: AsyncApp, slack: SlackSettings) -> None:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_sdk.web.async_client import AsyncWebClient

    handler = AsyncSocketModeHandler(
        bolt, slack.app_token, web_client=AsyncWebClient(base_url=slack.api_url)
    )
    await handler.start_async()


def run(port: int) -> None:
    """Serve Slack until interrupted; exits with a message when a required token is missing."""
    slack = SlackSettings.from_env()
    if not slack.bot_token:
        raise SystemExit("switchboard: SLACK_BOT_TOKEN is not set (the app's xoxb- token)")
    if not slack.app_token and not slack.signing_secret:
        raise SystemExit(
            "switchboard: set SLACK_SIGNING_SECRET for HTTP mode, "
            "or SLACK_APP_TOKEN (xapp-) for Socket Mode"
        )
    core, embedded = _core()
    settings = get_settings()
    setup_tracing("switchboard-slack")
    if settings.metrics_port:  # Socket Mode has no HTTP port of its own to serve /metrics on
        serve_metrics(settings.metrics_port)
    try:
        if slack.app_token:
            log.info("Slack Socket Mode")
            asyncio.run(_socket_mode(build_app(core, slack, socket_mode=True), slack))
        else:
            import uvicorn

            host = os.environ.get("SLACK_HOST", "0.0.0.0")
            log.info("Slack HTTP mode on %s:%s%s", host, port, EVENTS_PATH)
            alerts = mounted_endpoint(core.store, core.config)  # None unless credentials are set
            uvicorn.run(
                asgi_app(build_app(core, slack), alerts),
                host=host,
                port=port,
                log_config=None,
                proxy_headers=True,
                lifespan="on",
            )
    finally:
        if embedded is not None:
            embedded.stop()
