"""Loop guards and budgets: pure functions of (state, ledger figures, policy) -> verdict.

They run before every step. The escalation ladder for a failing sub-task is: the
supervisor's own nudge (a rejected review with feedback) -> persona shift (lower
temperature, debugger prompt) -> a human. Similarity is cosine over bag-of-words token
counts: cheap, deterministic and good enough to spot a worker saying the same thing.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.state import State
from orchestrator.teams import Limits


class Action(StrEnum):
    CONTINUE = "continue"
    SHIFT_PERSONA = "shift_persona"
    ESCALATE = "escalate"
    ABORT = "abort"


@dataclass(frozen=True)
class Figures:
    """What the run has used so far, drawn from the ledger and the run row."""

    steps: int
    tokens: int
    dollars: float
    elapsed_s: float
    team_day_dollars: float = 0.0
    channel_day_dollars: float = 0.0


@dataclass(frozen=True)
class Extensions:
    """What approvals have granted on top of the team's limits."""

    steps: int = 0
    tokens: int = 0
    dollars: float = 0.0
    seconds: float = 0.0
    since_version: int = 0  # repetition guards only look at work after the last approval


@dataclass(frozen=True)
class Verdict:
    action: Action
    guard: str = ""
    reason: str = ""
    figures: dict[str, str] = field(default_factory=dict)
    grant: dict[str, float] = field(default_factory=dict)
    worker: str | None = None


CONTINUE = Verdict(Action.CONTINUE)
DEBUGGER = "debugger"


def similarity(a: str, b: str) -> float:
    """Cosine similarity of word-count vectors, 0..1."""
    va, vb = Counter(re.findall(r"\w+", a.lower())), Counter(re.findall(r"\w+", b.lower()))
    if not va or not vb:
        return 1.0 if va == vb else 0.0
    dot = sum(va[w] * vb[w] for w in va.keys() & vb.keys())
    return dot / (
        math.sqrt(sum(v * v for v in va.values())) * math.sqrt(sum(v * v for v in vb.values()))
    )


def _figures(f: Figures) -> dict[str, str]:
    return {
        "steps": str(f.steps),
        "tokens": str(f.tokens),
        "dollars": f"${f.dollars:.4f}",
        "elapsed": f"{f.elapsed_s:.0f}s",
    }


def step_limit(state: State, f: Figures, limits: Limits, ext: Extensions) -> Verdict:
    allowed = limits.max_steps + ext.steps
    if f.steps >= allowed:
        return Verdict(
            Action.ESCALATE,
            "max_steps",
            f"The run has used {f.steps} of its {allowed} steps.",
            _figures(f),
            {"steps": limits.grant_steps},
        )
    return CONTINUE


def duration_limit(state: State, f: Figures, limits: Limits, ext: Extensions) -> Verdict:
    allowed = limits.max_duration_s + ext.seconds
    if f.elapsed_s >= allowed:
        return Verdict(
            Action.ESCALATE,
            "max_duration",
            f"The run has been going for {f.elapsed_s:.0f}s, past its {allowed:.0f}s limit.",
            _figures(f),
            {"seconds": limits.max_duration_s / 2},
        )
    return CONTINUE


def _latest(items: list[dict[str, Any]], since: int, window: int) -> list[dict[str, Any]]:
    """The last `window` entries newer than version `since`, oldest first; fewer (maybe
    none) when there are not that many. Entries are appended in version order, so only the
    tail is read: a guard's cost does not grow with the run's length."""
    if len(items) < window:
        return []
    latest = []
    for item in reversed(items):
        if item.get("v", 0) <= since or len(latest) == window:
            break
        latest.append(item)
    latest.reverse()
    return latest


