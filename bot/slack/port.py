"""The Slack ChatPort: posts and updates rendered notices through the Web API.

Used by the worker (tasks/runtime.py resolves `port_from_settings` lazily) and by the bot.
It is synchronous on purpose: the outbox sender that calls it runs in Celery's threads.
Errors are translated for the outbox: HTTP 429 becomes RateLimited (the row is deferred by
Retry-After), errors that no retry can fix become DeliveryError, anything else is transient.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack import streaming
from bot.slack.render import Message, escape, is_user_id, mention, render, unescape
from orchestrator import progress
from orchestrator.notices import Kind, Notice
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
STATUS_REFRESH_S = 60.0  # re-send an unchanged thread status before Slack's 2-minute expiry
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
    """ChatPort over slack_sdk's WebClient; refs are message timestamps (ts).

    A progress view shown through the streaming API has the ref "stream:<ts>". People are
    named by display name (users.info, cached) in new messages, and with Slack's `<@U…>` in
    edits, which show the name without notifying anyone.
    """

    def __init__(
        self,
        client: WebClient,
        *,
        capabilities: streaming.Capabilities | None = None,
        names_ttl_s: float = 3600.0,
    ) -> None:
        self.client = client
        self.capabilities = capabilities or streaming.CAPABILITIES
        self.names_ttl_s = names_ttl_s
        self._names: dict[str, tuple[str, float]] = {}
        self._team: str | None = None
        self._statuses: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    # --- ChatPort ---------------------------------------------------------------------------

    def post(self, target: Target, notice: Notice) -> str:
        """Post the notice; a long one becomes several messages and the first ts is returned."""
        view = _view_of(notice)
        if view is not None and target.thread:
            self._thread_status(target, view)
            ref = self._start_stream(target, notice, view)
            if ref is not None:
                return ref
        messages = render(notice, self.display_name)
        first = self._send(target, messages[0], notice)
        for message in messages[1:]:
            self._send(target, message, notice, waits=_PART_RETRIES)
        return first

    def update(self, target: Target, ref: str, notice: Notice) -> None:
        view = _view_of(notice)
        if view is not None and target.thread:
            self._thread_status(target, view)
        if ref.startswith(streaming.REF_PREFIX):
            ts = ref[len(streaming.REF_PREFIX) :]
            if view is not None and self._stream_update(target, ts, notice, view):
                return
            # Streaming is refused now: end the stream (a streaming message refuses edits
            # with `streaming_state_conflict`) and edit it like any other message.
            self._stream_call(
                notice, "chat.stopStream", self.team_id(), {"channel": target.channel, "ts": ts}
            )
            ref = ts
        self._edit(target, ref, notice)

    # --- people -------------------------------------------------------------------------------

    def display_name(self, user: str) -> str:
        """A person's display name for a new message (users.info, cached); never pings.

        Falls back to Slack's `<@U…>` when Slack will not say (no users:read scope).
        """
        if not is_user_id(user):
            return mention(user)
        now = time.monotonic()
        with self._lock:
            cached = self._names.get(user)
        if cached is not None and now - cached[1] < self.names_ttl_s:
            return cached[0]
        try:
            response = self.client.users_info(user=user)
            info = response.get("user") or {}
            profile = info.get("profile") or {}
            name = (
                profile.get("display_name")
                or profile.get("real_name")
                or info.get("real_name")
                or info.get("name")
            )
            shown = escape(str(name)) if name else mention(user)
        except SlackApiError as exc:
            code = error_code(exc)
            CHAT_API_ERRORS.labels(PLATFORM, code).inc()
            log.info("users.info %s: %s; showing the id as a mention", user, code)
            shown = mention(user)
        except Exception as exc:  # a name is not worth failing a delivery for
            log.info("users.info %s failed: %s", user, type(exc).__name__)
            return mention(user)
        with self._lock:
            self._names[user] = (shown, now)
        return shown

    # --- AI-app conventions -------------------------------------------------------------------

    def team_id(self) -> str:
        """The workspace this token belongs to (auth.test, once)."""
        if self._team is None:
            try:
                self._team = str(self.client.auth_test().get("team_id") or "?")
            except Exception as exc:
                log.info("auth.test failed (%s); treating the workspace as unknown", exc)
                return "?"
        return self._team

    def _thread_status(self, target: Target, view: progress.View) -> None:
        """Best effort: "is working on it…" while a step runs, cleared otherwise."""
        team = self.team_id()
        if not self.capabilities.allowed(team, streaming.STATUS):
            return
        status = streaming.status_for(view)
        key = (target.channel, target.thread or "")
        now = time.monotonic()
        with self._lock:
            last = self._statuses.get(key)
            if last is not None and last[0] == status and now - last[1] < STATUS_REFRESH_S:
                return  # Slack still shows it (a status lasts two minutes without a message)
            if len(self._statuses) > 10_000:  # a long-lived worker: forget old threads
                self._statuses.clear()
            self._statuses[key] = (status, now)
        try:
            self.client.api_call(
                "assistant.threads.setStatus",
                json={"channel_id": target.channel, "thread_ts": target.thread, "status": status},
            )
        except SlackApiError as exc:
            code = error_code(exc)
            CHAT_API_ERRORS.labels(PLATFORM, code).inc()
            if code in streaming.REFUSALS:
                self.capabilities.refuse(team, streaming.STATUS, code)
        except Exception as exc:
            log.info("assistant.threads.setStatus failed: %s", type(exc).__name__)

    def _start_stream(self, target: Target, notice: Notice, view: progress.View) -> str | None:
        """The progress view as a streamed plan; None means: post it as a plain message."""
        team = self.team_id()
        if not self.capabilities.allowed(team, streaming.STREAM) or not is_user_id(
            notice.requester
        ):
            return None
        params: dict[str, Any] = {
            "channel": target.channel,
            "thread_ts": target.thread,
            "recipient_user_id": notice.requester,
            "recipient_team_id": team,
            "task_display_mode": "plan",
            "chunks": streaming.plan_chunks(view),
        }
        response = self._stream_call(notice, "chat.startStream", team, params)
        if response is None:
            return None
        ts = str(response["ts"])
        if view.ended:
            self._stream_update(target, ts, notice, view, append=False)
        return streaming.REF_PREFIX + ts

    def _stream_update(
        self,
        target: Target,
        ts: str,
        notice: Notice,
        view: progress.View,
        *,
        append: bool = True,
    ) -> bool:
        """Append the view's cards; stop the stream when the run ended. False: edit instead."""
        team = self.team_id()
        if append:
            params = {"channel": target.channel, "ts": ts, "chunks": streaming.plan_chunks(view)}
            if self._stream_call(notice, "chat.appendStream", team, params) is None:
                return False
        if view.ended:
            who = self.display_name(view.ended_by) if view.ended_by else None
            closing = {
                "type": "markdown_text",
                "text": streaming.closing_markdown(view, unescape(who) if who else None),
            }
            params = {"channel": target.channel, "ts": ts, "chunks": [closing]}
            if self._stream_call(notice, "chat.stopStream", team, params) is None:
                return False
        return True

    def _stream_call(
        self, notice: Notice, method: str, team: str, params: dict[str, Any]
    ) -> Any | None:
        """A streaming call; None when Slack refused it and the caller must fall back."""
        try:
            return self._call(notice, method, **params)
        except (DeliveryError, SlackApiError) as exc:
            code = _code_of(exc)
            if code in streaming.REFUSALS:
                self.capabilities.refuse(team, streaming.STREAM, code)
            else:
                log.info("%s refused (%s); falling back to a plain message", method, code)
            return None

    # --- plain messages -----------------------------------------------------------------------

    def _edit(self, target: Target, ref: str, notice: Notice) -> None:
        message = render(notice, mention)[0]
        self._call(
            notice,
            "chat.update",
            channel=target.channel,
            ts=ref,
            text=message.text,
            blocks=message.blocks,
            link_names=False,
        )

    def _send(self, target: Target, message: Message, notice: Notice, waits: int = 0) -> str:
        while True:
            try:
                response = self._call(
                    notice,
                    "chat.postMessage",
                    channel=target.channel,
                    thread_ts=target.thread,
                    text=message.text,
                    blocks=message.blocks,
                    unfurl_links=False,
                    unfurl_media=False,
                    link_names=False,
                )
                return str(response["ts"])
            except RateLimited as exc:
                # Later parts cannot be deferred without re-posting the earlier ones.
                if waits <= 0:
                    raise
                waits -= 1
                time.sleep(min(exc.retry_after, 30.0))

    def _call(self, notice: Notice, method: str, **params: Any) -> Any:
        params = {k: v for k, v in params.items() if v is not None}
        try:
            response = self.client.api_call(method, json=params)
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


def _view_of(notice: Notice) -> progress.View | None:
    if notice.kind != Kind.PROGRESS or not notice.view:
        return None
    return progress.View.from_json(notice.view)


def _code_of(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return error_code(exc)
    cause = exc.__cause__
    return error_code(cause) if isinstance(cause, SlackApiError) else str(exc)


def make_client(settings: SlackSettings) -> WebClient:
    return WebClient(token=settings.bot_token, base_url=settings.api_url, timeout=10)


def port_from_settings() -> SlackChatPort | None:
    """The worker's Slack port; None when this process has no SLACK_BOT_TOKEN."""
    settings = SlackSettings.from_env()
    if not settings.bot_token:
        return None
    return SlackChatPort(make_client(settings))
