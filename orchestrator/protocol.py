"""The team protocol: how the router and the supervisor state decisions, and how replies are read.

Decisions are native tool calls — `route(team)`, `assign(worker, instruction)` (several in one
reply run in parallel), `review(worker, accepted, feedback)`, `finish(answer)` and
`finish_with_report(worker)` — the way LangGraph's handoff tools and the OpenAI Agents SDK's
handoffs work. A model that cannot call tools answers with JSON under a response-format schema,
or last in plain text. Hosted models wrap JSON in fences and prose, so the text reader takes
the first JSON object that has the expected keys wherever it sits, and checks types strictly.
A reply that breaks the protocol is a ProtocolError the engine re-asks with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.llm.gateway import Mode, ToolCall
from orchestrator.teams import Team, TeamsConfig

MAX_OBJECT_STARTS = 400  # JSON objects tried per reply; replies with more braces are code


class ProtocolError(ValueError):
    """The model's reply does not follow the protocol; the message tells the model why."""


@dataclass(frozen=True)
class Assignment:
    worker: str
    instruction: str


@dataclass(frozen=True)
class Review:
    worker: str
    accepted: bool
    feedback: str = ""


@dataclass(frozen=True)
class Decision:
    action: Literal["assign", "finish"]
    assignments: tuple[Assignment, ...] = ()
    answer: str = ""
    reviews: tuple[Review, ...] = ()
    report_of: str | None = None  # finish_with_report: whose report is the answer


# --- what the model is offered ---------------------------------------------------------


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]):  # type: ignore[no-untyped-def]
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


def router_tools(config: TeamsConfig) -> list[dict[str, Any]]:
    teams = sorted(config.teams)
    return [
        _function(
            "route",
            "Send the request to the team best suited to it.",
            {"team": {"type": "string", "enum": teams, "description": "the team's name"}},
            ["team"],
        )
    ]


def supervisor_tools(team: Team) -> list[dict[str, Any]]:
    workers = [w.name for w in team.workers]
    worker = {"type": "string", "enum": workers, "description": "the worker's name"}
    return [
        _function(
            "assign",
            "Give a worker a sub-task. Call it several times in one reply to have several "
            "workers work in parallel.",
            {"worker": worker, "instruction": {"type": "string"}},
            ["worker", "instruction"],
        ),
        _function(
            "review",
            "Accept or reject a worker's latest report, with feedback when rejecting.",
            {
                "worker": worker,
                "accepted": {"type": "boolean"},
                "feedback": {"type": "string"},
            },
            ["worker", "accepted"],
        ),
        _function(
            "finish",
            "End the run with the final answer for the requester, in Markdown.",
            {"answer": {"type": "string"}},
            ["answer"],
        ),
        _function(
            "finish_with_report",
            "End the run; the answer is this worker's latest report, verbatim. Use it when "
            "that report already answers the request, instead of re-typing it.",
            {"worker": worker},
            ["worker"],
        ),
    ]


def _schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def router_format(config: TeamsConfig) -> dict[str, Any]:
    return _schema_format(
        "route",
        {
            "type": "object",
            "properties": {"team": {"type": "string", "enum": sorted(config.teams)}},
            "required": ["team"],
            "additionalProperties": False,
        },
    )


def supervisor_format(team: Team) -> dict[str, Any]:
    workers = [w.name for w in team.workers]
    review = {
        "type": "object",
        "properties": {
            "worker": {"type": "string", "enum": workers},
            "accepted": {"type": "boolean"},
            "feedback": {"type": "string"},
        },
        "required": ["worker", "accepted"],
    }
    return _schema_format(
        "supervisor_decision",
        {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["assign", "finish", "finish_with_report"]},
                "assignments": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "worker": {"type": "string", "enum": workers},
                            "instruction": {"type": "string"},
                        },
                        "required": ["worker", "instruction"],
                    },
                },
                "review": review,
                "answer": {"type": "string"},
                "worker": {"type": "string", "enum": workers},
            },
            "required": ["action"],
        },
    )


