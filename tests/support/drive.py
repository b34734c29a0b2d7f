"""Drive runs through the real engine in the test process (no queue): one call, one step."""

from __future__ import annotations

from pathlib import Path

from orchestrator import service
from orchestrator.engine import Outcome, StepOutcome
from orchestrator.settings import Settings
from orchestrator.store.models import Run
from tasks import bridge, runtime


def build(url: str, teams: Path, **settings: object) -> runtime.Runtime:
    values = {"DATABASE_URL": url, "SWITCHBOARD_TEAMS_FILE": str(teams), **settings}
    return runtime.build(Settings(**values))  # type: ignore[arg-type]


def start(
    rt: runtime.Runtime,
    request: str,
    *,
    team: str | None = "research",
    requester: str = "U1",
    channel: str = "C1",
    key: str | None = None,
) -> Run:
    run, _ = service.start_run(
        rt.store,
        rt.config,
        request=request,
        team=team,
        platform="test",
        channel=channel,
        thread=None,
        requester=requester,
        origin_key=key,
    )
    return run


def drive(rt: runtime.Runtime, run_id: int, limit: int = 200) -> StepOutcome:
    """Step the run until it stops advancing (done, waiting, or nothing to do)."""
    run = rt.store.get_run(run_id)
    assert run is not None
    version = run.version
    for _ in range(limit):
        outcome = bridge.run(rt.engine.step(run_id, version))
        if outcome.outcome is not Outcome.ADVANCED:
            return outcome
        version = outcome.version
    raise AssertionError("run did not stop")
