from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.teams import TeamsFileError, load_teams

ROOT = Path(__file__).resolve().parents[2]


def test_default_teams_file_is_valid() -> None:
    config = load_teams(ROOT / "teams" / "default.yaml")
    assert {"engineering", "research"} <= set(config.teams)
    assert config.teams["engineering"].worker("coder").tools == ["run_code"]
    assert config.teams["engineering"].limits.max_steps >= 1


def _broken(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    mutate(data)
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "team", "field"),
    [
        (
            lambda d: d["teams"]["research"]["workers"][0].update(tier="ultra"),
            "research",
            "workers.0.tier",
        ),
        (
            lambda d: d["teams"]["engineering"]["limits"].update(max_steps=0),
            "engineering",
            "limits.max_steps",
        ),
        (
            lambda d: d["teams"]["engineering"]["supervisor"].pop("prompt"),
            "engineering",
            "supervisor.prompt",
        ),
        (
            lambda d: d["teams"]["research"]["workers"][1].update(tools=["rm_rf"]),
            "research",
            "workers.1.tools",
        ),
        (lambda d: d["teams"]["research"].update(colour="red"), "research", "colour"),
    ],
)
def test_errors_name_file_team_and_field(tmp_path: Path, mutate, team: str, field: str) -> None:  # type: ignore[no-untyped-def]
    path = _broken(tmp_path, mutate)
    with pytest.raises(TeamsFileError) as info:
        load_teams(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: team {team!r}: {field}:")


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("tiers: [unclosed\n")
    with pytest.raises(TeamsFileError, match="not valid YAML"):
        load_teams(path)
