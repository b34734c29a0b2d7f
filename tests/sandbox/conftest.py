"""Sandbox fixtures: real backends only, each skipped with its reason when unavailable.

`tests/sandbox/setup_engine.sh` (run by `make test`) installs bubblewrap and Podman, serves
the Docker API on unix:///tmp/podman.sock and builds the image; here we only detect.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sandbox.base import Limits, Sandbox
from sandbox.bwrap_backend import BwrapSandbox
from sandbox.cgroups import Cgroup
from sandbox.docker_backend import DEFAULT_IMAGE, DockerSandbox

PODMAN_SOCK = Path("/tmp/podman.sock")


def _docker_status() -> tuple[DockerSandbox | None, str]:
    """A ready Docker sandbox, or None and the reason it is not ready."""
    image = os.environ.get("SANDBOX_IMAGE") or DEFAULT_IMAGE
    host = os.environ.get("DOCKER_HOST")
    if host is None and PODMAN_SOCK.exists():  # what setup_engine.sh starts
        host = f"unix://{PODMAN_SOCK}"
    try:
        client = docker.DockerClient(base_url=host, timeout=30) if host else None
        box = DockerSandbox(image=image, client=client)
        answers = box.ping()
    except docker.errors.DockerException:  # a stale socket: nothing listens behind it
        answers = False
    if not answers:
        return None, (
            f"no Docker engine answers at {host or 'the default socket'}"
            " (run tests/sandbox/setup_engine.sh)"
        )
    try:
        box.client.images.get(image)
    except Exception as exc:
        return None, f"sandbox image {image} missing ({exc}); run tests/sandbox/setup_engine.sh"
    return box, "ok"


def _bwrap_status(use_cgroups: bool) -> tuple[BwrapSandbox | None, str]:
    if shutil.which("bwrap") is None:
        return None, "bubblewrap not installed (apt-get install bubblewrap)"
    if not BwrapSandbox.available():
        return None, "bubblewrap cannot create namespaces on this host"
    box = BwrapSandbox(use_cgroups=use_cgroups)
    if not use_cgroups:
        return box, "ok (rlimits only)"
    group = Cgroup.create(Limits()) if os.geteuid() == 0 else None
    if group is None:
        return box, "ok (no writable cgroups: rlimits only)"
    group.remove()
    return box, "ok (cgroups)"


# "bwrap-rlimits" is the bubblewrap fallback for hosts without writable cgroups.
BACKENDS = ("docker", "bwrap", "bwrap-rlimits")
_STATUS: dict[str, tuple[Sandbox | None, str]] = {}


def _status(name: str) -> tuple[Sandbox | None, str]:
    if name not in _STATUS:
        if name == "docker":
            _STATUS[name] = _docker_status()
        else:
            _STATUS[name] = _bwrap_status(use_cgroups=name == "bwrap")
    return _STATUS[name]


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say up front which backends the escape suite will really exercise."""
    return [f"sandbox {name}: {_status(name)[1]}" for name in BACKENDS]


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """Each real backend in turn; skipped (with the reason) where it cannot run."""
    box, reason = _status(request.param)
    if box is None:
        pytest.skip(f"{request.param} sandbox unavailable: {reason}")
    yield box


@pytest.fixture
def bwrap_fallback() -> BwrapSandbox:
    """Bubblewrap as it runs where bwrap lacks --disable-userns: the seccomp filter alone."""
    box, reason = _status("bwrap")
    if box is None:
        pytest.skip(f"bwrap sandbox unavailable: {reason}")
    assert isinstance(box, BwrapSandbox)
    return BwrapSandbox(use_cgroups=box.use_cgroups, disable_userns=False)


@pytest.fixture
def docker_sandbox() -> DockerSandbox:
    """The Docker backend alone; skipped (with the reason) where no engine runs."""
    box, reason = _status("docker")
    if box is None:
        pytest.skip(f"docker sandbox unavailable: {reason}")
    assert isinstance(box, DockerSandbox)
    return box
