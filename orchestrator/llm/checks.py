"""Start-up checks of a teams file against the environment: missing keys, missing prices.

Both are warnings, not errors: a key may be set later for the worker that needs it, and a
team without dollar limits does not need prices. They are printed by `switchboard teams
validate` and logged by every process at start, so an operator sees them before a run fails.
"""

from __future__ import annotations

from orchestrator.llm import pricing
from orchestrator.llm.gateway import missing_key
from orchestrator.teams import Team, TeamsConfig


def _dollar_limited(team: Team) -> bool:
    limits = team.limits
    return any(
        value is not None
        for value in (
            limits.max_dollars_per_run,
            limits.max_dollars_per_team_day,
            limits.max_dollars_per_channel_day,
        )
    )


def unpriced_tiers(config: TeamsConfig, team: str) -> list[str]:
    """The tiers a team's calls go through that have no price anywhere."""
    chosen = config.teams[team]
    used = {chosen.supervisor.tier, config.summary_tier, *(w.tier for w in chosen.workers)}
    return sorted(name for name in used if not pricing.tier_priced(config.tiers[name]))


def config_warnings(config: TeamsConfig) -> list[str]:
    warnings = []
    for name, tier in config.tiers.items():
        for model in (tier.model, *tier.fallbacks):
            key = missing_key(model, tier)
            if key is not None:
                warnings.append(
                    f"tier {name} ({model}): {key} is not set; set {key} for tier {name}"
                )
    for team_name, team in config.teams.items():
        if not _dollar_limited(team):
            continue
        unpriced = unpriced_tiers(config, team_name)
        if unpriced:
            models = ", ".join(f"{t} ({config.tiers[t].model})" for t in unpriced)
            warnings.append(
                f"team {team_name} has dollar limits, but no price is known for tier {models}: "
                "its calls count as $0 and the limits cannot stop it; set "
                "input_cost_per_token and output_cost_per_token on the tier"
            )
    return warnings


__all__ = ["config_warnings", "unpriced_tiers"]