def stuck(state: State, f: Figures, limits: Limits, ext: Extensions) -> Verdict:
    window = limits.stuck_window
    for worker, outputs in sorted(state.get("outputs", {}).items()):
        recent = [o["text"] for o in _latest(outputs, ext.since_version, window)]
        if len(recent) < window:
            continue
        if all(similarity(recent[0], other) >= limits.similarity_threshold for other in recent[1:]):
            figures = {**_figures(f), "repeated": recent[-1][:300]}
            return Verdict(
                Action.ESCALATE,
                "stuck",
                f"Worker {worker} produced near-identical output {window} times in a row.",
                figures,
                {"steps": limits.grant_steps},
                worker,
            )
    return CONTINUE


def ping_pong(state: State, f: Figures, limits: Limits, ext: Extensions) -> Verdict:
    window = limits.stuck_window
    history = _latest(state.get("assigned", []), ext.since_version, window)
    if len(history) == window and all(a["key"] == history[0]["key"] for a in history):
        figures = {**_figures(f), "repeated": history[-1]["key"][:300]}
        return Verdict(
            Action.ESCALATE,
            "ping_pong",
            f"The supervisor gave the same assignment {window} times in a row.",
            figures,
            {"steps": limits.grant_steps},
        )
    return CONTINUE


def review_failures(state: State, f: Figures, limits: Limits, ext: Extensions) -> Verdict:
    threshold = limits.review_failures_before_shift
    personas = state.get("personas", {})
    for worker, failures in sorted(state.get("review_failures", {}).items()):
        if failures < threshold:
            continue
        if personas.get(worker) != DEBUGGER:
            return Verdict(
                Action.SHIFT_PERSONA,
                "persona_shift",
                f"{worker} failed review {failures} times; retrying as a debugger.",
                _figures(f),
                worker=worker,
            )
        if failures > threshold:
            return Verdict(
                Action.ESCALATE,
                "review_failures",
                f"{worker} failed review {failures} times, also after a persona shift.",
                _figures(f),
                {"steps": limits.grant_steps},
                worker,
            )
    return CONTINUE


def token_budget(state: State, f: Figures, limits: Limits, ext: Extensions) -> Verdict:
    if limits.max_tokens_per_run is None:
        return CONTINUE
    allowed = limits.max_tokens_per_run + ext.tokens
    if f.tokens >= allowed:
        return Verdict(
            Action.ESCALATE,
            "token_budget",
            f"The run used {f.tokens} of {allowed} tokens.",
            _figures(f),
            {"tokens": limits.grant_tokens},
        )
    return CONTINUE


def dollar_budget(state: State, f: Figures, limits: Limits, ext: Extensions) -> Verdict:
    checks = [
        ("run", limits.max_dollars_per_run, f.dollars),
        ("team today", limits.max_dollars_per_team_day, f.team_day_dollars),
        ("channel today", limits.max_dollars_per_channel_day, f.channel_day_dollars),
    ]
    for scope, limit, spent in checks:
        if limit is None:
            continue
        allowed = limit + ext.dollars
        if spent >= allowed:
            return Verdict(
                Action.ESCALATE,
                "dollar_budget",
                f"Spend for this {scope} is ${spent:.4f} of ${allowed:.2f}.",
                _figures(f),
                {"dollars": limits.grant_dollars},
            )
    return CONTINUE


GUARDS = (
    step_limit,
    duration_limit,
    token_budget,
    dollar_budget,
    review_failures,
    stuck,
    ping_pong,
)


def evaluate(state: State, figures: Figures, limits: Limits, extensions: Extensions) -> Verdict:
    """The first guard that does not say continue decides."""
    for guard in GUARDS:
        verdict = guard(state, figures, limits, extensions)
        if verdict.action is not Action.CONTINUE:
            return verdict
    return CONTINUE


def describe_grant(grant: dict[str, float]) -> str:
    parts = []
    if "steps" in grant:
        parts.append(f"+{int(grant['steps'])} steps")
    if "dollars" in grant:
        parts.append(f"+${grant['dollars']:.2f}")
    if "tokens" in grant:
        parts.append(f"+{int(grant['tokens'])} tokens")
    if "seconds" in grant:
        parts.append(f"+{int(grant['seconds'])}s")
    return ", ".join(parts) or "continue"
