"""Escape suite: the same attacks against every real backend, asserting containment.

Each test checks both that the attack failed (as seen from the host where possible) and
that the result flags report what happened.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from sandbox.base import KIB, MIB, Limits, Sandbox
from sandbox.bwrap_backend import BwrapSandbox

pytestmark = pytest.mark.timeout(60)


def _marker() -> str:
    return f"sbx-marker-{uuid.uuid4().hex}"


def _host_processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (the host sees every container process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _wait_gone(marker: str, within_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while (left := _host_processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outbound address
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def test_network_is_unreachable(sandbox: Sandbox) -> None:
    server = socket.create_server(("0.0.0.0", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    code = f"""
import socket
for host, port in [({_host_ip()!r}, {port}), ("127.0.0.1", {port}), ("1.1.1.1", 53)]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        print("CONNECTED", host)
    except OSError as exc:
        print("blocked", host, type(exc).__name__)
try:
    socket.getaddrinfo("deb.debian.org", 80)
    print("RESOLVED")
except OSError as exc:
    print("no dns", type(exc).__name__)
"""
    try:
        result = sandbox.run(code, "python", Limits())
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing reached the host's listener
    finally:
        server.close()
    assert result.exit_code == 0, result
    assert "CONNECTED" not in result.stdout and "RESOLVED" not in result.stdout
    assert result.stdout.count("blocked") == 3


def test_writes_outside_the_work_dir_fail(sandbox: Sandbox, tmp_path: Path) -> None:
    name = f"escape-{uuid.uuid4().hex}"
    targets = [f"/usr/{name}", f"/etc/{name}", f"/{name}", f"/bin/{name}", str(tmp_path / name)]
    code = f"""
for path in {targets!r}:
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as exc:
        print("denied", path, type(exc).__name__)
open("/work/ok.txt", "w").write("fine")
print("work dir ok", open("/work/ok.txt").read())
"""
    result = sandbox.run(code, "python", Limits())
    assert result.exit_code == 0, result
    assert "WROTE" not in result.stdout
    assert "work dir ok fine" in result.stdout
    for target in targets:
        assert not os.path.exists(target)


def test_host_secrets_are_invisible(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SWITCHBOARD_TEST_SECRET", secret)
    code = f"""
import os
print(dict(os.environ))
for path in ["/etc/shadow", "/proc/1/environ", "/proc/self/environ", "/proc/{os.getpid()}/environ"]:
    try:
        print(path, open(path, "rb").read())
    except OSError as exc:
        print("unreadable", path, type(exc).__name__)
"""
    result = sandbox.run(code, "python", Limits())
    assert result.exit_code == 0, result
    assert secret not in result.stdout + result.stderr
    assert "SWITCHBOARD_TEST_SECRET" not in result.stdout
    assert "unreadable /etc/shadow" in result.stdout


def test_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    marker = _marker()
    limits = Limits(wall_time_s=3, pids=64)
    code = f"""
