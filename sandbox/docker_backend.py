"""Docker backend: one throwaway, locked-down container per run (production default).

Talks to any Docker Engine API (Docker itself, or Podman's `podman system service`) through
the `docker` SDK; `docker.from_env()` honours DOCKER_HOST. The container has no network, a
read-only root, a small tmpfs work dir, no capabilities, no new privileges, uid 65534 and
memory / CPU / pids caps; it is killed at the wall-time limit and always removed.
"""

from __future__ import annotations

import base64
import contextlib
import logging
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

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "localhost/switchboard-sandbox:py3"
WORK_DIR = "/work"
LABEL = "switchboard.sandbox"

# Runs as the container's first process: writes the files into the tmpfs work dir (which does
# not exist before start, so they cannot be copied in) and execs the program in its place.
# Only built-in modules, so it works on a python3-minimal image too. argv: name, data pairs
# (zlib + base64), then "--", then the program's argv.
_BOOTSTRAP = (
    "import binascii,os,sys,zlib\n"
    "a=sys.argv[1:];i=a.index('--')\n"
    "for n,d in zip(a[:i:2],a[1:i:2]):\n"
    "    open(n,'wb').write(zlib.decompress(binascii.a2b_base64(d)))\n"
    "os.execvp(a[i+1],a[i+1:])\n"
)


class DockerSandbox:
    """Sandbox on a Docker Engine API. The image must contain /usr/bin/python3."""

    name = "docker"

    def __init__(self, image: str = DEFAULT_IMAGE, client: docker.DockerClient | None = None):
        self.image = image
        self._client = client

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
            container = self.client.containers.create(
                self.image, command=command, **self._host_options(limits)
            )
            return self._start_and_collect(container, limits)
        except docker.errors.ImageNotFound as exc:
            raise SandboxError(f"sandbox image {self.image!r} not found: build it first") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise SandboxError(f"docker sandbox failed: {exc}") from exc
        finally:
            if container is not None:
                self._remove(container)

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
            "security_opt": ["no-new-privileges"],
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
