"""The other sub-commands, autocomplete, ephemeral errors, long answers and rate limits."""

from __future__ import annotations

import asyncio

import pytest

from bot.discord.port import DiscordPort
from orchestrator.notices import Kind, Notice
from orchestrator.ports import RateLimited, Target
from orchestrator.store.models import RunStatus
from orchestrator.telemetry.metrics import CHAT_RATE_LIMITED
from tasks import runtime
from tests.discord_adapter.fake_discord import CHANNEL, member, slash

ALICE = "1100000000000000101"
BOB = "1100000000000000102"


def _ask(h, sub, options=None, who=None, **kw):
    payload = h.dispatch(slash(who or member(ALICE, "alice", []), sub, options, **kw))
    return payload, h.callback(payload)


def _answer(h, payload):
    return h.fake.wait_for(lambda: h.followups(payload), what="the follow-up")[0]["content"]


def test_read_only_commands_answer_ephemerally(make_harness):
    h = make_harness()
    for sub, expected in (
        ("help", "/agent run request:"),
        ("teams", "research"),
        ("budget", "Spend against limits"),
        ("status", "No runs yet"),
    ):
        payload, callback = _ask(h, sub)
        assert callback["data"]["flags"] & 64, sub
        text = callback["data"].get("content") or _answer(h, payload)
        assert expected in text, (sub, text)  # fmt: skip


def test_autocomplete_offers_teams_from_the_teams_file(make_harness):
    h = make_harness()
    _, callback = _ask(h, "run", {"request": "x", "team": "res"}, kind=4, focused="team")
    assert callback["type"] == 8
    assert [c["value"] for c in callback["data"]["choices"]] == ["research"]


def test_unknown_team_and_missing_permissions_say_what_to_do(make_harness):
    h = make_harness()
    _, callback = _ask(h, "run", {"request": "hello", "team": "nope"})
    assert callback["type"] == 4 and callback["data"]["flags"] & 64
    assert "Unknown team 'nope'" in callback["data"]["content"]

    payload = slash(member(ALICE, "alice", []), "run", {"request": "hello"})
    payload["app_permissions"] = str((1 << 10) | (1 << 11))  # no thread permissions
    callback = h.callback(h.dispatch(payload))
    assert "Create Public Threads" in callback["data"]["content"]
    assert callback["data"]["flags"] & 64
    assert h.store.recent_runs(limit=5) == []


def test_abort_command_requester_only_and_status(make_harness):
    h = make_harness(limits={"max_steps": 3, "stuck_window": 50})
    payload, _ = _ask(h, "run", {"request": "[loop] count sheep", "team": "research"})
    run_id = int(_answer(h, payload).split("#", 1)[1].split()[0])
    h.wait_run(run_id, lambda r: r.status == RunStatus.AWAITING_APPROVAL)

    payload, _ = _ask(h, "status", {"run_id": run_id})
    assert "pending escalation" in _answer(h, payload)

    payload, _ = _ask(h, "abort", {"run_id": run_id}, who=member(BOB, "bob", []))
    assert "Only the requester or an approver" in _answer(h, payload)
    assert h.run(run_id).status == RunStatus.AWAITING_APPROVAL

    payload, _ = _ask(h, "abort", {"run_id": run_id})
    assert _answer(h, payload) == f"Run {run_id} aborted."
    run = h.wait_run(run_id, lambda r: r.status == RunStatus.ABORTED)
    h.fake.wait_for(
        lambda: any(m["content"].startswith("⏹️") for m in h.fake.in_channel(run.thread)),
        what="partial results after /agent abort",
    )


def test_a_5000_character_answer_arrives_intact(make_harness):
    h = make_harness()
    # The scripted team's answer quotes the request: ~5,200 characters make ~5,500.
    request = " ".join(f"point{i}" for i in range(900))[:5200]
    payload, _ = _ask(h, "run", {"request": request, "team": "research"})
    run_id = int(_answer(h, payload).split("#", 1)[1].split()[0])
    run = h.wait_run(run_id, lambda r: r.status == RunStatus.FINISHED)
    assert run.answer is not None and 5000 <= len(run.answer) <= 7500  # split, not a file

    def delivered():
        msgs = [m for m in h.fake.in_channel(run.thread) if m["content"]]
        start = next((i for i, m in enumerate(msgs) if m["content"].startswith("✅")), None)
        if start is None:
            return None
        text = "".join(m["content"] for m in msgs[start:] if not m["content"].startswith("⏳"))
        files = [a["text"] for m in msgs[start:] for a in m["attachments"]]
        return files[0] if files else text if run.answer in text else None

    text = h.fake.wait_for(delivered, what="the whole answer")
    assert text == f"✅ **Finished**\n{run.answer}"
    assert all(len(m["content"]) <= 2000 for m in h.fake.messages.values())


def _port() -> DiscordPort:
    port = runtime.port_for("discord")
    assert isinstance(port, DiscordPort)
    return port


def test_port_waits_out_short_429s_and_defers_long_ones(make_harness):
    h = make_harness()
    port = _port()
    target = Target("discord", CHANNEL, None)
    ref = port.post(target, Notice(Kind.PROGRESS, 1, "working"))
    before = CHAT_RATE_LIMITED.labels(platform="discord")._value.get()

    h.fake.throttle[("PATCH", f"/channels/{CHANNEL}/messages/")] = [0.2]
    port.update(target, ref, Notice(Kind.PROGRESS, 1, "still working"))  # discord.py retries
    assert h.fake.messages[ref]["content"].startswith("⏳ still working")
    assert CHAT_RATE_LIMITED.labels(platform="discord")._value.get() == before + 1

    h.fake.throttle[("PATCH", f"/channels/{CHANNEL}/messages/")] = [120.0]
    with pytest.raises(RateLimited) as caught:
        port.update(target, ref, Notice(Kind.PROGRESS, 1, "later"))
    assert caught.value.retry_after >= 100  # the outbox defers the row for that long


def test_port_attaches_very_long_text_as_a_file(make_harness):
    h = make_harness()
    body = "\n".join(f"line {i}: " + "x" * 90 for i in range(200))  # ~20,000 characters
    ref = _port().post(Target("discord", CHANNEL, CHANNEL), Notice(Kind.RESULT, 7, "Done", body))
    message = h.fake.messages[ref]
    assert len(message["content"]) <= 2000 and "attached" in message["content"]
    assert message["attachments"][0]["text"].endswith(body)


def test_port_refuses_from_its_own_loop(make_harness):
    make_harness()
    port = _port()

    async def inside() -> None:
        port.post(Target("discord", CHANNEL), Notice(Kind.PROGRESS, 1, "x"))

    with pytest.raises(RuntimeError, match="off its event loop"):
        asyncio.run_coroutine_threadsafe(inside(), port.loop).result(5)
