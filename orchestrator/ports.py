"""The ChatPort seam: the adapter's side of outbound chat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from orchestrator.notices import Notice


@dataclass(frozen=True)
class Target:
    """Where a notice goes: a platform channel and, once the run has one, its thread."""

    platform: str
    channel: str
    thread: str | None = None


class RateLimited(Exception):
    """The platform said 429; the sender must wait `retry_after` seconds and try again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class DeliveryError(Exception):
    """The platform refused the message for good (for example the bot left the channel)."""


class ChatPort(Protocol):
    def post(self, target: Target, notice: Notice) -> str:
        """Post a new message and return its platform reference (Slack ts, Discord id)."""
        ...

    def update(self, target: Target, ref: str, notice: Notice) -> None:
        """Replace the content of a message posted earlier."""
        ...
