"""The worker node: one turn of each assigned worker, run concurrently, merged in order.

A turn is a model call with the worker's tools offered, then rounds of tool calls and
results until the worker reports. A report cut off at max_tokens even after the re-ask is
kept, marked truncated, so the supervisor and the requester know it is incomplete.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from orchestrator import guards, prompts
from orchestrator.nodes.context import (
    WORKER_CALLS,
    NodeResult,
    StepContext,
    call,
    cut_off,
    progress,
)
from orchestrator.notices import Kind, Notice
from orchestrator.teams import Team, Worker
from orchestrator.telemetry.tracing import tool_span

MAX_TOOL_ROUNDS = 4


async def work(ctx: StepContext) -> NodeResult:
    team = ctx.team
    assert team is not None
    plan = ctx.state["assignments"]
    turns = await asyncio.gather(
        *(
            worker_turn(ctx, team, team.worker(item["worker"]), item["instruction"], index)
            for index, item in enumerate(plan)
        )
    )
    # Merge in assignment order, whatever order the turns finished in.
    updates: list[dict[str, Any]] = []
    notices = []
    for (worker, text, tool_results), item in zip(turns, plan, strict=True):
        updates.append(
            {
                "outputs": {worker: [{"v": ctx.number, "text": text}]},
                "messages": [{"role": worker, "content": text}],
            }
        )
        if tool_results:
            updates.append({"tool_results": tool_results})
        notices.append(
            Notice(Kind.HIGHLIGHT, ctx.run.id, f"{worker}: {item['instruction'][:120]}", body=text)
        )
    updates.append({"next": "supervisor", "assignments": []})
    names = ", ".join(w for w, _, _ in turns)
    summary = f"{names} reported" if len(turns) == 1 else f"Fan-out: {names} reported"
    return NodeResult(
        node="fanout" if len(turns) > 1 else "worker",
        summary=summary,
        updates=updates,
        notices=(progress(ctx, summary), *notices),
    )


async def worker_turn(
    ctx: StepContext, team: Team, worker: Worker, instruction: str, index: int
) -> tuple[str, str, list[dict[str, Any]]]:
    services = ctx.services
    persona = ctx.state["personas"].get(worker.name)
    messages = prompts.worker_messages(
        team, worker, ctx.state, instruction, team.limits.keep_last_messages, persona
    )
    params: dict[str, Any] = {}
    if persona == guards.DEBUGGER:
        tier_temperature = float(services.gateway.tiers[worker.tier].params.get("temperature", 0.7))
        params["temperature"] = round(max(0.0, tier_temperature - 0.5), 2)
    tools = services.tools
    tool_specs = tools.specs(worker.tools) if (tools and worker.tools) else None
    results: list[dict[str, Any]] = []
    base = WORKER_CALLS * (index + 1)
    for round_ in range(MAX_TOOL_ROUNDS + 1):
        reply, limit = await call(
            ctx,
            base + round_,
            worker.tier,
            f"worker:{worker.name}",
            messages,
            tools=tool_specs,
            params=params,
        )
        if not reply.tool_calls or tools is None or round_ == MAX_TOOL_ROUNDS:
            text = reply.content.strip() or "(no output)"
            if reply.truncated:
                text += f"\n\n_(This report is incomplete: {cut_off(worker.tier, limit)}.)_"
                ctx.details.setdefault("truncated_reports", []).append(worker.name)
            return worker.name, text, results
        messages = [*messages, reply.assistant_message()]
        for tool_call in reply.tool_calls:
            started = time.perf_counter()
            with tool_span(tool_call.name, run_id=str(ctx.run.id)):
                output = await asyncio.to_thread(tools.execute, tool_call.name, tool_call.arguments)
            results.append(
                {
                    "worker": worker.name,
                    "tool": tool_call.name,
                    "arguments": tool_call.arguments,
                    "result": output,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                }
            )
            messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": output})
            outcome = _outcome(output)
            ctx.details.setdefault("tools", []).append(
                {
                    "worker": worker.name,
                    "tool": tool_call.name,
                    "duration_ms": results[-1]["duration_ms"],
                    "exit_code": outcome.get("exit_code"),
                    "timed_out": outcome.get("timed_out", False),
                    "error": outcome.get("error"),
                }
            )
    raise AssertionError("unreachable")


def _outcome(output: str) -> dict[str, Any]:
    try:
        value = json.loads(output)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
