"""Who belongs to which Slack user group, cached: approvers may be named by group."""

from __future__ import annotations

import asyncio
import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class UserGroups:
    """usergroups.list(include_users=true), refreshed at most every `ttl_s` seconds."""

    def __init__(self, client: AsyncWebClient, ttl_s: float = 60.0) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._members: dict[str, set[str]] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._warned = False

    async def groups_of(self, user: str) -> tuple[str, ...]:
        """The ids of the user groups `user` is in; () when Slack will not tell us."""
        async with self._lock:
            if time.monotonic() - self._loaded_at > self.ttl_s:
                await self._load()
        return tuple(sorted(g for g, users in self._members.items() if user in users))

    async def _load(self) -> None:
        try:
            response = await self.client.usergroups_list(include_users=True)
        except SlackApiError as exc:
            if not self._warned:  # usually a missing usergroups:read scope or a free workspace
                log.warning("cannot list Slack user groups: %s", exc.response.get("error"))
                self._warned = True
            self._loaded_at = time.monotonic()
            return
        self._members = {
            str(group["id"]): set(group.get("users") or [])
            for group in response.get("usergroups") or []
        }
        self._loaded_at = time.monotonic()
