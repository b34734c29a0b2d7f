"""A local stand-in for Discord's REST API and gateway, and payload builders for events.

discord.py's own HTTPClient and webhook adapter talk to it once `discord.http.Route.BASE`
points here (DISCORD_API_URL). It records every call, keeps the messages and threads it was
asked to make, and can answer the next calls to a route with 429 like Discord does, or
refuse the next logins with 401. Its gateway (DISCORD_GATEWAY_URL) follows Discord's
documented handshake: Hello (op 10), Identify (op 2) answered by READY, Heartbeat (op 1)
answered by Heartbeat ACK (op 11), zlib-stream transport compression when asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

T = TypeVar("T")
GUILD = "1100000000000000001"
CHANNEL = "1100000000000000002"
APP = "1100000000000000003"
BOT = "1100000000000000004"
EPOCH = "2026-01-01T00:00:00.000000+00:00"
# view_channel, send_messages, create_public_threads, send_messages_in_threads, embed, attach
BOT_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 35) | (1 << 38) | (1 << 14) | (1 << 15)


class LoopThread:
    """An asyncio loop on a daemon thread, for code that must live on a loop."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON as Discord sends it: discord.py wants exactly `application/json`, no charset."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def user(user_id: str, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


@dataclass
class Call:
    method: str
    path: str
    body: Any
    files: dict[str, str] = field(default_factory=dict)


class FakeDiscord:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.threads: dict[str, dict[str, Any]] = {}
        self.throttle: dict[tuple[str, str], list[float]] = {}  # (method, path prefix) -> waits
        self._ids = itertools.count(1_200_000_000_000_000_000)
        self._lock = threading.Lock()
        self.refuse_logins = 0  # answer the next GET /users/@me with 401, this many times
        self.gateway_received: list[dict[str, Any]] = []  # payloads clients sent, in order
        self.gateway_closed: list[int | None] = []  # the close code of each finished connection
        self.loop = LoopThread("fake-discord")
        self.url = self.loop.run(self._start())
        self.gateway_url = self.url.replace("http://", "ws://") + "/gateway"

    # --- lifecycle ------------------------------------------------------------------------

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/api/v10/{tail:.*}", self._handle)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/", self._gateway)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.loop.run(self._runner.cleanup())
        self.loop.stop()

    def new_id(self) -> str:
        return str(next(self._ids))

    # --- queries for tests ----------------------------------------------------------------

    def find(self, method: str, fragment: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and fragment in c.path]

    def in_channel(self, channel_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages.values() if m["channel_id"] == channel_id]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        paths = "\n".join(f"{c.method} {c.path}" for c in self.calls[-30:])
        raise AssertionError(f"timed out waiting for {what or predicate}; last calls:\n{paths}")

    # --- the API --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body, files = await self._body(request)
        with self._lock:
            self.calls.append(Call(request.method, path, body, files))
            for (method, prefix), waits in self.throttle.items():
                if method == request.method and path.startswith(prefix) and waits:
                    wait = waits.pop(0)
                    return _json(
                        {"message": "You are being rate limited.", "retry_after": wait,
                         "global": False},
                        status=429,
                        headers={"Retry-After": str(wait), "X-RateLimit-Scope": "user",
                                 "Via": "1.1 google"},
                    )  # fmt: skip
            return self._answer(request.method, path, body, files)

    async def _body(self, request: web.Request) -> tuple[Any, dict[str, str]]:
        if request.content_type.startswith("multipart/"):
            body: Any = None
            files: dict[str, str] = {}
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                else:
                    files[part.filename or part.name or "?"] = (await part.read()).decode()
            return body, files
        text = await request.text()
        return (json.loads(text) if text else None), {}

    def _answer(self, method: str, path: str, body: Any, files: dict[str, str]) -> web.Response:
        parts = path.strip("/").split("/")
        if path == "/users/@me" and self.refuse_logins > 0:
            self.refuse_logins -= 1
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        if path == "/users/@me":
            return _json(user(BOT, "switchboard", bot=True))
        if path == "/oauth2/applications/@me":
            return _json(application())
        if parts[0] == "applications" and parts[-1] == "commands" and method == "PUT":
            return _json([
                {**cmd, "id": self.new_id(), "application_id": APP, "version": "1",
                 "type": cmd.get("type", 1), "default_member_permissions": None,
                 "guild_id": parts[3] if "guilds" in parts else None}
                for cmd in body
            ])  # fmt: skip
        if parts[0] == "channels" and parts[-1] == "threads" and method == "POST":
            channel_id, message_id = parts[1], parts[3]
            thread = {
                "id": message_id, "type": 11, "guild_id": GUILD, "parent_id": channel_id,
                "name": body["name"], "owner_id": BOT, "message_count": 0, "member_count": 1,
                "rate_limit_per_user": 0, "flags": 0,
                "thread_metadata": {"archived": False, "auto_archive_duration":
                                    body["auto_archive_duration"], "locked": False,
                                    "archive_timestamp": EPOCH},
            }  # fmt: skip
            self.threads[message_id] = thread
            return _json(thread, status=201)
        if parts[0] == "channels" and parts[2:3] == ["messages"]:
            channel_id = parts[1]
            if method == "POST" and len(parts) == 3:
                message = self._message(channel_id, body, files)
                self.messages[message["id"]] = message
                return _json(message)
            if method == "PATCH" and len(parts) == 4:
                message = self.messages.get(parts[3])
                if message is None or message["channel_id"] != channel_id:
                    return _json({"message": "Unknown Message", "code": 10008},
                                             status=404)  # fmt: skip
                message.setdefault("edits", []).append(body)
                message.update({k: v for k, v in body.items() if k != "allowed_mentions"})
                message["edited_timestamp"] = EPOCH
                return _json(message)
        if parts[0] == "interactions" and parts[-1] == "callback":
            return _json({
                "interaction": {"id": parts[1], "type": 2,
                                "response_message_loading": body.get("type") == 5,
                                "response_message_ephemeral": bool(
                                    (body.get("data") or {}).get("flags", 0) & 64)},
            })  # fmt: skip
        if parts[0] == "webhooks" and method == "POST":
            message = self._message(CHANNEL, body, files)
            message["webhook_id"] = APP
            self.messages[message["id"]] = message
            return _json(message)
        return _json({"message": f"fake discord: no route {method} {path}"},
                                 status=404)  # fmt: skip

    # --- the gateway ------------------------------------------------------------------------

    def identified(self) -> list[dict[str, Any]]:
        with self._lock:
            return [p["d"] for p in self.gateway_received if p.get("op") == 2]

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        compression = request.query.get("compress")
        if compression not in (None, "zlib-stream"):
            await socket.close(code=4000, message=b"fake discord: only zlib-stream")
            return socket
        stream = zlib.compressobj() if compression else None
        sequence = itertools.count(1)

        async def send(op: int, data: Any, event: str | None = None) -> None:
            payload = {"op": op, "d": data, "s": next(sequence) if op == 0 else None, "t": event}
            raw = json.dumps(payload).encode()
            if stream is None:
                await socket.send_str(raw.decode())
            else:  # one shared zlib context; every message ends with a Z_SYNC_FLUSH
                await socket.send_bytes(stream.compress(raw) + stream.flush(zlib.Z_SYNC_FLUSH))

        await send(10, {"heartbeat_interval": 41250})
        code: int | None = None
        while True:
            message = await socket.receive()
            if message.type == WSMsgType.CLOSE:
                code = message.data  # the code the client closed with
                await socket.close()
                break
            if message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            if message.type != WSMsgType.TEXT:
                continue
            payload = json.loads(message.data)
            with self._lock:
                self.gateway_received.append(payload)
            if payload.get("op") == 1:
                await send(11, None)
            elif payload.get("op") == 2:
                await send(0, self._ready(), "READY")
            elif payload.get("op") == 6:  # no sessions survive here: resume is refused
                await send(9, False)
        with self._lock:
            self.gateway_closed.append(code)  # None: the connection dropped without a close
        return socket

    def _ready(self) -> dict[str, Any]:
        return {
            "v": 10, "user": user(BOT, "switchboard", bot=True), "guilds": [],
            "session_id": "fake-session", "resume_gateway_url": self.gateway_url,
            "application": {"id": APP, "flags": 0}, "private_channels": [],
        }  # fmt: skip

    def _message(self, channel_id: str, body: dict[str, Any], files: dict[str, str]) -> dict:
        message_id = self.new_id()
        return {
            "id": message_id, "channel_id": channel_id, "guild_id": GUILD,
            "author": user(BOT, "switchboard", bot=True),
            "content": body.get("content") or "", "timestamp": EPOCH, "edited_timestamp": None,
            "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
            "attachments": [
                {"id": self.new_id(), "filename": name, "size": len(text),
                 "url": f"https://cdn.example/{name}", "proxy_url": f"https://cdn.example/{name}",
                 "text": text}
                for name, text in files.items()
            ],
            "embeds": body.get("embeds") or [], "pinned": False, "type": 0,
            "flags": body.get("flags", 0), "components": body.get("components") or [],
        }  # fmt: skip


