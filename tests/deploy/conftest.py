"""Shared helpers for the deploy tests: locate the tools, install them when possible."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SETUP_TOOLS = Path(__file__).with_name("setup_tools.sh")

_setup_attempted = False


def require_tool(name: str) -> str:
    """Path of ``name``; runs setup_tools.sh once if it is missing, skips if that fails."""
    global _setup_attempted
    path = shutil.which(name)
    if path is None and not _setup_attempted:
        _setup_attempted = True
        result = subprocess.run(
            ["sh", str(SETUP_TOOLS)], capture_output=True, text=True, timeout=900
        )
        if result.returncode != 0:
            print(f"setup_tools.sh failed:\n{result.stdout}\n{result.stderr}")
        path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed and tests/deploy/setup_tools.sh could not install it"
        print(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def compose() -> str:
    return require_tool("docker-compose")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_tool("prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_tool("amtool")
