"""Docker backend: one throwaway, locked-down container per run (production default).

Talks to any Docker Engine API (Docker itself, or Podman's `podman system service`) through
the `docker` SDK; `docker.from_env()` honours DOCKER_HOST. The container has no network, a
read-only root, a small tmpfs work dir, no capabilities, no new privileges, the sandbox's
seccomp profile (sandbox/seccomp.py: no namespaces, mounts, keyring, bpf...), uid 65534 and
memory / CPU / pids caps; it is killed at the wall-time limit and always removed.

Docker takes the seccomp profile inline in SecurityOpt; Podman's Docker API reads it from a
file on the engine's host instead (an inline profile fails at create), so for Podman the
profile is written to a private directory first (SANDBOX_SECCOMP_DIR when the engine runs
elsewhere and shares a directory with us). The container's first process checks that a
filter and no-new-privileges are in force before anything of the program runs, so an engine
that drops the option fails the run instead of running it unconfined.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import stat
import tempfile
import time
import zlib
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
import requests.exceptions

from sandbox.base import (
    COMMAND,
    Language,
    Limits,
    OutputBuffer,
    RunResult,
    SandboxError,
    check_source,
)
from sandbox.seccomp import docker_profile_text

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "localhost/switchboard-sandbox:py3"
WORK_DIR = "/work"
LABEL = "switchboard.sandbox"

# Exit code and stderr line of a container whose process runs without the seccomp filter or
# without no-new-privileges: the engine ignored our options, so the program never starts.
UNCONFINED_EXIT = 125
UNCONFINED_MARK = "switchboard-sandbox: unconfined"

# Runs as the container's first process: refuses to go on unless seccomp filtering (mode 2)
# and no-new-privileges are in force, writes the files into the tmpfs work dir (which does
# not exist before start, so they cannot be copied in) and execs the program in its place.
# Only built-in modules, so it works on a python3-minimal image too. argv: name, data pairs
# (zlib + base64), then "--", then the program's argv.
_BOOTSTRAP = (
    "import binascii,os,sys,zlib\n"
    "s=open('/proc/self/status').read()\n"
    "if '\\nSeccomp:\\t2\\n' not in s or '\\nNoNewPrivs:\\t1\\n' not in s:\n"
    f"    sys.stderr.write({UNCONFINED_MARK!r});sys.exit({UNCONFINED_EXIT})\n"
    "a=sys.argv[1:];i=a.index('--')\n"
    "for n,d in zip(a[:i:2],a[1:i:2]):\n"
    "    open(n,'wb').write(zlib.decompress(binascii.a2b_base64(d)))\n"
    "os.execvp(a[i+1],a[i+1:])\n"
)


class DockerSandbox:
    """Sandbox on a Docker Engine API. The image must contain /usr/bin/python3."""

    name = "docker"

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        client: docker.DockerClient | None = None,
        seccomp_dir: str | None = None,
    ):
        self.image = image
        self.seccomp_dir = seccomp_dir
        self._client = client
        self._seccomp_option: str | None = None

    @property
    def client(self) -> docker.DockerClient:
        """The engine client, created on first use so construction never touches the network."""
        if self._client is None:
            self._client = docker.from_env(timeout=30)
        return self._client

    def ping(self) -> bool:
        """True when the engine answers; used by backend selection."""
        try:
            return bool(self.client.ping())
        except Exception:  # any failure means "no engine here"
            return False

    def run(
        self,
        code: str,
        language: Language,
        limits: Limits,
        files: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run the program in a fresh container and remove the container afterwards."""
        sources = check_source(code, language, files)
        payload: list[str] = []
        for name, text in sources.items():
            payload += [name, base64.b64encode(zlib.compress(text.encode())).decode()]
        command = ["python3", "-I", "-c", _BOOTSTRAP, *payload, "--", *COMMAND[language]]
        container = None
        try:
            options = self._host_options(limits)
            container = self.client.containers.create(self.image, command=command, **options)
            result = self._start_and_collect(container, limits)
        except docker.errors.ImageNotFound as exc:
            raise SandboxError(f"sandbox image {self.image!r} not found: build it first") from exc
        except docker.errors.APIError as exc:
            if "opening seccomp profile failed" in str(exc):  # Podman, profile not on its host
                raise SandboxError(
                    f"the engine cannot read the seccomp profile {self._seccomp_option!r}: set"
                    " SANDBOX_SECCOMP_DIR to a directory at the same path here and on its host"
                ) from exc
            raise SandboxError(f"docker sandbox failed: {exc}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise SandboxError(f"docker sandbox failed: {exc}") from exc
        finally:
            if container is not None:
                self._remove(container)
        if result.exit_code == UNCONFINED_EXIT and result.stderr.startswith(UNCONFINED_MARK):
            raise SandboxError(
                "the container engine started the sandbox without its seccomp filter or"
                " no-new-privileges; refusing to run code there"
            )
        return result

    def _host_options(self, limits: Limits) -> dict[str, Any]:
        """Container settings; every one of them comes from operator-controlled `limits`."""
        opts: dict[str, Any] = {
            "detach": True,
            "user": "65534:65534",
            "working_dir": WORK_DIR,
            "environment": {
                "HOME": WORK_DIR,
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            "hostname": "sandbox",
            "read_only": True,
            "tmpfs": {
                WORK_DIR: f"rw,nosuid,nodev,size={limits.work_dir_bytes},mode=1777",
                "/tmp": f"rw,nosuid,nodev,size={limits.work_dir_bytes},mode=1777",
            },
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges", self.seccomp_option()],
            "mem_limit": limits.memory_bytes,
            "memswap_limit": limits.memory_bytes,  # no swap: the cap is the cap
            "nano_cpus": int(limits.cpus * 1e9),
            "pids_limit": limits.pids,
            "labels": {LABEL: "1"},
        }
        if not limits.network:
            opts["network_disabled"] = True
            opts["network_mode"] = "none"
        return opts

    def seccomp_option(self) -> str:
        """The `seccomp=...` security option in the form this engine accepts (cached).

        Docker wants the profile itself; Podman wants a path on its host and answers an
        inline profile with "opening seccomp profile failed" at create.
        """
        if self._seccomp_option is None:
            if _is_podman(self.client):
                try:
                    path = write_profile(self.seccomp_dir)
                except OSError as exc:
                    raise SandboxError(
                        f"cannot write the seccomp profile for Podman: {exc}"
                    ) from exc
                self._seccomp_option = f"seccomp={path}"
            else:
                self._seccomp_option = f"seccomp={docker_profile_text()}"
        return self._seccomp_option

    def _start_and_collect(self, container: Any, limits: Limits) -> RunResult:
        container.start()
        started = time.monotonic()
        timed_out = False
        try:
            status = container.wait(timeout=limits.wall_time_s)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            with contextlib.suppress(docker.errors.APIError):  # it may have just exited
                container.kill()
            status = container.wait(timeout=30)
        duration = time.monotonic() - started
        exit_code = int(status.get("StatusCode", -1))
        container.reload()
        state = container.attrs.get("State", {})
        oom = bool(state.get("OOMKilled")) or (exit_code == 137 and not timed_out)
        out = self._read_logs(container, limits.output_bytes, stdout=True)
        err = self._read_logs(container, limits.output_bytes, stdout=False)
        return RunResult(
            stdout=out.text(),
            stderr=err.text(),
            exit_code=exit_code,
            duration_s=round(duration, 3),
            timed_out=timed_out,
            oom_killed=oom and not timed_out,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
        )

    @staticmethod
    def _read_logs(container: Any, cap: int, *, stdout: bool) -> OutputBuffer:
        """Stream one log stream, keeping at most `cap` bytes in memory."""
        buf = OutputBuffer(cap)
        stream = container.logs(stdout=stdout, stderr=not stdout, stream=True, follow=False)
        try:
            for chunk in stream:
                if not buf.feed(chunk):
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return buf

    @staticmethod
    def _remove(container: Any) -> None:
        """Remove the container whatever happened; a leftover would keep its resources."""
        for _ in range(3):
            try:
                container.remove(force=True, v=True)
                return
            except docker.errors.NotFound:
                return
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                log.warning("removing sandbox container %s failed: %s", container.id, exc)
                time.sleep(0.2)


def _is_podman(client: docker.DockerClient) -> bool:
    """True when the engine behind the Docker API is Podman (it names itself in /version)."""
    components = client.version().get("Components") or []
    return any(str(c.get("Name", "")).startswith("Podman") for c in components)


def write_profile(directory: str | None = None) -> str:
    """Write the seccomp profile where a local Podman can read it; return its path.

    Without `directory`, a directory private to this uid under the temp dir, refused if
    anyone else owns it or can write to it (it decides what the sandbox may do). The file is
    named by its content and replaced atomically, so concurrent workers agree.
    """
    text = docker_profile_text()
    if directory is None:
        directory = os.path.join(tempfile.gettempdir(), f"switchboard-seccomp-{os.getuid()}")
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        info = os.lstat(directory)
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.getuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            raise SandboxError(f"{directory} is not a private directory of this user")
    else:
        os.makedirs(directory, exist_ok=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = os.path.join(directory, f"seccomp-{digest}.json")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".seccomp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # a rootful engine reads it as root, a rootless one as us
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
