"""A Discord harness: the real bot client and port, a local Discord, the embedded queue."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import discord.http
import pytest
from celery.worker import state as worker_state
from sqlalchemy import select, text, update

from bot.discord.app import SwitchboardBot, queue_services
from bot.discord.port import DiscordPort, port_from_settings
from orchestrator.settings import Settings
from orchestrator.store.models import Escalation, Run, RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import load_teams
from tasks import bridge, runtime
from tasks.inprocess import EmbeddedWorker
from tests.discord_adapter.fake_discord import GUILD, FakeDiscord, LoopThread

APPROVER_ROLE = "1100000000000000777"


def _distinct_run_ids(url: str) -> None:
    """Start this database's run ids somewhere no other test's are: a step task of an earlier
    test that the session's worker still holds (a retry scheduled for later, say) then finds
    no run of its id here instead of stepping this test's run 1."""
    store = Store(url)
    with store.session() as session:
        session.execute(
            text("SELECT setval(pg_get_serial_sequence('runs', 'id'), :start)"),
            {"start": random.randrange(1_000, 1_000_000_000)},
        )


def _settle(timeout: float = 30) -> None:
    """Let the session's worker finish what it is running for this test, and revoke the
    test's scheduled retries: run ids start at 1 in every test's database, so a step task
    left over would otherwise act on the next test's run (or on a dropped database)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for request in list(worker_state.reserved_requests):
            worker_state.revoked.add(request.id)
        if not worker_state.active_requests:
            return
        time.sleep(0.05)


@pytest.fixture(scope="session")
def embedded_worker() -> Iterator[EmbeddedWorker]:
    """One in-process Celery worker (memory transport) for the whole session."""
    worker = EmbeddedWorker(concurrency=8, periodic_every_s=3600)
    worker.start()
    yield worker
    worker.stop()


class Harness:
    """Drives the bot as Discord would: gateway events in, REST calls recorded."""

    def __init__(self, fake: FakeDiscord, store: Store, teams_file: Path) -> None:
        self.fake = fake
        self.store = store
        self.config = load_teams(teams_file)
        self.loop = LoopThread("bot-loop")
        self.bot: SwitchboardBot | None = None

    def start_bot(self) -> SwitchboardBot:
        """A fresh client, as after a process start: login runs setup_hook (items, sync)."""
        self.bot = SwitchboardBot(queue_services(self.store, self.config), guild_id=int(GUILD))
        self.loop.run(self.bot.login("test-token"))
        return self.bot

    def restart_bot(self) -> SwitchboardBot:
        assert self.bot is not None
        self.loop.run(self.bot.close())
        return self.start_bot()

    def dispatch(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Feed an INTERACTION_CREATE through discord.py's own parser, like the gateway."""
        assert self.bot is not None
        if payload["type"] == 5:  # MODAL_SUBMIT
            self._wait_for_modal(payload["data"]["custom_id"])
        self.loop.call(self.bot._connection.parse_interaction_create, payload)
        return payload

    def _wait_for_modal(self, custom_id: str, timeout: float = 10) -> None:
        """discord.py files a modal it sent (to route its submission) only once Discord has
        answered the callback that carried it; our Discord records that callback as it
        arrives. A person cannot submit a modal in between; a test can: wait for the bot."""
        assert self.bot is not None
        store = self.bot._connection._view_store

        async def filed() -> bool:  # read on the bot's loop, which owns the store
            return custom_id in store._modals

        deadline = time.monotonic() + timeout
        while not self.loop.run(filed()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the bot never filed its modal {custom_id}")
            time.sleep(0.01)

    def run(self, run_id: int) -> Run:
        run = self.store.get_run(run_id)
        assert run is not None
        return run

    def wait_run(self, run_id: int, predicate: Callable[[Run], bool], timeout: float = 30) -> Run:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if predicate(run):
                return run
            time.sleep(0.05)
        run = self.run(run_id)
        with self.store.sessions() as session:
            history = [
                (e.id, e.guard, e.status, e.decided_by)
                for e in session.scalars(select(Escalation).where(Escalation.run_id == run_id))
            ]
        audit = [(a.action, a.outcome, a.actor) for a in self.store.audit_entries(run_id)]
        raise AssertionError(
            f"run {run_id} stuck at {run.status} (version {run.version}, error {run.error!r}); "
            f"escalations {history}; audit {audit}"
        )

    def followups(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """Follow-up messages sent with this interaction's token."""
        return [c.body for c in self.fake.find("POST", "/webhooks/") if payload["token"] in c.path]

    def callback(self, payload: dict[str, Any]) -> dict[str, Any]:
        calls = self.fake.wait_for(
            lambda: self.fake.find("POST", f"/interactions/{payload['id']}/"),
            what=f"a response to interaction {payload['id']}",
        )
        return calls[0].body

    def close(self) -> None:
        if self.bot is not None:
            self.loop.run(self.bot.close())
        self.loop.stop()


@pytest.fixture
def make_harness(
    pg_url: str,
    make_teams: Callable[..., Path],
    embedded_worker: EmbeddedWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Harness]]:
    """Build a harness over a fresh database with a teams file of the test's choosing."""
    made: list[tuple[Harness, DiscordPort]] = []
    fake = FakeDiscord()
    monkeypatch.setattr(discord.http.Route, "BASE", f"{fake.url}/api/v10")
    monkeypatch.setenv("DISCORD_TOKEN", "test-token")

    def make(**teams: Any) -> Harness:
        teams_file = make_teams(
            approvers={"users": [], "slack_usergroups": [], "discord_roles": [APPROVER_ROLE]},
            **teams,
        )
        _distinct_run_ids(pg_url)
        settings = Settings(database_url=pg_url, teams_file=teams_file)
        runtime.install(runtime.build(settings))
        port = port_from_settings()  # the worker's port, on the tasks.bridge loop
        assert port is not None
        runtime.register_port("discord", port)
        harness = Harness(fake, Store(pg_url), teams_file)
        harness.start_bot()
        made.append((harness, port))
        return harness

    yield make
    for harness, port in made:
        harness.close()
        bridge.run(port.http.close())
        # The session's embedded worker outlives this database: end the test's runs so
        # their queued steps find nothing to do instead of retrying against a dropped one
        # while the next test's tasks wait for the worker's threads.
        with harness.store.session() as session:
            session.execute(
                update(Run)
                .where(Run.status.notin_(list(RunStatus.TERMINAL)))
                .values(status=RunStatus.ABORTED)
            )
    _settle()
    runtime._ports.pop("discord", None)
    fake.close()
