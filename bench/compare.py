"""Switchboard against LangGraph + PostgresSaver, interleaved in one session; medians and ratios.

Each repetition runs both sides in fresh processes on fresh databases, alternating which
goes first (rep 1: Switchboard then LangGraph, rep 2: LangGraph then Switchboard, ...), so
drift in the machine's load falls on both alike:

- Switchboard: `step_overhead.py --team bench_pair --modes in_process,in_process_50_runs`
- LangGraph:   `langgraph_compare.py` (its own venv; same workload, same model)

The workload on both sides is a supervisor and two workers, 7 sequential model calls a run,
the model the offline scripted provider through litellm (zero latency), state in the local
Postgres. LangGraph's side calls `litellm.acompletion`; Switchboard's gateway takes its direct
path to the provider's litellm handler unless SWITCHBOARD_LLM_DIRECT=false is set. The
figure is ms per model call: a side's wall time over its model calls, one run at a time and
`--lanes` (50) runs in flight. `ratio` = Switchboard / LangGraph (below 1:
Switchboard is faster); issue 15's target is <= 0.8 at both.

Prints one JSON line per side, mode and rep (`metric: compare_rep`), then one per mode with
the medians and the ratio (`metric: compare`), then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
import langgraph_compare as lg

BENCH = c.ROOT / "bench"
TARGET_RATIO = 0.8
FIGURES = ("ms_per_call", "cpu_ms_per_call", "peak_rss_mb")


def _run(name: str, command: list[str], log: Path) -> list[dict[str, Any]]:
    """A side in its own process; its JSON lines (stderr goes to `log`)."""
    with open(log, "ab") as err:
        done = subprocess.run(command, cwd=c.ROOT, stdout=subprocess.PIPE, stderr=err, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{name} failed (exit {done.returncode}); its log {log}:\n{tail}")
    lines = done.stdout.decode().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def switchboard(args: argparse.Namespace, log: Path) -> dict[str, dict[str, Any]]:
    records = _run(
        "step_overhead.py",
        [
            sys.executable,
            str(BENCH / "step_overhead.py"),
            "--team",
            "bench_pair",
            "--modes",
            "in_process,in_process_50_runs",
            "--runs",
            str(args.runs),
            "--lanes",
            str(args.lanes),
            "--runs-per-lane",
            str(args.runs_per_lane),
        ],
        log,
    )
    return {
        ("one" if r["runs_in_flight"] == 1 else "many"): r
        for r in records
        if r.get("metric") == "step_overhead"
    }


def langgraph(args: argparse.Namespace, log: Path) -> dict[str, dict[str, Any]]:
    records = _run(
        "langgraph_compare.py",
        [
            sys.executable,
            str(BENCH / "langgraph_compare.py"),
            "--runs",
            str(args.runs),
            "--lanes",
            str(args.lanes),
            "--runs-per-lane",
            str(args.runs_per_lane),
            "--durability",
            args.durability,
            "--venv",
            str(args.venv),
        ],
        log,
    )
    return {
        ("one" if r["runs_in_flight"] == 1 else "many"): r
        for r in records
        if r.get("metric") == "langgraph"
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: compare.py --reps 4. The first run installs LangGraph into "
        "bench/.venv-langgraph (needs PyPI).",
    )
    p.add_argument("--reps", type=int, default=4, help="repetitions per side (default 4)")
    p.add_argument("--runs", type=int, default=100, help="one at a time: runs (default 100)")
    p.add_argument("--lanes", type=int, default=50, help="runs in flight (default 50)")
    p.add_argument("--runs-per-lane", type=int, default=4, help="runs per lane (default 4)")
    p.add_argument(
        "--durability",
        choices=("sync", "async", "exit"),
        default="sync",
        help="LangGraph's durability (default sync: a checkpoint committed per superstep, "
        "as Switchboard commits one per step)",
    )
    p.add_argument("--venv", type=Path, default=lg.DEFAULT_VENV, help="LangGraph's venv")
    return p


def main() -> None:
    args = parser().parse_args()
    versions = lg.ensure_venv(args.venv, "langgraph")
    tmp = c.tempdir("sb-bench-compare-")
    load_start = os.getloadavg()[0]
    sides = {"switchboard": switchboard, "langgraph": langgraph}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        side: {"one": [], "many": []} for side in sides
    }
    started = time.perf_counter()
    for rep in range(1, args.reps + 1):
        order = list(sides) if rep % 2 else list(reversed(sides))
        for side in order:
            for mode, record in sides[side](args, tmp / f"{side}.log").items():
                results[side][mode].append(record)
                c.emit(
                    {
                        "metric": "compare_rep",
                        "rep": rep,
                        "side": side,
                        "runs_in_flight": record["runs_in_flight"],
                        **{k: record.get(k) for k in ("model_calls", "wall_s", *FIGURES)},
                    }
                )
    rows = []
    for mode in ("one", "many"):
        sb = results["switchboard"][mode]
        lgr = results["langgraph"][mode]
        if not sb or not lgr:
            continue
        row: dict[str, Any] = {
            "metric": "compare",
            "runs_in_flight": sb[0]["runs_in_flight"],
            "reps": args.reps,
        }
        for figure in FIGURES:
            a = c.median([r[figure] for r in sb if r.get(figure) is not None])
            b = c.median([r[figure] for r in lgr if r.get(figure) is not None])
            row[f"switchboard_{figure}"] = round(a, 3)
            row[f"langgraph_{figure}"] = round(b, 3)
            row[f"{figure}_ratio"] = round(a / b, 3) if b else None
        row["switchboard_ms_per_call_reps"] = [r["ms_per_call"] for r in sb]
        row["langgraph_ms_per_call_reps"] = [r["ms_per_call"] for r in lgr]
        row["ratio_target_max"] = TARGET_RATIO
        row["langgraph_durability"] = args.durability
        row["langgraph_version"] = versions.get("langgraph")
        row["litellm_version"] = versions.get("litellm")
        rows.append(row)
        c.emit(row)
    c.emit(
        {
            "metric": "compare_session",
            "reps": args.reps,
            "wall_s": round(time.perf_counter() - started, 1),
            "cpus": os.cpu_count(),
            "loadavg_1m_start": round(load_start, 2),
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
        }
    )
    print()
    print(
        c.table(
            [
                {
                    "runs in flight": r["runs_in_flight"],
                    "Switchboard ms/call": r["switchboard_ms_per_call"],
                    "LangGraph ms/call": r["langgraph_ms_per_call"],
                    "ratio": r["ms_per_call_ratio"],
                    "target": f"<= {TARGET_RATIO}",
                    "SB cpu ms/call": r["switchboard_cpu_ms_per_call"],
                    "LG cpu ms/call": r["langgraph_cpu_ms_per_call"],
                    "SB rss MB": r["switchboard_peak_rss_mb"],
                    "LG rss MB": r["langgraph_peak_rss_mb"],
                }
                for r in rows
            ],
            [
                "runs in flight",
                "Switchboard ms/call",
                "LangGraph ms/call",
                "ratio",
                "target",
                "SB cpu ms/call",
                "LG cpu ms/call",
                "SB rss MB",
                "LG rss MB",
            ],
        )
    )
    print(f"\nmedians of {args.reps} interleaved reps; logs in {tmp}")


if __name__ == "__main__":
    main()
