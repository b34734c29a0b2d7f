"""`switchboard discord`: the bot process.

Delivery design: notices reach Discord through the outbox, drained by whichever process
holds the Discord port — Celery workers with DISCORD_TOKEN set (tasks.runtime resolves
`bot.discord.port:port_from_settings`). This process only translates interactions and
enqueues tasks; it never posts notices itself, so one drain path (guarded by the outbox's
per-run lease and row states) keeps every post exactly-once. Without BROKER_URL the
embedded queue runs here, so this process is also that worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import discord

from bot.discord import endpoints
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
    try:
        endpoints.apply_from_env()
    except endpoints.EndpointError as exc:
        raise ConfigError(str(exc)) from None
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
        asyncio.run(serve(bot, token))
    except discord.LoginFailure:
        raise ConfigError(
            "Discord refused DISCORD_TOKEN (401 Unauthorized); reset the bot token in the "
            "developer portal and set the new one"
        ) from None
    finally:
        if embedded is not None:
            embedded.stop()
    log.info("discord bot stopped")


LOGIN_RETRY_MAX_S = 60.0


async def serve(bot: SwitchboardBot, token: str) -> None:
    """Log in (waiting out an unreachable Discord), hold the gateway, and close cleanly on
    SIGTERM or SIGINT: the gateway gets a normal close and the HTTP session is released."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with bot:
        if not await _login(bot, token, stop):
            return
        running = asyncio.create_task(bot.connect(reconnect=True), name="discord-gateway")
        stopping = asyncio.create_task(stop.wait(), name="discord-stop")
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            log.info("shutting down on a signal")
            # Stop reading first: with a reader waiting, aiohttp lets the reader's cleanup
            # close the socket with discord.py's default 4000 (a resumable session, so the
            # bot would linger online); alone, close() sends 1000 and Discord ends the session.
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await bot.close()
            return
        stopping.cancel()
        await running  # re-raises what ended the gateway


async def _login(bot: SwitchboardBot, token: str, stop: asyncio.Event) -> bool:
    """True once logged in; False when asked to stop first. A refused token raises."""
    delay = 1.0
    while not stop.is_set():
        try:
            await bot.login(token)
            return True
        except discord.LoginFailure:
            raise
        except (TimeoutError, OSError, discord.HTTPException) as exc:
            log.warning(
                "cannot reach Discord to log in (%s: %s); trying again in %.0fs",
                type(exc).__name__,
                exc,
                delay,
            )
            # A failed login must not leak its session; the next one builds a fresh
            # connector (closing the session closed the one it owned).
            await bot.http.close()
            bot.http.connector = discord.utils.MISSING
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, LOGIN_RETRY_MAX_S)
    return False
