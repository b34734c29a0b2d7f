"""The `run_code` tool: lets a worker run a snippet in the sandbox and read what it printed.

The model chooses only the code and its language. Which backend, which image and which
limits apply is operator configuration passed in by the caller; arguments the schema does not
name are refused, so nothing the model writes can loosen the sandbox.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sandbox import DISABLED_MESSAGE, LANGUAGES, Limits, RunResult, Sandbox, SandboxError

log = logging.getLogger(__name__)

NAME = "run_code"
MAX_CODE_CHARS = 64 * 1024

# OpenAI / litellm tool-calling schema.
SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": NAME,
        "description": (
            "Run a short program in an isolated sandbox (no network, no access to the host, "
            "time and memory limited) and return its stdout, stderr and exit code. "
            "Print whatever you need to see."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "The complete program source.",
                    "maxLength": MAX_CODE_CHARS,
                },
                "language": {
                    "type": "string",
                    "enum": list(LANGUAGES),
                    "description": "Interpreter to run the program with.",
                    "default": "python",
                },
            },
            "required": ["code"],
            "additionalProperties": False,
        },
    },
}

# Receives (backend name, outcome) once per call, e.g. to count
# switchboard_sandbox_runs_total{backend,outcome}. Outcomes: ok, error, timeout, oom,
# invalid (bad arguments), disabled (no sandbox), failed (the backend itself broke).
OutcomeHook = Callable[[str, str], None]


class ToolArgumentError(ValueError):
    """The model's arguments do not fit the schema."""


def parse_arguments(arguments_json: str) -> tuple[str, str]:
    """Validate the model's JSON arguments and return (code, language)."""
    try:
        args = json.loads(arguments_json or "{}")
    except json.JSONDecodeError as exc:
        raise ToolArgumentError(f"arguments are not valid JSON: {exc.msg}") from exc
    if not isinstance(args, dict):
        raise ToolArgumentError("arguments must be a JSON object")
    allowed = set(SCHEMA["function"]["parameters"]["properties"])
    extra = sorted(set(args) - allowed)
    if extra:
        raise ToolArgumentError(f"unknown argument(s) {', '.join(extra)}; only code and language")
    code = args.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ToolArgumentError("'code' must be a non-empty string")
    if len(code) > MAX_CODE_CHARS:
        raise ToolArgumentError(f"'code' is longer than {MAX_CODE_CHARS} characters")
    language = args.get("language", "python")
    if language not in LANGUAGES:
        raise ToolArgumentError(f"'language' must be one of {', '.join(LANGUAGES)}")
    return code, language


def result_payload(result: RunResult, limits: Limits) -> dict[str, Any]:
    """The tool message content: JSON-able, with truncation and kills spelled out for the model."""
    stdout, stderr = result.stdout, result.stderr
    if result.stdout_truncated:
        stdout += f"\n[stdout truncated at {limits.output_bytes} bytes]"
    if result.stderr_truncated:
        stderr += f"\n[stderr truncated at {limits.output_bytes} bytes]"
    if result.timed_out:
        stderr += f"\n[killed: wall-time limit of {limits.wall_time_s:g} s reached]"
    if result.oom_killed:
        stderr += f"\n[killed: memory limit of {limits.memory_bytes // (1024 * 1024)} MiB reached]"
    return {
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "oom_killed": result.oom_killed,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "duration_s": result.duration_s,
    }


def execute(
    arguments_json: str,
    sandbox: Sandbox | None,
    limits: Limits,
    *,
    on_outcome: OutcomeHook | None = None,
) -> dict[str, Any]:
    """Handle one run_code tool call and return the dict for the tool message.

    Bad arguments, a disabled sandbox and a broken backend come back as {"error": ...} so the
    model can read and correct them; only unexpected bugs raise. `on_outcome` always fires.
    """
    backend = sandbox.name if sandbox is not None else "none"
    outcome = "failed"
    try:
        try:
            code, language = parse_arguments(arguments_json)
        except ToolArgumentError as exc:
            outcome = "invalid"
            return {"error": str(exc)}
        if sandbox is None:
            outcome = "disabled"
            return {"error": DISABLED_MESSAGE}
        try:
            result = sandbox.run(code, language, limits)  # type: ignore[arg-type]
        except ValueError as exc:  # rejected source (too large, bad file name)
            outcome = "invalid"
            return {"error": str(exc)}
        except SandboxError as exc:
            log.error("sandbox %s failed: %s", backend, exc)
            return {"error": "the sandbox is unavailable right now; the code did not run"}
        outcome = result.outcome
        return result_payload(result, limits)
    finally:
        if on_outcome is not None:
            on_outcome(backend, outcome)
