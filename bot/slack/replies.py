"""Private word to a Slack user when what they asked for failed after Slack was acked.

A worker that cannot start a run (a refused request, the database gone) has no thread to
post in yet. Slash commands carry a `response_url` that takes an ephemeral message for 30
minutes; mentions have none, so those get chat.postEphemeral in the channel they came from.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient

from bot.slack.port import SlackSettings
from bot.slack.render import escape

log = logging.getLogger(__name__)


def reply(reply_to: dict[str, Any], text: str) -> None:
    """Tell the user `text` privately; raises when Slack could not be told."""
    message = escape(text)
    url = reply_to.get("response_url")
    if url:
        response = WebhookClient(url, timeout=10).send(
            text=message, response_type="ephemeral", replace_original=False
        )
        if response.status_code == 200:
            return
        log.warning("response_url answered %s; trying chat.postEphemeral", response.status_code)
    settings = SlackSettings.from_env()
    if not settings.bot_token:
        raise RuntimeError("no SLACK_BOT_TOKEN in this process to post the reply with")
    client = WebClient(token=settings.bot_token, base_url=settings.api_url, timeout=10)
    client.chat_postEphemeral(
        channel=reply_to["channel"],
        user=reply_to["user"],
        text=message,
        thread_ts=reply_to.get("thread"),
    )
