"""Words for people: why a run paused, what approving grants, how long something took.

Guards are named for code (`ping_pong`); a channel member should read what happened
("the team has given the same assignment 3 times"). Every adapter uses these phrases, so
Slack, Discord and the console say the same thing.
"""

from __future__ import annotations

import re

OPENING_CHARS = 300  # of a request in its run's opening message; the thread gets it in full

_TIMES = re.compile(r"(\d+) times")
_WORKER = re.compile(r"^(?:Worker )?(\S+) (?:produced|failed)")


def pause_reason(guard: str | None, reason: str = "") -> str:
    """Why the run is waiting, as a phrase that follows "paused:"."""
    times = _TIMES.search(reason)
    count = f"{times.group(1)} times" if times else "several times"
    worker = _WORKER.search(reason)
    who = worker.group(1) if worker else "a worker"
    phrases = {
        "max_steps": "it has used all the steps it was allowed",
        "max_duration": "it has been running longer than it was allowed",
        "token_budget": "it has used its token budget",
        "dollar_budget": "it has reached its spending limit",
        "review_failures": f"{who} keeps failing review, also after a change of approach",
        "stuck": f"{who} has produced nearly the same output {count}",
        "ping_pong": f"the team has given the same assignment {count}",
        "protocol_failure": "the model's replies could not be understood",
        "provider_failure": "the model provider is not answering",
        "tool_approval": "a worker wants to use a tool that needs approval",
        "tool_in_doubt": "a tool call may or may not have happened",
    }
    if guard in phrases:
        return phrases[guard]
    if reason:
        return reason.rstrip(".")
    return (guard or "a guard").replace("_", " ")


def duration(seconds: float) -> str:
    """<0.1s, 2.3s, 4m 05s, 1h 02m: short, and never "0.0s" for something that took time."""
    if seconds < 0.05:
        return "<0.1s"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def money(dollars: float) -> str:
    """Dollars with enough digits to show what small model calls cost."""
    return f"${dollars:.4f}" if dollars < 1 else f"${dollars:,.2f}"


def tokens(count: int) -> str:
    return f"{count:,} tokens"


def excerpt(text: str, limit: int) -> tuple[str, bool]:
    """At most `limit` characters, cut at a word boundary, with "…" when cut."""
    text = text.strip()
    if len(text) <= limit:
        return text, False
    cut = text.rfind(" ", limit // 2, limit)
    cut = limit if cut <= 0 else cut
    return text[:cut].rstrip() + "…", True
