"""The offline model: a deterministic scripted provider registered with litellm.

It is a real litellm custom provider (`scripted/<tier>`), so the whole litellm call path,
usage and cost accounting run in the demo and in tests. It reads the prompts the engine
builds, as a real model would, and answers by a fixed policy through the same protocol as a
hosted model: decisions as tool calls when tools are offered, JSON text when they are not.
Directives in the request make it misbehave on purpose for the guard tests: `[loop]` never
finishes, `[repeat]` repeats the same output, `[reject]` rejects every review, `[fanout]`
assigns every worker at once, `[code]` makes a worker with the run_code tool call it.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import litellm
from litellm import CustomLLM
from litellm.types.utils import ModelResponse, Usage

PROVIDER = "scripted"
# Nominal prices so cost accounting has real figures to show ($ per token).
PRICES = {
    "cheap": (0.5e-6, 1.5e-6),
    "premium": (3e-6, 15e-6),
}

_WORKER_LINE = re.compile(r"^- ([a-z][a-z0-9_-]*): ", re.MULTILINE)
_COUNT = re.compile(r"([a-z][a-z0-9_-]*) x(\d+)")
_TEAM_LINE = re.compile(r"^- ([a-z][a-z0-9_-]*): (.*)$", re.MULTILINE)


def _text(messages: list[dict[str, Any]], role: str) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == role)


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^{re.escape(heading)}:\n(.*?)(?:\n\n|\Z)", text, re.MULTILINE | re.DOTALL)
    return match.group(1) if match else ""


def _request(user: str) -> str:
    match = re.search(r"^Request: (.*)$", user, re.MULTILINE)
    return match.group(1).strip() if match else user.strip()[:200]


def _stems(text: str) -> set[str]:
    return {word[:6] for word in re.findall(r"[a-z]{3,}", text.lower())}


Call = tuple[str, dict[str, Any]]  # a decision as (tool name, arguments)


def route(user: str) -> list[Call]:
    """Pick the team whose description shares most word stems with the request."""
    request_words = _stems(_request(user))
    best, best_score = "", -1
    for name, description in _TEAM_LINE.findall(_section(user, "Teams")):
        words = _stems(f"{name} {description}")
        score = len(words & request_words)
        if score > best_score:
            best, best_score = name, score
    return [("route", {"team": best})]


def _assign(worker: str, instruction: str) -> Call:
    return ("assign", {"worker": worker, "instruction": instruction})


def supervise(user: str) -> list[Call]:
    """Assign each worker in turn, run one review round, then finish with the report that
    addressed the review."""
    request = _request(user)
    workers = _WORKER_LINE.findall(_section(user, "Workers"))
    counts = {name: int(n) for name, n in _COUNT.findall(_section(user, "Work so far"))}
    done = sum(counts.values())
    first = workers[0]
    if "[reject]" in request and done:
        return [
            ("review", {"worker": first, "accepted": False, "feedback": "Still wrong; try again."}),
            _assign(first, f"Fix: {request}"),
        ]
    if "[loop]" in request:
        # With [repeat] the supervisor varies its words (no ping-pong) while the worker
        # keeps repeating itself (stuck).
        attempt = f"Work on (attempt {done + 1}): {request}" if "[repeat]" in request else None
        return [_assign(first, attempt or f"Work on: {request}")]
    if "[fanout]" in request and done == 0:
        return [_assign(w, f"{w}: your part of: {request}") for w in workers]
    if done < len(workers):
        worker = workers[done]
        instruction = f"Draft: {request}" if done == 0 else f"Review the work so far on: {request}"
        return [_assign(worker, instruction)]
    if done == len(workers):
        return [
            (
                "review",
                {"worker": first, "accepted": False, "feedback": "Address the review comments."},
            ),
            _assign(first, f"Address the review comments on: {request}"),
        ]
    return [
        ("review", {"worker": first, "accepted": True}),
        ("finish_with_report", {"worker": first}),
    ]


def as_json(calls: list[Call]) -> str:
    """The same decision for a model asked to answer in JSON instead of tool calls."""
    names = [name for name, _ in calls]
    if names == ["route"]:
        return json.dumps(calls[0][1])
    data: dict[str, Any] = {}
    for name, args in calls:
        if name == "review":
            data["review"] = args
        elif name == "assign":
            data["action"] = "assign"
            data.setdefault("assignments", []).append(args)
        else:
            data["action"] = name
            data.update(args)
    return json.dumps(data)


def work(
    system: str, user: str, messages: list[dict[str, Any]], tools: list[Any] | None
) -> dict[str, Any]:
    """A worker's turn: a report, or a run_code tool call when asked for code."""
    name = re.search(r"You are the ([a-z0-9_-]+) of", system)
    worker = name.group(1) if name else "worker"
    instruction = re.search(r"^Instruction: (.*)$", user, re.MULTILINE)
    task = instruction.group(1).strip() if instruction else user[:200]
    tool_results = [m for m in messages if m.get("role") == "tool"]
    if tools and "[code]" in user and not tool_results:
        code = "print(sum(range(10)) * 6 // 45 * 7)"
        return {
            "tool_call": {
                "name": "run_code",
                "arguments": json.dumps({"language": "python", "code": code}),
            }
        }
    if tool_results:
        result = json.loads(tool_results[-1]["content"])
        return {
            "content": f"{worker}: ran the code; stdout was {result.get('stdout', '').strip()!r}."
        }
    if "[repeat]" in user:
        return {"content": f"{worker}: I keep producing the same thing."}
    if task.startswith("Address the review comments on: "):
        request = task.split(": ", 1)[1]
        return {
            "content": f"Answer to: {request}\n\n"
            f"The {worker} drafted this, a colleague reviewed it, and the review comments are "
            "addressed.\n\n"
            "_This answer comes from Switchboard's offline scripted model, which shows the "
            "team at work without keys. Point the tiers in your teams file at a real model "
            "for real answers._"
        }
    persona = " (debugging carefully)" if "debugger" in system.lower() else ""
    return {"content": f"{worker}{persona}: done. {task}"}


