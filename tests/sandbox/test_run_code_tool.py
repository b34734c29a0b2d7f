"""The run_code tool: schema, argument validation and result shaping, with a fake sandbox."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from orchestrator.tools import run_code
from sandbox import DISABLED_MESSAGE, Limits, RunResult, SandboxError


class FakeSandbox:
    """Records calls and returns a canned result (or raises)."""

    name = "fake"

    def __init__(self, result: RunResult | None = None, error: Exception | None = None) -> None:
        self.result = result or RunResult(stdout="hi\n", stderr="", exit_code=0, duration_s=0.1)
        self.error = error
        self.calls: list[tuple[str, str, Limits]] = []

    def run(
        self,
        code: str,
        language: str,
        limits: Limits,
        files: Mapping[str, str] | None = None,
    ) -> RunResult:
        self.calls.append((code, language, limits))
        if self.error is not None:
            raise self.error
        return self.result


def _call(args: Any, sandbox: Any, limits: Limits | None = None) -> tuple[dict, list]:
    seen: list[tuple[str, str]] = []
    raw = args if isinstance(args, str) else json.dumps(args)
    out = run_code.execute(
        raw, sandbox, limits or Limits(), on_outcome=lambda b, o: seen.append((b, o))
    )
    json.dumps(out)  # always JSON-able for the tool message
    return out, seen


def test_schema_is_an_openai_function_tool() -> None:
    fn = run_code.SCHEMA["function"]
    assert run_code.SCHEMA["type"] == "function" and fn["name"] == "run_code"
    params = fn["parameters"]
    assert params["required"] == ["code"]
    assert set(params["properties"]) == {"code", "language"}
    assert params["additionalProperties"] is False
    assert params["properties"]["language"]["enum"] == ["python", "sh"]
    json.dumps(run_code.SCHEMA)


def test_runs_with_operator_limits_and_defaults_to_python() -> None:
    box = FakeSandbox()
    limits = Limits(wall_time_s=5)
    out, seen = _call({"code": "print('hi')"}, box, limits)
    assert box.calls == [("print('hi')", "python", limits)]
    assert out["stdout"] == "hi\n" and out["exit_code"] == 0
    assert set(out) >= {"stdout", "stderr", "exit_code", "timed_out", "oom_killed", "duration_s"}
    assert seen == [("fake", "ok")]


@pytest.mark.parametrize(
    "args",
    [
        {"code": "x", "limits": {"wall_time_s": 999}},
        {"code": "x", "network": True},
        {"code": "x", "image": "evil:latest"},
        {"code": "x", "backend": "host"},
    ],
)
def test_model_cannot_change_limits_image_or_backend(args: dict) -> None:
    box = FakeSandbox()
    out, seen = _call(args, box)
    assert "error" in out and "unknown argument" in out["error"]
    assert box.calls == []
    assert seen == [("fake", "invalid")]


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        json.dumps({}),
        json.dumps({"code": ""}),
        json.dumps({"code": 42}),
        json.dumps({"code": "x", "language": "ruby"}),
        json.dumps({"code": "x" * (run_code.MAX_CODE_CHARS + 1)}),
    ],
)
def test_bad_arguments_are_reported_not_run(raw: str) -> None:
    box = FakeSandbox()
    out, seen = _call(raw, box)
    assert set(out) == {"error"}
    assert box.calls == []
    assert seen == [("fake", "invalid")]


def test_no_sandbox_means_disabled_never_the_host() -> None:
    out, seen = _call({"code": "print(1)"}, None)
    assert out == {"error": DISABLED_MESSAGE}
    assert seen == [("none", "disabled")]


def test_backend_failure_is_an_error_message() -> None:
    out, seen = _call({"code": "print(1)"}, FakeSandbox(error=SandboxError("engine gone")))
    assert "did not run" in out["error"]
    assert seen == [("fake", "failed")]


def test_kills_and_truncation_are_spelled_out() -> None:
    result = RunResult(
        stdout="x" * 10,
        stderr="",
        exit_code=137,
        duration_s=2.0,
        timed_out=True,
        stdout_truncated=True,
    )
    out, seen = _call({"code": "while True: print('x')"}, FakeSandbox(result), Limits())
    assert out["timed_out"] and out["stdout_truncated"]
    assert "[stdout truncated at 65536 bytes]" in out["stdout"]
    assert "wall-time limit" in out["stderr"]
    assert seen == [("fake", "timeout")]


def test_oom_outcome() -> None:
    result = RunResult(stdout="", stderr="", exit_code=137, duration_s=0.3, oom_killed=True)
    out, seen = _call({"code": "x = ' ' * 10**10", "language": "python"}, FakeSandbox(result))
    assert out["oom_killed"] and "memory limit of 256 MiB" in out["stderr"]
    assert seen == [("fake", "oom")]
