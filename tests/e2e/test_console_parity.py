"""The console keeps up with the chat adapters: run tags, names, history across sessions.

Each test runs the real `switchboard chat` process with piped input, as a user would.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from tests.e2e.test_console_cli import ROOT, chat


def test_concurrent_runs_tag_every_line_and_end_with_one_line_each(tmp_path: Path) -> None:
    result = chat(
        tmp_path,
        "/agent --team research summarise the design\n/agent --team research list the risks\n",
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    steps = [line for line in lines if " tokens · " in line and "Finished" not in line]
    assert steps and all(line.startswith(("[run 1]", "[run 2]")) for line in steps), steps
    finals = [line for line in lines if "✔ Finished" in line]
    assert sorted(line.split("]")[0] for line in finals) == ["[run 1", "[run 2"]
    assert not any(line.rstrip().endswith(("] finished", "] aborted")) for line in lines)


def test_a_single_word_starts_a_run(tmp_path: Path) -> None:
    result = chat(tmp_path, "/agent hello\n")
    assert result.returncode == 0, result.stderr
    assert "[run 1] Run for" in result.stdout and ": hello" in result.stdout
    assert "✔ Finished" in result.stdout
    assert "unknown sub-command" not in result.stdout


def test_status_lists_my_runs_from_earlier_sessions(tmp_path: Path) -> None:
    env = {"USER": "alice"}
    first = chat(tmp_path, "/agent --team research summarise the design\n", env=env)
    assert first.returncode == 0, first.stderr
    second = chat(tmp_path, "/agent status\n/agent budget\n", env=env)
    out = second.stdout
    assert "Your recent runs:" in out and "#1 [finished] research: summarise the design" in out
    assert "No runs yet" not in out
    assert "no limit tokens" not in out and "no token limit" in out
    other = chat(tmp_path, "/agent status\n", env={"USER": "bob"})
    assert "No runs yet" in other.stdout


def test_terminal_control_sequences_in_text_are_not_printed(tmp_path: Path) -> None:
    request = "/agent --team research look \x1b]0;pwned\x07at \x1b[2Jthis \x1b[31mred\x1b[0m\n"
    result = chat(tmp_path, request)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "look at this red" in result.stdout or "look" in result.stdout


def test_a_broker_without_a_worker_is_reported(tmp_path: Path, redis_url: str) -> None:
    started = time.monotonic()
    result = chat(
        tmp_path,
        "/agent --team research anyone there\n",
        "--wait-timeout",
        "13",
        env={"BROKER_URL": redis_url},
    )
    assert time.monotonic() - started < 60
    assert result.returncode == 0, result.stderr
    assert (
        "[run 1] no worker has picked up run 1 after 10 s — is `switchboard worker` running?"
        in result.stdout
    )


def test_a_session_that_approves_a_run_follows_it_to_its_end(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    data["teams"]["research"]["limits"].update(max_steps=3, stuck_window=50, grant_steps=20)
    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump(data))
    first = chat(
        tmp_path, "/agent --team research summarise it\n", "--teams", str(teams), env={"USER": "a"}
    )
    assert "waiting for approval" in first.stdout
    second = chat(tmp_path, "approve 1\n", "--teams", str(teams), env={"USER": "b"})
    assert second.returncode == 0, second.stderr
    out = second.stdout
    assert "Approved by b" in out and "[run 1] following it here until it ends" in out
    assert "[run 1] ✔ Finished" in out and "Answer to: summarise it" in out
    assert "Supervisor finished" in out
