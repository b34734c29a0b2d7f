"""Fixtures for the alert intake: a teams file with alert routes, the intake over a database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DEFAULT_TEAMS

ONCALL = "C0ONCALL01"  # the Slack channel critical alerts open their threads in


def teams_with_alerts(
    path: Path,
    *,
    runs: int = 5,
    per_seconds: float = 600,
    channel: str = ONCALL,
    base: dict[str, Any] | None = None,
    request: str | None = None,
) -> Path:
    """The default teams (or `base`) with one route: Switchboard's critical alerts go to the
    research team in `channel`."""
    data = base or yaml.safe_load(DEFAULT_TEAMS.read_text())
    route: dict[str, Any] = {
        "name": "switchboard-critical",
        "matchers": ['stack="switchboard"', 'severity="critical"'],
        "team": "research",
        "channel": {"platform": "slack", "id": channel},
    }
    if request is not None:
        route["request"] = request
    data["alerts"] = {
        "per_channel": {"runs": runs, "per_seconds": per_seconds},
        "routes": [route],
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def alert_teams(tmp_path: Path) -> Callable[..., Path]:
    def make(**kwargs: Any) -> Path:
        return teams_with_alerts(tmp_path / "teams.yaml", **kwargs)

    return make
