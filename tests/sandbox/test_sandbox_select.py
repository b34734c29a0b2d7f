"""Backend selection: configured choice, auto-detection, and never a host fallback."""

from __future__ import annotations

import sys

import pytest

from sandbox import DISABLED_MESSAGE, SandboxError, seccomp, select_sandbox
from sandbox.bwrap_backend import BwrapSandbox
from sandbox.docker_backend import DockerSandbox

NO_ENGINE = "unix:///nonexistent/docker.sock"


def test_unknown_backend_is_a_configuration_error() -> None:
    with pytest.raises(SandboxError, match="SANDBOX_BACKEND"):
        select_sandbox({"SANDBOX_BACKEND": "host"})


def test_explicit_docker_without_engine_raises_instead_of_falling_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    with pytest.raises(SandboxError, match="no Docker engine"):
        select_sandbox({"SANDBOX_BACKEND": "docker"})


def test_auto_without_anything_is_disabled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.setattr(BwrapSandbox, "available", classmethod(lambda cls: False))
    assert select_sandbox({}) is None
    assert DISABLED_MESSAGE in caplog.text


def test_auto_prefers_docker_when_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DockerSandbox, "ping", lambda self: True)
    box = select_sandbox({"SANDBOX_IMAGE": "registry.example/sbx:1"})
    assert isinstance(box, DockerSandbox) and box.image == "registry.example/sbx:1"


def test_auto_falls_back_to_bwrap_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.setattr(BwrapSandbox, "available", classmethod(lambda cls: True))
    assert isinstance(select_sandbox({"SANDBOX_BACKEND": "auto"}), BwrapSandbox)


def test_seccomp_dir_reaches_the_docker_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DockerSandbox, "ping", lambda self: True)
    box = select_sandbox({"SANDBOX_SECCOMP_DIR": "/srv/shared/seccomp"})
    assert isinstance(box, DockerSandbox) and box.seccomp_dir == "/srv/shared/seccomp"


def test_explicit_bwrap_without_libseccomp_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # as if libseccomp were missing
    seccomp.bwrap_filter.cache_clear()
    try:
        with pytest.raises(SandboxError, match="libseccomp unavailable"):
            select_sandbox({"SANDBOX_BACKEND": "bwrap"})
    finally:
        monkeypatch.undo()
        seccomp.bwrap_filter.cache_clear()
