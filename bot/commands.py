"""The /agent grammar, shared by the console, Slack and Discord.

/agent <request>
/agent --team NAME <request>
/agent status [RUN_ID]
/agent abort RUN_ID
/agent retry RUN_ID
/agent reply RUN_ID <text>
/agent budget
/agent teams
/agent help
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass

from orchestrator import intake
from orchestrator.errors import UserError

USAGE = """Usage:
  /agent <request>                 start a run; a router picks the team
  /agent --team NAME <request>     start a run with the named team
  /agent status [RUN_ID]           a run's steps, spend and pending escalation (or recent runs)
  /agent abort RUN_ID              abort a run (its requester or an approver)
  /agent retry RUN_ID              run a failed run's last step again (or answer its Retry)
  /agent reply RUN_ID <text>       input for a running run, or a follow-up to a finished one
  /agent budget                    spend against each limit
  /agent teams                     the teams and what they do
  /agent help                      this text"""

SUBCOMMANDS = ("status", "abort", "retry", "reply", "budget", "teams", "help")


@dataclass(frozen=True)
class StartRun:
    request: str
    team: str | None = None


@dataclass(frozen=True)
class Status:
    run_id: int | None = None


@dataclass(frozen=True)
class Abort:
    run_id: int


@dataclass(frozen=True)
class Retry:
    run_id: int


@dataclass(frozen=True)
class Reply:
    """Text for a run: input while it runs, a follow-up in its thread once it ended."""

    run_id: int
    text: str


@dataclass(frozen=True)
class Budget:
    pass


@dataclass(frozen=True)
class Teams:
    pass


@dataclass(frozen=True)
class Help:
    pass


Command = StartRun | Status | Abort | Retry | Reply | Budget | Teams | Help


class CommandError(ValueError):
    """A one-line explanation; adapters show it with USAGE."""


LARGEST_ID = 2**63 - 1  # ids are 64-bit database keys
_ID = re.compile(r"#?([0-9]+)")


def parse_id(word: str, what: str = "run id") -> int:
    """A positive id that fits its column: `42` or `#42`, ASCII digits only."""
    shown = word if len(word) <= 24 else word[:20] + "…"
    article = "an" if what[0] in "aeiou" else "a"
    match = _ID.fullmatch(word)
    digits = match.group(1).lstrip("0") if match else ""
    if not digits:
        raise CommandError(f"{shown!r} is not {article} {what} (a number, like 42)")
    if len(digits) > 19 or int(digits) > LARGEST_ID:
        raise CommandError(f"{shown!r} is not {article} {what}: no {what} is that large")
    return int(digits)


def _run_id(word: str) -> int:
    return parse_id(word, "run id")


def clean_line(line: str) -> str:
    """A typed line made safe to echo and store: control and escape sequences removed;
    NUL or undecodable bytes refused (CommandError says so)."""
    try:
        intake.check_text(line, what="line")
    except UserError as exc:
        raise CommandError(str(exc)) from None
    return intake.strip_controls(line)


def parse(text: str) -> Command:
    """Parse the text after `/agent` (Slack sends exactly that)."""
    text = text.strip()
    if not text:
        raise CommandError("say what you need, for example: /agent summarise the design doc")
    words = text.split()
    head = words[0].lower()
    rest = words[1:]
    if head in ("help", "teams", "budget") and not rest:
        return {"help": Help, "teams": Teams, "budget": Budget}[head]()
    if head == "status" and len(rest) <= 1:
        return Status(_run_id(rest[0]) if rest else None)
    if head == "abort":
        if len(rest) != 1:
            raise CommandError("abort needs exactly one run id: /agent abort 42")
        return Abort(_run_id(rest[0]))
    if head == "reply":
        if len(rest) < 2:
            raise CommandError("reply needs a run id and text: /agent reply 42 now make it shorter")
        return Reply(_run_id(rest[0]), text.split(None, 2)[2].strip())
    if head == "retry":
        if len(rest) != 1:
            raise CommandError("retry needs exactly one run id: /agent retry 42")
        return Retry(_run_id(rest[0]))
    if head.startswith("--"):
        return _parse_team(text)
    if len(words) == 1:
        # One word is a request ("/agent hello"), unless it is a sub-command mistyped.
        near = difflib.get_close_matches(head, SUBCOMMANDS, n=1, cutoff=0.75)
        if near:
            raise CommandError(f"unknown sub-command {words[0]!r}; did you mean {near[0]!r}?")
    return StartRun(text)


def _parse_team(text: str) -> StartRun:
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    flag = words[0]
    if flag.startswith("--team="):
        team, request_words = flag.split("=", 1)[1], words[1:]
    elif flag == "--team":
        if len(words) < 2:
            raise CommandError("--team needs a team name: /agent --team research <request>")
        team, request_words = words[1], words[2:]
    else:
        raise CommandError(f"unknown option {flag!r}")
    request = text.split(team, 1)[1].strip() if team in text else " ".join(request_words)
    if not request:
        raise CommandError(f"say what team {team!r} should do: /agent --team {team} <request>")
    return StartRun(request, team)


def parse_line(line: str) -> Command:
    """Parse a console line, which must start with /agent."""
    line = line.strip()
    if line == "/agent" or line.startswith("/agent "):
        return parse(line[len("/agent") :])
    first = line.split()[0] if line else ""
    raise CommandError(f"unknown command {first!r}; commands start with /agent")
