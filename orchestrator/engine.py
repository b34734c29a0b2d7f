"""The supervisor engine: one call of `step` performs exactly one unit of a run.

A unit is a routing decision, a supervisor decision, or one worker turn / parallel
fan-out of worker turns. The step loads checkpoint v(n), runs the guards, acts, and
commits v(n+1) in one transaction (see Store.commit_step). A duplicate or redelivered
step finds the version already advanced, or the lease taken, and does nothing.

Fan-out uses asyncio.gather rather than a Celery group: the workers of one fan-out are
model-latency bound and share one checkpoint, so running them in one task keeps the step a
single transaction and costs no extra broker round trips.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import litellm

from orchestrator import budgets, guards, prompts
from orchestrator import state as st
from orchestrator.guards import Action, Figures, Verdict
from orchestrator.llm.gateway import (
    Budget,
    BudgetExceeded,
    CallSpec,
    LLMGateway,
    ModelUnavailable,
    Reply,
)
from orchestrator.notices import Kind, Notice, escalation_actions
from orchestrator.store.models import Run, RunStatus
from orchestrator.store.repository import NewStep, Spend, StepStart, Store
from orchestrator.teams import Team, TeamsConfig, Worker
from orchestrator.telemetry import metrics
from orchestrator.telemetry.logs import log_context
from orchestrator.telemetry.tracing import (
    inject_context,
    run_span,
    step_span,
    tool_span,
    use_context,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SUPERVISOR_CALLS = 0  # call indexes 0..9
SUMMARY_CALL = 90
ROUTER_CALL = 95
WORKER_CALLS = 100  # worker i uses 100*(i+1) .. 100*(i+1)+99
MAX_TOOL_ROUNDS = 4
PROTOCOL_ATTEMPTS = 2


class Outcome(StrEnum):
    ADVANCED = "advanced"  # committed; the next step is due
    WAITING = "waiting"  # committed; awaiting a human decision
    DONE = "done"  # committed; the run ended
    DUPLICATE = "duplicate"  # nothing to do: another execution advanced the run
    BUSY = "busy"  # another execution holds the lease; retry later


@dataclass(frozen=True)
class StepOutcome:
    outcome: Outcome
    run_id: int
    version: int
    retry_in: float = 0.0
    node: str = ""
    team: str | None = None
    # For the caller that enqueues the next step and delivers the outbox (no extra read).
    trace_parent: str | None = None
    platform: str | None = None


class ToolBox(Protocol):
    """Executes a tool call for a worker; returns the JSON text for the tool message."""

    def specs(self, names: list[str]) -> list[dict[str, Any]]: ...

    def execute(self, name: str, arguments: str) -> str: ...


@dataclass
class _Step:
    run: Run
    state: st.State
    number: int  # the version this step will commit
    team: Team | None
    figures: Figures | None = None
    budget: Budget | None = None
    details: dict[str, Any] = field(default_factory=dict)
    spend: Spend = field(default_factory=Spend)
    replays: dict[int, Reply] = field(default_factory=dict)
    last_input_id: int = 0


@dataclass(frozen=True)
class _Result:
    node: str
    summary: str
    updates: list[dict[str, Any]]
    status: str = RunStatus.RUNNING
    notices: tuple[Notice, ...] = ()
    answer: str | None = None
    error: str | None = None
    escalation: dict[str, Any] | None = None
    team: str | None = None


class Engine:
    def __init__(
        self,
        store: Store,
        gateway: LLMGateway,
        config: TeamsConfig,
        *,
        owner: str,
        lease_s: float = 300.0,
        escalation_ttl_s: float = 24 * 3600,
        tools: ToolBox | None = None,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.config = config
        self.owner = owner
        self.lease_s = lease_s
        self.escalation_ttl_s = escalation_ttl_s
        self.tools = tools

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def _renew(self, run_id: int, token: str) -> None:
        """Keep the lease while a slow step waits on models; a dead worker's lease lapses."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self._db(self.store.renew_lease, run_id, token, self.lease_s)

    async def step(
        self, run_id: int, version: int, carrier: Mapping[str, str] | None = None
    ) -> StepOutcome:
        """Execute one unit. `carrier` is the trace context the task arrived with; without
        one the step joins the run's own trace."""
        token = f"{self.owner}:{uuid.uuid4().hex[:12]}"
        # One round trip: the lease at `version`, the run, its checkpoint, spend and replays.
        start = await self._db(self.store.begin_step, run_id, version, token, self.lease_s)
        if not start.taken:
            if start.duplicate:
                return StepOutcome(Outcome.DUPLICATE, run_id, version)
            return StepOutcome(Outcome.BUSY, run_id, version, retry_in=max(1.0, start.busy_for))
        run = start.run
        assert run is not None
        started = time.perf_counter()
        renewal = asyncio.create_task(self._renew(run_id, token))
        metrics.STEPS_IN_FLIGHT.inc()
        committed = False
        try:
            if not carrier:
                carrier = await self._run_trace(run)
            with (
                log_context(run_id=str(run_id), step=version + 1, team=run.team),
                use_context(carrier),
                step_span(str(run_id), version + 1, run.team or "", "step") as span,
            ):
                ctx, result, committed = await self._execute(start, version, started)
                span.set_attribute("switchboard.node", result.node)
                span.update_name(f"step {result.node}")
                span.set_attribute("switchboard.committed", committed)
                if committed:
                    log.info(
                        "step %s %s: %s -> %s",
                        version + 1,
                        result.node,
                        result.summary[:200],
                        result.status,
                    )
                else:
                    log.info("step %s already committed elsewhere; nothing done", version + 1)
        finally:
            metrics.STEPS_IN_FLIGHT.dec()
            renewal.cancel()
            # A commit frees the lease in its own statement; release only on failure.
            if not committed:
                await self._db(self.store.release_lease, run_id, token)
        if not committed:
            return StepOutcome(Outcome.DUPLICATE, run_id, version)
        outcome = {
            RunStatus.RUNNING: Outcome.ADVANCED,
            RunStatus.AWAITING_APPROVAL: Outcome.WAITING,
        }.get(result.status, Outcome.DONE)
        done = StepOutcome(
            outcome,
            run_id,
            version + 1,
            node=result.node,
            team=result.team or ctx.state.get("team"),
            trace_parent=(carrier or {}).get("traceparent") or run.trace_parent,
            platform=run.platform,
        )
        self._count(ctx, result, time.perf_counter() - started)
        return done

    async def _run_trace(self, run: Run) -> dict[str, str] | None:
        """The run's trace context; the first traced step opens the run's root span if the
        process that accepted the run had no tracing."""
        if run.trace_parent:
            return {"traceparent": run.trace_parent}
        with run_span(str(run.id), run.team or "routed", name="run"):
            traceparent = inject_context().get("traceparent")
        if not traceparent:
            return None  # tracing is off in this process
        await self._db(self.store.set_trace_parent, run.id, traceparent)
        return {"traceparent": traceparent}

    async def _execute(
        self, start: StepStart, version: int, started: float
    ) -> tuple[_Step, _Result, bool]:
        run, loaded = start.run, start.state
        assert run is not None
        if loaded is None:
            raise RuntimeError(f"run {run.id} has no checkpoint {version}")
        team = self.config.teams.get(loaded["team"]) if loaded.get("team") else None
        ctx = _Step(
            run=run,
            state=loaded,
            number=version + 1,
            team=team,
            spend=start.spend,
            replays=start.replays,
            last_input_id=start.last_input_id,
        )
        result = await self._act(ctx)
        new_state = st.apply(ctx.state, result.updates)
        committed = await self._db(
            self.store.commit_step,
            run.id,
            version,
            NewStep(
                node=result.node,
                summary=result.summary,
                state=new_state,
                run_status=result.status,
                detail=ctx.details,
                answer=result.answer,
                error=result.error,
                notices=result.notices,
                escalation=result.escalation,
                started_at=datetime.now(UTC) - timedelta(seconds=time.perf_counter() - started),
                team=result.team,
            ),
        )
        return ctx, result, committed

    def _count(self, ctx: _Step, result: _Result, seconds: float) -> None:
        """Metrics for a committed step only, so a duplicate execution counts nothing."""
        team = result.team or ctx.state.get("team") or "unrouted"
        metrics.STEPS.labels(team=team, node=result.node).inc()
        metrics.STEP_SECONDS.labels(team=team, node=result.node).observe(seconds)
        if "persona_shift" in ctx.details:
            metrics.GUARD_TRIPS.labels(guard="persona_shift").inc()
        if result.escalation is not None:
            guard = result.escalation["guard"]
            metrics.GUARD_TRIPS.labels(guard=guard).inc()
            metrics.ESCALATIONS_OPENED.labels(reason=guard).inc()
        if result.status in RunStatus.TERMINAL:
            metrics.RUNS_FINISHED.labels(team=team, outcome=result.status).inc()

    # --- the unit of work -------------------------------------------------------------

    async def _act(self, ctx: _Step) -> _Result:
        if ctx.state["next"] == "route" or ctx.team is None:
            return await self._guarded(ctx, self._route)
        limits = ctx.team.limits
        if (
            limits.max_dollars_per_team_day is not None
            or limits.max_dollars_per_channel_day is not None
        ):
            ctx.figures = await self._db(
                budgets.figures, self.store, ctx.run, ctx.state["team"], limits, ctx.spend
            )
        else:  # no daily limits: the run's own spend came with begin_step, no query needed
            ctx.figures = budgets.figures(self.store, ctx.run, ctx.state["team"], limits, ctx.spend)
        ctx.budget = budgets.remaining(ctx.team.limits, ctx.figures, ctx.run)
        verdict = guards.evaluate(
            ctx.state, ctx.figures, ctx.team.limits, budgets.extensions(ctx.run)
        )
        if verdict.action is Action.SHIFT_PERSONA:
            assert verdict.worker is not None
            ctx.state = st.apply(ctx.state, [{"personas": {verdict.worker: guards.DEBUGGER}}])
            ctx.details["persona_shift"] = verdict.worker
        elif verdict.action is Action.ESCALATE:
            return self._escalate(ctx, verdict)
        elif verdict.action is Action.ABORT:
            return self._end(ctx, RunStatus.ABORTED, verdict.reason)
        node = self._supervise if ctx.state["next"] == "supervisor" else self._work
        return await self._guarded(ctx, node)

    async def _guarded(self, ctx: _Step, node: Callable[[_Step], Awaitable[_Result]]) -> _Result:
        try:
            return await node(ctx)
        except BudgetExceeded as exc:
            assert ctx.team is not None and ctx.figures is not None
            figures = {
                "steps": str(ctx.figures.steps),
                "tokens": str(ctx.figures.tokens),
                "dollars": f"${ctx.figures.dollars:.4f}",
            }
            if exc.kind == "dollars":
                verdict = Verdict(
                    Action.ESCALATE,
                    "dollar_budget",
                    f"The next model call would cost about ${exc.projected_usd:.4f}, more than "
                    f"the {exc.budget.scope} budget has left (${exc.budget.dollars or 0:.4f}).",
                    {**figures, "projected": f"${exc.projected_usd:.4f}"},
                    {"dollars": ctx.team.limits.grant_dollars},
                )
            else:
                verdict = Verdict(
                    Action.ESCALATE,
                    "token_budget",
                    f"The next model call could use {exc.projected_tokens} tokens, "
                    "more than the budget left.",
                    {**figures, "projected": str(exc.projected_tokens)},
                    {"tokens": ctx.team.limits.grant_tokens},
                )
            return self._escalate(ctx, verdict)
        except ModelUnavailable as exc:
            return self._end(ctx, RunStatus.FAILED, f"The model provider failed: {exc}")
        except prompts.ProtocolError as exc:
            return self._end(ctx, RunStatus.FAILED, f"The model did not follow the protocol: {exc}")

    async def _call(
        self,
        ctx: _Step,
        index: int,
        tier: str,
        purpose: str,
        messages: prompts.Messages,
        *,
        tools: list[dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Reply:
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
        )
        # begin_step fetched every call already recorded for this step: the gateway needs
        # no ledger lookup per call (a first execution has none to replay).
        return await self.gateway.complete(spec, ctx.budget, replays=ctx.replays)

    async def _route(self, ctx: _Step) -> _Result:
        if ctx.state.get("team") in self.config.teams:
            team = ctx.state["team"]
            summary = f"Team {team} (chosen by the requester)"
        else:
            reply = await self._call(
                ctx,
                ROUTER_CALL,
                self.config.router_tier,
                "route",
                prompts.router_messages(self.config, ctx.state["request"]),
            )
            team = prompts.parse_route(reply.content, self.config)
            summary = f"Team {team} chosen by the router"
        return _Result(
            node="router",
            summary=summary,
            team=team,
            updates=[{"team": team, "next": "supervisor"}],
            notices=(self._progress(ctx, summary, team=team),),
        )

    async def _summarise_if_needed(self, ctx: _Step, team: Team) -> list[dict[str, Any]]:
        limits = team.limits
        messages = ctx.state["messages"]
        start = ctx.state.get("summarised_upto", 0)
        cut = len(messages) - limits.keep_last_messages
        if cut <= start:
            return []
        pending = messages[start:cut]
        model = self.gateway.model_for(self.config.summary_tier)
        text = "\n".join(m["content"] for m in messages[start:])
        try:
            tokens = litellm.token_counter(model=model, text=text)
        except Exception:
            tokens = litellm.token_counter(model="gpt-3.5-turbo", text=text)
        if tokens < limits.summary_threshold_tokens:
            return []
        reply = await self._call(
            ctx,
            SUMMARY_CALL,
            self.config.summary_tier,
            "summary",
            prompts.summary_messages(ctx.state.get("summary", ""), pending),
        )
        ctx.details["summarised"] = {"messages": len(pending), "tokens": tokens}
        update = {"summary": reply.content.strip(), "summarised_upto": cut}
        ctx.state = st.apply(ctx.state, [update])
        return [update]

    async def _supervise(self, ctx: _Step) -> _Result:
        team = ctx.team
        assert team is not None
        updates = await self._summarise_if_needed(ctx, team)
        seen = ctx.state.get("human_seen", 0)
        inputs = []
        if ctx.last_input_id > seen:
            inputs = await self._db(self.store.human_inputs, ctx.run.id, seen)
        if inputs:
            update = {
                "human_input": [f"{entry.actor}: {entry.detail}" for entry in inputs],
                "human_seen": inputs[-1].id,
            }
            ctx.state = st.apply(ctx.state, [update])
            updates.append(update)
        messages = prompts.supervisor_messages(team, ctx.state, team.limits.keep_last_messages)
        decision = None
        for attempt in range(PROTOCOL_ATTEMPTS):
            reply = await self._call(
                ctx, SUPERVISOR_CALLS + attempt, team.supervisor.tier, "supervisor", messages
            )
            try:
                decision = prompts.parse_decision(reply.content, team)
                break
            except prompts.ProtocolError as exc:
                if attempt + 1 >= PROTOCOL_ATTEMPTS:
                    raise
                messages = [
                    *messages,
                    reply.assistant_message(),
                    {
                        "role": "user",
                        "content": f"That reply was invalid ({exc}). Reply with JSON only.",
                    },
                ]
        assert decision is not None
        notices: list[Notice] = []
        if decision.review is not None and decision.review.worker in {w.name for w in team.workers}:
            failures = ctx.state["review_failures"].get(decision.review.worker, 0)
            updates.append(
                {
                    "review_failures": {
                        decision.review.worker: 0 if decision.review.accepted else failures + 1
                    }
                }
            )
            if not decision.review.accepted:
                updates.append(
                    {
                        "messages": [
                            {
                                "role": "supervisor",
                                "content": f"Review of {decision.review.worker}: rejected. "
                                f"{decision.review.feedback}".strip(),
                            }
                        ]
                    }
                )
        if decision.action == "finish":
            updates.append({"answer": decision.answer, "next": "done"})
            return self._end(ctx, RunStatus.FINISHED, "", answer=decision.answer, updates=updates)
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
        if decision.review is not None:
            verdict = "accepted" if decision.review.accepted else "rejected"
            summary += f" (review of {decision.review.worker}: {verdict})"
        notices.append(self._progress(ctx, summary))
        return _Result(node="supervisor", summary=summary, updates=updates, notices=tuple(notices))

    async def _work(self, ctx: _Step) -> _Result:
        team = ctx.team
        assert team is not None
        plan = ctx.state["assignments"]
        turns = await asyncio.gather(
            *(
                self._worker_turn(
                    ctx, team, team.worker(item["worker"]), item["instruction"], index
                )
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
                Notice(
                    Kind.HIGHLIGHT, ctx.run.id, f"{worker}: {item['instruction'][:120]}", body=text
                )
            )
        updates.append({"next": "supervisor", "assignments": []})
        names = ", ".join(w for w, _, _ in turns)
        summary = f"{names} reported" if len(turns) == 1 else f"Fan-out: {names} reported"
        return _Result(
            node="fanout" if len(turns) > 1 else "worker",
            summary=summary,
            updates=updates,
            notices=(self._progress(ctx, summary), *notices),
        )

    async def _worker_turn(
        self, ctx: _Step, team: Team, worker: Worker, instruction: str, index: int
    ) -> tuple[str, str, list[dict[str, Any]]]:
        persona = ctx.state["personas"].get(worker.name)
        messages = prompts.worker_messages(
            team, worker, ctx.state, instruction, team.limits.keep_last_messages, persona
        )
        params: dict[str, Any] = {}
        if persona == guards.DEBUGGER:
            tier_temperature = float(self.gateway.tiers[worker.tier].params.get("temperature", 0.7))
            params["temperature"] = round(max(0.0, tier_temperature - 0.5), 2)
        tool_specs = self.tools.specs(worker.tools) if (self.tools and worker.tools) else None
        results: list[dict[str, Any]] = []
        base = WORKER_CALLS * (index + 1)
        for round_ in range(MAX_TOOL_ROUNDS + 1):
            reply = await self._call(
                ctx,
                base + round_,
                worker.tier,
                f"worker:{worker.name}",
                messages,
                tools=tool_specs,
                params=params,
            )
            if not reply.tool_calls or self.tools is None or round_ == MAX_TOOL_ROUNDS:
                return worker.name, reply.content.strip() or "(no output)", results
            messages = [*messages, reply.assistant_message()]
            for call in reply.tool_calls:
                started = time.perf_counter()
                with tool_span(call.name, run_id=str(ctx.run.id)):
                    output = await asyncio.to_thread(self.tools.execute, call.name, call.arguments)
                results.append(
                    {
                        "worker": worker.name,
                        "tool": call.name,
                        "arguments": call.arguments,
                        "result": output,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    }
                )
                messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
                outcome = json.loads(output)
                ctx.details.setdefault("tools", []).append(
                    {
                        "worker": worker.name,
                        "tool": call.name,
                        "duration_ms": results[-1]["duration_ms"],
                        "exit_code": outcome.get("exit_code"),
                        "timed_out": outcome.get("timed_out", False),
                        "error": outcome.get("error"),
                    }
                )
        raise AssertionError("unreachable")

    # --- endings and escalations ---------------------------------------------------------

    def _end(
        self,
        ctx: _Step,
        status: str,
        reason: str,
        *,
        answer: str | None = None,
        updates: list[dict[str, Any]] | None = None,
    ) -> _Result:
        updates = list(updates or [])
        if status == RunStatus.FINISHED:
            notice = Notice(
                Kind.RESULT,
                ctx.run.id,
                "Finished",
                body=answer or "",
                outcome="finished",
                figures=self._figure_strings(ctx),
                requester=ctx.run.requester,
            )
            return _Result(
                node="supervisor",
                summary="Supervisor finished",
                updates=updates,
                status=status,
                notices=(notice,),
                answer=answer,
            )
        updates.append({"next": "done", "error": reason})
        kind = Kind.ERROR if status == RunStatus.FAILED else Kind.RESULT
        notice = Notice(
            kind,
            ctx.run.id,
            "Failed" if status == RunStatus.FAILED else "Aborted",
            body=reason + partial_results(ctx.state),
            outcome=status,
            requester=ctx.run.requester,
        )
        return _Result(
            node="end",
            summary=reason,
            updates=updates,
            status=status,
            notices=(notice,),
            error=reason,
        )

    def _escalate(self, ctx: _Step, verdict: Verdict) -> _Result:
        grant = guards.describe_grant(verdict.grant)
        expires = datetime.now(UTC) + timedelta(seconds=self.escalation_ttl_s)
        notice = Notice(
            Kind.ESCALATION,
            ctx.run.id,
            f"Run {ctx.run.id} paused: {verdict.guard.replace('_', ' ')}",
            body=f"{verdict.reason}\nApprove grants {grant}; "
            "Abort ends the run with its partial results.",
            figures=verdict.figures,
            actions=escalation_actions(0, grant),
            requester=ctx.run.requester,
        )
        escalation = {
            "guard": verdict.guard,
            "reason": verdict.reason,
            "figures": verdict.figures,
            "grant": verdict.grant,
            "expires_at": expires,
        }
        ctx.details["guard"] = verdict.guard
        return _Result(
            node="guard",
            summary=f"Paused by {verdict.guard}: {verdict.reason}",
            updates=[],
            status=RunStatus.AWAITING_APPROVAL,
            notices=(notice,),
            escalation=escalation,
        )

    # --- figures ---------------------------------------------------------------------

    def _figure_strings(self, ctx: _Step) -> dict[str, str]:
        f = ctx.figures
        if f is None:
            return {"step": str(ctx.number)}
        return {"step": str(ctx.number), "tokens": str(f.tokens), "dollars": f"${f.dollars:.4f}"}

    def _progress(self, ctx: _Step, text: str, team: str | None = None) -> Notice:
        figures = self._figure_strings(ctx)
        figures["team"] = team or ctx.state.get("team") or "?"
        return Notice(Kind.PROGRESS, ctx.run.id, text, figures=figures)


def partial_results(state: st.State) -> str:
    """The latest output of each worker, for an aborted or failed run."""
    latest = {w: outputs[-1]["text"] for w, outputs in state.get("outputs", {}).items() if outputs}
    if not latest:
        return ""
    return "\n\nPartial results:\n" + "\n".join(f"- {w}: {text}" for w, text in latest.items())


__all__ = ["Engine", "Outcome", "StepOutcome", "ToolBox", "partial_results"]
