"""`/agent run` end to end: defer, enqueue, a thread with progress edits and the answer."""

from __future__ import annotations

from bot.discord.render import split_text
from orchestrator.store.models import RunStatus
from tests.discord_adapter.fake_discord import CHANNEL, member, slash

ALICE = "1100000000000000101"


def test_run_defers_enqueues_and_answers_in_a_thread(make_harness):
    h = make_harness()
    sync = h.fake.find("PUT", "/guilds/")
    assert sync and sync[0].body[0]["name"] == "agent"
    subs = {o["name"] for o in sync[0].body[0]["options"]}
    assert subs == {"run", "status", "abort", "retry", "budget", "teams", "help"}

    payload = h.dispatch(
        slash(member(ALICE, "alice", []), "run", {"request": "summarise the design doc",
                                                   "team": "research"})
    )  # fmt: skip
    callback = h.callback(payload)
    assert callback["type"] == 5 and callback["data"]["flags"] & 64  # deferred, ephemeral
    follow = h.fake.wait_for(lambda: h.followups(payload), what="the follow-up")[0]
    run_id = int(follow["content"].split("#", 1)[1].split()[0])
    assert follow["flags"] & 64

    run = h.wait_run(run_id, lambda r: r.status == RunStatus.FINISHED)
    opening = h.fake.wait_for(
        lambda: [m for m in h.fake.in_channel(CHANNEL) if "✅" in m["content"]],
        what="the opening message to show the outcome",
    )[0]
    assert run.thread == opening["id"] and opening["id"] in h.fake.threads
    assert f"<@{ALICE}>" in opening["content"]  # requester shown as a mention
    assert h.fake.threads[opening["id"]]["name"].startswith(f"Run {run_id}: ")

    thread = h.fake.wait_for(
        lambda: (
            (msgs := h.fake.in_channel(run.thread))
            and any(m["content"].startswith("✅") for m in msgs)
            and msgs
        ),
        what="the answer in the thread",
    )
    views = [m for m in thread if m.get("embeds")]
    assert len(views) == 1, "the progress view is one message"
    view = views[0]
    # Finalised before the answer went out, and never edited after it.
    final = h.fake.wait_for(
        lambda: view.get("edits") and view["embeds"][0]["title"].startswith("✅") and view,
        what="the progress view to show the outcome",
    )
    embed = final["embeds"][0]
    assert f"Run {run_id}" in embed["title"] and "Finished" in embed["title"]
    assert "Supervisor" in embed["description"] or "Assigned" in embed["description"]
    assert "tokens" in embed["footer"]["text"] and "$" in embed["footer"]["text"]
    answer_post = next(
        i
        for i, c in enumerate(h.fake.calls)
        if c.method == "POST"
        and c.path == f"/channels/{run.thread}/messages"
        and (c.body or {}).get("content", "").startswith("✅")
    )
    later_edits = [
        c for c in h.fake.calls[answer_post:] if c.method == "PATCH" and view["id"] in c.path
    ]
    assert later_edits == [], "nothing edits the view after the answer"
    answer = "".join(m["content"] for m in thread if m["content"].startswith("✅"))
    assert run.answer and run.answer in answer
    # Worker reports live in the view; the thread has the view and the answer only.
    assert len(thread) == 2, [m["content"][:60] for m in thread]
    for message in h.fake.messages.values():
        assert len(message["content"]) <= 2000


def test_split_text_keeps_text_intact():
    text = ("word " * 700 + "\n") * 3
    chunks = split_text(text)
    assert "".join(chunks) == text and all(len(c) <= 2000 for c in chunks)


def test_run_started_inside_a_thread_stays_in_that_thread(make_harness):
    h = make_harness()
    thread_id = "1100000000000000555"
    payload = slash(member(ALICE, "alice", []), "run", {"request": "hello", "team": "research"})
    payload["channel_id"] = thread_id
    payload["channel"] = {
        "id": thread_id, "type": 11, "guild_id": payload["guild_id"], "parent_id": CHANNEL,
        "name": "design chat", "owner_id": ALICE, "message_count": 3, "member_count": 2,
        "rate_limit_per_user": 0, "flags": 0,
        "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False,
                            "archive_timestamp": "2026-01-01T00:00:00+00:00"},
    }  # fmt: skip
    h.dispatch(payload)
    follow = h.fake.wait_for(lambda: h.followups(payload), what="the follow-up")[0]
    run_id = int(follow["content"].split("#", 1)[1].split()[0])
    run = h.wait_run(run_id, lambda r: r.status == RunStatus.FINISHED)
    assert (run.channel, run.thread) == (CHANNEL, thread_id)
    h.fake.wait_for(
        lambda: any(m["content"].startswith(f"**Run {run_id}**") and "✅ Finished" in m["content"]
                    for m in h.fake.in_channel(thread_id)),
        what="the opening message, in the thread, marked finished",
    )  # fmt: skip
    assert not h.fake.threads, "no new thread"
    assert all("webhook_id" in m for m in h.fake.in_channel(CHANNEL)), "only replies to alice"
