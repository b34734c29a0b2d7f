"""The worker node: one turn of each assigned worker, run concurrently, merged in order.

A turn is a model call with the worker's tools offered, then rounds of tool calls and
results until the worker reports. A turn can pause: a tool that asks for approval holds the
turn, the step commits the turns so far (state channel `turns`) and asks in the thread; the
next step resumes each held turn where it stopped and keeps the reports already written. A
report cut off at max_tokens even after the re-ask is kept, marked incomplete.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator import guards, prompts
from orchestrator.nodes.context import (
    FILTERED,
    WORKER_CALLS,
    NodeResult,
    StepContext,
    call,
    cut_off,
    figure_strings,
    progress,
)
from orchestrator.nodes.tools import APPROVAL, IN_DOUBT, Pending, ToolRunner, pretty_arguments
from orchestrator.notices import (
    APPROVE,
    APPROVE_NOTE,
    REJECT,
    Action,
    Kind,
    Notice,
    escalation_actions,
)
from orchestrator.store.models import Escalation, RunStatus
from orchestrator.store.tool_ledger import Origin, ToolLedger
from orchestrator.teams import Team, Worker

MAX_TOOL_ROUNDS = 4


@dataclass
class Turn:
    """One worker's turn, as far as it got; stored in the `turns` channel while held."""

    worker: str
    instruction: str
    messages: list[dict[str, Any]] = field(default_factory=list)  # after the prompt
    pending: list[Pending] = field(default_factory=list)
    report: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "pending": [asdict(p) for p in self.pending]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Turn:
        values = dict(data)
        # Copies: the state a turn was loaded from may be cached and must stay as committed.
        values["messages"] = list(values.get("messages", []))
        values["results"] = list(values.get("results", []))
        values["pending"] = [Pending(**p) for p in values.get("pending", [])]
        return cls(**values)


async def work(ctx: StepContext) -> NodeResult:
    team = ctx.team
    assert team is not None
    plan = ctx.state["assignments"]
    saved = {int(k): Turn.from_json(v) for k, v in (ctx.state.get("turns") or {}).items()}
    decision = None
    if any(turn.pending for turn in saved.values()):
        ledger = ToolLedger(ctx.services.store)
        decision = await ctx.services.db(ledger.escalation_at, ctx.run.id, ctx.number - 1)
    runner = ToolRunner(ctx)
    turns = await asyncio.gather(
        *(
            worker_turn(
                ctx,
                runner,
                team,
                team.worker(item["worker"]),
                item["instruction"],
                index,
                saved.get(index),
                decision,
            )
            for index, item in enumerate(plan)
        )
    )
    if any(turn.pending for turn in turns):
        return _hold(ctx, turns)
    # Merge in assignment order, whatever order the turns finished in.
    updates: list[dict[str, Any]] = []
    notices = []
    for turn in turns:
        assert turn.report is not None
        updates.append(
            {
                "outputs": {turn.worker: [{"v": ctx.number, "text": turn.report}]},
                "messages": [{"role": turn.worker, "content": turn.report}],
            }
        )
        if turn.results:
            updates.append({"tool_results": turn.results})
        notices.append(
            Notice(
                Kind.HIGHLIGHT,
                ctx.run.id,
                f"{turn.worker}: {turn.instruction[:120]}",
                body=turn.report,
            )
        )
    updates.append({"next": "supervisor", "assignments": [], "turns": {}})
    names = ", ".join(turn.worker for turn in turns)
    summary = f"{names} reported" if len(turns) == 1 else f"Fan-out: {names} reported"
    return NodeResult(
        node="fanout" if len(turns) > 1 else "worker",
        summary=summary,
        updates=updates,
        notices=(progress(ctx, summary), *notices),
    )


