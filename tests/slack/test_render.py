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
from orchestrator.notices import ABORT, APPROVE, Kind, Notice, escalation_actions


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
    approve, abort = actions
    assert (approve["action_id"], approve["value"], approve["style"]) == (APPROVE, "9", "primary")
    assert (abort["action_id"], abort["value"], abort["style"]) == (ABORT, "9", "danger")
    assert abort["confirm"]["text"]["text"].startswith("Abort this run")
    assert "confirm" not in approve


def test_decision_has_no_buttons_and_mentions_the_decider() -> None:
    notice = Notice(
        Kind.DECISION,
        5,
        "Approved by UAPPROVER1 at 2025-01-01 10:00 UTC",
        escalation_id=9,
        outcome="approved",
    )
    (message,) = render(notice)
    assert all(b["type"] != "actions" for b in message.blocks)
    assert "<@UAPPROVER1>" in message.blocks[0]["text"]["text"]


def test_user_text_cannot_ping_channels() -> None:
    notice = Notice(Kind.OPENED, 4, "Run for UREQ1: tell <!channel> about a<b", requester="UREQ1")
    (message,) = render(notice)
    text = message.blocks[0]["text"]["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert text.startswith("*Run 4 for <@UREQ1>")
