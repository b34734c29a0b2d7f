"""The console adapter as a user runs it: a real `switchboard chat` process, stdin piped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def chat(
    tmp_path: Path, stdin: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("BROKER_URL", "DATABASE_URL")}
    environ["DATABASE_URL"] = f"sqlite:///{tmp_path / 'chat.db'}"
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=environ,
    )


def test_piped_request_prints_progress_and_answer_then_exits_zero(tmp_path: Path) -> None:
    result = chat(tmp_path, "/agent --team research summarise the design\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[run 1] Run for" in out
    assert "Supervisor assigned researcher" in out
    assert "Supervisor assigned writer" in out
    assert "review of researcher: rejected" in out
    assert "[run 1] ✔ Finished" in out
    assert "Answer to: summarise the design" in out
    assert out.index("Supervisor assigned researcher") < out.index("✔ Finished")


def test_router_picks_a_team_when_none_is_given(tmp_path: Path) -> None:
    result = chat(tmp_path, "/agent write and run a script that fixes the bug\n")
    assert result.returncode == 0, result.stderr
    assert "Team engineering chosen by the router" in result.stdout
    assert "✔ Finished" in result.stdout


def test_unknown_subcommand_and_team_print_usage_and_the_session_goes_on(tmp_path: Path) -> None:
    result = chat(tmp_path, "/agent frobnicate\n/agent --team nope do it\n/deploy\n/agent teams\n")
    assert result.returncode == 0
    out = result.stdout
    assert "error: unknown sub-command 'frobnicate'" in out
    assert "Usage:" in out
    assert "error: Unknown team 'nope'. Teams: engineering, research" in out
    assert "error: unknown command '/deploy'" in out
    assert "engineering: Software engineering" in out  # the session went on after the errors


def test_escalation_is_a_question_answered_with_approve(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    data["teams"]["research"]["limits"].update(max_steps=3, stuck_window=50, grant_steps=20)
    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump(data))
    # No answer: the run stays paused and the session still exits 0.
    result = chat(tmp_path, "/agent --team research summarise it\n", "--teams", str(teams))
    assert result.returncode == 0, result.stderr
    assert "⏸ Run 1 paused: max steps" in result.stdout
    assert "The run has used 3 of its 3 steps." in result.stdout
    assert "approve 1" in result.stdout
    assert "waiting for approval" in result.stdout


def test_bad_teams_file_exits_2_with_one_line(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    data["teams"]["research"]["workers"][0]["tier"] = "ultra"
    teams = tmp_path / "teams.yaml"
    teams.write_text(yaml.safe_dump(data))
    result = chat(tmp_path, "", "--teams", str(teams))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"switchboard: {teams}: team 'research': workers.0.tier: unknown tier 'ultra'"]
    validate = subprocess.run(
        [sys.executable, "-m", "bot.cli", "teams", "validate", str(teams)],
        capture_output=True,
        text=True,
    )
    assert validate.returncode == 2
    assert "workers.0.tier" in validate.stderr


def test_help_explains_every_subcommand() -> None:
    for args in (
        [],
        ["chat"],
        ["worker"],
        ["beat"],
        ["db", "upgrade"],
        ["teams", "validate"],
        ["slack"],
        ["slack", "manifest"],
        ["discord"],
        ["init"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "bot.cli", *args, "--help"], capture_output=True, text=True
        )
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage:" in result.stdout
