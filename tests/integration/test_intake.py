"""Caps on runs in flight, bad text kept out of Postgres, and who may see a run; on Postgres
through the service the adapters call."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from orchestrator import service
from orchestrator.intake import Caps
from orchestrator.service import Actor
from orchestrator.store.models import AuditEntry, Run, RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import load_teams

pytestmark = pytest.mark.integration

CAPS = Caps(request_chars=200, runs_per_user=2, runs_per_channel=3)


@pytest.fixture
def core(pg_url: str, make_teams):  # type: ignore[no-untyped-def]
    config = load_teams(make_teams(approvers={"users": ["UBOSS"], "slack_usergroups": ["SOPS"]}))
    return Store(pg_url), config


def start(store: Store, config, *, user: str = "U1", channel: str = "C1", key=None, **kw):  # type: ignore[no-untyped-def]
    return service.start_run(
        store,
        config,
        request=kw.pop("request", "summarise the design"),
        team=kw.pop("team", "research"),
        platform="slack",
        channel=channel,
        thread=None,
        requester=user,
        origin_key=key or f"k-{uuid.uuid4()}",
        caps=kw.pop("caps", CAPS),
    )


def set_status(store: Store, run_id: int, status: str) -> None:
    with store.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.status = status


def test_per_user_cap_counts_runs_in_flight_and_says_which(core) -> None:  # type: ignore[no-untyped-def]
    store, config = core
    first, _ = start(store, config)
    second, _ = start(store, config, key="second")
    set_status(store, second.id, RunStatus.AWAITING_APPROVAL)  # a paused run still counts
    with pytest.raises(service.UserError) as info:
        start(store, config)
    assert str(info.value) == (
        f"You already have 2 runs in flight (the limit is 2): #{first.id}, #{second.id}. "
        "Wait for one to finish, or abort one with /agent abort RUN_ID."
    )
    # A redelivered start of a run that exists is no new run: the cap does not refuse it.
    again, created = start(store, config, key="second")
    assert again.id == second.id and not created
    # Another user in the same channel is not held back by U1's runs.
    start(store, config, user="U2")
    # An ended run frees its place.
    set_status(store, first.id, RunStatus.FINISHED)
    start(store, config)


def test_per_channel_cap(core) -> None:  # type: ignore[no-untyped-def]
    store, config = core
    for user in ("U1", "U2", "U3"):
        start(store, config, user=user)
    with pytest.raises(service.UserError, match=r"This channel already has 3 runs in flight"):
        start(store, config, user="U4")
    start(store, config, user="U4", channel="C2")  # other channels are not affected
    start(store, config, user="U4", caps=Caps(200, 0, 0))  # 0: no cap


def test_simultaneous_starts_cannot_pass_the_same_count(core) -> None:  # type: ignore[no-untyped-def]
    """Twelve starts at once from one person (cap 2) and twelve from others in one channel
    (cap 3): the count and the insert are one transaction, serialised per channel and
    person, so exactly the caps' worth are made."""
    store, config = core
    barrier = threading.Barrier(12)

    def attempt(user: str) -> str:
        barrier.wait()
        try:
            start(store, config, user=user)
            return "made"
        except service.UserError:
            return "refused"

    with ThreadPoolExecutor(12) as pool:
        mine = list(pool.map(attempt, ["U1"] * 12))
    assert sorted(mine).count("made") == 2
    barrier.reset()
    with ThreadPoolExecutor(12) as pool:
        others = list(pool.map(attempt, [f"V{i}" for i in range(12)]))
    assert others.count("made") == 1  # the channel had 2 of its 3 already
    with store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 3


def test_nul_oversized_and_control_text_never_reach_postgres_as_a_crash(core) -> None:  # type: ignore[no-untyped-def]
    store, config = core
    with pytest.raises(service.UserError, match="NUL"):
        start(store, config, request="hello\x00world")
    with pytest.raises(service.UserError, match="the limit is 200"):
        start(store, config, request="x" * 201)
    run, _ = start(store, config, request="\x1b]0;title\x07\x1b[2Jplease summarise")
    assert store.get_run(run.id).request == "please summarise"
    actor = Actor("U1", "slack", "C1")
    with pytest.raises(service.UserError, match="The reply contains a NUL"):
        service.add_human_input(store, run.id, "more\x00input", actor)
    service.add_human_input(store, run.id, "more \x1b[31minput", actor)
    with store.sessions() as session:
        details = [e.detail for e in session.query(AuditEntry).filter_by(run_id=run.id)]
    assert details == ["more input"]


def test_status_shows_a_run_only_in_its_channel_or_to_an_approver(core) -> None:  # type: ignore[no-untyped-def]
    store, config = core
    run, _ = start(store, config, request="the secret plan")
    here = service.status_report(store, config, run.id, Actor("USTRANGER", "slack", "C1"))
    assert "the secret plan" in here
    for elsewhere in (
        Actor("USTRANGER", "slack", "C2"),
        Actor("U1", "slack", "C2"),  # even the requester, from another channel
        Actor("USTRANGER", "slack", None),  # nowhere in particular
    ):
        text = service.status_report(store, config, run.id, elsewhere)
        assert text == f"There is no run {run.id} here."
    # A run that does not exist answers exactly the same: nothing to tell them apart by.
    missing = service.status_report(store, config, 987654321, Actor("USTRANGER", "slack", "C2"))
    assert missing == "There is no run 987654321 here."
    for approver in (Actor("UBOSS", "slack", "C9"), Actor("UX", "slack", "C9", ("SOPS",))):
        assert "the secret plan" in service.status_report(store, config, run.id, approver)
    # Recent runs list only this channel's.
    assert "the secret plan" not in service.status_report(
        store, config, None, Actor("UX", "slack", "C2")
    )
    # Abort from elsewhere learns nothing either; the requester may still abort their own.
    with pytest.raises(service.UserError, match=f"There is no run {run.id} here."):
        service.abort_run(store, config, run.id, Actor("USTRANGER", "slack", "C2"))
    refused = [e for e in store.audit_entries(run.id) if e.outcome == "refused"]
    assert [(e.actor, e.channel, e.detail) for e in refused] == [
        ("USTRANGER", "C2", "not visible here")
    ]
    assert service.abort_run(store, config, run.id, Actor("U1", "slack", "C2")).endswith("aborted.")
