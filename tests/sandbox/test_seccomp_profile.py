"""The seccomp policy as shipped: the Docker profile's rules, the bwrap BPF program, and how
each reaches its engine. The escape suite shows the same policy holding inside real sandboxes.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import pytest

from sandbox import seccomp
from sandbox.base import Limits, SandboxError
from sandbox.bwrap_backend import BwrapSandbox
from sandbox.docker_backend import DockerSandbox, write_profile
from sandbox.seccomp import BLOCKED_SYSCALLS, CLONE_NAMESPACE_FLAGS
from tests.sandbox.make_seccomp_profile import harden

ESSENTIAL = ("read", "write", "openat", "execve", "mmap", "futex", "exit_group", "wait4")


def _rules(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


def test_profile_ships_as_package_data() -> None:
    path = Path(seccomp.__file__).with_name(seccomp.PROFILE_RESOURCE)
    assert json.loads(path.read_text()) == seccomp.docker_profile()
    assert json.loads(seccomp.docker_profile_text()) == seccomp.docker_profile()


def test_profile_denies_by_default_and_no_rule_allows_a_blocked_call() -> None:
    profile = seccomp.docker_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    for name in BLOCKED_SYSCALLS:
        rules = _rules(profile, name)
        # not even for a container given CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON...
        assert all(rule["action"] == "SCMP_ACT_ERRNO" for rule in rules), (name, rules)
        assert any(rule.get("errnoRet") == 1 and "includes" not in rule for rule in rules), name


def test_profile_allows_clone_only_without_namespace_flags() -> None:
    profile = seccomp.docker_profile()
    clone = _rules(profile, "clone")
    assert clone, "no clone rule: nothing could fork"
    for rule in clone:
        assert rule["action"] == "SCMP_ACT_ALLOW" and rule["names"] == ["clone"]
        assert "caps" not in rule.get("includes", {}) and "caps" not in rule.get("excludes", {})
        (arg,) = rule["args"]
        assert arg["op"] == "SCMP_CMP_MASKED_EQ" and arg.get("valueTwo", 0) == 0
        assert arg["value"] & CLONE_NAMESPACE_FLAGS == CLONE_NAMESPACE_FLAGS
    (clone3,) = _rules(profile, "clone3")
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == 38  # ENOSYS
    assert "excludes" not in clone3 and "includes" not in clone3


def test_profile_keeps_the_engine_default_for_everything_else() -> None:
    profile = seccomp.docker_profile()
    allowed = {
        n
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args") and not rule.get("includes")
        for n in rule["names"]
    }
    assert set(ESSENTIAL) <= allowed
    assert len(allowed) > 300  # moby's default allow list, not a hand-made short one
    assert harden(profile) == profile  # the shipped file is what the generator makes


def test_bwrap_filter_is_a_bpf_program() -> None:
    program = seccomp.bwrap_filter()
    assert program and len(program) % 8 == 0  # struct sock_filter is 8 bytes
    assert len(program) // 8 < 4096  # BPF_MAXINSNS
    assert seccomp.bwrap_filter() is program  # built once per process


def test_bwrap_refuses_to_run_without_its_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # as if libseccomp were missing
    seccomp.bwrap_filter.cache_clear()
    try:
        with pytest.raises(SandboxError, match="libseccomp"):
            seccomp.bwrap_filter()
        with pytest.raises(SandboxError, match="seccomp filter"):
            BwrapSandbox().run("print('unfiltered')", "python", Limits())
    finally:
        monkeypatch.undo()
        seccomp.bwrap_filter.cache_clear()
    assert seccomp.bwrap_filter()


class _Engine:
    """Answers /version the way each engine documents it (only the fields we read)."""

    def __init__(self, components: list[str]) -> None:
        self.components = components

    def version(self) -> dict[str, Any]:
        return {"Components": [{"Name": name, "Version": "1"} for name in self.components]}


def test_docker_gets_the_profile_inline(tmp_path: Path) -> None:
    engine = cast(Any, _Engine(["Engine", "containerd", "runc"]))
    box = DockerSandbox(client=engine, seccomp_dir=str(tmp_path))
    option = box.seccomp_option()
    assert option.startswith("seccomp={")
    assert json.loads(option.removeprefix("seccomp=")) == seccomp.docker_profile()
    assert list(tmp_path.iterdir()) == []


def test_podman_gets_a_path_to_the_profile(tmp_path: Path) -> None:
    engine = cast(Any, _Engine(["Podman Engine", "Conmon"]))
    box = DockerSandbox(client=engine, seccomp_dir=str(tmp_path))
    option = box.seccomp_option()
    path = Path(option.removeprefix("seccomp="))
    assert path.parent == tmp_path and path.is_file()
    assert json.loads(path.read_text()) == seccomp.docker_profile()


def test_default_profile_dir_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = Path(write_profile())
    assert path.read_text() == seccomp.docker_profile_text()
    info = path.parent.stat()
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
    assert Path(write_profile()) == path  # same content, same name
    assert len(list(path.parent.iterdir())) == 1  # no temp files left behind


@pytest.mark.parametrize("attack", ["group-writable", "symlink"])
def test_default_profile_dir_is_refused_when_others_could_change_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    target = tmp_path / f"switchboard-seccomp-{os.getuid()}"
    if attack == "symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        target.symlink_to(elsewhere)
    else:
        target.mkdir()
        target.chmod(0o770)
    with pytest.raises(SandboxError, match="not a private directory"):
        write_profile()


def test_an_engine_that_drops_the_filter_fails_the_run(docker_sandbox: DockerSandbox) -> None:
    class Unconfined(DockerSandbox):
        def seccomp_option(self) -> str:
            return "seccomp=unconfined"  # what an engine ignoring our profile amounts to

    box = Unconfined(image=docker_sandbox.image, client=docker_sandbox.client)
    with pytest.raises(SandboxError, match="without its seccomp filter"):
        box.run("print('ran unconfined')", "python", Limits())


def test_the_engine_reads_the_profile_we_ship(docker_sandbox: DockerSandbox) -> None:
    option = docker_sandbox.seccomp_option()
    value = option.removeprefix("seccomp=")
    text = value if value.startswith("{") else Path(value).read_text()
    assert json.loads(text) == seccomp.docker_profile()


def test_a_profile_the_engine_cannot_open_names_the_setting(
    docker_sandbox: DockerSandbox,
) -> None:
    if not docker_sandbox.seccomp_option().startswith("seccomp=/"):
        pytest.skip("this engine takes the profile inline")

    class ElsewhereSandbox(DockerSandbox):  # a worker whose /tmp the engine does not see
        def seccomp_option(self) -> str:
            self._seccomp_option = "seccomp=/nonexistent/switchboard/seccomp.json"
            return self._seccomp_option

    box = ElsewhereSandbox(image=docker_sandbox.image, client=docker_sandbox.client)
    with pytest.raises(SandboxError, match="SANDBOX_SECCOMP_DIR"):
        box.run("print('never')", "python", Limits())
