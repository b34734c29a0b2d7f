"""`switchboard chat` against bad input and outages: every bad line gets one line back and
the session goes on; a database or broker outage is reported and waited out."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.support.services import free_port, start_private_redis
from tests.support.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]


def environ(tmp_path: Path, **env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("BROKER_URL", "DATABASE_URL")}
    return {
        **base,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        **env,
    }


def test_bad_lines_get_one_line_each_and_the_session_goes_on(tmp_path: Path) -> None:
    lines = [
        b"\xff\xfe not UTF-8\n",
        b"/agent hello\x00world\n",
        b"/agent status 123456789012345678901234567890\n",
        b"approve 99999999999999999999999999\n",
        b"/agent summarise " + b"x" * 9000 + b"\n",
        b"/agent summarise " + b"y" * (1 << 20) + b"\n",
        b"/agent --team research \x1b]0;pwned\x07\x1b[2J\x1b[31msummarise the design\x1b[0m\n",
        b"/agent teams\n",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat"],
        input=b"".join(lines),
        capture_output=True,
        timeout=180,
        cwd=tmp_path,
        env=environ(tmp_path),
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert "Traceback" not in err, err
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: The line is not valid UTF-8 text; nothing was done. Send it as text.",
        "error: The line contains a NUL character (\\0), which cannot be stored. Remove it and "
        "send it again.",
        "error: '12345678901234567890…' is not a run id: no run id is that large",
        "error: '99999999999999999999…' is not an escalation id: no escalation id is that large",
        "error: The request is 9,010 characters long; the limit is 8,000. Shorten it, or put "
        "the long text where the team can read it and give its address.",
        "error: that line is 1,048,594 bytes long; a request may have 8,000 characters. "
        "Nothing was done.",
    ]
    assert "\x1b" not in out and "\x07" not in out  # no title change, no clear screen
    assert "[run 1] Run for" in out and "summarise the design (team research)" in out
    assert "[run 1] ✔ Finished" in out
    assert "engineering: Software engineering" in out  # the line after the run still ran
    assert "runs are kept in sqlite:///" in err


def test_a_broker_outage_holds_the_step_and_the_session_goes_on(
    tmp_path: Path, stack, make_teams
) -> None:  # type: ignore[no-untyped-def]
    """Broker down when the request comes: the run is saved and its step held; later lines
    are still read and answered; once Redis and a worker are up, the run finishes."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    teams = make_teams()
    s = stack(teams, broker_url=url)
    chat = Session(
        tmp_path, DATABASE_URL=s.pg_url, BROKER_URL=url, SWITCHBOARD_TEAMS_FILE=str(teams)
    )
    try:
        chat.send("/agent --team research summarise the design")
        chat.wait_for("the task queue is not answering")
        chat.send("/agent teams")
        chat.wait_for("engineering: Software engineering")
        start_private_redis(port, tmp_path)
        s.worker()
        chat.wait_for("[run 1] queued: the task queue answers again.")
        chat.wait_for("[run 1] ✔ Finished", timeout=240)
        assert chat.finish() == 0, chat.text()
        assert "Traceback" not in chat.text()
    finally:
        chat.kill()
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


def test_a_database_restart_is_reported_and_survived(tmp_path: Path, pg_url: str) -> None:
    database = make_url(pg_url)
    proxy = TcpProxy(database.port or 5432).start()
    through = database.set(port=proxy.port).render_as_string(hide_password=False)
    chat = Session(tmp_path, DATABASE_URL=through)
    try:
        chat.send("/agent --team research first request")
        chat.wait_for("[run 1] ✔ Finished", timeout=240)
        proxy.cut()
        chat.send("/agent budget")
        chat.wait_for("error: the database is not answering (")
        chat.send("/agent teams")  # the session is still there and reads on
        chat.wait_for("engineering: Software engineering")
        proxy.restore()
        chat.send("/agent --team research second request")
        chat.wait_for("[run 2] ✔ Finished", timeout=240)
        assert chat.finish() == 0, chat.text()
        assert "Traceback" not in chat.text()
    finally:
        chat.kill()
        proxy.close()


class Session:
    """A `switchboard chat` whose stdin the test writes line by line."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "chat", "--wait-timeout", "120"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=environ(tmp_path, LOG_LEVEL="ERROR", **env),
        )
        self._out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._out.append(raw.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self._out)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {needle!r} in the session:\n{self.text()[-4000:]}")

    def finish(self, timeout: float = 240) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
