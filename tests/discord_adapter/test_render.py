"""What Discord members read: user text untouched, names without pings, the living view."""

from __future__ import annotations

from bot.discord.render import mention, render, thread_name, view_embed
from orchestrator import progress
from orchestrator.notices import Kind, Notice
from orchestrator.store.models import RunStatus
from tests.discord_adapter.fake_discord import CHANNEL, member, slash

ALICE = "1100000000000000101"
ROLE, CHANNEL_ID, MESSAGE = "1100000000000000777", "1100000000000000888", "1100000000000000999"
MARKUP = (
    f"ping <@&{ROLE}> in <#{CHANNEL_ID}> about order 123456789012345678 "
    f"<:party:1100000000000000666> <a:spin:1100000000000000665> <t:1700000000:R> "
    f"https://discord.com/channels/1100000000000000001/{CHANNEL_ID}/{MESSAGE} @everyone"
)


def test_user_markup_is_left_exactly_as_typed() -> None:
    assert mention(MARKUP) == MARKUP
    assert mention(MARKUP, (ALICE,)) == MARKUP


def test_only_ids_the_core_wrote_become_names() -> None:
    assert mention(f"Approved by {ALICE} at noon") == f"Approved by <@{ALICE}> at noon"
    assert mention(f"Run #4 requested by {ALICE}") == f"Run #4 requested by <@{ALICE}>"
    assert mention(f"order {ALICE} shipped") == f"order {ALICE} shipped"
    assert mention(f"paid for {ALICE}") == f"paid for {ALICE}"
    assert mention(f"{ALICE} and 1100000000000000102", (ALICE,)) == (
        f"<@{ALICE}> and 1100000000000000102"
    )
    assert mention(f"already <@{ALICE}>", (ALICE,)) == f"already <@{ALICE}>"


def test_thread_titles_say_markup_in_words() -> None:
    notice = Notice(Kind.OPENED, 7, f"Run for {ALICE}: {MARKUP}", request=MARKUP)
    name = thread_name(notice)
    assert name.startswith("Run 7: ping @role in #channel about order 123456789012345678 :party:")
    assert "<" not in name and len(name) <= 100


def test_opening_and_decision_name_people_and_times() -> None:
    request = "word " * 200
    (opening,) = render(Notice(Kind.OPENED, 3, "", requester=ALICE, request=request)).chunks
    assert opening.startswith(f"**Run 3** for <@{ALICE}>: word word")
    assert "…" in opening and len(opening) < 400
    decision = render(
        Notice(
            Kind.DECISION,
            3,
            f"Approved by {ALICE} at 2025-01-01 10:00 UTC",
            escalation_id=9,
            outcome="approved",
            actor=ALICE,
            at=1_735_725_600.0,
        )
    )
    assert decision.clear_buttons
    assert f"Approved by <@{ALICE}> at <t:1735725600:f>" in decision.chunks[0]


def test_the_view_is_one_embed_with_the_outcome() -> None:
    view = progress.View(
        run_id=5,
        team="research",
        state=progress.FINISHED,
        items=(
            progress.Item("1", "Router chose team research", progress.DONE, 120, 0.0012, 0.4),
            progress.Item(
                "2", "researcher reported", progress.DONE, 300, 0.003, 2.5, detail="found it"
            ),
        ),
        tokens=420,
        cost=0.0042,
        seconds=12.0,
    )
    spec = render(Notice(Kind.PROGRESS, 5, "Finished", view=view.to_json()))
    assert spec.embed == view_embed(view)
    assert spec.embed["title"] == "✅ Run 5 · Finished · team research"
    assert (
        "✅ researcher reported · *300 tokens · $0.0030 · 2.5s*\n> found it"
        in (spec.embed["description"])
    )
    assert spec.embed["footer"]["text"] == "2 steps · 420 tokens · $0.0042 · 12s"


def test_markup_in_a_request_reaches_discord_unchanged_and_pings_nobody(make_harness):
    h = make_harness()
    payload = h.dispatch(
        slash(member(ALICE, "alice", []), "run", {"request": MARKUP, "team": "research"})
    )
    follow = h.fake.wait_for(lambda: h.followups(payload), what="the follow-up")[0]
    run_id = int(follow["content"].split("#", 1)[1].split()[0])
    run = h.wait_run(run_id, lambda r: r.status == RunStatus.FINISHED)
    h.fake.wait_for(
        lambda: any(m["content"].startswith("✅") for m in h.fake.in_channel(run.thread)),
        what="the answer",
    )
    opening = next(m for m in h.fake.in_channel(CHANNEL) if m["id"] == run.thread)
    assert MARKUP in opening["content"]
    answer = next(m for m in h.fake.in_channel(run.thread) if m["content"].startswith("✅"))
    assert MARKUP in answer["content"]
    assert h.fake.threads[run.thread]["name"].startswith("Run ")
    assert "<" not in h.fake.threads[run.thread]["name"]
    sent = [
        c.body
        for c in h.fake.calls
        if c.method in ("POST", "PATCH")
        and "/messages" in c.path
        and not c.path.endswith("/threads")
        and isinstance(c.body, dict)
    ]
    missing = [(b.get("content") or "")[:50] for b in sent if "allowed_mentions" not in b]
    assert sent and not missing, missing
    assert all(body["allowed_mentions"]["parse"] == [] for body in sent)
    assert not any(body["allowed_mentions"].get("users") for body in sent)
