"""What a node works with: the step's context, the engine's services, and its result.

A node (route, supervise, work) is a function of the step context that returns a
NodeResult; the engine turns that result into one committed step. Model calls go through
`call`, which keeps call indexes deterministic and re-asks once, with a higher max_tokens,
when a reply was cut off.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from orchestrator import state as st
from orchestrator.guards import Figures
from orchestrator.llm.gateway import Budget, CallSpec, LLMGateway, Reply
from orchestrator.notices import Kind, Notice
from orchestrator.store.models import Run, RunStatus
from orchestrator.store.repository import Spend, Store
from orchestrator.teams import Team, TeamsConfig, Tier

T = TypeVar("T")

SUPERVISOR_CALLS = 0  # call indexes 0..9
SUMMARY_CALL = 90
ROUTER_CALL = 95
WORKER_CALLS = 100  # worker i uses 100*(i+1) .. 100*(i+1)+99
TRUNCATION_RETRY = 5000  # a call cut off at max_tokens is asked again at index + this
DEFAULT_CAP = 8192  # max_tokens for a re-ask when the tier sets no max_tokens and no cap


Policy = Literal["allow", "ask", "deny"]


@dataclass(frozen=True)
class ToolInfo:
    """What the engine needs to know of one tool to gate and ledger its calls."""

    name: str  # as offered to the model (provider-safe: ^[a-zA-Z0-9_-]{1,64}$), e.g. notes__append
    label: str  # as people read it: "notes.append" (built-ins: "run_code")
    server: str | None  # the MCP server, None for built-in tools
    policy: Policy  # allow: runs; ask: waits for Approve in the thread; deny: never offered
    read_only: bool  # calling it again after a crash is harmless (readOnlyHint, sandboxed code)
    available: bool = True  # its server lists it now; an unavailable `ask` tool is not asked


class ToolBox(Protocol):
    """The workers' tools: sandboxed code and MCP servers' tools, behind one seam."""

    def specs(self, names: list[str]) -> list[dict[str, Any]]:
        """OpenAI function tools for a worker's configured tool names (`run_code`,
        `server.tool`, `server.*`); `deny` tools are never among them."""
        ...

    def info(self, name: str) -> ToolInfo | None:
        """A tool by the name the model called it; None when there is no such tool."""
        ...

    def notes(self, names: list[str]) -> list[str]:
        """One line per configured tool source that is unavailable now, for the prompt."""
        ...

    def execute(self, name: str, arguments: str) -> str:
        """Blocking; the JSON text for the tool message. Tool errors come back as
        {"error": ...}, never as an exception."""
        ...


@dataclass(frozen=True)
class Services:
    store: Store
    gateway: LLMGateway
    config: TeamsConfig
    tools: ToolBox | None = None
    escalation_ttl_s: float = 24 * 3600

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)


@dataclass
class StepContext:
    run: Run
    state: st.State
    number: int  # the version this step will commit
    team: Team | None
    services: Services
    figures: Figures | None = None
    budget: Budget | None = None
    details: dict[str, Any] = field(default_factory=dict)
    spend: Spend = field(default_factory=Spend)
    replays: dict[int, Reply] = field(default_factory=dict)
    last_input_id: int = 0
    # Updates applied to `state` before the node ran that the node's result does not carry
    # (a persona shift); part of the step's delta.
    applied: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class NodeResult:
    node: str
    summary: str
    updates: list[dict[str, Any]]
    status: str = RunStatus.RUNNING
    notices: tuple[Notice, ...] = ()
    answer: str | None = None
    error: str | None = None
    escalation: dict[str, Any] | None = None
    team: str | None = None


class Called(NamedTuple):
    reply: Reply
    limit: int | None  # the max_tokens it ran under
    index: int  # the call index it is recorded under


def max_tokens(tier: Tier, params: dict[str, Any] | None = None) -> int | None:
    value = (params or {}).get("max_tokens", tier.params.get("max_tokens"))
    return int(value) if value else None


def raised_max_tokens(tier: Tier, params: dict[str, Any] | None = None) -> int | None:
    """A higher max_tokens for one re-ask (double, up to the tier's cap); None at the cap."""
    current = max_tokens(tier, params)
    cap = tier.max_tokens_cap or (4 * current if current else DEFAULT_CAP)
    wanted = min(cap, 2 * current) if current else cap
    return wanted if current is None or wanted > current else None


FILTERED = "the provider's content filter withheld the reply (finish_reason content_filter)"


def cut_off(tier_name: str, limit: int | None) -> str:
    return f"cut off at max_tokens {limit if limit else '(provider default)'} on tier {tier_name}"


async def call(
    ctx: StepContext,
    index: int,
    tier: str,
    purpose: str,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    params: dict[str, Any] | None = None,
    tool_choice: str | dict[str, Any] | None = None,
    response_format: dict[str, Any] | None = None,
) -> Called:
    """One model call, and one re-ask with a higher max_tokens if it was cut off.

    Returns the reply, the max_tokens it ran under (so a caller can say where a reply that
    is still cut off was cut) and the call index it was recorded under. begin_step fetched
    every call already recorded for this step, so a re-executed step replays both calls
    without a ledger lookup.
    """
    gateway = ctx.services.gateway
    spec = CallSpec(
        run_id=ctx.run.id,
        step=ctx.number,
        call_index=index,
        tier=tier,
        purpose=purpose,
        messages=messages,
        team=ctx.state.get("team"),
        channel=ctx.run.channel,
        tools=tools,
        params=params or {},
        tool_choice=tool_choice,
        response_format=response_format,
    )
    reply = await gateway.complete(spec, ctx.budget, replays=ctx.replays)
    limit = max_tokens(gateway.tiers[tier], params)
    if not reply.truncated:
        return Called(reply, limit, index)
    raised = raised_max_tokens(gateway.tiers[tier], params)
    if raised is None:
        return Called(reply, limit, index)
    ctx.details.setdefault("truncated", []).append({"purpose": purpose, "max_tokens": raised})
    again = dataclasses.replace(
        spec, call_index=index + TRUNCATION_RETRY, params={**(params or {}), "max_tokens": raised}
    )
    reply = await gateway.complete(again, ctx.budget, replays=ctx.replays)
    return Called(reply, raised, again.call_index)


def figure_strings(ctx: StepContext) -> dict[str, str]:
    f = ctx.figures
    if f is None:
        return {"step": str(ctx.number)}
    return {"step": str(ctx.number), "tokens": str(f.tokens), "dollars": f"${f.dollars:.4f}"}


def progress(ctx: StepContext, text: str, team: str | None = None) -> Notice:
    figures = figure_strings(ctx)
    figures["team"] = team or ctx.state.get("team") or "?"
    return Notice(Kind.PROGRESS, ctx.run.id, text, figures=figures)
