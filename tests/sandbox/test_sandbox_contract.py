"""Contract tests every backend passes: output, exit codes, languages, extra files."""

from __future__ import annotations

import pytest

from sandbox.base import Limits, RunResult, Sandbox

pytestmark = pytest.mark.timeout(60)


def test_python_stdout_stderr_and_exit_code(sandbox: Sandbox) -> None:
    code = "import sys, json\nprint(json.dumps({'a': 1}))\nprint('oops', file=sys.stderr)\n"
    code += "sys.exit(3)\n"
    result = sandbox.run(code, "python", Limits())
    assert isinstance(result, RunResult)
    assert result.stdout == '{"a": 1}\n'
    assert result.stderr == "oops\n"
    assert result.exit_code == 3 and result.outcome == "error"
    assert not (result.timed_out or result.oom_killed or result.stdout_truncated)
    assert 0 < result.duration_s < 10


def test_sh_runs_as_nobody_in_the_work_dir(sandbox: Sandbox) -> None:
    result = sandbox.run("id -u; pwd; echo $HOME", "sh", Limits())
    assert result.ok, result
    assert result.stdout.split() == ["65534", "/work", "/work"]


def test_extra_files_land_in_the_work_dir(sandbox: Sandbox) -> None:
    code = "import helper\nprint(helper.VALUE, open('data.txt').read())\n"
    files = {"helper.py": "VALUE = 42\n", "data.txt": "héllo"}
    result = sandbox.run(code, "python", Limits(), files=files)
    assert result.ok, result
    assert result.stdout == "42 héllo\n"


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/b", ""])
def test_file_names_cannot_leave_the_work_dir(sandbox: Sandbox, name: str) -> None:
    with pytest.raises(ValueError):
        sandbox.run("print(1)", "python", Limits(), files={name: "x"})


def test_unknown_language_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError):
        sandbox.run("puts 1", "ruby", Limits())  # type: ignore[arg-type]