def summarise(user: str) -> str:
    lines = [line.strip() for line in user.splitlines() if line.strip()]
    return "Summary: " + " / ".join(line[:80] for line in lines[-6:])


class ScriptedLLM(CustomLLM):
    """litellm custom provider; `model` is `scripted/<tier>`."""

    def _respond(
        self, model: str, messages: list[dict[str, Any]], optional_params: dict[str, Any]
    ) -> ModelResponse:
        system, user = _text(messages, "system"), _text(messages, "user")
        tools = optional_params.get("tools")
        offered = {t.get("function", {}).get("name") for t in tools or []}
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "stop"
        decision = None
        if "(switchboard/router)" in system:
            decision = route(user)
        elif "(switchboard/supervisor)" in system:
            decision = supervise(user)
        if decision is not None and decision[0][0] in offered:
            message["tool_calls"] = [
                {
                    "id": f"call_{index}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for index, (name, args) in enumerate(decision)
            ]
            finish = "tool_calls"
        elif decision is not None:
            message["content"] = as_json(decision)
        elif "(switchboard/summary)" in system:
            message["content"] = summarise(user)
        else:
            turn = work(system, user, messages, tools)
            if "tool_call" in turn:
                call = turn["tool_call"]
                message["tool_calls"] = [
                    {
                        "id": f"call_{abs(hash(call['arguments'])) % 10**8}",
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                ]
                finish = "tool_calls"
            else:
                message["content"] = turn["content"]
        if "[spend]" in user:
            prompt_tokens = 200_000
        else:
            prompt_tokens = litellm.token_counter(model="gpt-3.5-turbo", messages=messages)
        completion_tokens = max(
            1, len(str(message.get("content") or message.get("tool_calls"))) // 4
        )
        return ModelResponse(
            model=model,
            created=int(time.time()),
            choices=[{"index": 0, "message": message, "finish_reason": finish}],
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:  # type: ignore[override]
        return self._respond(model, messages, kwargs.get("optional_params") or {})

    async def acompletion(
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> ModelResponse:  # type: ignore[override]
        return self._respond(model, messages, kwargs.get("optional_params") or {})


_registered = False


def register() -> None:
    """Register the provider and its prices with litellm once per process."""
    global _registered
    if _registered:
        return
    litellm.custom_provider_map = [
        *[p for p in litellm.custom_provider_map if p.get("provider") != PROVIDER],
        {"provider": PROVIDER, "custom_handler": ScriptedLLM()},
    ]
    litellm.register_model(
        {
            f"{PROVIDER}/{tier}": {
                "input_cost_per_token": prices[0],
                "output_cost_per_token": prices[1],
                "litellm_provider": PROVIDER,
                "mode": "chat",
                "max_tokens": 8192,
                "max_input_tokens": 128_000,
                "supports_function_calling": True,
            }
            for tier, prices in PRICES.items()
        }
    )
    _registered = True
