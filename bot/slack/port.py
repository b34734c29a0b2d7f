"""The Slack ChatPort: posts and updates rendered notices through the Web API.

Used by the worker (tasks/runtime.py resolves `port_from_settings` lazily) and by the bot.
It is synchronous on purpose: the outbox sender that calls it runs in Celery's threads.
Errors are translated for the outbox: HTTP 429 becomes RateLimited (the row is deferred by
Retry-After), errors that no retry can fix become DeliveryError, anything else is transient.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack.render import Message, render
from orchestrator.notices import Notice
from orchestrator.ports import DeliveryError, RateLimited, Target
from orchestrator.telemetry.metrics import CHAT_API_ERRORS, CHAT_DELIVERIES, CHAT_RATE_LIMITED

log = logging.getLogger(__name__)

PLATFORM = "slack"
DEFAULT_API_URL = "https://slack.com/api/"

# Retrying cannot help with these: the message or the channel is wrong for good.
PERMANENT_ERRORS = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "msg_too_long",
        "invalid_blocks",
        "invalid_blocks_format",
        "no_text",
        "restricted_action",
        "cant_update_message",
        "message_not_found",
        "edit_window_closed",
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "missing_scope",
    }
)
_PART_RETRIES = 3  # 429s on the second and later part of a split message are waited out here


@dataclass(frozen=True)
class SlackSettings:
    """The Slack environment variables, named as Slack names them."""

    bot_token: str | None
    signing_secret: str | None
    app_token: str | None
    api_url: str

    @classmethod
    def from_env(cls) -> SlackSettings:
        url = os.environ.get("SLACK_API_URL") or DEFAULT_API_URL
        return cls(
            bot_token=os.environ.get("SLACK_BOT_TOKEN") or None,
            signing_secret=os.environ.get("SLACK_SIGNING_SECRET") or None,
            app_token=os.environ.get("SLACK_APP_TOKEN") or None,
            api_url=url if url.endswith("/") else url + "/",
        )


def retry_after(error: SlackApiError) -> float:
    """Seconds Slack asked us to wait (Retry-After), 1 s if it did not say."""
    headers = getattr(error.response, "headers", None) or {}
    value = None
    for key, item in headers.items():
        if key.lower() == "retry-after":
            value = item[0] if isinstance(item, list) else item
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0


def error_code(error: SlackApiError) -> str:
    data = getattr(error.response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return f"http_{getattr(error.response, 'status_code', 'error')}"


class SlackChatPort:
    """ChatPort over slack_sdk's WebClient; refs are message timestamps (ts)."""

    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post(self, target: Target, notice: Notice) -> str:
        """Post the notice; a long one becomes several messages and the first ts is returned."""
        messages = render(notice)
        first = self._send(target, messages[0], notice)
        for message in messages[1:]:
            self._send(target, message, notice, waits=_PART_RETRIES)
        return first

    def update(self, target: Target, ref: str, notice: Notice) -> None:
        message = render(notice)[0]
        self._call(
            notice,
            "chat_update",
            channel=target.channel,
            ts=ref,
            text=message.text,
            blocks=message.blocks,
        )

    def _send(self, target: Target, message: Message, notice: Notice, waits: int = 0) -> str:
        while True:
            try:
                response = self._call(
                    notice,
                    "chat_postMessage",
                    channel=target.channel,
                    thread_ts=target.thread,
                    text=message.text,
                    blocks=message.blocks,
                    unfurl_links=False,
                    unfurl_media=False,
                )
                return str(response["ts"])
            except RateLimited as exc:
                # Later parts cannot be deferred without re-posting the earlier ones.
                if waits <= 0:
                    raise
                waits -= 1
                time.sleep(min(exc.retry_after, 30.0))

    def _call(self, notice: Notice, method: str, **kwargs: Any) -> Any:
        try:
            response = getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            status = getattr(exc.response, "status_code", None)
            code = error_code(exc)
            if status == 429 or code == "ratelimited":
                CHAT_RATE_LIMITED.labels(PLATFORM).inc()
                raise RateLimited(retry_after(exc)) from exc
            CHAT_API_ERRORS.labels(PLATFORM, code).inc()
            if code in PERMANENT_ERRORS:
                raise DeliveryError(f"{method}: {code}") from exc
            raise
        except Exception as exc:
            CHAT_API_ERRORS.labels(PLATFORM, type(exc).__name__).inc()
            raise
        CHAT_DELIVERIES.labels(PLATFORM, str(notice.kind)).inc()
        return response


def make_client(settings: SlackSettings) -> WebClient:
    return WebClient(token=settings.bot_token, base_url=settings.api_url, timeout=10)


def port_from_settings() -> SlackChatPort | None:
    """The worker's Slack port; None when this process has no SLACK_BOT_TOKEN."""
    settings = SlackSettings.from_env()
    if not settings.bot_token:
        return None
    return SlackChatPort(make_client(settings))
