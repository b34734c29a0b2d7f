"""Block Kit rendering within Slack's limits (no services needed)."""

from __future__ import annotations

import random

from bot.slack.render import (
    MAX_BLOCKS,
    SECTION_LIMIT,
    TEXT_LIMIT,
    escape,
    render,
    split_text,
    unescape,
)
from orchestrator.notices import ABORT, APPROVE, APPROVE_NOTE, Kind, Notice, escalation_actions


def _body(n: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    alphabet = "abcdefghij klmnop&<>\n"
    return "".join(rng.choice(alphabet) for _ in range(n))


def test_split_text_reassembles_exactly_and_never_cuts_an_entity() -> None:
    for seed in range(20):
        text = escape(_body(25_000, seed))
        pieces = split_text(text)
        assert "".join(pieces) == text
        assert all(len(p) <= SECTION_LIMIT for p in pieces)
        for piece in pieces:
            assert escape(unescape(piece)) == piece  # no entity was cut in two


def _check_limits(messages: list) -> None:
    for message in messages:
        assert len(message.blocks) <= MAX_BLOCKS
        assert len(message.text) <= TEXT_LIMIT
        for block in message.blocks:
            if block["type"] == "section" and "text" in block:
                assert len(block["text"]["text"]) <= SECTION_LIMIT


def test_long_results_split_into_sections_and_messages_that_reassemble() -> None:
    for size in (10_000, 100_000):
        body = _body(size)
        notice = Notice(Kind.RESULT, 3, "Finished", body=body, outcome="finished")
        messages = render(notice)
        _check_limits(messages)
        sections = [b["text"]["text"] for m in messages for b in m.blocks if b["type"] == "section"]
        assert unescape("".join(sections[1:])) == body  # the first section is the heading
        assert (len(messages) == 1) == (size == 10_000)


def test_escalation_has_approve_and_abort_with_confirm() -> None:
    notice = Notice(
        Kind.ESCALATION,
        5,
        "Run 5 paused: max steps",
        body="3 steps taken\nApprove grants +2 steps",
        figures={"steps": "3"},
        actions=escalation_actions(9, "+2 steps"),
        escalation_id=9,
    )
    (message,) = render(notice)
    actions = next(b for b in message.blocks if b["type"] == "actions")["elements"]
    approve, note, abort = actions
    assert (approve["action_id"], approve["value"], approve["style"]) == (APPROVE, "9", "primary")
    assert (note["action_id"], note["value"], note.get("style")) == (APPROVE_NOTE, "9", None)
    assert (abort["action_id"], abort["value"], abort["style"]) == (ABORT, "9", "danger")
    assert abort["confirm"]["text"]["text"].startswith("Abort this run")
    assert "confirm" not in approve


def test_decision_names_the_decider_and_shows_local_time() -> None:
    notice = Notice(
        Kind.DECISION,
        5,
        "Approved by UAPPROVER1 at 2025-01-01 10:00 UTC",
        escalation_id=9,
        outcome="approved",
        actor="UAPPROVER1",
        at=1_735_725_600.0,
    )
    (message,) = render(notice)
    assert all(b["type"] != "actions" for b in message.blocks)
    heading = message.blocks[0]["text"]["text"]
    assert "Approved by <@UAPPROVER1> at <!date^1735725600^" in heading
    assert "|2025-01-01 10:00 UTC>" in heading
    # A notice without the structured facts (an older row) still names the decider.
    legacy = Notice(Kind.DECISION, 5, notice.title, escalation_id=9, outcome="approved")
    assert "<@UAPPROVER1>" in render(legacy)[0].blocks[0]["text"]["text"]


def test_opening_shows_a_glimpse_of_a_long_request_with_a_name() -> None:
    request = "compare the designs " * 200
    notice = Notice(Kind.OPENED, 4, "Run for UREQ1: x", requester="UREQ1", request=request)
    (message,) = render(notice, lambda user: "Riley")
    first = message.blocks[0]["text"]["text"]
    assert first.startswith("*Run 4* for Riley\ncompare the designs")
    assert first.endswith("…") and len(first) < 400 and first.count("*") == 2
    assert len(message.text) <= 300
    assert "UREQ1" not in message.text + str(message.blocks)


def test_escalation_title_is_in_words() -> None:
    notice = Notice(
        Kind.ESCALATION,
        5,
        "Run 5 paused: ping pong",
        body="The supervisor gave the same assignment 3 times in a row.\nApprove grants +2 steps",
        guard="ping_pong",
        escalation_id=9,
        actions=escalation_actions(9, "+2 steps"),
    )
    (message,) = render(notice)
    assert "Run 5 paused: the team has given the same assignment 3 times" in message.text
    assert "ping pong" not in str(message.blocks)


def test_aborted_result_names_who_aborted() -> None:
    notice = Notice(
        Kind.RESULT,
        5,
        "Aborted",
        body="Aborted by UREQUEST3.\n\nPartial results:\n- researcher: UREQUEST3 wrote this",
        outcome="aborted",
        actor="UREQUEST3",
    )
    messages = render(notice, lambda user: "Quinn")
    text = str([m.blocks for m in messages]) + "".join(m.text for m in messages)
    assert "Aborted by Quinn." in text
    assert "researcher: UREQUEST3 wrote this" in text  # only the core's own words are changed


BROADCASTS = (
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@UEVIL0001>",
    "<!subteam^S0EVILGRP>",
    "<!subteam^S0EVILGRP|@admins>",
    "<https://evil.example|click>",
)
NASTY = "hey " + " ".join(BROADCASTS) + " & more"


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def every_kind() -> list[Notice]:
    from orchestrator import progress

    view = progress.View(
        run_id=4,
        team="research",
        state=progress.ABORTED,
        items=(progress.Item("1", NASTY, progress.DONE, 10, 0.001, 1.0, detail=NASTY),),
        ended_reason=NASTY,
    )
    common = {"figures": {"team": NASTY, NASTY: NASTY}, "requester": "UREQ1"}
    notices = [
        Notice(Kind.OPENED, 4, f"Run for UREQ1: {NASTY}", request=NASTY, **common),
        Notice(Kind.OPENED, 4, f"Run for UREQ1: {NASTY}", outcome="finished", **common),
        Notice(Kind.PROGRESS, 4, NASTY, **common),
        Notice(Kind.PROGRESS, 4, NASTY, view=view.to_json(), **common),
        Notice(Kind.HIGHLIGHT, 4, NASTY, body=NASTY, **common),
        Notice(Kind.NOTE, 4, NASTY, body=NASTY, **common),
        Notice(Kind.RESULT, 4, NASTY, body=NASTY * 400, outcome="finished", **common),
        Notice(Kind.RESULT, 4, NASTY, body=NASTY, outcome="aborted", actor="UREQ1", **common),
        Notice(Kind.ERROR, 4, NASTY, body=NASTY, outcome="failed", **common),
        Notice(
            Kind.ESCALATION,
            4,
            NASTY,
            body=NASTY,
            guard="stuck",
            actions=escalation_actions(9, NASTY),
            escalation_id=9,
            **common,
        ),
        Notice(Kind.DECISION, 4, NASTY, body=NASTY, escalation_id=9, outcome="approved", **common),
        Notice(Kind.DECISION, 4, NASTY, body=NASTY, outcome="aborted", actor="UREQ1", at=1e9),
        Notice(Kind.REQUEST, 4, NASTY, body=NASTY * 50, **common),
    ]
    assert {n.kind for n in notices} == set(Kind)
    return notices


def test_no_field_of_any_notice_kind_carries_a_user_typed_broadcast() -> None:
    for notice in every_kind():
        for people in (None, lambda user: "Riley &lt;x&gt;"):
            messages = render(notice, people) if people else render(notice)
            for message in messages:
                for text in _strings(message.text) + _strings(message.blocks):
                    for token in BROADCASTS:
                        assert token not in text, (notice.kind, token, text[:200])
