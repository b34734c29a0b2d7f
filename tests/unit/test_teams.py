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


def test_the_readme_real_provider_tiers_load_and_warn_only_about_keys(
    monkeypatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import re

    from orchestrator.llm.checks import config_warnings

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Real models") :]
    snippet = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    data.update(yaml.safe_load(snippet))
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(data))
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    config = load_teams(path)
    warnings = config_warnings(config)
    assert any("ANTHROPIC_API_KEY" in w and "tier premium" in w for w in warnings)
    assert not any("no price" in w for w in warnings)  # litellm prices them; local declares
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    assert config_warnings(config) == []
