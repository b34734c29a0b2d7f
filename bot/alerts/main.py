"""`switchboard alerts --port`: Alertmanager's webhook on its own HTTP server (uvicorn).

Serves `POST /alerts`, `GET /healthz` and `GET /metrics`, and every FLUSH_EVERY_S brings
pending "N more alerts held" messages up to date. With no BROKER_URL it runs an embedded
worker, as `switchboard slack` does. `mounted_endpoint` gives the Slack bot's HTTP server
the same endpoint when alert credentials are set.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from bot.alerts.auth import Credentials, CredentialsError
from bot.alerts.held import FLUSH_EVERY_S, HeldNotices
from bot.alerts.http import ALERTS_PATH, ASGIApp, Receive, Scope, Send, alerts_endpoint, respond
from bot.alerts.intake import CeleryQueue, Intake, Queue
from orchestrator.store.repository import Store
from orchestrator.teams import TeamsConfig

log = logging.getLogger(__name__)


def _port_for(platform: str) -> Any:
    from tasks import runtime

    return runtime.port_for(platform)


def build(
    store: Store, config: TeamsConfig, credentials: Credentials, queue: Queue | None = None
) -> tuple[ASGIApp, HeldNotices]:
    """The endpoint and its storm-message sender, over one store and teams file."""
    intake = Intake(store, config, queue or CeleryQueue())
    held = HeldNotices(intake.alerts, config.alerts.per_channel, _port_for)
    if not config.alerts.routes:
        log.warning(
            "the teams file has no alerts.routes: notifications are acknowledged and ignored"
        )
    return alerts_endpoint(intake, credentials, held), held


def mounted_endpoint(store: Store, config: TeamsConfig) -> ASGIApp | None:
    """The endpoint for another server (the Slack bot's), or None when no credentials are set."""
    if not Credentials.configured():
        return None
    try:
        credentials = Credentials.from_env()
    except CredentialsError as exc:
        raise SystemExit(f"switchboard: {exc}") from None
    app, _held = build(store, config, credentials)
    log.info("alert intake mounted at %s", ALERTS_PATH)
    return app


def server_app(endpoint: ASGIApp) -> ASGIApp:
    """/alerts, /healthz and /metrics; anything else is 404."""
    from orchestrator.telemetry.metrics import make_asgi_app

    metrics = make_asgi_app()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == ALERTS_PATH:
            await endpoint(scope, receive, send)
        elif path == "/healthz":
            await respond(send, 200, {"ok": True})
        elif path == "/metrics":
            await metrics(scope, receive, send)
        else:
            await respond(send, 404, {"error": f"not found; Alertmanager posts to {ALERTS_PATH}"})

    return app


def _flush_loop(held: HeldNotices, stop: threading.Event) -> None:
    while not stop.wait(FLUSH_EVERY_S):
        try:
            held.flush()
        except Exception:
            log.exception("held-alerts flush failed")


def run(port: int, host: str = "0.0.0.0") -> None:
    """Serve the intake until interrupted; exits with a message when credentials are missing."""
    import uvicorn

    from orchestrator.settings import get_settings
    from orchestrator.teams import load_teams
    from orchestrator.telemetry.metrics import serve_metrics
    from orchestrator.telemetry.tracing import setup_tracing

    try:
        credentials = Credentials.from_env()
    except CredentialsError as exc:
        raise SystemExit(f"switchboard: {exc}") from None
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
    setup_tracing("switchboard-alerts")
    if settings.metrics_port and settings.metrics_port != port:
        serve_metrics(settings.metrics_port)
    store = Store(settings.database_url)
    endpoint, held = build(store, load_teams(settings.teams_file), credentials)
    stop = threading.Event()
    threading.Thread(target=_flush_loop, args=(held, stop), name="held-alerts", daemon=True).start()
    log.info("alert intake: Alertmanager posts to http://%s:%s%s", host, port, ALERTS_PATH)
    try:
        uvicorn.run(
            server_app(endpoint),
            host=host,
            port=port,
            log_config=None,
            proxy_headers=True,
            lifespan="on",
        )
    finally:
        stop.set()
        if embedded is not None:
            embedded.stop()
