"""Budgets: what a run has spent (from the ledger) and what it may still spend.

Limits come from the team's policy; approvals add extensions on the run row. Daily limits
count from midnight UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.guards import Extensions, Figures
from orchestrator.llm.gateway import Budget
from orchestrator.store.models import Run
from orchestrator.store.repository import Spend, Store
from orchestrator.teams import Limits


def today() -> datetime:
    """Midnight UTC: where daily spend starts counting."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def figures(store: Store, run: Run, team: str, limits: Limits, run_spend: Spend) -> Figures:
    """The run's usage; team-day and channel-day spend are read only when limited."""
    team_day = channel_day = 0.0
    if limits.max_dollars_per_team_day is not None:
        team_day = store.spend(team=team, since=today()).dollars
    if limits.max_dollars_per_channel_day is not None:
        channel_day = store.spend(channel=run.channel, since=today()).dollars
    return Figures(
        steps=run.version,
        tokens=run_spend.tokens,
        dollars=run_spend.dollars,
        elapsed_s=(datetime.now(UTC) - run.created_at).total_seconds(),
        team_day_dollars=team_day,
        channel_day_dollars=channel_day,
    )


def remaining(limits: Limits, f: Figures, run: Run) -> Budget:
    """What the next model call may spend: the tightest of the dollar limits, and tokens."""
    left: list[tuple[float, str]] = []
    for scope, limit, spent in (
        ("run", limits.max_dollars_per_run, f.dollars),
        ("team today", limits.max_dollars_per_team_day, f.team_day_dollars),
        ("channel today", limits.max_dollars_per_channel_day, f.channel_day_dollars),
    ):
        if limit is not None:
            left.append((limit + run.extra_dollars - spent, scope))
    tokens = None
    if limits.max_tokens_per_run is not None:
        tokens = limits.max_tokens_per_run + run.extra_tokens - f.tokens
    dollars, scope = min(left) if left else (None, "run")
    return Budget(dollars=dollars, tokens=tokens, scope=scope)


def extensions(run: Run) -> Extensions:
    """What approvals granted on top of the team's limits."""
    return Extensions(
        steps=run.extra_steps,
        tokens=run.extra_tokens,
        dollars=run.extra_dollars,
        seconds=run.extra_seconds,
        since_version=run.cleared_version,
    )
