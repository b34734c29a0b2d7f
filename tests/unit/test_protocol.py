"""The team protocol's edge cases: replies as hosted models really phrase them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.llm.gateway import ToolCall
from orchestrator.protocol import (
    ProtocolError,
    find_object,
    read_decision,
    read_route,
    router_tools,
    supervisor_format,
    supervisor_tools,
)
from orchestrator.teams import load_teams

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_teams(ROOT / "teams" / "default.yaml")
RESEARCH = CONFIG.teams["research"]
REPORTS = {"researcher": "Findings: …", "writer": "## Answer\n\n```python\nprint(1)\n```\n"}


def calls(*items: tuple[str, dict | str]) -> list[ToolCall]:
    return [
        ToolCall(f"call_{i}", name, args if isinstance(args, str) else json.dumps(args))
        for i, (name, args) in enumerate(items)
    ]


def test_a_python_fence_inside_the_answer_does_not_hide_the_json() -> None:
    answer = "Done:\n```python\nprint({'a': 1})\n```\nAll good."
    text = (
        "Here is my decision.\n```json\n"
        + json.dumps({"action": "finish", "answer": answer}, indent=2)
        + "\n```\nThanks!"
    )
    decision = read_decision(text, [], RESEARCH, REPORTS)
    assert decision.action == "finish"
    assert decision.answer == answer.strip()


def test_prose_before_and_after_json_and_an_unrelated_object_first() -> None:
    text = (
        'Considering {"note": "not this"} first.\nSure! {"action": "assign", "assignments": '
        '[{"worker": "Researcher", "instruction": "dig"}]} Let me know.'
    )
    decision = read_decision(text, [], RESEARCH, REPORTS)
    assert [(a.worker, a.instruction) for a in decision.assignments] == [("researcher", "dig")]


def test_accepted_false_as_a_string_is_not_true() -> None:
    decision = read_decision(
        "",
        calls(
            ("review", {"worker": "writer", "accepted": "false", "feedback": "redo"}),
            ("assign", {"worker": "writer", "instruction": "again"}),
        ),
        RESEARCH,
        REPORTS,
    )
    assert decision.reviews[0].accepted is False


def test_accepted_must_be_a_boolean() -> None:
    with pytest.raises(ProtocolError, match="true or false"):
        read_decision(
            "",
            calls(
                ("review", {"worker": "writer", "accepted": "maybe"}),
                ("assign", {"worker": "writer", "instruction": "x"}),
            ),
            RESEARCH,
            REPORTS,
        )


def test_parallel_assign_calls_are_a_fan_out_in_order() -> None:
    decision = read_decision(
        "I'll split this up.",
        calls(
            ("assign", {"worker": "writer", "instruction": "b"}),
            ("assign", {"worker": "researcher", "instruction": "a"}),
        ),
        RESEARCH,
        REPORTS,
    )
    assert [a.worker for a in decision.assignments] == ["writer", "researcher"]


def test_finish_with_report_takes_the_report_verbatim() -> None:
    decision = read_decision(
        "", calls(("finish_with_report", {"worker": "WRITER"})), RESEARCH, REPORTS
    )
    assert decision.answer == REPORTS["writer"].strip()
    assert decision.report_of == "writer"


def test_finish_with_report_of_a_worker_without_one_is_refused() -> None:
    with pytest.raises(ProtocolError, match="no report"):
        read_decision("", calls(("finish_with_report", {"worker": "writer"})), RESEARCH, {})


@pytest.mark.parametrize(
    "arguments",
    [
        '```json\n{"worker": "writer", "instruction": "draft it"}\n```',
        '{"worker": "writer", "instruction": "draft it"}\nI have assigned the writer.',
        ' {"worker": "writer", "instruction": "draft it"}}',
    ],
    ids=["fenced", "prose-after", "stray-brace"],
)
def test_arguments_a_model_fenced_or_followed_with_prose_are_read(arguments: str) -> None:
    decision = read_decision("", calls(("assign", arguments)), RESEARCH, REPORTS)
    assert [(a.worker, a.instruction) for a in decision.assignments] == [("writer", "draft it")]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ((("assign", '{"worker": "writer", "instr'),), "not valid JSON"),
        ((("assign", "writer, draft it"),), "not valid JSON"),
        ((("assign", {"worker": "ghost", "instruction": "x"}),), "unknown worker"),
        ((("delegate", {"worker": "writer"}),), "unknown tool"),
        ((("review", {"worker": "writer", "accepted": True}),), "assign work, or finish"),
        (
            (
                ("assign", {"worker": "writer", "instruction": "x"}),
                ("finish", {"answer": "y"}),
            ),
            "not both",
        ),
        ((("finish", {"answer": "  "}),), "must not be empty"),
    ],
)
def test_broken_tool_calls_are_protocol_errors(items, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError, match=message):
        read_decision("", calls(*items), RESEARCH, REPORTS)


def test_a_reply_without_any_decision_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="no decision"):
        read_decision("I think the team should look into it.", [], RESEARCH, REPORTS)


@pytest.mark.parametrize(
    "text",
    ['{"team": "Research"}', "Research", "**research**.", "I'd send this to the research team."],
)
def test_router_names_match_case_insensitively(text: str) -> None:
    assert read_route(text, [], CONFIG) == "research"


def test_router_tool_call_and_unknown_team() -> None:
    assert read_route("", calls(("route", {"team": "Engineering"})), CONFIG) == "engineering"
    with pytest.raises(ProtocolError, match="unknown team"):
        read_route("", calls(("route", {"team": "marketing"})), CONFIG)
    with pytest.raises(ProtocolError):
        read_route("Either research or engineering would do.", [], CONFIG)


def test_find_object_gives_up_on_brace_heavy_code() -> None:
    assert find_object("{" * 10_000, ("action",)) is None


def test_tool_schemas_name_the_workers_and_teams() -> None:
    names = {t["function"]["name"] for t in supervisor_tools(RESEARCH)}
    assert names == {"assign", "review", "finish", "finish_with_report"}
    assign = next(t for t in supervisor_tools(RESEARCH) if t["function"]["name"] == "assign")
    assert assign["function"]["parameters"]["properties"]["worker"]["enum"] == [
        "researcher",
        "writer",
    ]
    route = router_tools(CONFIG)[0]["function"]["parameters"]["properties"]["team"]
    assert set(route["enum"]) == set(CONFIG.teams)
    assert supervisor_format(RESEARCH)["type"] == "json_schema"


def test_tool_calls_written_out_as_text_are_read_as_calls() -> None:
    text = (
        "I'll use the tools for this.\n```json\n"
        '{"name": "review", "parameters": {"worker": "writer", "accepted": true}}\n'
        '{"name": "finish_with_report", "parameters": {"worker": "writer"}}\n```'
    )
    decision = read_decision(text, [], RESEARCH, REPORTS)
    assert decision.action == "finish" and decision.report_of == "writer"
    assert read_route('{"name": "route", "arguments": {"team": "research"}}', [], CONFIG) == (
        "research"
    )
