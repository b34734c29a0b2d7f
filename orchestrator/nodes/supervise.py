"""The supervisor node: read new human input, summarise old context, decide what happens next.

The decision comes through the team protocol (orchestrator/protocol.py): assignments (several
run in parallel), reviews of the latest reports, or a finish whose answer is either written
by the supervisor or a worker's latest report taken verbatim.
"""

from __future__ import annotations

import functools
from typing import Any

import litellm

from orchestrator import prompts, protocol
from orchestrator import state as st
from orchestrator.llm.gateway import Mode
from orchestrator.nodes.asking import Offer, decide
from orchestrator.nodes.context import (
    SUMMARY_CALL,
    SUPERVISOR_CALLS,
    NodeResult,
    StepContext,
    call,
    progress,
)
from orchestrator.nodes.endings import end
from orchestrator.notices import Notice
from orchestrator.store.models import RunStatus
from orchestrator.teams import Team


@functools.lru_cache(maxsize=8192)
def _tokens(model: str, text: str) -> int:
    try:
        return int(litellm.token_counter(model=model, text=text))
    except Exception:
        return int(litellm.token_counter(model="gpt-3.5-turbo", text=text))


def latest_reports(state: st.State) -> dict[str, str]:
    return {w: outputs[-1]["text"] for w, outputs in state.get("outputs", {}).items() if outputs}


async def summarise_if_needed(ctx: StepContext, team: Team) -> list[dict[str, Any]]:
    """Fold messages older than the last few into a summary by the cheap tier, once they
    pass the team's token threshold, so prompts stay bounded as a run grows."""
    limits = team.limits
    config = ctx.services.config
    messages = ctx.state["messages"]
    start = ctx.state.get("summarised_upto", 0)
    cut = len(messages) - limits.keep_last_messages
    if cut <= start:
        return []
    pending = messages[start:cut]
    model = ctx.services.gateway.model_for(config.summary_tier)
    texts = [m["content"] for m in messages[start:]]
    if sum(len(t.encode()) + 1 for t in texts) < limits.summary_threshold_tokens:
        return []  # a token covers at least one byte: below the threshold without counting
    # Each message is counted once (they never change) and the counts summed; a message's
    # token count, plus one for the line break, bounds its share of the joined text's.
    tokens = sum(_tokens(model, text) + 1 for text in texts)
    if tokens < limits.summary_threshold_tokens:
        return []
    summary = await call(
        ctx,
        SUMMARY_CALL,
        config.summary_tier,
        "summary",
        prompts.summary_messages(ctx.state.get("summary", ""), pending),
    )
    reply = summary.reply
    ctx.details["summarised"] = {"messages": len(pending), "tokens": tokens}
    update = {"summary": reply.content.strip(), "summarised_upto": cut}
    ctx.state = st.apply(ctx.state, [update])
    return [update]


async def supervise(ctx: StepContext) -> NodeResult:
    team = ctx.team
    assert team is not None
    updates = await summarise_if_needed(ctx, team)
    seen = ctx.state.get("human_seen", 0)
    inputs = []
    if ctx.last_input_id > seen:
        inputs = await ctx.services.db(ctx.services.store.human_inputs, ctx.run.id, seen)
    if inputs:
        update = {
            "human_input": [f"{entry.actor}: {entry.detail}" for entry in inputs],
            "human_seen": inputs[-1].id,
        }
        ctx.state = st.apply(ctx.state, [update])
        updates.append(update)
    reports = latest_reports(ctx.state)

    def offer(mode: Mode) -> Offer:
        if mode == "tools":
            return Offer(tools=protocol.supervisor_tools(team), tool_choice="required")
        return Offer(response_format=protocol.supervisor_format(team) if mode == "json" else None)

    decision = await decide(
        ctx,
        index=SUPERVISOR_CALLS,
        tier=team.supervisor.tier,
        purpose="supervisor",
        build=lambda mode: prompts.supervisor_messages(
            team, ctx.state, team.limits.keep_last_messages, mode
        ),
        offer=offer,
        read=lambda reply: protocol.read_decision(reply.content, reply.tool_calls, team, reports),
    )
    for review in decision.reviews:
        failures = ctx.state["review_failures"].get(review.worker, 0)
        updates.append({"review_failures": {review.worker: 0 if review.accepted else failures + 1}})
        if not review.accepted:
            updates.append(
                {
                    "messages": [
                        {
                            "role": "supervisor",
                            "content": f"Review of {review.worker}: rejected. "
                            f"{review.feedback}".strip(),
                        }
                    ]
                }
            )
    if decision.action == "finish":
        updates.append({"answer": decision.answer, "next": "done"})
        if decision.report_of:
            ctx.details["answer_from"] = decision.report_of
        return end(ctx, RunStatus.FINISHED, "", answer=decision.answer, updates=updates)
    plan = [{"worker": a.worker, "instruction": a.instruction} for a in decision.assignments]
    key = " | ".join(f"{a.worker}: {a.instruction}" for a in decision.assignments)
    updates.append(
        {
            "assignments": plan,
            "next": "workers",
            "assigned": [{"v": ctx.number, "key": key}],
            "messages": [{"role": "supervisor", "content": f"Assigned {key}"}],
        }
    )
    summary = "Supervisor assigned " + "; ".join(
        f"{a.worker}: {a.instruction}" for a in decision.assignments
    )
    verdicts = [
        f"review of {r.worker}: {'accepted' if r.accepted else 'rejected'}"
        for r in decision.reviews
    ]
    if verdicts:
        summary += f" ({'; '.join(verdicts)})"
    notices: tuple[Notice, ...] = (progress(ctx, summary),)
    return NodeResult(node="supervisor", summary=summary, updates=updates, notices=notices)
