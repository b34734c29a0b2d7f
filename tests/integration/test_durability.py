"""Crash safety on real Postgres, Redis and Celery worker processes (issue 3 acceptance)."""

from __future__ import annotations

import contextlib
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import redis as redis_lib

from orchestrator import service
from orchestrator import state as st
from orchestrator.outbox import OutboxSender
from orchestrator.store.models import OutboxItem, OutboxStatus, RunStatus
from tests.support.openai_server import OpenAIServer
from tests.support.recording_port import RecordingPort
from tests.support.services import free_port, port_open, start_private_redis
from tests.support.stack import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def model_server(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAIServer(delay_s=0.3) as server:
        yield server


@pytest.fixture
def http_teams(make_teams, model_server):  # type: ignore[no-untyped-def]
    tier = {
        "model": "openai/gpt-test",
        "api_base": model_server.url,
        "params": {"temperature": 0.7},
    }
    return make_teams(tiers={"cheap": tier, "premium": tier}, limits={"stuck_window": 50})


FAST_RECOVERY = {
    "OPENAI_API_KEY": "sk-test",
    "SWITCHBOARD_STEP_LEASE": "3",
    "SWITCHBOARD_STALLED_AFTER": "3",
    "SWITCHBOARD_MODEL_RETRIES": "3",
}


def assert_exactly_once(stack, run_ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    """Contiguous versions, one ledger row per call slot, one post per outbox row."""
    store = stack.store
    for run_id in run_ids:
        run = store.get_run(run_id)
        steps = store.steps(run_id)
        assert [s.version for s in steps] == list(range(1, run.version + 1))
        calls = store.llm_calls(run_id)
        keys = Counter((c.step, c.call_index) for c in calls)
        assert all(n == 1 for n in keys.values())
        assert {c.step for c in calls} == {s.version for s in steps}
    port = RecordingPort()
    OutboxSender(store, port, "test", progress_interval_s=0).drain()
    with store.sessions() as session:
        rows = {r.id: r for r in session.query(OutboxItem).filter(OutboxItem.run_id.in_(run_ids))}
    assert all(r.status in (OutboxStatus.SENT, OutboxStatus.COALESCED) for r in rows.values())
    posted = Counter(
        (c.notice.run_id, c.notice.kind, c.notice.title, c.notice.body)
        for c in port.calls
        if c.method == "post"
    )
    assert all(n == 1 for n in posted.values()), [k for k, n in posted.items() if n > 1]
    sent = [r for r in rows.values() if r.status == OutboxStatus.SENT]
    assert len(port.calls) >= len(sent)


def test_kill_9_the_worker_at_random_points(stack, http_teams, model_server) -> None:  # type: ignore[no-untyped-def]
    s = stack(http_teams, **FAST_RECOVERY)
    s.beat()
    worker = s.worker(concurrency=32)
    rng = random.Random(7)
    runs: list[int] = []
    kills = 0
    while kills < 10 or len(runs) < 20:
        for _ in range(2):
            if len(runs) < 20:
                runs.append(s.start(f"summarise part {len(runs)} of the design").id)
        time.sleep(rng.uniform(0.3, 1.5))
        worker.kill()
        kills += 1
        worker.start()
    for run_id in runs:
        run = s.wait(run_id, timeout=120)
        assert run.status in (RunStatus.FINISHED, RunStatus.AWAITING_APPROVAL), run.error
    assert kills >= 10
    assert_exactly_once(s, runs)
    ledger = sum(len(s.store.llm_calls(r)) for r in runs)
    assert len(model_server.completions) >= ledger  # calls in flight at a kill were re-made


def test_the_same_step_delivered_twice_commits_once(stack, http_teams, model_server) -> None:  # type: ignore[no-untyped-def]
    from tasks.steps import advance

    s = stack(http_teams, **FAST_RECOVERY)
    s.worker("w1")
    s.worker("w2")
    run = s.create("summarise the design")
    advance.apply_async((run.id, 0))
    advance.apply_async((run.id, 0))
    done = s.wait(run.id, statuses=RunStatus.TERMINAL)
    assert done.status == RunStatus.FINISHED
    first_step_calls = [c for c in s.store.llm_calls(run.id) if c.step == 1]
    assert len(first_step_calls) == 1
    assert_exactly_once(s, [run.id])
    # A late duplicate of an old step changes nothing.
    version = done.version
    advance.apply_async((run.id, 0))
    time.sleep(1.0)
    assert s.store.get_run(run.id).version == version


def test_redis_restarted_in_the_middle_of_a_run(
    stack, http_teams, model_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    args = start_private_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        s = stack(http_teams, broker_url=url, **FAST_RECOVERY)
        # Like compose's `restart: unless-stopped`: kombu's Redis transport can end the worker
        # with an AttributeError while closing a channel that has unacked messages.
        s.beat().supervise()
        s.worker().supervise()
        run = s.start("summarise the design")
        wait_for(lambda: s.store.get_run(run.id).version >= 2, 30)
        redis_lib.Redis(port=port).shutdown(nosave=True)
        wait_for(lambda: not port_open("127.0.0.1", port), 10)
        time.sleep(2.0)
        subprocess.run(args, check=True)
        wait_for(lambda: port_open("127.0.0.1", port), 10)
        done = s.wait(run.id, timeout=120, statuses=RunStatus.TERMINAL)
        assert done.status == RunStatus.FINISHED, done.error
        assert_exactly_once(s, [run.id])
    finally:
        with contextlib.suppress(Exception):
            redis_lib.Redis(port=port).shutdown(nosave=True)


def test_fan_out_merges_the_same_whatever_order_workers_finish(
    stack, make_teams, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rng = random.Random(11)
    with OpenAIServer(delay_fn=lambda body: rng.uniform(0.0, 0.4)) as server:
        tier = {"model": "openai/gpt-test", "api_base": server.url}
        s = stack(make_teams(tiers={"cheap": tier, "premium": tier}), OPENAI_API_KEY="sk-test")
        s.worker()
        runs = [s.start("[fanout] compare the two designs").id for _ in range(5)]
        merged = set()
        for run_id in runs:
            assert s.wait(run_id).status == RunStatus.FINISHED
            [fanout] = [step for step in s.store.steps(run_id) if step.node == "fanout"]
            state = s.store.load_checkpoint(run_id, fanout.version)
            assert [m["role"] for m in state["messages"][-2:]] == ["researcher", "writer"]
            merged.add(st.dumps(state))
        assert len(merged) == 1


def test_429_then_500_then_success_is_one_paid_call(stack, http_teams, model_server) -> None:  # type: ignore[no-untyped-def]
    s = stack(http_teams, **FAST_RECOVERY)
    worker = s.worker()
    model_server.fail_next(429, retry_after=1)
    model_server.fail_next(500)
    run = s.start("summarise the design")
    done = s.wait(run.id, statuses=RunStatus.TERMINAL)
    assert done.status == RunStatus.FINISHED
    calls = s.store.llm_calls(run.id)
    assert len([c for c in calls if c.step == 1]) == 1
    assert len(model_server.completions) == len(calls) + 2
    assert "retrying in 1.00s" in worker.log()  # Retry-After honoured


def test_a_provider_failing_for_good_pauses_the_run_with_retry_and_abort(
    stack, http_teams, model_server
) -> None:  # type: ignore[no-untyped-def]
    s = stack(http_teams, **{**FAST_RECOVERY, "SWITCHBOARD_MODEL_RETRIES": "1"})
    s.worker()
    for _ in range(2):
        model_server.fail_next(503)
    run = s.start("summarise the design")
    paused = s.wait(run.id)
    assert paused.status == RunStatus.AWAITING_APPROVAL
    [escalation] = s.store.pending_escalations(run.id)
    assert escalation.guard == "provider_failure"
    assert "The model provider failed" in escalation.reason
    port = RecordingPort()
    OutboxSender(s.store, port, "test", progress_interval_s=0).drain()
    asked = [c.notice for c in port.calls if c.notice.kind == "escalation"]
    assert asked and [a.label for a in asked[-1].actions] == ["Retry", "Abort"]
    # The provider is back: Retry resumes the run through the queue and it finishes.
    from tasks.steps import advance

    result = service.retry_run(s.store, s.config, run.id, service.Actor("U1", "test", "C1"))
    assert result.resume_version is not None
    advance.delay(run.id, result.resume_version)
    assert s.wait(run.id, statuses=RunStatus.TERMINAL).status == RunStatus.FINISHED
