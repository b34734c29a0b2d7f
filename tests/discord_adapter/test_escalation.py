"""Escalations: persistent buttons, refusals recorded, Approve resumes, Abort ends — also
for a click that arrives at a freshly started bot on a message posted before the restart."""

from __future__ import annotations

import copy
from pathlib import Path

from orchestrator.store.models import EscalationStatus, RunStatus
from tests.discord_adapter.conftest import APPROVER_ROLE
from tests.discord_adapter.fake_discord import click, member, modal_submit, slash
from tests.support.hosted_model import HostedModel, Styles
from tests.support.mcp_servers import stdio_server

ALICE = "1100000000000000101"
BOB = "1100000000000000102"
CAROL = "1100000000000000103"
LOOPING = {"limits": {"max_steps": 3, "stuck_window": 50}}


def _buttons(message):
    return {c["custom_id"]: c for row in message["components"] for c in row["components"]}


def _open_modal(h, who, run, button: str):  # type: ignore[no-untyped-def]
    """Press an escalation button that asks for text; the modal the bot answers with."""
    message = _escalation_message(h, run, int(button.rsplit(":", 1)[1]))
    pressed = h.dispatch(
        click(who, message, _buttons(message)[button]["custom_id"], h.fake.threads[run.thread])
    )
    answer = h.callback(pressed)
    assert answer["type"] == 9  # MODAL
    return answer["data"]


def _text_inputs(modal):
    """The modal's text inputs, in action rows or (newer layout) labels."""
    return [
        c
        for row in modal["components"]
        for c in (row.get("components") or [row.get("component")])
        if c and c["type"] == 4
    ]


def _escalation_message(h, run, escalation_id):
    def found():
        for message in h.fake.in_channel(run.thread):
            if f"switchboard:approve:{escalation_id}" in _buttons(message):
                return message
        return None

    return h.fake.wait_for(found, what=f"escalation {escalation_id} with buttons")


def _start_looping_run(h):
    payload = h.dispatch(
        slash(member(ALICE, "alice", []), "run", {"request": "[loop] tidy the wiki",
                                                   "team": "research"})
    )  # fmt: skip
    follow = h.fake.wait_for(lambda: h.followups(payload), what="the follow-up")[0]
    run_id = int(follow["content"].split("#", 1)[1].split()[0])
    run = h.wait_run(run_id, lambda r: r.status == RunStatus.AWAITING_APPROVAL)
    (escalation,) = h.store.pending_escalations(run_id)
    return run, escalation


def test_refusal_then_approve_after_restart_then_abort(make_harness):
    h = make_harness(**LOOPING)
    run, escalation = _start_looping_run(h)
    message = _escalation_message(h, run, escalation.id)
    stale = copy.deepcopy(message)  # as a second approver's client still shows it
    buttons = _buttons(message)
    approve = buttons[f"switchboard:approve:{escalation.id}"]
    abort = buttons[f"switchboard:abort:{escalation.id}"]
    assert approve["style"] == 3 and abort["style"] == 4  # green, red
    assert message["flags"] == 0

    # A member without the approver role is refused, ephemerally, and the refusal is audited.
    bob_click = h.dispatch(
        click(member(BOB, "bob", []), message, approve["custom_id"], h.fake.threads[run.thread])
    )
    assert h.callback(bob_click)["data"]["flags"] & 64
    refusal = h.fake.wait_for(lambda: h.followups(bob_click), what="the refusal")[0]
    assert "not allowed to approve" in refusal["content"] and refusal["flags"] & 64
    assert h.run(run.id).status == RunStatus.AWAITING_APPROVAL
    audit = h.store.audit_entries(run.id)
    assert any(a.actor == BOB and a.outcome == "refused" for a in audit)

    # The bot restarts; its new client has never seen this message, only the dynamic item.
    h.restart_bot()
    carol = member(CAROL, "carol", [APPROVER_ROLE])
    carol_click = h.dispatch(
        click(carol, message, approve["custom_id"], h.fake.threads[run.thread])
    )
    reply = h.fake.wait_for(lambda: h.followups(carol_click), what="the approval reply")[0]
    assert "Approved by" in reply["content"] and f"<@{CAROL}>" in reply["content"]
    assert h.store.escalation(escalation.id).status == EscalationStatus.APPROVED

    # The escalation message is edited: who decided, and no buttons.
    h.fake.wait_for(lambda: message.get("edits"), what="the decision edit")
    edited = h.fake.messages[message["id"]]
    assert edited["components"] == []
    assert "Approved by" in edited["content"] and f"<@{CAROL}>" in edited["content"]

    # The run resumed and, still looping, asks again; this time Carol aborts it.
    run2 = h.wait_run(
        run.id,
        lambda r: (
            r.status == RunStatus.AWAITING_APPROVAL and bool(h.store.pending_escalations(r.id))
        ),
    )
    (second,) = h.store.pending_escalations(run2.id)
    assert second.id != escalation.id
    message2 = _escalation_message(h, run2, second.id)
    abort_click = h.dispatch(
        click(carol, message2, f"switchboard:abort:{second.id}", h.fake.threads[run.thread])
    )
    reply = h.fake.wait_for(lambda: h.followups(abort_click), what="the abort reply")[0]
    assert "aborted" in reply["content"]
    assert h.run(run.id).status == RunStatus.ABORTED
    h.fake.wait_for(
        lambda: any(m["content"].startswith("⏹️") for m in h.fake.in_channel(run.thread)),
        what="the partial results in the thread",
    )
    h.fake.wait_for(lambda: message2.get("edits"), what="the abort decision edit")
    assert h.fake.messages[message2["id"]]["components"] == []

    # A click from a client that still showed the buttons is answered, not applied twice.
    late = h.dispatch(click(carol, stale, approve["custom_id"], h.fake.threads[run.thread]))
    text = h.fake.wait_for(lambda: h.followups(late), what="the late reply")[0]["content"]
    assert text.startswith("Already approved")