SUPERVISOR_TOOLS = ("assign", "review", "finish", "finish_with_report")
ROUTER_TEXT = 'Reply with JSON only: {"team": "<name>"}.'
SUPERVISOR_TEXT = (
    "Reply with one JSON object, one of:\n"
    '{"action": "assign", "assignments": [{"worker": "<name>", "instruction": "..."}], '
    '"review": {"worker": "<name>", "accepted": true, "feedback": "..."}}\n'
    '{"action": "finish", "answer": "<the final answer, Markdown>", "review": {...}}\n'
    '{"action": "finish_with_report", "worker": "<name>"}  (the answer is that worker\'s '
    "latest report, verbatim)\n"
    "Several assignments run in parallel; review is optional."
)


# --- reading replies ---------------------------------------------------------------------


def find_object(text: str, keys: Iterable[str]) -> dict[str, Any] | None:
    """The first JSON object in `text` having any of `keys`, ignoring fences and prose."""
    wanted = set(keys)
    decoder = json.JSONDecoder()
    tried = 0
    for match in re.finditer(r"\{", text):
        tried += 1
        if tried > MAX_OBJECT_STARTS:
            break
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and wanted & value.keys():
            return value
    return None


def text_tool_calls(text: str, tools: Iterable[str]) -> list[ToolCall]:
    """Tool calls a model wrote out as text instead of calling (Llama-style
    `{"name": "assign", "parameters": {...}}`, one or several, fenced or in prose)."""
    known = {name.lower() for name in tools}
    decoder = json.JSONDecoder()
    found: list[ToolCall] = []
    position, tried = 0, 0
    while tried < MAX_OBJECT_STARTS:
        start = text.find("{", position)
        if start < 0:
            break
        tried += 1
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        arguments = (
            value.get("arguments", value.get("parameters")) if isinstance(value, dict) else None
        )
        name = value.get("name") if isinstance(value, dict) else None
        if isinstance(name, str) and name.lower() in known and isinstance(arguments, dict):
            found.append(ToolCall(f"text_{len(found)}", name, json.dumps(arguments)))
            position = end
        else:
            position = start + 1
    return found


def _names(names: Iterable[str]) -> dict[str, str]:
    return {name.lower(): name for name in names}


