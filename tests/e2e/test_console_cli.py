"""The console adapter as a user runs it: a real `switchboard chat` process, stdin piped."""

from __future__ import annotations

import os
import re
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
    assert "Assigned researcher" in out
    assert "Assigned writer" in out
    assert "Reviewed researcher (sent back)" in out
    assert "[run 1] ✔ Finished · 7 steps ·" in out
    assert "Answer to: summarise the design" in out
    assert out.index("Assigned researcher") < out.index("✔ Finished")
    # Each step line carries that step's own spend; the final line the run's totals.
    step = next(line for line in out.splitlines() if "Assigned researcher" in line)
    assert re.search(r"\[\d[\d,]* tokens · \$0\.\d{4} · ", step), step
    final = next(line for line in out.splitlines() if "✔ Finished" in line)
    assert re.search(r"7 steps · [\d,]+ tokens · \$\d+\.\d{4} · ", final), final
    # One final line per run, and Markdown's blank lines are kept.
    assert out.count("[run 1]") == 2 and "finished\n" not in out
    answer = out[out.index("Answer to:") :]
    assert re.search(r"\n\n +The researcher drafted this", answer), answer


def test_router_picks_a_team_when_none_is_given(tmp_path: Path) -> None:
    result = chat(tmp_path, "/agent write and run a script that fixes the bug\n")
    assert result.returncode == 0, result.stderr
    assert "Router chose team engineering" in result.stdout
    assert "(team: routing)" not in result.stdout
    assert "✔ Finished" in result.stdout


def test_unknown_subcommand_and_team_print_usage_and_the_session_goes_on(tmp_path: Path) -> None:
    result = chat(tmp_path, "/agent statsu\n/agent --team nope do it\n/deploy\n/agent teams\n")
    assert result.returncode == 0
    out = result.stdout
    assert "error: unknown sub-command 'statsu'; did you mean 'status'?" in out
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
    assert "⏸ Run 1 paused: it has used all the steps it was allowed" in result.stdout
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