import os
n = 0
for _ in range(1000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 60", {marker!r}])
        finally:
            os._exit(0)
    n += 1
print("forked", n, flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    started = time.monotonic()
    result = sandbox.run(code, "python", limits)
    elapsed = time.monotonic() - started
    forked = int(result.stdout.split()[1])
    assert 0 < forked < limits.pids, result.stdout
    assert result.timed_out and not result.oom_killed
    assert elapsed < limits.wall_time_s + 5
    assert _wait_gone(marker) == []
    assert subprocess.run(["true"], timeout=5).returncode == 0  # the host can still fork


def test_memory_cap_kills_big_allocation(sandbox: Sandbox) -> None:
    code = 'data = b"\\x01" * (1024 * 1024 * 1024)\nprint("ALLOCATED", len(data))\n'
    result = sandbox.run(code, "python", Limits(memory_bytes=256 * MIB))
    assert "ALLOCATED" not in result.stdout
    assert result.oom_killed, result
    assert not result.timed_out and result.exit_code != 0


def test_infinite_loop_is_killed_at_wall_time(sandbox: Sandbox) -> None:
    marker = _marker()
    limits = Limits(wall_time_s=2)
    code = f"marker = {marker!r}\nwhile True:\n    pass\n"
    started = time.monotonic()
    result = sandbox.run(code, "python", limits)
    elapsed = time.monotonic() - started
    assert result.timed_out and not result.oom_killed
    assert result.exit_code != 0
    assert elapsed < limits.wall_time_s + 2, elapsed


def test_huge_output_is_truncated_and_marked(sandbox: Sandbox) -> None:
    code = (
        'import sys\nsys.stdout.write("x" * (10 * 1024 * 1024))\nprint("tail", file=sys.stderr)\n'
    )
    limits = Limits(output_bytes=64 * KIB)
    result = sandbox.run(code, "python", limits)
    assert result.exit_code == 0, result.stderr
    assert result.stdout_truncated
    assert len(result.stdout) == limits.output_bytes and set(result.stdout) == {"x"}
    assert result.stderr == "tail\n" and not result.stderr_truncated


def test_nothing_survives_the_run(sandbox: Sandbox) -> None:
    marker = _marker()
    code = f"""
import os, time
if os.fork() == 0:  # a daemon: double fork, new session, outlives its parent
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 60", {marker!r}])
    os._exit(0)
if os.fork() == 0:  # a zombie: exits and is never reaped
    os._exit(0)
time.sleep(0.5)
print("parent exits")
"""
    result = sandbox.run(code, "python", Limits())
    assert result.exit_code == 0, result
    assert "parent exits" in result.stdout
    assert _wait_gone(marker) == [], "a process started in the sandbox outlived the run"


# Namespaces and the kernel surface behind them (sandbox/seccomp.py). The probe runs inside
# the sandbox, makes each call by number and reports "ok" (an escape) or the errno.
PROBE = Path(__file__).with_name("syscall_probe.py").read_text()
CONFINED = {"CapEff": "0" * 16, "CapPrm": "0" * 16, "Seccomp": "2", "NoNewPrivs": "1"}
# clone3 hides its flags from seccomp, so it answers ENOSYS and glibc falls back to clone.
REFUSED_WITH = {"clone3(NEWUSER)": "ENOSYS"}


def _probe(sandbox: Sandbox) -> dict:
    result = sandbox.run(PROBE, "python", Limits(wall_time_s=30))
    assert result.exit_code == 0, result
    report = json.loads(result.stdout)
    if "skip" in report:
        pytest.skip(f"no system call table for {report['skip']} in syscall_probe.py")
    return report


def _assert_refused(report: dict) -> None:
    attempts = report["attempts"]
    assert attempts["unshare(NEWUSER|NEWNS)"] == "EPERM"  # no nested user namespace
    assert attempts == {name: REFUSED_WITH.get(name, "EPERM") for name in attempts}
    assert report["status"] == CONFINED
    # ...and ordinary fork, posix_spawn (clone3 -> clone fallback) and threads still work.
    assert report["controls"] == {"fork": "ok", "spawn": "ok", "thread": "ok"}


def test_namespaces_mounts_keyring_and_bpf_are_refused(sandbox: Sandbox) -> None:
    _assert_refused(_probe(sandbox))


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the x32 ABI is x86_64's")
def test_another_abi_does_not_get_around_the_filter(sandbox: Sandbox) -> None:
    """unshare by its x32 number: refused (Docker lists x32 too) or killed (bwrap: bad arch)."""
    code = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
result = libc.syscall(ctypes.c_long(272 | 0x40000000), ctypes.c_long(0x10000000))
print("unshare", "ok" if result == 0 else errno.errorcode[ctypes.get_errno()], flush=True)
"""
    result = sandbox.run(code, "python", Limits())
    if result.exit_code == 128 + signal.SIGSYS:
        assert result.stdout == ""
    else:
        assert result.exit_code == 0, result
        assert result.stdout in ("unshare EPERM\n", "unshare ENOSYS\n"), result


def test_bwrap_uses_disable_userns_where_bwrap_has_it() -> None:
    box = BwrapSandbox()
    version = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, check=False)
    if version.returncode != 0:
        pytest.skip("bubblewrap not installed")
    release = tuple(int(p) for p in version.stdout.split()[-1].split(".")[:2])
    assert box.disable_userns == (release >= (0, 8))  # the option came with bubblewrap 0.8.0
    command = box._command(["--seccomp", "3"], "python", Limits())
    assert "--unshare-user" in command and command[command.index("--seccomp") + 1] == "3"
    if box.disable_userns:
        assert {"--disable-userns", "--assert-userns-disabled"} <= set(command)


def test_bwrap_without_disable_userns_still_refuses_through_seccomp(
    bwrap_fallback: BwrapSandbox,
) -> None:
    command = bwrap_fallback._command([], "python", Limits())
    assert "--disable-userns" not in command and "--unshare-user" in command
    _assert_refused(_probe(bwrap_fallback))


def test_the_probe_sees_an_escape_in_an_unhardened_sandbox() -> None:
    """Without the hardening the same probe gets a full capability set (the issue's attack)."""
    if not shutil.which("bwrap") or not BwrapSandbox.available():
        pytest.skip("bubblewrap unavailable")
    command = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{name}"):
            command += ["--symlink", os.readlink(f"/{name}"), f"/{name}"]
        elif os.path.isdir(f"/{name}"):
            command += ["--ro-bind", f"/{name}", f"/{name}"]
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    with tempfile.TemporaryFile() as probe:
        probe.write(PROBE.encode())
        probe.seek(0)
        command += ["--file", str(probe.fileno()), "/probe.py", "--proc", "/proc", "--dev", "/dev"]
        command += ["--tmpfs", "/tmp", "--cap-drop", "ALL", "--", "python3", "/probe.py"]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            pass_fds=[probe.fileno()],
        )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"]["Seccomp"] == "0"
    if Path("/proc/sys/user/max_user_namespaces").read_text().strip() == "0":
        pytest.skip("this host refuses user namespaces to everyone")
    escaped = report["attempts"]["unshare(NEWUSER|NEWNS)"]
    assert escaped.startswith("ok CapEff="), report
    assert int(escaped.split("=")[1], 16) != 0  # a full capability set in the new namespace
