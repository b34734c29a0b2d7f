"""`switchboard chat` on a terminal: line editing, history, and output that spares your line.

The real process runs on a pseudo-terminal (the standard library's pty), and the test types
into it as a person would: arrow keys are the escape sequences a terminal sends.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_console_cli import ROOT

LEFT, UP, EOF = b"\x1b[D", b"\x1b[A", b"\x04"
PROMPT = b"switchboard> "


class Terminal:
    def __init__(self, tmp_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("BROKER_URL", "DATABASE_URL")}
        env.update(
            DATABASE_URL=f"sqlite:///{tmp_path / 'chat.db'}",
            TERM="xterm",
            XDG_STATE_HOME=str(tmp_path / "state"),
            PYTHONPATH=str(ROOT),
        )
        master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "chat"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=tmp_path,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.output = b""

    def read_until(self, needle: bytes, timeout: float = 60, start: int = 0) -> int:
        """Read until `needle` appears after offset `start`; its offset in the output."""
        deadline = time.monotonic() + timeout
        while needle not in self.output[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} on screen; got {self.output[-600:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the process closed the terminal
                    break
        return self.output.index(needle, start)

    def settle(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    return

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> int:
        self.type(EOF)
        try:
            code = self.process.wait(60)
        finally:
            self.settle(0.2)
            os.close(self.master)
        return code


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path)
    yield term
    if term.process.poll() is None:
        term.process.kill()


def test_arrow_keys_edit_the_line_and_recall_history(terminal: Terminal, tmp_path: Path) -> None:
    terminal.read_until(PROMPT)
    terminal.type(b"/agent teas" + LEFT + b"m\r")  # fix the typo in place
    first = terminal.read_until(b"Teams:")
    terminal.read_until(PROMPT, start=first)
    terminal.type(UP + b"\r")  # the same command again, from history
    second = terminal.read_until(b"Teams:", start=first + 1)
    assert b"^[[" not in terminal.output  # no raw escape echoed back as text
    terminal.read_until(PROMPT, start=second)  # Ctrl-D at the prompt, as a person would
    assert terminal.close() == 0
    history = (tmp_path / "state" / "switchboard" / "history").read_text()
    assert "/agent teams" in history


def test_output_while_typing_redraws_the_half_typed_line(terminal: Terminal) -> None:
    terminal.read_until(PROMPT)
    terminal.type(b"/agent --team research summarise the design\r")
    terminal.read_until(b"Run for")
    terminal.type(b"/agent tea")  # half a command, no Enter yet
    done = terminal.read_until(b"Finished")
    terminal.settle()
    after = terminal.output[done:]
    assert after.rstrip().endswith(PROMPT + b"/agent tea"), after[-200:]
    terminal.type(b"ms\r")
    teams = terminal.read_until(b"Teams:", start=done)
    terminal.read_until(PROMPT, start=teams)  # Ctrl-D at the prompt, as a person would
    assert terminal.close() == 0
