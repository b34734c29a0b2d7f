"""Teams files that cannot be read, decoded, parsed or stored: one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.teams import MAX_DEPTH, TeamsFileError, load_teams

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = (ROOT / "teams" / "default.yaml").read_text()


def refused(path: Path) -> str:
    with pytest.raises(TeamsFileError) as info:
        load_teams(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def write(tmp_path: Path, text: str | bytes, name: str = "teams.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    data = DEFAULT.replace("Software engineering", "Ingénierie").encode("latin-1")
    message = refused(write(tmp_path, data))
    line = DEFAULT.split("Software engineering")[0].count("\n") + 1
    assert f"line {line}: not UTF-8 text (byte 0xe9)" in message


def test_a_directory_is_not_a_teams_file(tmp_path: Path) -> None:
    (tmp_path / "teams.d").mkdir()
    assert refused(tmp_path / "teams.d").endswith("(file): is a directory, not a teams file")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "teams.fifo"
    os.mkfifo(fifo)  # nobody ever writes to it: reading it would block forever
    assert "is not a regular file" in refused(fifo)


def test_missing_and_oversized_files(tmp_path: Path) -> None:
    assert refused(tmp_path / "absent.yaml").endswith("(file): no such file")
    big = write(tmp_path, "# " + "x" * 1_100_000 + "\n" + DEFAULT)
    assert "a teams file may be 1,000,000" in refused(big)


def test_absurd_nesting_is_refused_before_anything_recurses(tmp_path: Path) -> None:
    deep = write(tmp_path, "tiers: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert f"nested more than {MAX_DEPTH} levels deep" in refused(deep)
    block = "tiers:\n" + "".join(f"{'  ' * (i + 1)}k{i}:\n" for i in range(60))
    assert "nested more than" in refused(write(tmp_path, block, "block.yaml"))


def test_an_alias_bomb_and_a_self_containing_alias(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert "expands to more than 100,000 values" in refused(write(tmp_path, "\n".join(lines)))
    assert "an alias refers to a value that contains it" in refused(
        write(tmp_path, "tiers: &loop [*loop]\n", "loop.yaml")
    )


@pytest.mark.parametrize("kind", ["team", "tier"])
def test_duplicate_team_or_tier_names_are_refused(tmp_path: Path, kind: str) -> None:
    if kind == "team":
        second = DEFAULT.index("  research:")
        text = DEFAULT + DEFAULT[second : DEFAULT.index("\n", second) + 1]
        text += "    description: a second research team\n"
        name = "research"
    else:
        text = DEFAULT.replace("  premium:\n", "  cheap:\n    model: scripted/x\n  premium:\n")
        name = "cheap"
    path = write(tmp_path, text)
    line = next(
        i + 1 for i, row in reversed(list(enumerate(text.splitlines()))) if row == f"  {name}:"
    )
    message = refused(path)
    assert message == (
        f"{path}: line {line}: duplicate key {name!r} (the second would silently replace the first)"
    )


def test_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    text = DEFAULT.replace(
        "tiers:\n  cheap:\n    model: scripted/cheap\n",
        "tiers:\n  cheap: &base\n    model: scripted/cheap\n",
    ).replace(
        "  premium:\n    model: scripted/premium\n",
        "  premium:\n    <<: *base\n    model: scripted/premium\n",
    )
    config = load_teams(write(tmp_path, text))
    assert config.tiers["premium"].model == "scripted/premium"


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"max_dollars_per_run": float("inf")}, "'.inf' is not a finite number"),
        ({"max_dollars_per_team_day": float("nan")}, "'.nan' is not a finite number"),
        ({"max_dollars_per_run": "inf"}, "limits.max_dollars_per_run: Input should be a finite"),
        ({"grant_dollars": "1e400"}, "limits.grant_dollars: Input should be a finite number"),
        ({"grant_steps": 3_000_000_000}, "limits.grant_steps: Input should be less than or equal"),
        ({"max_steps": 10**30}, "is too large a number"),
        ({"grant_tokens": 10**15}, "limits.grant_tokens: Input should be less than or equal"),
        ({"max_dollars_per_run": 1e12}, "limits.max_dollars_per_run: Input should be less than"),
    ],
)
def test_numbers_no_setting_can_hold(tmp_path: Path, limits: dict, expected: str) -> None:  # type: ignore[type-arg]
    data = yaml.safe_load(DEFAULT)
    data["teams"]["research"]["limits"].update(limits)
    assert expected in refused(write(tmp_path, yaml.safe_dump(data)))


def test_the_command_line_says_one_line_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    cases = {
        tmp_path / "a-directory": "is a directory",
        fifo: "is not a regular file",
        write(tmp_path, b"tiers: \xff\n", "latin.yaml"): "not UTF-8 text",
        write(tmp_path, "a: " + "[" * 5000 + "]" * 5000, "deep.yaml"): "nested more than",
    }
    for path, expected in cases.items():
        for args in (["teams", "validate", str(path)], ["teams", "list", "--teams", str(path)]):
            result = subprocess.run(
                [sys.executable, "-m", "bot.cli", *args],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert result.returncode == 2, (args, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and expected in lines[0], (args, result.stderr)
            assert lines[0].startswith(f"switchboard: {path}: ")