def application() -> dict[str, Any]:
    return {
        "id": APP, "name": "Switchboard", "icon": None, "description": "", "rpc_origins": [],
        "bot_public": False, "bot_require_code_grant": False, "owner": user("1", "owner"),
        "summary": "", "verify_key": "00", "team": None, "flags": 0,
    }  # fmt: skip


def member(user_id: str, name: str, roles: list[str]) -> dict[str, Any]:
    return {
        "user": user(user_id, name), "roles": roles, "joined_at": EPOCH, "deaf": False,
        "mute": False, "flags": 0, "nick": None, "avatar": None, "pending": False,
        "permissions": str((1 << 10) | (1 << 11) | (1 << 31)),
    }  # fmt: skip


def text_channel(channel_id: str = CHANNEL) -> dict[str, Any]:
    return {
        "id": channel_id, "type": 0, "guild_id": GUILD, "name": "general", "position": 0,
        "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None,
        "last_message_id": None, "rate_limit_per_user": 0, "flags": 0,
    }  # fmt: skip


def _interaction(kind: int, who: dict[str, Any], data: dict[str, Any], **extra: Any) -> dict:
    interaction_id = str(next(_interaction_ids))
    return {
        "id": interaction_id, "application_id": APP, "type": kind,
        "token": f"token-{interaction_id}", "version": 1, "guild_id": GUILD,
        "channel_id": CHANNEL, "channel": text_channel(), "member": who,
        "app_permissions": str(BOT_PERMISSIONS), "locale": "en-US", "guild_locale": "en-US",
        "entitlements": [], "authorizing_integration_owners": {"0": GUILD}, "context": 0,
        "attachment_size_limit": 10 * 1024 * 1024, "data": data, **extra,
    }  # fmt: skip


