"""Text a person sends: what is refused, what is cleaned, and ids that fit their columns."""

from __future__ import annotations

import pytest

from bot import commands
from orchestrator import intake
from orchestrator.errors import UserError


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\x1b]0;pwned\x07summarise it", "summarise it"),  # OSC: set the window title
        ("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink, ST ended
        ("\x1b[2J\x1b[Hclear screen", "clear screen"),  # CSI: clear and home
        ("red \x1b[31mtext\x1b[0m", "red text"),
        ("bell\x07 and backspace\x08", "bell and backspace"),
        ("line one\r\nline two\ttab", "line one\nline two\ttab"),
        ("c1 \x9b31m csi", "c1 31m csi"),  # the single-character CSI is removed
        ("\x1bc reset", " reset"),
        ("plain ünïcode ✓", "plain ünïcode ✓"),
    ],
)
def test_control_and_escape_sequences_are_removed(raw: str, clean: str) -> None:
    assert intake.strip_controls(raw) == clean


def test_nul_and_undecodable_text_are_refused_with_what_to_do() -> None:
    with pytest.raises(UserError, match=r"contains a NUL character \(\\0\)"):
        intake.clean_text("hello\x00world", limit=100)
    undecodable = b"caf\xe9".decode("utf-8", errors="surrogateescape")
    with pytest.raises(UserError, match="not valid UTF-8"):
        intake.clean_text(undecodable, limit=100)


def test_size_cap_counts_what_would_be_stored() -> None:
    assert intake.clean_text("  " + "x" * 100 + "\x1b[0m ", limit=100) == "x" * 100
    with pytest.raises(UserError) as info:
        intake.clean_text("x" * 8001, limit=8000)
    assert str(info.value).startswith("The request is 8,001 characters long; the limit is 8,000.")


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("123456789012345678901234567890", "no run id is that large"),
        ("9223372036854775808", "no run id is that large"),  # one past the largest bigint
        ("0", "is not a run id"),
        ("-4", "is not a run id"),
        ("٣", "is not a run id"),  # int() would take Arabic-Indic digits; ids are ASCII
        ("1_000", "is not a run id"),
    ],
)
def test_ids_that_no_column_holds_are_refused(word: str, message: str) -> None:
    with pytest.raises(commands.CommandError, match=message):
        commands.parse(f"status {word}")


def test_largest_id_parses() -> None:
    assert commands.parse("status #9223372036854775807") == commands.Status(2**63 - 1)
    assert commands.parse_id("0042", "escalation id") == 42


def test_console_lines_are_checked_and_cleaned() -> None:
    assert commands.clean_line("/agent \x1b[2Jdo it\n") == "/agent do it\n"
    with pytest.raises(commands.CommandError, match="NUL"):
        commands.clean_line("/agent a\x00b")
