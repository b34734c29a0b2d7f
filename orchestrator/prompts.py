"""The prompts the engine sends. How decisions come back is orchestrator/protocol.py.

In tools mode the protocol lives in the tool definitions; in json and text modes the system
prompt also spells out the JSON to answer with.
"""

from __future__ import annotations

from typing import Any

from orchestrator.protocol import ROUTER_TEXT, SUPERVISOR_TEXT, Mode
from orchestrator.state import State
from orchestrator.teams import Team, TeamsConfig, Worker

Messages = list[dict[str, Any]]

DEBUGGER_PROMPT = (
    "You are in debugger mode. Your previous attempts were rejected. Work step by step, state "
    "the exact defect you are fixing, change only what is needed, and check your result before "
    "you answer. Do not repeat an earlier answer."
)


def router_messages(config: TeamsConfig, request: str, mode: Mode = "tools") -> Messages:
    teams = "\n".join(f"- {name}: {team.description}" for name, team in config.teams.items())
    how = "Call route with the team's name." if mode == "tools" else ROUTER_TEXT
    return [
        {
            "role": "system",
            "content": f"You route requests to the best team. (switchboard/router)\n{how}",
        },
        {"role": "user", "content": f"Request: {request}\n\nTeams:\n{teams}\n"},
    ]


def _work_so_far(state: State) -> str:
    counts = {worker: len(outputs) for worker, outputs in state.get("outputs", {}).items()}
    return ", ".join(f"{w} x{n}" for w, n in counts.items()) or "none yet"


def _recent(state: State, keep: int) -> str:
    messages = state.get("messages", [])[state.get("summarised_upto", 0) :][-keep:]
    return "\n".join(f"- [{m['role']}] {m['content']}" for m in messages)


PREVIOUS_CUT = 6000


def _previous(state: State) -> str:
    """The run this one follows up in the same thread: what was asked and answered."""
    previous = state.get("previous") or {}
    if not previous:
        return ""
    answer = str(previous.get("answer") or "(no answer)")
    if len(answer) > PREVIOUS_CUT:
        answer = answer[:PREVIOUS_CUT] + "…"
    parts = [
        "This request follows up an earlier run in the same thread.",
        f"Earlier request: {previous.get('request', '')}",
        f"Earlier answer:\n{answer}",
    ]
    if previous.get("summary"):
        parts.append(f"Summary of the earlier work:\n{previous['summary']}")
    return "\n".join(parts)


def supervisor_messages(team: Team, state: State, keep: int, mode: Mode = "tools") -> Messages:
    roster = "\n".join(f"- {w.name}: {w.role.strip().splitlines()[0]}" for w in team.workers)
    parts = [
        f"Request: {state['request']}",
        "",
        f"Workers:\n{roster}",
        "",
        f"Work so far:\n{_work_so_far(state)}",
    ]
    previous = _previous(state)
    if previous:
        parts += ["", previous]
    if state.get("summary"):
        parts += ["", f"Summary of earlier work:\n{state['summary']}"]
    recent = _recent(state, keep)
    if recent:
        parts += ["", f"Recent reports:\n{recent}"]
    human = state.get("human_input", [])
    if human:
        parts += ["", "Human input:\n" + "\n".join(f"- {h}" for h in human[-3:])]
    if mode == "tools":
        how = (
            "Decide by calling tools. assign gives a worker a sub-task (call it several times "
            "in one reply to run workers in parallel); review accepts or rejects a worker's "
            "latest report; finish ends the run with your answer in Markdown; "
            "finish_with_report ends it with a worker's latest report as the answer, verbatim, "
            "when that report already answers the request."
        )
    else:
        how = SUPERVISOR_TEXT
    system = (
        f"{team.supervisor.prompt.strip()}\n\n(switchboard/supervisor)\n{how}\n"
        "Review the latest report before assigning more. The requester sees only the final "
        "answer, so it must stand on its own."
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": "\n".join(parts) + "\n"},
    ]


def worker_messages(
    team: Team, worker: Worker, state: State, instruction: str, keep: int, persona: str | None
) -> Messages:
    team_line = team.description.strip().splitlines()[0]
    system = f"You are the {worker.name} of the {team_line} team.\n{worker.role.strip()}"
    if persona == "debugger":
        system += "\n\n" + DEBUGGER_PROMPT
    context = []
    previous = _previous(state)
    if previous:
        context.append(previous)
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