_interaction_ids = itertools.count(1_300_000_000_000_000_000)


def slash(
    who: dict[str, Any],
    sub: str,
    options: dict[str, Any] | None = None,
    *,
    kind: int = 2,
    focused: str | None = None,
) -> dict[str, Any]:
    """INTERACTION_CREATE for `/agent <sub> name:value ...` (kind 4: autocomplete)."""
    types = {str: 3, int: 4}
    sub_options = [
        {"name": k, "type": types[type(v)], "value": v}
        | ({"focused": True} if k == focused else {})
        for k, v in (options or {}).items()
    ]  # fmt: skip

    data = {
        "id": "1100000000000000099", "name": "agent", "type": 1, "guild_id": GUILD,
        "options": [{"name": sub, "type": 1, "options": sub_options}],
    }  # fmt: skip
    return _interaction(kind, who, data)


def click(
    who: dict[str, Any], message: dict[str, Any], custom_id: str, channel: dict[str, Any]
) -> dict[str, Any]:
    """INTERACTION_CREATE for a button press on `message`, posted in `channel` (a thread)."""
    data = {"custom_id": custom_id, "component_type": 2}
    payload = _interaction(3, who, data, message=message)
    return {**payload, "channel_id": channel["id"], "channel": channel}


def modal_submit(
    who: dict[str, Any], modal: dict[str, Any], values: dict[str, str], channel: dict[str, Any]
) -> dict[str, Any]:
    """INTERACTION_CREATE (type 5, MODAL_SUBMIT) for the modal a bot answered an interaction
    with (callback type 9): each text input's value under its custom_id, as Discord sends."""

    def submitted(component: dict[str, Any]) -> dict[str, Any]:
        if component["type"] == 1:  # an action row
            return {"type": 1, "components": [submitted(c) for c in component["components"]]}
        if component["type"] == 18:  # a label around one component
            return {"type": 18, "component": submitted(component["component"])}
        return {"type": component["type"], "custom_id": component["custom_id"],
                "value": values.get(component["custom_id"], "")}  # fmt: skip

    data = {"custom_id": modal["custom_id"],
            "components": [submitted(c) for c in modal["components"]]}  # fmt: skip
    payload = _interaction(5, who, data)
    return {**payload, "channel_id": channel["id"], "channel": channel}