async def worker_turn(
    ctx: StepContext,
    runner: ToolRunner,
    team: Team,
    worker: Worker,
    instruction: str,
    index: int,
    saved: Turn | None,
    decision: Escalation | None,
) -> Turn:
    turn = saved or Turn(worker.name, instruction)
    if turn.report is not None:
        return turn  # reported before the pause; nothing to redo
    services = ctx.services
    persona = ctx.state["personas"].get(worker.name)
    prompt = prompts.worker_messages(
        team, worker, ctx.state, instruction, team.limits.keep_last_messages, persona
    )
    tools = services.tools
    specs = tools.specs(worker.tools) if (tools and worker.tools) else None
    if tools and worker.tools:
        notes = tools.notes(worker.tools)
        if notes:
            prompt[0] = {**prompt[0], "content": prompt[0]["content"] + "\n\n" + "\n".join(notes)}
    params: dict[str, Any] = {}
    if persona == guards.DEBUGGER:
        tier_temperature = float(services.gateway.tiers[worker.tier].params.get("temperature", 0.7))
        params["temperature"] = round(max(0.0, tier_temperature - 0.5), 2)
    held, turn.pending = turn.pending, []
    for pending in held:
        outcome = await runner.resolve(worker.name, pending, decision)
        if outcome.pending is not None:  # approved, but an earlier attempt is in doubt
            turn.pending.append(outcome.pending)
        else:
            _answer(turn, pending.id, outcome.output, outcome.result)
    if turn.pending:
        return turn
    base = WORKER_CALLS * (index + 1)
    for number in range(MAX_TOOL_ROUNDS + 1):
        last_round = turn.rounds >= MAX_TOOL_ROUNDS
        called = await call(
            ctx,
            base + number,
            worker.tier,
            f"worker:{worker.name}",
            [*prompt, *turn.messages],
            tools=None if last_round else specs,
            params=params,
        )
        reply = called.reply
        turn.rounds += 1
        if not reply.tool_calls or tools is None or last_round:
            text = reply.content.strip() or "(no output)"
            if reply.filtered:
                text += f"\n\n_(This report is incomplete: {FILTERED}.)_"
            elif reply.truncated:
                text += f"\n\n_(This report is incomplete: {cut_off(worker.tier, called.limit)}.)_"
                ctx.details.setdefault("truncated_reports", []).append(worker.name)
            turn.report = text
            return turn
        turn.messages.append(reply.assistant_message())
        offered = {spec["function"]["name"] for spec in specs or []}
        for position, tool_call in enumerate(reply.tool_calls):
            origin = Origin(ctx.number, called.index, position)
            if tool_call.name not in offered:  # a tool of another worker, or made up
                _answer(turn, tool_call.id, _no_such_tool(tool_call.name), {})
                continue
            outcome = await runner.handle(worker.name, tool_call, origin)
            if outcome.pending is not None:
                turn.pending.append(outcome.pending)
            else:
                _answer(turn, tool_call.id, outcome.output, outcome.result)
        if turn.pending:
            return turn  # held for a human; the step asks
    raise AssertionError("unreachable")


def _no_such_tool(name: str) -> str:
    return json.dumps({"error": f"there is no tool {name!r} for you; use the tools offered"})


def _answer(turn: Turn, call_id: str, output: str, result: dict[str, Any]) -> None:
    turn.messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
    if result:
        turn.results.append(result)


def _hold(ctx: StepContext, turns: list[Turn]) -> NodeResult:
    """Commit the turns so far and ask about every held call, in one question."""
    held = [(turn.worker, p) for turn in turns for p in turn.pending]
    doubt = any(p.in_doubt for _, p in held)
    lines = []
    for worker, pending in held:
        where = f"MCP server {pending.server}" if pending.server else "built-in"
        lines.append(
            f"{worker} → {pending.label} ({where})\n```\n{pretty_arguments(pending.arguments)}\n```"
        )
    if doubt:
        title = f"Run {ctx.run.id}: a tool call may or may not have happened"
        intro = (
            "The worker stopped while this call was running, and it changes things, so it is "
            "not repeated blindly. Retry runs it again; Skip tells the worker it may or may "
            "not have happened."
        )
        retry, _, abort = escalation_actions(0, "retry", approve_label="Retry")
        actions: tuple[Action, ...] = (retry, Action(REJECT, "Skip", "0"), abort)
    else:
        title = f"Run {ctx.run.id} wants to use {', '.join(p.label for _, p in held)}"
        intro = "Approve runs the call; Reject tells the worker why not, so it can change course."
        actions = (
            Action(APPROVE, "Approve", "0", style="primary"),
            Action(APPROVE_NOTE, "Approve with note…", "0"),
            Action(REJECT, "Reject…", "0", style="danger"),
        )
    guard = IN_DOUBT if doubt else APPROVAL
    reason = intro + "\n\n" + "\n\n".join(lines)
    notice = Notice(
        Kind.ESCALATION,
        ctx.run.id,
        title,
        body=reason,
        figures=figure_strings(ctx),
        actions=actions,
        requester=ctx.run.requester,
        guard=guard,
    )
    ctx.details["guard"] = guard
    ctx.details["held_tools"] = [p.label for _, p in held]
    return NodeResult(
        node="tools",
        summary=f"Waiting for approval of {', '.join(p.label for _, p in held)}",
        updates=[{"turns": {str(i): turn.to_json() for i, turn in enumerate(turns)}}],
        status=RunStatus.AWAITING_APPROVAL,
        notices=(notice,),
        escalation={
            "guard": guard,
            "reason": reason,
            "figures": figure_strings(ctx),
            "grant": {},
            "payload": {"calls": [asdict(p) for _, p in held]},
            "expires_at": datetime.now(UTC) + timedelta(seconds=ctx.services.escalation_ttl_s),
        },
    )
