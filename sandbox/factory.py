"""Choosing a backend: Docker when an engine answers, else bubblewrap, else none at all.

There is deliberately no "run it on the host" fallback: with neither backend the caller gets
None and DISABLED_MESSAGE, and the run_code tool reports code execution as disabled.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping

from sandbox.base import Sandbox, SandboxError
from sandbox.bwrap_backend import BwrapSandbox
from sandbox.docker_backend import DEFAULT_IMAGE, DockerSandbox
from sandbox.seccomp import bwrap_filter

log = logging.getLogger(__name__)

DISABLED_MESSAGE = "code execution disabled: no Docker engine and no bubblewrap"
BACKENDS = ("docker", "bwrap")


def select_sandbox(env: Mapping[str, str] | None = None) -> Sandbox | None:
    """Build the configured sandbox from SANDBOX_BACKEND / SANDBOX_IMAGE (operator config).

    SANDBOX_SECCOMP_DIR is where the seccomp profile is written for a Podman engine; it must
    be the same path on the engine's host (default: a private directory under /tmp, which
    works when the engine runs on this host).

    An explicitly requested backend that is unusable raises SandboxError, because silently
    picking another one would hide a misconfiguration. With no choice made, Docker wins when
    its engine answers a ping, then bubblewrap; otherwise None (and a warning) is returned.
    """
    env = os.environ if env is None else env
    choice = env.get("SANDBOX_BACKEND", "").strip().lower()
    image = env.get("SANDBOX_IMAGE", "").strip() or DEFAULT_IMAGE
    seccomp_dir = env.get("SANDBOX_SECCOMP_DIR", "").strip() or None
    if choice and choice not in (*BACKENDS, "auto"):
        raise SandboxError(f"SANDBOX_BACKEND={choice!r}: expected one of docker, bwrap, auto")
    if choice == "docker":
        docker_box = DockerSandbox(image=image, seccomp_dir=seccomp_dir)
        if not docker_box.ping():
            raise SandboxError("SANDBOX_BACKEND=docker but no Docker engine answers (DOCKER_HOST?)")
        return docker_box
    if choice == "bwrap":
        bwrap_filter()  # without libseccomp this is the clearer error
        if not BwrapSandbox.available():
            raise SandboxError("SANDBOX_BACKEND=bwrap but bubblewrap is missing or not permitted")
        return BwrapSandbox()
    docker_box = DockerSandbox(image=image, seccomp_dir=seccomp_dir)
    if docker_box.ping():
        return docker_box
    if BwrapSandbox.available():
        return BwrapSandbox()
    if shutil.which("bwrap"):
        try:
            bwrap_filter()
        except SandboxError as exc:  # say why the installed bubblewrap is not used
            log.warning("bubblewrap not used: %s", exc)
    log.warning(DISABLED_MESSAGE)
    return None
