"""Where discord.py sends REST calls and opens the gateway: DISCORD_API_URL and
DISCORD_GATEWAY_URL, for the bot and the workers alike.

Operators put REST proxies that share one rate-limit budget between processes in front of
Discord, and tests point both at a local stand-in. discord.py keeps the REST base in
`Route.BASE` and the gateway in `DiscordWebSocket.DEFAULT_GATEWAY`, both process-wide.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

import discord.gateway
import discord.http
import yarl

API_VERSION = "v10"
_VERSIONED = re.compile(r"/v\d+$")


class EndpointError(ValueError):
    """A URL variable that cannot be used, in one line naming it."""


def api_base(url: str) -> str:
    """The REST base with its API version: `http://proxy/api` becomes `.../api/v10`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EndpointError(f"DISCORD_API_URL must be an http(s) URL, not {url!r}")
    base = url.rstrip("/")
    return base if _VERSIONED.search(base) else f"{base}/{API_VERSION}"


def gateway(url: str) -> yarl.URL:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise EndpointError(f"DISCORD_GATEWAY_URL must be a ws(s) URL, not {url!r}")
    return yarl.URL(url)


def apply_from_env() -> None:
    """Point discord.py at DISCORD_API_URL / DISCORD_GATEWAY_URL when they are set."""
    api = os.environ.get("DISCORD_API_URL", "").strip()
    if api:
        discord.http.Route.BASE = api_base(api)
    socket = os.environ.get("DISCORD_GATEWAY_URL", "").strip()
    if socket:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway(socket)
