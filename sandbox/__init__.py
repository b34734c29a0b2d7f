"""Running agent-generated code anywhere but on the host (see DESIGN.md, principle 7)."""

from sandbox.base import (
    LANGUAGES,
    Language,
    Limits,
    RunResult,
    Sandbox,
    SandboxError,
)
from sandbox.factory import DISABLED_MESSAGE, select_sandbox

__all__ = [
    "DISABLED_MESSAGE",
    "LANGUAGES",
    "Language",
    "Limits",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "select_sandbox",
]
