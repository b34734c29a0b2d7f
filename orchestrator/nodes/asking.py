"""Asking the router or the supervisor for a decision until the reply follows the protocol.

The tier's mode decides how (tools, JSON schema, text). A provider that refuses tools or the
response format is asked again in the next simpler mode, at the same call index (nothing was
recorded for the refused call). A reply that breaks the protocol is answered with the reason
and asked again; after the last attempt the step raises ProtocolFailure, which pauses the run
with Retry / Abort instead of failing it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from orchestrator.llm.gateway import FeatureUnsupported, Mode, ModelUnavailable, Reply
from orchestrator.nodes.context import FILTERED, StepContext, call, cut_off
from orchestrator.protocol import ProtocolError
from orchestrator.telemetry.logs import redact

T = TypeVar("T")

PROTOCOL_ATTEMPTS = 3
EXCERPT = 300


class ProtocolFailure(Exception):
    """The model kept breaking the protocol; carries what an approver needs to judge it."""

    def __init__(self, reason: str, *, tier: str, model: str, excerpt: str) -> None:
        super().__init__(reason)
        self.reason, self.tier, self.model, self.excerpt = reason, tier, model, excerpt


@dataclass(frozen=True)
class Offer:
    """What the model is given to answer with, in one mode."""

    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


def excerpt(reply: Reply) -> str:
    """The start of a raw reply, scrubbed of secrets, for an escalation message."""
    raw = reply.content or ""
    if reply.tool_calls:
        raw += " ".join(f"{c.name}({c.arguments})" for c in reply.tool_calls)
    raw = redact(raw.strip())
    return raw if len(raw) <= EXCERPT else raw[:EXCERPT] + "…"


def _reask(reply: Reply, error: str, mode: Mode) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if reply.content or reply.tool_calls:
        messages.append(reply.assistant_message())
    for tool_call in reply.tool_calls:
        messages.append(
            {
                "role": "tool",
                "tool_call_id": tool_call.id,
                "content": json.dumps({"error": f"not done: {error}"}),
            }
        )
    how = "Call the tools again, correctly." if mode == "tools" else "Reply with the JSON only."
    messages.append({"role": "user", "content": f"That reply was invalid: {error}. {how}"})
    return messages


async def decide(
    ctx: StepContext,
    *,
    index: int,
    tier: str,
    purpose: str,
    build: Callable[[Mode], list[dict[str, Any]]],
    offer: Callable[[Mode], Offer],
    read: Callable[[Reply], T],
) -> T:
    gateway = ctx.services.gateway
    mode = gateway.mode_for(tier)
    messages = build(mode)
    attempt = 0
    while True:
        given = offer(mode)
        try:
            reply, limit, _ = await call(
                ctx,
                index + attempt,
                tier,
                purpose,
                messages,
                tools=given.tools,
                tool_choice=given.tool_choice,
                response_format=given.response_format,
            )
        except FeatureUnsupported as exc:
            simpler = gateway.degrade(tier, mode)
            if simpler is None:
                raise ModelUnavailable(
                    f"tier {tier!r} refused even a plain request: {exc}",
                    tier=tier,
                    model=gateway.model_for(tier),
                ) from exc
            mode, messages = simpler, build(simpler)
            continue
        try:
            return read(reply)
        except ProtocolError as exc:
            error = str(exc)
            if reply.truncated:
                error = f"{error} (the reply was {cut_off(tier, limit)})"
            elif reply.filtered:
                error = f"{error} ({FILTERED})"
            attempt += 1
            if attempt >= PROTOCOL_ATTEMPTS:
                raise ProtocolFailure(
                    error, tier=tier, model=reply.model, excerpt=excerpt(reply)
                ) from None
            ctx.details.setdefault("protocol_errors", []).append(error[:200])
            messages = [*messages, *_reask(reply, error, mode)]