def test_approve_with_a_note_opens_a_modal_and_the_note_reaches_the_run(make_harness):
    h = make_harness(**LOOPING)
    run, escalation = _start_looping_run(h)
    carol = member(CAROL, "carol", [APPROVER_ROLE])
    modal = _open_modal(h, carol, run, f"switchboard:note:{escalation.id}")
    inputs = _text_inputs(modal)
    assert inputs and modal["title"]
    values = {inputs[0]["custom_id"]: "tidy only the index page"}
    submitted = h.dispatch(modal_submit(carol, modal, values, h.fake.threads[run.thread]))
    reply = h.fake.wait_for(lambda: h.followups(submitted), what="the decision reply")[0]
    assert "Approved by" in reply["content"]
    decided = h.store.escalation(escalation.id)
    assert (
        decided.status == EscalationStatus.APPROVED and decided.note == "tidy only the index page"
    )
    assert any(
        a.action == "human_input" and a.detail == "tidy only the index page"
        for a in h.store.audit_entries(run.id)
    )


def test_reject_opens_a_modal_and_the_reason_reaches_the_model(make_harness, tmp_path, monkeypatch):
    """A tool call waiting in a Discord thread: Reject asks for a reason in a modal; the call
    never runs and the worker's model reads who rejected it and why."""
    notes = tmp_path / "notes.txt"
    styles = Styles(
        tool_plan=(("append_note", {"text": "restart web-1"}),),
        parallel=0.0,
        report_tokens=40,
        finish_with_report=1.0,
    )
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with HostedModel(api_key="sk-test", styles=styles) as model:

        def edit(data):
            tier = {"model": "openai/gpt-test", "api_base": model.url, "params": {}}
            data["tiers"] = {"cheap": dict(tier), "premium": dict(tier)}
            data["mcp_servers"] = {"notes": stdio_server(notes)}
            data["teams"]["research"]["workers"][0]["tools"] = ["notes.append_note"]

        h = make_harness(edit=edit)
        alice = member(ALICE, "alice", [])
        payload = h.dispatch(
            slash(alice, "run", {"request": "note the restart of web-1", "team": "research"})
        )
        follow = h.fake.wait_for(lambda: h.followups(payload), what="the follow-up")[0]
        run_id = int(follow["content"].split("#", 1)[1].split()[0])
        run = h.wait_run(run_id, lambda r: r.status == RunStatus.AWAITING_APPROVAL)
        (escalation,) = h.store.pending_escalations(run_id)
        carol = member(CAROL, "carol", [APPROVER_ROLE])
        modal = _open_modal(h, carol, run, f"switchboard:reject:{escalation.id}")
        assert modal["title"] == "Reject the call"
        inputs = _text_inputs(modal)
        values = {inputs[0]["custom_id"]: "not during the freeze"}
        h.dispatch(modal_submit(carol, modal, values, h.fake.threads[run.thread]))
        finished = h.wait_run(run_id, lambda r: r.status == RunStatus.FINISHED, timeout=60)
        decided = h.store.escalation(escalation.id)
        assert decided.status == EscalationStatus.REJECTED
        assert decided.note == "not during the freeze"
        assert not Path(f"{notes}.calls").exists()  # the tool never ran
        told = [
            m["content"]
            for body in model.completions
            for m in body["messages"]
            if m["role"] == "tool"
        ]
        assert any("not during the freeze" in t for t in told), told
        assert finished.status == RunStatus.FINISHED
