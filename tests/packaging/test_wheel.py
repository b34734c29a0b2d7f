"""Installable anywhere (issue 13): build the wheel from a clean copy of the source, install
it into a fresh virtualenv outside the checkout, and run a piped request from an empty
directory, as a user who installed with pip would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"bot", "orchestrator", "tasks", "sandbox"}


def _source_copy(destination: Path) -> Path:
    """The tracked and new files only: no build/ left over, no .venv, no egg-info."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source, target = ROOT / name, destination / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return destination


def _run(args: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the project's files")
    work = tmp_path_factory.mktemp("wheel")
    source = _source_copy(work / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", source])
    (built,) = (work / "dist").glob("switchboard-*.whl")
    return built


def test_the_wheel_holds_only_the_packages_and_their_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == PACKAGES, sorted(tops)
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".db"))]
    assert not [n for n in names if n.startswith(("tests/", "bench/", "deploy/", "teams/"))]
    with zipfile.ZipFile(wheel) as archive:
        packaged = archive.read("orchestrator/defaults/teams.yaml")
        manifest = archive.read("bot/slack/manifest.yml")
        assert "orchestrator/store/migrations/versions/0001_initial_schema.py" in names
    # One source of truth: the packaged defaults are the checkout's files, byte for byte.
    assert packaged == (ROOT / "teams" / "default.yaml").read_bytes()
    assert manifest == (ROOT / "bot" / "slack" / "manifest.yml").read_bytes()


def test_installed_wheel_runs_a_piped_request_from_an_empty_directory(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # The dev venv's pip installs into the fresh one: dependencies come from the index and
    # wheel cache pip is configured with, not from the checkout.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile", wheel])
    home, empty = tmp_path / "home", tmp_path / "empty"
    home.mkdir()
    empty.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BROKER_URL", "SWITCHBOARD_TEAMS_FILE", "PYTHONPATH")
        and not key.startswith(("XDG_", "VIRTUAL_ENV"))
    }
    env |= {"HOME": str(home), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    where = _run(
        [python, "-c", "import orchestrator, bot; print(orchestrator.__file__)"], cwd=empty
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # not the checkout's code

    switchboard = venv / "bin" / "switchboard"
    chat = _run(
        [switchboard, "chat"],
        input="/agent --team research summarise the design\n",
        cwd=empty,
        env=env,
    )
    assert "[run 1] ✔ Finished" in chat.stdout
    state = home / ".local" / "state" / "switchboard" / "switchboard.db"
    assert f"runs are kept in sqlite:///{state} (the default" in chat.stderr
    assert state.is_file()
    assert list(empty.iterdir()) == []  # nothing written where the user happened to be

    init = _run([switchboard, "init"], cwd=empty, env=env)
    written = home / ".config" / "switchboard" / "teams.yaml"
    assert f"Wrote {written}." in init.stdout and "switchboard teams validate" in init.stdout
    assert written.read_bytes() == (ROOT / "teams" / "default.yaml").read_bytes()
    written.write_text(written.read_text().replace("research:", "analysis:", 1))
    teams = _run([switchboard, "teams", "list"], cwd=empty, env=env)  # the user's file now
    assert "analysis:" in teams.stdout and "research:" not in teams.stdout
    again = subprocess.run(
        [switchboard, "init"], cwd=empty, env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1 and "already exists" in again.stderr

    manifest = _run([switchboard, "slack", "manifest"], cwd=empty, env=env)
    assert manifest.stdout == (ROOT / "bot" / "slack" / "manifest.yml").read_text()
