"""Plain-text answers to status, budget and teams, shared by every adapter."""

from __future__ import annotations

import json

from orchestrator import budgets
from orchestrator.llm.checks import unpriced_tiers
from orchestrator.store.repository import Store
from orchestrator.store.tool_ledger import ToolLedger
from orchestrator.teams import TeamsConfig


def _money(value: float) -> str:
    return f"${value:.4f}"


def teams_text(config: TeamsConfig) -> str:
    lines = ["Teams:"]
    for name, team in config.teams.items():
        workers = ", ".join(w.name for w in team.workers)
        lines.append(f"  {name}: {team.description.strip().splitlines()[0]} (workers: {workers})")
    return "\n".join(lines)


def status_text(store: Store, run_id: int | None, *, channel: str | None = None) -> str:
    if run_id is None:
        runs = store.recent_runs(channel=channel, limit=10)
        if not runs:
            return "No runs yet. Start one with: /agent <request>"
        lines = ["Recent runs:"]
        lines += [f"  #{r.id} [{r.status}] {r.team or 'routing'}: {r.request[:80]}" for r in runs]
        return "\n".join(lines)
    run = store.get_run(run_id)
    if run is None:
        return f"There is no run {run_id}."
    steps = store.steps(run_id)
    spend = store.spend(run_id=run_id)
    # A call to a model with no price costs $0 in the ledger, which is not the same as free.
    unpriced = {
        c.step for c in store.llm_calls(run_id) if not (c.response or {}).get("priced", True)
    }
    cost = "unpriced" if unpriced else _money(spend.dollars)
    lines = [
        f"Run #{run.id} [{run.status}] team {run.team or 'routing'}, requested by {run.requester}",
        f"  request: {run.request[:200]}",
        f"  steps: {len(steps)}, tokens: {spend.tokens}, cost: {cost}",
    ]
    for step in steps:
        step_cost = "unpriced" if step.version in unpriced else _money(step.cost_usd)
        lines.append(
            f"  {step.version:>3}. {step.node:<10} {step.tokens_in + step.tokens_out:>7} tok "
            f"{step_cost:>9} {step.latency_ms:>8.0f} ms  {step.summary[:90]}"
        )

    for record in ToolLedger(store).for_run(run_id):
        who = f" by {record.decided_by}" if record.decided_by else ""
        state = "in doubt" if record.status == "started" else record.status
        lines.append(
            f"  tool {record.tool} (step {record.step}, {record.worker}): {record.decision}{who}, "
            f"{state}; args {json.dumps(record.arguments)[:120]}"
        )
    for escalation in store.pending_escalations(run_id):
        lines.append(
            f"  pending escalation #{escalation.id} ({escalation.guard}): {escalation.reason}"
        )
    if run.answer:
        lines.append(f"  answer: {run.answer[:300]}")
    if run.error:
        lines.append(f"  ended: {run.error}")
    return "\n".join(lines)


def budget_text(
    store: Store, config: TeamsConfig, *, channel: str, run_id: int | None = None
) -> str:
    today = budgets.today()
    lines = ["Spend against limits (today is UTC):"]
    channel_spend = store.spend(channel=channel, since=today)
    for name, team in config.teams.items():
        limits = team.limits
        spent = store.spend(team=name, since=today)
        unpriced = unpriced_tiers(config, name)
        if unpriced:
            lines.append(
                f"  team {name} today: unpriced ({spent.tokens} tokens; no price for tier "
                f"{', '.join(unpriced)}, so dollar limits cannot be enforced)"
            )
            continue
        team_limit = (
            _money(limits.max_dollars_per_team_day)
            if limits.max_dollars_per_team_day
            else "no limit"
        )
        run_limit = _money(limits.max_dollars_per_run) if limits.max_dollars_per_run else "no limit"
        tokens = str(limits.max_tokens_per_run) if limits.max_tokens_per_run else "no limit"
        lines.append(
            f"  team {name} today: {_money(spent.dollars)} of {team_limit}; per run: {run_limit}, "
            f"{tokens} tokens"
        )
    limits_by_channel = [
        t.limits.max_dollars_per_channel_day
        for t in config.teams.values()
        if t.limits.max_dollars_per_channel_day
    ]
    channel_limit = _money(min(limits_by_channel)) if limits_by_channel else "no limit"
    lines.append(f"  this channel today: {_money(channel_spend.dollars)} of {channel_limit}")
    if run_id is not None:
        run_spend = store.spend(run_id=run_id)
        lines.append(f"  run #{run_id}: {_money(run_spend.dollars)}, {run_spend.tokens} tokens")
    return "\n".join(lines)
