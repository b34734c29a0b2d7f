"""A worker's tool calls: the policy decides, the ledger makes each call happen once.

`allow` tools run at once; `ask` tools wait: the turn pauses, the step asks in the thread
(one question per step for all calls waiting), and the next step runs or refuses them as the
approver decided. Every run is recorded in the tool ledger before it starts and its result
when it returns, keyed by where the model asked for it, so a re-executed step replays the
result. A call that started and never reported (a crash mid-call) is run again only when it
is read-only; otherwise a human decides (Retry / Skip / Abort), since it may have happened.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.llm.gateway import ToolCall
from orchestrator.nodes.context import StepContext, ToolInfo
from orchestrator.store.models import Escalation, EscalationStatus, ToolCallStatus
from orchestrator.store.tool_ledger import Origin, ToolLedger
from orchestrator.telemetry import metrics
from orchestrator.telemetry.logs import redact
from orchestrator.telemetry.tracing import tool_span

APPROVAL = "tool_approval"
IN_DOUBT = "tool_in_doubt"
VALUE_CUT = 300


@dataclass
class Pending:
    """A call waiting for a human: asked for approval, or in doubt after a crash."""

    id: str  # the model's tool_call id, for the tool message
    name: str
    label: str
    server: str | None
    arguments: str
    origin: list[int]  # [step, index, position]
    in_doubt: bool = False

    @property
    def where(self) -> Origin:
        return Origin(*self.origin)


@dataclass
class ToolOutcome:
    output: str  # the tool message content
    pending: Pending | None = None
    result: dict[str, Any] = field(default_factory=dict)  # for state tool_results


def _error(text: str) -> str:
    return json.dumps({"error": text})


def pretty_arguments(arguments: str) -> str:
    """Arguments as an approver reads them: pretty JSON, secrets scrubbed, long values cut."""
    try:
        value: Any = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return redact(arguments[:VALUE_CUT])

    def cut(node: Any) -> Any:
        if isinstance(node, str):
            node = redact(node)
            return node if len(node) <= VALUE_CUT else node[:VALUE_CUT] + f"… ({len(node)} chars)"
        if isinstance(node, dict):
            return {k: cut(v) for k, v in node.items()}
        if isinstance(node, list):
            return [cut(v) for v in node[:50]]
        return node

    return json.dumps(cut(value), indent=2, ensure_ascii=False)


class ToolRunner:
    """The tool side of one step: policy, ledger and execution for every worker turn."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.tools = ctx.services.tools
        self.ledger = ToolLedger(ctx.services.store)

    async def handle(self, worker: str, call: ToolCall, origin: Origin) -> ToolOutcome:
        """A call the model just made: run it, refuse it, or hold it for a human."""
        info = self.tools.info(call.name) if self.tools is not None else None
        if info is None:
            return ToolOutcome(_error(f"there is no tool {call.name!r}"))
        if info.policy == "deny":
            return ToolOutcome(_error(f"{info.label} is not allowed here"))
        if info.policy == "ask" and not info.available:
            # Nobody should be asked to approve a call that cannot be made right now.
            return ToolOutcome(_error(f"{info.label} is unavailable now: its server is down"))
        if info.policy == "ask":
            record = await self._db(self.ledger.get, self.ctx.run.id, origin)
            if record is None or record.status != ToolCallStatus.DONE:
                return ToolOutcome(
                    "",
                    Pending(
                        call.id,
                        call.name,
                        info.label,
                        info.server,
                        call.arguments,
                        list((origin.step, origin.index, origin.position)),
                    ),
                )
            return self._replayed(worker, info, call.arguments, record.result or "")
        return await self.run(worker, info, call.id, call.arguments, origin, "allowed", None)

    async def resolve(
        self, worker: str, pending: Pending, decision: Escalation | None
    ) -> ToolOutcome:
        """A held call after the human's answer: run it, or tell the model it was refused."""
        who = (decision.decided_by if decision else None) or "nobody"
        approved = decision is not None and decision.status == EscalationStatus.APPROVED
        info = self.tools.info(pending.name) if self.tools is not None else None
        if info is None:
            return ToolOutcome(_error(f"the tool {pending.label} is gone"))
        if not approved:
            note = (decision.note or "").strip() if decision else ""
            if pending.in_doubt:
                text = (
                    f"skipped by {who}: the earlier attempt may or may not have happened; "
                    "do not assume either"
                )
            else:
                text = f"rejected by {who}" + (f": {note}" if note else "")
            output = _error(text)
            ctx = self.ctx
            record = await self._db(self.ledger.get, ctx.run.id, pending.where)
            if record is not None and record.status == ToolCallStatus.DONE:
                output = record.result or output  # decided and recorded before a crash
            else:
                if record is None:  # the refusal is recorded like a call, for status and replay
                    record = await self._db(
                        lambda: self.ledger.start(
                            ctx.run.id,
                            pending.where,
                            step=ctx.number,
                            worker=worker,
                            tool=info.label,
                            server=info.server,
                            arguments=pending.arguments,
                            decision="rejected",
                            decided_by=who,
                        )
                    )
                if record is not None:
                    verdict = "skipped" if pending.in_doubt else "rejected"
                    metrics.TOOL_CALLS.labels(
                        source=info.server or "builtin", outcome=verdict
                    ).inc()
                    await self._db(lambda: self.ledger.finish(record.id, output, decision=verdict))
            return ToolOutcome(
                output, result=self._result(worker, info, pending.arguments, output, 0.0)
            )
        return await self.run(
            worker,
            info,
            pending.id,
            pending.arguments,
            pending.where,
            "approved",
            who,
            retry=pending.in_doubt,
        )

    async def run(
        self,
        worker: str,
        info: ToolInfo,
        call_id: str,
        arguments: str,
        origin: Origin,
        decision: str,
        decided_by: str | None,
        *,
        retry: bool = False,
    ) -> ToolOutcome:
        ctx = self.ctx
        assert self.tools is not None
        record = await self._db(self.ledger.get, ctx.run.id, origin)
        if record is not None and record.status == ToolCallStatus.DONE:
            return self._replayed(worker, info, arguments, record.result or "")
        if record is not None and not (info.read_only or retry):
            # Started before a crash and never reported: it may have happened.
            return ToolOutcome(
                "",
                Pending(
                    call_id,
                    info.name,
                    info.label,
                    info.server,
                    arguments,
                    [origin.step, origin.index, origin.position],
                    in_doubt=True,
                ),
            )
        if record is not None:
            await self._db(self.ledger.restart, record.id, ctx.number)
        else:
            record = await self._db(
                lambda: self.ledger.start(
                    ctx.run.id,
                    origin,
                    step=ctx.number,
                    worker=worker,
                    tool=info.label,
                    server=info.server,
                    arguments=arguments,
                    decision=decision,
                    decided_by=decided_by,
                )
            )
            if record is None:  # a concurrent execution of this step recorded it first
                return ToolOutcome(_error("this call is already running elsewhere"))
        started = time.perf_counter()
        with tool_span(info.label, run_id=str(ctx.run.id)):
            output = await asyncio.to_thread(self.tools.execute, info.name, arguments)
        seconds = time.perf_counter() - started
        await self._db(self.ledger.finish, record.id, output)
        failed = bool(_outcome(output).get("error"))
        metrics.TOOL_CALLS.labels(
            source=info.server or "builtin", outcome="error" if failed else "ok"
        ).inc()
        return ToolOutcome(output, result=self._result(worker, info, arguments, output, seconds))

    def _replayed(self, worker: str, info: ToolInfo, arguments: str, output: str) -> ToolOutcome:
        return ToolOutcome(output, result=self._result(worker, info, arguments, output, 0.0))

    def _result(
        self, worker: str, info: ToolInfo, arguments: str, output: str, seconds: float
    ) -> dict[str, Any]:
        outcome = _outcome(output)
        self.ctx.details.setdefault("tools", []).append(
            {
                "worker": worker,
                "tool": info.label,
                "duration_ms": round(seconds * 1000, 1),
                "exit_code": outcome.get("exit_code"),
                "timed_out": outcome.get("timed_out", False),
                "error": outcome.get("error"),
            }
        )
        return {
            "worker": worker,
            "tool": info.label,
            "arguments": arguments,
            "result": output,
            "duration_ms": round(seconds * 1000, 1),
        }

    async def _db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)


def _outcome(output: str) -> dict[str, Any]:
    try:
        value = json.loads(output)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def pending_json(pending: Pending) -> dict[str, Any]:
    return asdict(pending)
