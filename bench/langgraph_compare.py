"""LangGraph + PostgresSaver on the Switchboard bench's workload, for a side-by-side figure.

Run from the project venv. It makes a venv of its own (default bench/.venv-langgraph,
git-ignored; LangGraph is never a dependency of the product) and pip-installs `langgraph`,
`langgraph-checkpoint-postgres`, `psycopg[binary]`, `psycopg-pool` and the SAME litellm
version as the project's into it; creates a fresh database `sb_bench_lg_<pid>` on the local
Postgres; writes the workload spec (the `bench_pair` team's system prompts, tool definitions
and tier parameters, taken from the product's own modules) and runs bench/_langgraph_side.py
in that venv: a supervisor and two workers as a StateGraph with AsyncPostgresSaver, each node
one model call through litellm's scripted provider - the model path the Switchboard bench
uses - one run at a time and `--lanes` (50) runs in flight. Prints its JSON lines.

Compare with `step_overhead.py --team bench_pair --modes in_process,in_process_50_runs`, or
run bench/compare.py, which interleaves both and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

DEFAULT_VENV = c.ROOT / "bench" / ".venv-langgraph"
DEFAULT_DB = f"sb_bench_lg_{os.getpid()}"
SIDE = c.ROOT / "bench" / "_langgraph_side.py"
TEAM = "bench_pair"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _installed(python: Path) -> dict[str, str]:
    """Versions of the comparison's packages in the venv (empty when one is missing)."""
    probe = (
        "import json; from importlib import metadata as m\n"
        "names = ['langgraph', 'langgraph-checkpoint-postgres', 'psycopg', 'psycopg-pool',"
        " 'litellm']\n"
        "try:\n"
        "    print(json.dumps({n: m.version(n) for n in names}))\n"
        "except m.PackageNotFoundError:\n"
        "    print('{}')\n"
    )
    if not python.exists():
        return {}
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    return json.loads(done.stdout or "{}") if done.returncode == 0 else {}


def ensure_venv(venv: Path, langgraph: str, reinstall: bool = False) -> dict[str, str]:
    """Create the comparison's venv and install into it, once; returns the versions."""
    python = venv_python(venv)
    litellm = metadata.version("litellm")  # the project's: the model path must be the same
    versions = {} if reinstall else _installed(python)
    if versions and versions.get("litellm") == litellm:
        return versions
    if not python.exists():
        print(f"creating {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
    print(f"installing {langgraph} and litellm=={litellm} into {venv} ...", file=sys.stderr)
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            langgraph,
            "langgraph-checkpoint-postgres",
            "psycopg[binary]",
            "psycopg-pool",
            f"litellm=={litellm}",
        ],
        check=True,
    )
    versions = _installed(python)
    if not versions:
        raise SystemExit(f"{venv}: the packages did not install (see pip's output above)")
    return versions


def workload_spec(teams: Path) -> dict[str, Any]:
    """What the Switchboard side sends, taken from the product: the LangGraph nodes build the
    same messages around it."""
    from orchestrator import prompts, protocol
    from orchestrator import state as st
    from orchestrator.settings import Settings
    from orchestrator.teams import load_teams

    config = load_teams(teams)
    team = config.teams[TEAM]
    keep = team.limits.keep_last_messages
    initial = st.initial_state(request="-", team=TEAM, next="supervisor")
    settings = Settings()  # type: ignore[call-arg]
    return {
        "team": TEAM,
        "keep": keep,
        "timeout_s": settings.model_timeout_s,
        "tiers": {
            name: {"model": tier.model, "params": dict(tier.params)}
            for name, tier in config.tiers.items()
        },
        "supervisor": {
            "tier": team.supervisor.tier,
            "system": prompts.supervisor_messages(team, initial, keep)[0]["content"],
            "tools": protocol.supervisor_tools(team),
        },
        "workers": [
            {
                "name": w.name,
                "tier": w.tier,
                "role_line": w.role.strip().splitlines()[0],
                "system": prompts.worker_messages(team, w, initial, "-", keep, None)[0]["content"],
            }
            for w in team.workers
        ],
    }


def run_side(
    python: Path, spec_path: Path, dsn: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Run the LangGraph half in its venv; its JSON lines, echoed as they come."""
    command = [
        str(python),
        str(SIDE),
        "--spec",
        str(spec_path),
        "--dsn",
        dsn,
        "--runs",
        str(args.runs),
        "--lanes",
        str(args.lanes),
        "--runs-per-lane",
        str(args.runs_per_lane),
        "--modes",
        args.modes,
        "--durability",
        args.durability,
        "--pool-size",
        str(args.pool_size),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.Popen(command, cwd=c.ROOT, env=env, stdout=subprocess.PIPE, text=True)
    records = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            records.append(json.loads(line))
            c.emit(records[-1])
        else:
            print(line, end="", file=sys.stderr)
    if proc.wait() != 0:
        raise SystemExit(f"the LangGraph side failed (exit {proc.returncode})")
    return records


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The first run installs LangGraph (needs PyPI); later runs reuse the venv.",
    )
    p.add_argument("--runs", type=int, default=100, help="one at a time: runs (default 100)")
    p.add_argument("--lanes", type=int, default=50, help="runs in flight (default 50)")
    p.add_argument("--runs-per-lane", type=int, default=4, help="runs per lane (default 4)")
    p.add_argument(
        "--modes",
        default="one_at_a_time,in_flight",
        help="one_at_a_time, in_flight, or both (default)",
    )
    p.add_argument(
        "--durability",
        choices=("sync", "async", "exit"),
        default="sync",
        help="LangGraph's durability: sync (default) commits every superstep's checkpoint "
        "before the next starts, as Switchboard commits every step; async (LangGraph's own "
        "default) writes it while the next step runs",
    )
    p.add_argument(
        "--pool-size", type=int, default=20, help="psycopg pool connections (default 20)"
    )
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the comparison's venv")
    p.add_argument(
        "--langgraph",
        default="langgraph",
        help="pip requirement, e.g. 'langgraph==1.2.*' (an existing venv: with --reinstall)",
    )
    p.add_argument("--reinstall", action="store_true", help="reinstall the venv's packages")
    p.add_argument("--keep", action="store_true", help="keep the LangGraph database")
    return p


def main() -> None:
    args = parser().parse_args()
    unknown = set(args.modes.split(",")) - {"one_at_a_time", "in_flight"}
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(sorted(unknown))}: one_at_a_time, in_flight")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    versions = ensure_venv(args.venv, args.langgraph, args.reinstall)
    print(f"LangGraph side: {json.dumps(versions)}", file=sys.stderr, flush=True)
    tmp = c.tempdir("sb-bench-lg-")
    spec_path = tmp / "spec.json"
    spec_path.write_text(json.dumps(workload_spec(c.teams_file(tmp))))
    url = c.create_database(DEFAULT_DB)
    try:
        run_side(venv_python(args.venv), spec_path, c.libpq_dsn(url), args)
    finally:
        if not args.keep:
            c.drop_database(url)


if __name__ == "__main__":
    main()
