"""Plain-text answers to status, budget and teams, shared by every adapter."""

from __future__ import annotations

import json
from typing import Any

from orchestrator import budgets, wording
from orchestrator.llm.checks import unpriced_tiers
from orchestrator.store import progress as store_progress
from orchestrator.store.models import ToolCallRecord
from orchestrator.store.repository import Store
from orchestrator.store.tool_ledger import ToolLedger
from orchestrator.teams import TeamsConfig


def _money(value: float) -> str:
    return f"${value:.4f}"


def approvers_text(config: TeamsConfig, team: str | None, platform: str) -> str:
    """Who may approve a team's runs on one platform, for a refusal to name them.

    Slack ids are shown with Slack's own formatting (`<@U…>`, `<!subteam^S…>`), Discord's
    with theirs (`<@id>`, `<@&role>`): each adapter renders them as names, without a ping
    where it sends with mentions disabled.
    """
    approvers = config.approvers_for(team or "")
    names: list[str] = []
    if platform == "slack":
        names += [f"<@{user}>" for user in approvers.users]
        names += [f"<!subteam^{group}>" for group in approvers.slack_usergroups]
    elif platform == "discord":
        names += [f"<@{user}>" for user in approvers.users]
        names += [f"<@&{role}>" for role in approvers.discord_roles]
    else:
        names += list(approvers.users)
    if not names:
        return "No approvers are configured for this team; ask your Switchboard operator."
    if len(names) == 1:
        return f"Ask {names[0]}."
    return f"Ask one of {', '.join(names[:-1])} or {names[-1]}."


def _tool_line(record: ToolCallRecord) -> str:
    """One tool call from the ledger, in words: who ran what, who decided, what came of it."""
    decided = {
        "allowed": "",
        "approved": f", approved by {record.decided_by}",
        "rejected": f", rejected by {record.decided_by}",
        "skipped": f", skipped by {record.decided_by} (it may or may not have happened)",
        "retried": f", retried by {record.decided_by}",
    }.get(record.decision, f", {record.decision}")
    if record.status != "done":
        outcome = "started and never reported (in doubt)"
    else:
        result = _json_object(record.result or "")
        if result.get("error"):
            outcome = f"error: {str(result['error'])[:120]}"
        elif result.get("timed_out"):
            outcome = "timed out"
        elif result.get("exit_code") is not None:
            outcome = f"exit code {result['exit_code']}"
        else:
            outcome = "done"
    took = ""
    if record.finished_at is not None and record.decision != "rejected":
        started = record.started_at
        took = f", {wording.duration((record.finished_at - started).total_seconds())}"
    arguments = json.dumps(record.arguments, ensure_ascii=False)
    arguments = arguments if len(arguments) <= 100 else arguments[:100] + "…"
    return (
        f"step {record.step}: {record.worker} called {record.tool} {arguments}{decided}: "
        f"{outcome}{took}"
    )


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def teams_text(config: TeamsConfig) -> str:
    lines = ["Teams:"]
    for name, team in config.teams.items():
        workers = ", ".join(w.name for w in team.workers)
        lines.append(f"  {name}: {team.description.strip().splitlines()[0]} (workers: {workers})")
    return "\n".join(lines)


def status_text(
    store: Store,
    run_id: int | None,
    *,
    channel: str | None = None,
    requester: str | None = None,
    platform: str | None = None,
) -> str:
    """A run's steps and spend; without a run id, the recent runs of a person or a channel.

    With `requester`, the list is that person's runs across every session and channel on
    `platform` (the console's sessions each have a channel of their own).
    """
    if run_id is None:
        if requester is not None:
            runs = store_progress.recent_runs_of(store, requester, platform=platform, limit=10)
            whose = "Your recent runs:"
        else:
            runs = store.recent_runs(channel=channel, limit=10)
            whose = "Recent runs:"
        if not runs:
            return "No runs yet. Start one with: /agent <request>"
        lines = [whose]
        for r in runs:
            request, _cut = wording.excerpt(" ".join(r.request.split()), 80)
            lines.append(f"  #{r.id} [{r.status}] {r.team or 'no team yet'}: {request}")
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
        f"Run #{run.id} [{run.status}] team {run.team or '(not chosen yet)'}, "
        f"requested by {run.requester}",
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
        lines.append(f"  tool: {_tool_line(record)}")
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
            f"of {_money(limits.max_dollars_per_team_day)}"
            if limits.max_dollars_per_team_day
            else "(no daily limit)"
        )
        run_limit = (
            f"{_money(limits.max_dollars_per_run)}"
            if limits.max_dollars_per_run
            else "no dollar limit"
        )
        tokens = (
            f"{limits.max_tokens_per_run:,} tokens"
            if limits.max_tokens_per_run
            else "no token limit"
        )
        lines.append(
            f"  team {name} today: {_money(spent.dollars)} {team_limit}; per run: {run_limit}, "
            f"{tokens}"
        )
    limits_by_channel = [
        t.limits.max_dollars_per_channel_day
        for t in config.teams.values()
        if t.limits.max_dollars_per_channel_day
    ]
    channel_limit = (
        f"of {_money(min(limits_by_channel))}" if limits_by_channel else "(no daily limit)"
    )
    lines.append(f"  this channel today: {_money(channel_spend.dollars)} {channel_limit}")
    if run_id is not None:
        run_spend = store.spend(run_id=run_id)
        lines.append(f"  run #{run_id}: {_money(run_spend.dollars)}, {run_spend.tokens} tokens")
    return "\n".join(lines)