def _pick(value: Any, known: Mapping[str, str], what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(f"{what} must be one of: {', '.join(known.values())}")
    name = known.get(value.strip().lower())
    if name is None:
        raise ProtocolError(
            f"unknown {what} {value.strip()[:60]!r}; choose one of: {', '.join(known.values())}"
        )
    return name


def _text(value: Any, what: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a string")
    if required and not value.strip():
        raise ProtocolError(f"{what} must not be empty")
    return value.strip()


def _bool(value: Any, what: str) -> bool:
    """JSON true/false; the strings "true" / "false" as what they say; nothing else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ProtocolError(f"{what} must be true or false, not {value!r}"[:120])


def _arguments(call: ToolCall) -> dict[str, Any]:
    """The call's arguments object; one a model fenced or followed with prose (some open
    models on OpenAI-compatible servers do) is read from its first `{`."""
    text = call.arguments or "{}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        start = text.find("{")
        try:
            value, _ = json.JSONDecoder().raw_decode(text, max(start, 0))
        except json.JSONDecodeError:
            raise ProtocolError(f"the arguments of {call.name} are not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"the arguments of {call.name} must be a JSON object")
    return value


def read_route(content: str, calls: Sequence[ToolCall], config: TeamsConfig) -> str:
    known = _names(config.teams)
    for call in calls:
        if call.name.lower() == "route":
            return _pick(_arguments(call).get("team"), known, "team")
    if calls:
        raise ProtocolError(f"unknown tool {calls[0].name!r}; call route(team)")
    written = text_tool_calls(content, ("route",))
    if written:
        return read_route("", written, config)
    data = find_object(content, ("team",))
    if data is not None:
        return _pick(data.get("team"), known, "team")
    # A bare name ("Research", "**research**."), or exactly one team named in prose.
    bare = re.sub(r"[^a-z0-9_-]", "", content.strip().lower())
    if bare in known:
        return known[bare]
    words = set(re.findall(r"[a-z0-9_-]+", content.lower()))
    named = [known[w] for w in words if w in known]
    if len(named) == 1:
        return named[0]
    raise ProtocolError("the reply names no team: call route(team)")


def read_decision(
    content: str, calls: Sequence[ToolCall], team: Team, reports: Mapping[str, str]
) -> Decision:
    """`reports`: each worker's latest report, for finish_with_report."""
    if calls:
        return _decision_from_calls(calls, team, reports)
    written = text_tool_calls(content, SUPERVISOR_TOOLS)
    if written:
        return _decision_from_calls(written, team, reports)
    data = find_object(content, ("action",))
    if data is None:
        raise ProtocolError(
            "the reply has no decision: call assign, review, finish or finish_with_report"
        )
    return _decision_from_json(data, team, reports)


def _decision_from_calls(
    calls: Sequence[ToolCall], team: Team, reports: Mapping[str, str]
) -> Decision:
    known = _names(w.name for w in team.workers)
    assignments: list[Assignment] = []
    reviews: list[Review] = []
    finishes: list[Decision] = []
    for call in calls:
        name = call.name.lower()
        args = _arguments(call)
        if name == "assign":
            assignments.append(_assignment(args, known))
        elif name == "review":
            reviews.append(_review(args, known))
        elif name == "finish":
            finishes.append(Decision("finish", answer=_text(args.get("answer"), "answer")))
        elif name == "finish_with_report":
            finishes.append(_with_report(args.get("worker"), known, reports))
        else:
            raise ProtocolError(
                f"unknown tool {call.name!r}; use assign, review, finish or finish_with_report"
            )
    return _combine(assignments, reviews, finishes)


def _decision_from_json(data: dict[str, Any], team: Team, reports: Mapping[str, str]) -> Decision:
    known = _names(w.name for w in team.workers)
    action = data.get("action")
    reviews = []
    raw_reviews = data.get("reviews") or ([data["review"]] if data.get("review") else [])
    if not isinstance(raw_reviews, list):
        raise ProtocolError("reviews must be a list")
    for raw in raw_reviews:
        if not isinstance(raw, dict):
            raise ProtocolError("a review must be an object with worker and accepted")
        reviews.append(_review(raw, known))
    if action == "finish":
        return _combine(
            [], reviews, [Decision("finish", answer=_text(data.get("answer"), "answer"))]
        )
    if action == "finish_with_report":
        return _combine([], reviews, [_with_report(data.get("worker"), known, reports)])
    if action != "assign":
        raise ProtocolError("action must be assign, finish or finish_with_report")
    raw_assignments = data.get("assignments")
    if not isinstance(raw_assignments, list):
        raise ProtocolError("assign needs a list of assignments")
    assignments = []
    for raw in raw_assignments:
        if not isinstance(raw, dict):
            raise ProtocolError("an assignment must be an object with worker and instruction")
        assignments.append(_assignment(raw, known))
    return _combine(assignments, reviews, [])


def _assignment(args: Mapping[str, Any], known: Mapping[str, str]) -> Assignment:
    return Assignment(
        _pick(args.get("worker"), known, "worker"), _text(args.get("instruction"), "instruction")
    )


def _review(args: Mapping[str, Any], known: Mapping[str, str]) -> Review:
    return Review(
        _pick(args.get("worker"), known, "worker"),
        _bool(args.get("accepted"), "accepted"),
        _text(args.get("feedback"), "feedback", required=False),
    )


def _with_report(value: Any, known: Mapping[str, str], reports: Mapping[str, str]) -> Decision:
    worker = _pick(value, known, "worker")
    report = reports.get(worker, "").strip()
    if not report:
        raise ProtocolError(f"{worker} has no report yet; assign it work or finish(answer)")
    return Decision("finish", answer=report, report_of=worker)


def _combine(
    assignments: list[Assignment], reviews: list[Review], finishes: list[Decision]
) -> Decision:
    if finishes and assignments:
        raise ProtocolError("a reply either assigns work or finishes, not both")
    if len(finishes) > 1:
        raise ProtocolError("finish only once")
    if finishes:
        done = finishes[0]
        return Decision(
            "finish", answer=done.answer, reviews=tuple(reviews), report_of=done.report_of
        )
    if not assignments:
        raise ProtocolError("say what happens next: assign work, or finish")
    return Decision("assign", tuple(assignments), reviews=tuple(reviews))


__all__ = [
    "Assignment",
    "Decision",
    "Mode",
    "ProtocolError",
    "Review",
    "find_object",
    "read_decision",
    "read_route",
    "router_format",
    "router_tools",
    "supervisor_format",
    "supervisor_tools",
]
