"""Slack's AI-app conventions: thread status and the streaming message API, where allowed.

A workspace (or token) that has them shows the progress view as one streamed message in
plan mode (`chat.startStream` with `task_display_mode=plan`, a `task_update` chunk per step,
`chat.stopStream` when the run ends) and "is working on it…" beside the bot while a step
runs (`assistant.threads.setStatus`). One that lacks them answers the first call with
`not_allowed_token_type`, `feature_not_enabled`, `unknown_method` (or a missing scope):
the port then falls back to chat.postMessage / chat.update and remembers, per workspace and
per process, never to try again. Refusals about one message (a missing recipient, say)
fall back for that message only.

Streamed fields are plain text or Markdown, not mrkdwn: `<` gets a zero-width space after
it there, so no user text can form `<!channel>`, `<!here>` or `<@U…>` in them either.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from bot.slack import render
from orchestrator import progress

log = logging.getLogger(__name__)

STREAM = "stream"  # the streaming message API (chat.startStream / appendStream / stopStream)
STATUS = "status"  # assistant.threads.setStatus
REF_PREFIX = "stream:"  # a progress ref that names a streamed message: "stream:<ts>"

# The workspace or token cannot use the feature at all: remember and stop asking.
REFUSALS = frozenset(
    {
        "not_allowed_token_type",
        "feature_not_enabled",
        "unknown_method",
        "missing_scope",
        "method_deprecated",
        "not_allowed",
        "team_not_allowed",
        "access_denied",
    }
)
NOT_STREAMING = "message_not_in_streaming_state"  # the stream ended: edit it like any message
WORKING_STATUS = "is working on it…"
TITLE_CHARS = 150
TEXT_CHARS = 2900
MARKDOWN_CHARS = 12000


class Capabilities:
    """Which features each workspace refused, for the life of this process."""

    def __init__(self) -> None:
        self._refused: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def allowed(self, team: str, feature: str) -> bool:
        with self._lock:
            return (team, feature) not in self._refused

    def refuse(self, team: str, feature: str, error: str) -> None:
        with self._lock:
            if (team, feature) in self._refused:
                return
            self._refused[(team, feature)] = error
        log.info(
            "Slack workspace %s refused %s (%s); using chat.postMessage/chat.update there",
            team,
            feature,
            error,
        )

    def forget(self) -> None:
        with self._lock:
            self._refused.clear()


CAPABILITIES = Capabilities()


def plain(text: str, limit: int = TEXT_CHARS) -> str:
    """Text for plain-text and Markdown fields: no mention or broadcast can form in it."""
    text = render.plain(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan_chunks(view: progress.View) -> list[dict[str, Any]]:
    """The view as a plan title and one task card per step (the same ids update in place)."""
    chunks: list[dict[str, Any]] = [
        {"type": "plan_update", "title": plain(progress.headline(view), TITLE_CHARS)}
    ]
    for item in view.items:
        chunk: dict[str, Any] = {
            "type": "task_update",
            "id": f"step-{item.id}",
            "title": plain(item.title, TITLE_CHARS),
            "status": item.status,
        }
        figures = progress.item_figures(item)
        if figures:
            chunk["details"] = plain(figures)
        if item.detail:
            chunk["output"] = plain(item.detail)
        chunks.append(chunk)
    return chunks


def closing_markdown(view: progress.View, ended_by: str | None) -> str:
    """The last line of a finished stream: outcome and totals, in Markdown."""
    line = f"**{plain(progress.headline(view))}** · {plain(progress.totals(view))}"
    if ended_by:
        line += f"\n{plain('Aborted by ' + ended_by)}"
    elif view.ended_reason:
        line += f"\n{plain(view.ended_reason)}"
    return line[:MARKDOWN_CHARS]


def status_for(view: progress.View) -> str:
    """The thread status while a step runs; empty (cleared) when paused or ended."""
    return WORKING_STATUS if view.state in (progress.QUEUED, progress.RUNNING) else ""
