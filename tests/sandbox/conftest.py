"""Sandbox fixtures: real backends only, each skipped with its reason when unavailable.

`tests/sandbox/setup_engine.sh` (run by `make test`) installs bubblewrap and Podman, serves
the Docker API on unix:///tmp/podman.sock and builds the image; here we only detect.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.base import Sandbox
from sandbox.bwrap_backend import BwrapSandbox
from sandbox.docker_backend import DEFAULT_IMAGE, DockerSandbox

PODMAN_SOCK = Path("/tmp/podman.sock")


def _docker_status() -> tuple[DockerSandbox | None, str]:
    """A ready Docker sandbox, or None and the reason it is not ready."""
    if "DOCKER_HOST" not in os.environ and PODMAN_SOCK.exists():
        os.environ["DOCKER_HOST"] = f"unix://{PODMAN_SOCK}"
    image = os.environ.get("SANDBOX_IMAGE") or DEFAULT_IMAGE
    box = DockerSandbox(image=image)
    if not box.ping():
        return None, (
            f"no Docker engine answers at {os.environ.get('DOCKER_HOST', 'the default socket')}"
            " (run tests/sandbox/setup_engine.sh)"
        )
    try:
        box.client.images.get(image)
    except Exception as exc:
        return None, f"sandbox image {image} missing ({exc}); run tests/sandbox/setup_engine.sh"
    return box, "ok"


def _bwrap_status() -> tuple[BwrapSandbox | None, str]:
    if shutil.which("bwrap") is None:
        return None, "bubblewrap not installed (apt-get install bubblewrap)"
    if not BwrapSandbox.available():
        return None, "bubblewrap cannot create namespaces on this host"
    return BwrapSandbox(), "ok"


_STATUS: dict[str, tuple[Sandbox | None, str]] = {}


def _status(name: str) -> tuple[Sandbox | None, str]:
    if name not in _STATUS:
        _STATUS[name] = _docker_status() if name == "docker" else _bwrap_status()
    return _STATUS[name]


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say up front which backends the escape suite will really exercise."""
    return [f"sandbox {name}: {_status(name)[1]}" for name in ("docker", "bwrap")]


@pytest.fixture(params=["docker", "bwrap"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """Each real backend in turn; skipped (with the reason) where it cannot run."""
    box, reason = _status(request.param)
    if box is None:
        pytest.skip(f"{request.param} sandbox unavailable: {reason}")
    yield box
