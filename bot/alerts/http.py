"""The webhook endpoint: one ASGI app for `POST /alerts`, served alone or under the Slack server.

Order matters: credentials are checked before the body is read (an unauthenticated caller
gets 401 and costs nothing), the body is bounded, a malformed one gets 400 with the field
that is wrong (Alertmanager does not retry a 4xx), and a failure to record or queue the
work gets 503 so that Alertmanager retries it. The answer is JSON saying what happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from bot.alerts.auth import CHALLENGE, Credentials
from bot.alerts.held import HeldNotices
from bot.alerts.intake import Intake
from bot.alerts.payload import PayloadError, parse

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ALERTS_PATH = "/alerts"
MAX_BODY = 4 * 1024 * 1024


async def respond(
    send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it grows past `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def alerts_endpoint(
    intake: Intake, credentials: Credentials, held: HeldNotices | None = None
) -> ASGIApp:
    """The ASGI app for Alertmanager's webhook (any path it is mounted at)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await respond(send, 405, {"error": "POST only"}, [(b"allow", b"POST")])
            return
        if not credentials.allows(_header(scope, b"authorization")):
            client = (scope.get("client") or ("?",))[0]
            log.warning("alert intake: refused a request without valid credentials from %s", client)
            await respond(
                send,
                401,
                {"error": "authentication required: a bearer token or basic auth"},
                [(b"www-authenticate", CHALLENGE.encode())],
            )
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            await respond(send, 413, {"error": f"body larger than {MAX_BODY} bytes"})
            return
        body = await _read(receive, MAX_BODY)
        if body is None:
            await respond(send, 413, {"error": f"body larger than {MAX_BODY} bytes"})
            return
        try:
            notification = parse(body)
        except PayloadError as exc:
            log.warning("alert intake: rejected a notification: %s", exc)
            await respond(send, 400, {"error": f"not an Alertmanager v4 notification: {exc}"})
            return
        try:
            receipt = await asyncio.to_thread(intake.receive, notification)
        except Exception as exc:  # database or broker down: let Alertmanager retry
            log.exception("alert intake: could not apply notification %s", notification.group.name)
            await respond(
                send, 503, {"error": f"could not record or queue the work ({type(exc).__name__})"}
            )
            return
        await respond(send, 200, receipt.to_json())
        if receipt.held and held is not None and receipt.platform and receipt.channel:
            # After the answer: Alertmanager need not wait for the chat API.
            try:
                await asyncio.to_thread(held.flush, [(receipt.platform, receipt.channel)])
            except Exception:
                log.exception("alert intake: held-alerts message failed")

    return app
