"""`switchboard discord`: the bot process.

Delivery design: notices reach Discord through the outbox, drained by whichever process
holds the Discord port — Celery workers with DISCORD_TOKEN set (tasks.runtime resolves
`bot.discord.port:port_from_settings`). This process only translates interactions and
enqueues tasks; it never posts notices itself, so one drain path (guarded by the outbox's
per-run lease and row states) keeps every post exactly-once. Without BROKER_URL the
embedded queue runs here, so this process is also that worker.
"""

from __future__ import annotations

import logging
import os

from bot.discord.app import SwitchboardBot, queue_services
from bot.discord.port import rate_limit_trace

log = logging.getLogger(__name__)


class ConfigError(SystemExit):
    """A missing or malformed setting: exits with one line that says what to set."""

    def __init__(self, message: str) -> None:
        super().__init__(f"switchboard discord: {message}")


def _guild_id() -> int | None:
    raw = os.environ.get("DISCORD_GUILD_ID", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ConfigError(f"DISCORD_GUILD_ID must be a server id (digits), not {raw!r}")
    return int(raw)


def run() -> None:
    """Run the bot until interrupted (DISCORD_TOKEN; DISCORD_GUILD_ID for a dev guild)."""
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        raise ConfigError(
            "DISCORD_TOKEN is not set; copy the bot token from the Discord developer portal "
            "(your application → Bot → Reset Token)"
        )
    guild_id = _guild_id()
    from orchestrator.settings import get_settings
    from orchestrator.store.db import upgrade
    from orchestrator.store.repository import Store
    from orchestrator.teams import load_teams
    from orchestrator.telemetry.metrics import serve_metrics
    from tasks import runtime

    settings = get_settings()
    upgrade(settings.database_url)
    config = load_teams(settings.teams_file)
    embedded = None
    if not settings.broker_url:
        from tasks.inprocess import EmbeddedWorker

        runtime.install(runtime.build(settings))
        embedded = EmbeddedWorker(concurrency=settings.inprocess_concurrency)
        embedded.start()
        log.info("no BROKER_URL: running steps and delivery in this process")
    if settings.metrics_port:
        serve_metrics(settings.metrics_port)
    from orchestrator.telemetry.tracing import setup_tracing

    setup_tracing("switchboard-discord")
    bot = SwitchboardBot(
        queue_services(Store(settings.database_url), config),
        guild_id=guild_id,
        http_trace=rate_limit_trace(),
    )
    try:
        bot.run(token, log_handler=None)
    finally:
        if embedded is not None:
            embedded.stop()
