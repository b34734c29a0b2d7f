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
import dataclasses
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from orchestrator import budgets, guards
from orchestrator import state as st
from orchestrator.guards import Action, Verdict
from orchestrator.llm.gateway import (
    BudgetExceeded,
    LLMGateway,
    ModelUnavailable,
    ProviderAuthError,
)
from orchestrator.nodes.asking import ProtocolFailure
from orchestrator.nodes.context import NodeResult, Services, StepContext, ToolBox
from orchestrator.nodes.endings import end, escalate, partial_results
from orchestrator.nodes.route import route
from orchestrator.nodes.supervise import supervise
from orchestrator.nodes.work import work
from orchestrator.store.models import Run, RunStatus
from orchestrator.store.repository import Hold, NewStep, StepStart, Store
from orchestrator.teams import TeamsConfig
from orchestrator.telemetry import metrics
from orchestrator.telemetry.logs import log_context
from orchestrator.telemetry.tracing import (
    inject_context,
    run_span,
    step_span,
    use_context,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
Node = Callable[[StepContext], Awaitable[NodeResult]]
STATE_CACHE = 4096  # runs whose latest state a worker keeps


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
        self.services = Services(store, gateway, config, tools, escalation_ttl_s)
        # States this engine committed, by (run, version): immutable once committed, so the
        # next step of the same run needs no checkpoint read.
        self._states: OrderedDict[tuple[int, int], st.State] = OrderedDict()
        # Leases a commit kept for the next step of the same run (token, what it reads).
        self._held: dict[tuple[int, int], tuple[str, StepStart]] = {}

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def _renew(self, run_id: int, token: str) -> None:
        """Keep the lease while a slow step waits on models; a dead worker's lease lapses."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self.store.arenew_lease(run_id, token, self.lease_s)

    def _token(self) -> str:
        return f"{self.owner}:{uuid.uuid4().hex[:12]}"

    async def release(self, run_id: int, version: int) -> None:
        """Give up a lease held for step `version` (see `step(hold_next=True)`), so the
        queue can hand the run to any worker at once."""
        held = self._held.pop((run_id, version), None)
        if held is not None:
            await self.store.arelease_lease(run_id, held[0])

    async def step(
        self,
        run_id: int,
        version: int,
        carrier: Mapping[str, str] | None = None,
        *,
        hold_next: bool = False,
    ) -> StepOutcome:
        """Execute one unit. `carrier` is the trace context the task arrived with; without
        one the step joins the run's own trace.

        `hold_next`: the caller goes straight on with the run's next step, so the commit
        keeps the run's lease for it and reads what it needs (see Store.acommit_step); that
        next step then starts without a round trip. A caller that does not go on after all
        calls `release`.
        """
        held = self._held.pop((run_id, version), None)
        cached = self._states.get((run_id, version))
        if held is not None and cached is not None:
            token, start = held[0], dataclasses.replace(held[1], state=cached)
        else:
            if held is not None:  # no state in memory after all: start afresh
                await self.store.arelease_lease(run_id, held[0])
            token = self._token()
            # One round trip: the lease at `version`, the run, its checkpoint, spend and
            # replays. A worker that committed the version itself has its state in memory;
            # begin_step then reads no checkpoint.
            start = await self.store.abegin_step(
                run_id, version, token, self.lease_s, want_state=cached is None
            )
            if cached is not None and start.taken:
                start = dataclasses.replace(start, state=cached)
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
                ctx, result, committed = await self._execute(start, version, started, hold_next)
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
                await self.store.arelease_lease(run_id, token)
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
        self, start: StepStart, version: int, started: float, hold_next: bool
    ) -> tuple[StepContext, NodeResult, bool]:
        run, loaded = start.run, start.state
        assert run is not None
        if loaded is None:
            raise RuntimeError(f"run {run.id} has no checkpoint {version}")
        team = self.config.teams.get(loaded["team"]) if loaded.get("team") else None
        ctx = StepContext(
            run=run,
            state=loaded,
            number=version + 1,
            team=team,
            services=self.services,
            spend=start.spend,
            replays=start.replays,
            last_input_id=start.last_input_id,
        )
        result = await self._act(ctx)
        # The step's delta: updates applied to the working state before the node ran
        # (a persona shift) and the node's own. Folded into the loaded state, never into the
        # working copy (which already holds some of them).
        delta = [*ctx.applied, *result.updates]
        new_state = st.apply(loaded, delta)
        hold = None
        if hold_next and result.status == RunStatus.RUNNING:
            hold = Hold(self._token(), self.lease_s)
        commit = await self.store.acommit_step(
            run.id,
            version,
            NewStep(
                node=result.node,
                summary=result.summary,
                state=new_state,
                delta=delta,
                run_status=result.status,
                detail=ctx.details,
                answer=result.answer,
                error=result.error,
                notices=result.notices,
                escalation=result.escalation,
                started_at=datetime.now(UTC) - timedelta(seconds=time.perf_counter() - started),
                team=result.team,
            ),
            hold,
        )
        self._states.pop((run.id, version), None)
        if commit.committed and result.status == RunStatus.RUNNING:
            self._states[(run.id, version + 1)] = new_state
            while len(self._states) > STATE_CACHE:
                self._states.popitem(last=False)
            if hold is not None and commit.next is not None:
                self._held[(run.id, version + 1)] = (hold.owner, commit.next)
                while len(self._held) > STATE_CACHE:  # never stepped on: its lease lapses
                    self._held.pop(next(iter(self._held)))
        return ctx, result, commit.committed

    def _count(self, ctx: StepContext, result: NodeResult, seconds: float) -> None:
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

    async def _act(self, ctx: StepContext) -> NodeResult:
        if ctx.state["next"] == "route" or ctx.team is None:
            return await self._guarded(ctx, route)
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
            shift = {"personas": {verdict.worker: guards.DEBUGGER}}
            ctx.state = st.apply(ctx.state, [shift])
            ctx.applied.append(shift)
            ctx.details["persona_shift"] = verdict.worker
        elif verdict.action is Action.ESCALATE:
            return escalate(ctx, verdict)
        elif verdict.action is Action.ABORT:
            return end(ctx, RunStatus.ABORTED, verdict.reason)
        node = supervise if ctx.state["next"] == "supervisor" else work
        return await self._guarded(ctx, node)

    async def _guarded(self, ctx: StepContext, node: Node) -> NodeResult:
        """A node's failures that a human can still rescue pause the run; the rest end it."""
        try:
            return await node(ctx)
        except BudgetExceeded as exc:
            return escalate(ctx, _budget_verdict(ctx, exc))
        except ProtocolFailure as exc:
            return escalate(
                ctx,
                Verdict(
                    Action.ESCALATE,
                    "protocol_failure",
                    f"The {exc.tier} tier's model ({exc.model}) did not follow the protocol: "
                    f"{exc.reason}.\nIts last reply began: {exc.excerpt or '(empty)'}",
                    {"tier": exc.tier, "model": exc.model},
                ),
            )
        except ModelUnavailable as exc:
            return escalate(
                ctx,
                Verdict(
                    Action.ESCALATE,
                    "provider_failure",
                    f"The model provider failed: {exc}",
                    {"tier": exc.tier, "model": exc.model},
                ),
            )
        except ProviderAuthError as exc:
            return end(ctx, RunStatus.FAILED, str(exc))


def _budget_verdict(ctx: StepContext, exc: BudgetExceeded) -> Verdict:
    assert ctx.team is not None and ctx.figures is not None
    figures = {
        "steps": str(ctx.figures.steps),
        "tokens": str(ctx.figures.tokens),
        "dollars": f"${ctx.figures.dollars:.4f}",
    }
    if exc.kind == "dollars":
        return Verdict(
            Action.ESCALATE,
            "dollar_budget",
            f"The next model call would cost about ${exc.projected_usd:.4f}, more than "
            f"the {exc.budget.scope} budget has left (${exc.budget.dollars or 0:.4f}).",
            {**figures, "projected": f"${exc.projected_usd:.4f}"},
            {"dollars": ctx.team.limits.grant_dollars},
        )
    return Verdict(
        Action.ESCALATE,
        "token_budget",
        f"The next model call could use {exc.projected_tokens} tokens, more than the budget left.",
        {**figures, "projected": str(exc.projected_tokens)},
        {"tokens": ctx.team.limits.grant_tokens},
    )


__all__ = ["Engine", "Outcome", "StepOutcome", "ToolBox", "partial_results"]
