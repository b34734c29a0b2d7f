"""The Discord ChatPort: outbox notices out through discord.py's own HTTP client.

The port is synchronous (the OutboxSender runs on Celery pool threads) and submits each
REST call to the event loop that owns the HTTP client: in a worker, the process loop of
tasks.bridge; in the bot's embedded mode, the bot's loop. discord.py keeps per-route 429
buckets and waits out short limits itself; a limit longer than `MAX_WAIT_S` comes back
as `RateLimited`, which the OutboxSender turns into a deferred retry.

Refs: a run's OPENED message starts a thread whose id equals the message id, so one id is
both the opening message (edited in the parent channel) and the thread for every later post.
The progress view is an embed on one message in the thread, edited in place. Everything is
sent with `AllowedMentions.none()`: mentions render as names and ping nobody.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import discord
from discord.http import HTTPClient, handle_message_parameters
from discord.utils import MISSING

from bot.discord.render import MessageSpec, render, thread_name
from bot.discord.views import escalation_view
from orchestrator.notices import Kind, Notice
from orchestrator.ports import DeliveryError, RateLimited, Target
from orchestrator.telemetry.metrics import (
    CHAT_API_ERRORS,
    CHAT_DELIVERIES,
    CHAT_RATE_LIMITED,
    error_label,
)

log = logging.getLogger(__name__)

PLATFORM = "discord"
MAX_WAIT_S = 30.0  # discord.py's floor: waits up to this long in-call before raising
THREAD_ARCHIVE_MINUTES = 1440
T = TypeVar("T")


def rate_limit_trace() -> aiohttp.TraceConfig:
    """Count every 429 Discord answers, including those discord.py retries by itself."""

    async def on_end(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
        if params.response.status == 429:
            CHAT_RATE_LIMITED.labels(platform=PLATFORM).inc()

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    return trace


class DiscordPort:
    """ChatPort over a logged-in `discord.http.HTTPClient` running on `loop`."""

    def __init__(
        self, http: HTTPClient, loop: asyncio.AbstractEventLoop, *, timeout_s: float = 120.0
    ) -> None:
        self.http = http
        self.loop = loop
        self.timeout_s = timeout_s
        self._loop_thread: int | None = None

    # --- ChatPort -------------------------------------------------------------------------

    def post(self, target: Target, notice: Notice) -> str:
        """Post a notice; OPENED in a channel also starts the run's thread (its id is the ref)."""
        ref = self._call(self._post(target, notice))
        CHAT_DELIVERIES.labels(platform=PLATFORM, kind=str(notice.kind)).inc()
        return ref

    def update(self, target: Target, ref: str, notice: Notice) -> None:
        """Edit a message in place (progress, the opening line's outcome, a decision)."""
        self._call(self._update(target, ref, notice))
        CHAT_DELIVERIES.labels(platform=PLATFORM, kind=str(notice.kind)).inc()

    # --- the loop bridge --------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if _running_loop() is self.loop:
            coro.close()
            raise RuntimeError("DiscordPort is synchronous; call it off its event loop thread")
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout_s)
        except discord.RateLimited as exc:
            raise RateLimited(exc.retry_after) from exc
        except (discord.Forbidden, discord.NotFound) as exc:
            CHAT_API_ERRORS.labels(platform=PLATFORM, error=error_label(exc)).inc()
            raise DeliveryError(f"Discord refused the message: {exc}") from exc
        except discord.DiscordServerError as exc:
            CHAT_API_ERRORS.labels(platform=PLATFORM, error=error_label(exc)).inc()
            raise
        except discord.HTTPException as exc:
            CHAT_API_ERRORS.labels(platform=PLATFORM, error=error_label(exc)).inc()
            if exc.status == 429:
                raise RateLimited(5.0) from exc
            raise DeliveryError(f"Discord rejected the message: {exc}") from exc
        except Exception as exc:
            CHAT_API_ERRORS.labels(platform=PLATFORM, error=error_label(exc)).inc()
            raise

    # --- REST calls, on the loop ----------------------------------------------------------

    async def _post(self, target: Target, notice: Notice) -> str:
        spec = render(notice)
        if notice.kind == Kind.OPENED and target.thread is None:
            message_id = await self._send(target.channel, spec)
            thread = await self.http.start_thread_with_message(
                target.channel,
                message_id,
                name=thread_name(notice),
                auto_archive_duration=THREAD_ARCHIVE_MINUTES,
            )
            return str(thread["id"])
        return await self._send(target.thread or target.channel, spec)

    async def _send(self, channel_id: str, spec: MessageSpec) -> str:
        """Send every chunk in order; the ref is the first message, or the one with buttons."""
        refs: list[str] = []
        last = len(spec.chunks) - 1
        for index, chunk in enumerate(spec.chunks):
            file = MISSING
            if index == last and spec.attachment is not None:
                data = io.BytesIO(spec.attachment.text.encode())
                file = discord.File(data, filename=spec.attachment.filename)
            view = escalation_view(spec.buttons) if index == last and spec.buttons else MISSING
            embed = _embed(spec) if index == 0 else MISSING
            params = handle_message_parameters(
                content=chunk,
                file=file,
                view=view,
                embed=embed,
                allowed_mentions=discord.AllowedMentions.none(),
            )
            with params:
                message = await self.http.send_message(channel_id, params=params)
            refs.append(str(message["id"]))
        return refs[-1] if spec.buttons else refs[0]

    async def _update(self, target: Target, ref: str, notice: Notice) -> None:
        spec = render(notice)
        where = target.thread or target.channel
        if notice.kind == Kind.OPENED and (target.thread is None or target.thread == ref):
            where = target.channel  # the thread's starter message lives in the parent channel
        params = handle_message_parameters(
            content=spec.chunks[0],
            view=None if spec.clear_buttons else MISSING,
            embed=_embed(spec),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        with params:
            await self.http.edit_message(where, ref, params=params)


def _embed(spec: MessageSpec) -> discord.Embed | Any:
    """The spec's embed for discord.py, or MISSING (leave a message's embeds as they are)."""
    return discord.Embed.from_dict(spec.embed) if spec.embed is not None else MISSING


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_lock = threading.Lock()


def port_from_settings() -> DiscordPort | None:
    """The worker's port (tasks.runtime resolves it lazily); None without DISCORD_TOKEN."""
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        return None
    from bot.discord.endpoints import apply_from_env
    from tasks import bridge

    apply_from_env()  # DISCORD_API_URL: a REST proxy, or a test's stand-in
    with _lock:
        loop = bridge.loop()
        http = HTTPClient(loop, http_trace=rate_limit_trace(), max_ratelimit_timeout=MAX_WAIT_S)
        try:
            bridge.run(http.static_login(token), timeout=60)
        except BaseException:
            bridge.run(http.close(), timeout=10)  # a failed login must not leak its session
            raise
    log.info("discord port ready in this process")
    return DiscordPort(http, loop)
