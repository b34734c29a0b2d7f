"""The prompts the engine sends and the replies it accepts.

Supervisor replies are JSON so the decision is machine-checked; a reply that does not
parse, or names an unknown worker, is a protocol error the engine re-asks once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from orchestrator.state import State
from orchestrator.teams import Team, TeamsConfig, Worker

Messages = list[dict[str, Any]]

DEBUGGER_PROMPT = (
    "You are in debugger mode. Your previous attempts were rejected. Work step by step, state "
    "the exact defect you are fixing, change only what is needed, and check your result before "
    "you answer. Do not repeat an earlier answer."
)


class ProtocolError(ValueError):
    """The model's reply does not follow the protocol."""


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
    action: str  # assign | finish
    assignments: tuple[Assignment, ...] = ()
    answer: str = ""
    review: Review | None = None


def router_messages(config: TeamsConfig, request: str) -> Messages:
    teams = "\n".join(f"- {name}: {team.description}" for name, team in config.teams.items())
    return [
        {
            "role": "system",
            "content": "You route requests to the best team. (switchboard/router)\n"
            'Reply with JSON only: {"team": "<name>"}.',
        },
        {"role": "user", "content": f"Request: {request}\n\nTeams:\n{teams}\n"},
    ]


def parse_route(text: str, config: TeamsConfig) -> str:
    data = _json(text)
    team = data.get("team") if isinstance(data, dict) else None
    if team not in config.teams:
        raise ProtocolError(f"router chose unknown team {team!r}")
    return str(team)


def _work_so_far(state: State) -> str:
    counts = {worker: len(outputs) for worker, outputs in state.get("outputs", {}).items()}
    return ", ".join(f"{w} x{n}" for w, n in counts.items()) or "none yet"


def _recent(state: State, keep: int) -> str:
    messages = state.get("messages", [])[state.get("summarised_upto", 0) :][-keep:]
    return "\n".join(f"- [{m['role']}] {m['content']}" for m in messages)


def supervisor_messages(team: Team, state: State, keep: int) -> Messages:
    roster = "\n".join(f"- {w.name}: {w.role.strip().splitlines()[0]}" for w in team.workers)
    parts = [
        f"Request: {state['request']}",
        "",
        f"Workers:\n{roster}",
        "",
        f"Work so far:\n{_work_so_far(state)}",
    ]
    if state.get("summary"):
        parts += ["", f"Summary of earlier work:\n{state['summary']}"]
    recent = _recent(state, keep)
    if recent:
        parts += ["", f"Recent reports:\n{recent}"]
    human = state.get("human_input", [])
    if human:
        parts += ["", "Human input:\n" + "\n".join(f"- {h}" for h in human[-3:])]
    system = (
        f"{team.supervisor.prompt.strip()}\n\n(switchboard/supervisor)\n"
        "Reply with JSON only, one of:\n"
        '{"action": "assign", "assignments": [{"worker": "<name>", "instruction": "..."}], '
        '"review": {"worker": "<name>", "accepted": true|false, "feedback": "..."}}\n'
        '{"action": "finish", "answer": "...", "review": {...}}\n'
        "Several assignments run in parallel. Review the latest report before assigning more."
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": "\n".join(parts) + "\n"},
    ]


def parse_decision(text: str, team: Team) -> Decision:
    data = _json(text)
    if not isinstance(data, dict) or data.get("action") not in ("assign", "finish"):
        raise ProtocolError("supervisor reply needs action 'assign' or 'finish'")
    review = None
    raw_review = data.get("review")
    if isinstance(raw_review, dict) and raw_review.get("worker"):
        review = Review(
            str(raw_review["worker"]),
            bool(raw_review.get("accepted", True)),
            str(raw_review.get("feedback", "")),
        )
    if data["action"] == "finish":
        answer = str(data.get("answer") or "").strip()
        if not answer:
            raise ProtocolError("finish needs a non-empty answer")
        return Decision("finish", answer=answer, review=review)
    names = {w.name for w in team.workers}
    assignments = []
    for item in data.get("assignments") or []:
        if not isinstance(item, dict) or item.get("worker") not in names:
            raise ProtocolError(f"assignment names unknown worker {item!r}")
        assignments.append(
            Assignment(str(item["worker"]), str(item.get("instruction") or "").strip())
        )
    if not assignments:
        raise ProtocolError("assign needs at least one assignment")
    return Decision("assign", tuple(assignments), review=review)


def worker_messages(
    team: Team, worker: Worker, state: State, instruction: str, keep: int, persona: str | None
) -> Messages:
    team_line = team.description.strip().splitlines()[0]
    system = f"You are the {worker.name} of the {team_line} team.\n{worker.role.strip()}"
    if persona == "debugger":
        system += "\n\n" + DEBUGGER_PROMPT
    context = []
    if state.get("summary"):
        context.append(f"Summary of earlier work:\n{state['summary']}")
    recent = _recent(state, keep)
    if recent:
        context.append(f"Recent reports:\n{recent}")
    user = f"Request: {state['request']}\nInstruction: {instruction}\n"
    if context:
        user += "\n" + "\n\n".join(context) + "\n"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def summary_messages(previous: str, transcript: list[dict[str, Any]]) -> Messages:
    lines = "\n".join(f"[{m['role']}] {m['content']}" for m in transcript)
    return [
        {
            "role": "system",
            "content": "Summarise the work so far in a few sentences, keeping facts, "
            "decisions and open problems. (switchboard/summary)",
        },
        {
            "role": "user",
            "content": f"Previous summary: {previous or '(none)'}\n\nNew work:\n{lines}\n",
        },
    ]


def _json(text: str) -> Any:
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end < start:
        raise ProtocolError("reply is not JSON")
    try:
        return json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"reply is not valid JSON: {exc.msg}") from None
