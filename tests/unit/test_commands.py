from __future__ import annotations

import pytest

from bot import commands as c


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("summarise the design", c.StartRun("summarise the design")),
        ("--team research summarise it", c.StartRun("summarise it", "research")),
        ("--team=engineering fix the bug", c.StartRun("fix the bug", "engineering")),
        ("status", c.Status(None)),
        ("status 42", c.Status(42)),
        ("status #7", c.Status(7)),
        ("abort 3", c.Abort(3)),
        ("teams", c.Teams()),
        ("budget", c.Budget()),
        ("help", c.Help()),
        ("help me write a parser", c.StartRun("help me write a parser")),
        ("hello", c.StartRun("hello")),
        ("refactor", c.StartRun("refactor")),
        ("status of the migration project", c.StartRun("status of the migration project")),
    ],
)
def test_grammar(text: str, expected: c.Command) -> None:
    assert c.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "say what you need"),
        ("abort", "abort needs exactly one run id"),
        ("abort x", "is not a run id"),
        ("status x", "is not a run id"),
        ("--team", "--team needs a team name"),
        ("--team research", "say what team"),
        ("--verbose do it", "unknown option"),
        ("statsu", "did you mean 'status'"),
        ("budgte", "did you mean 'budget'"),
    ],
)
def test_grammar_errors(text: str, message: str) -> None:
    with pytest.raises(c.CommandError, match=message):
        c.parse(text)


def test_console_lines_must_start_with_agent() -> None:
    assert c.parse_line("/agent teams") == c.Teams()
    with pytest.raises(c.CommandError, match="commands start with /agent"):
        c.parse_line("/deploy now")
