"""The LangGraph half of the comparison; runs ONLY in the venv bench/langgraph_compare.py
makes (LangGraph is never a dependency of the product).

The workload is the Switchboard bench's `bench_pair` run rebuilt as a LangGraph StateGraph:
a supervisor node and two worker nodes (researcher, writer), each node making exactly one
model call, the supervisor deciding by tool calls (assign / review / finish_with_report) and
routing with `Command(goto=...)`. State is checkpointed by AsyncPostgresSaver on a fresh
database of the local Postgres, `durability="sync"` by default (every superstep's checkpoint
committed before the next starts: the guarantee Switchboard's one-transaction-per-step
gives). The model path is the one the Switchboard bench uses: `litellm.acompletion` with
the offline scripted provider (orchestrator/llm/scripted.py, loaded from this checkout), the
same litellm version, tier parameters, system prompts and tool definitions (handed over in
the spec file), and user prompts laid out the same way, so the scripted policy makes the same
7 decisions in the same order and only the framework differs.

    python _langgraph_side.py --spec SPEC.json --dsn DSN [--runs 100] [--lanes 50] ...

Prints JSON lines, one object per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import os
import resource
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOG", "ERROR")
sys.path.insert(0, str(ROOT))

import litellm  # noqa: E402
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver  # noqa: E402
from langgraph.graph import START, StateGraph  # noqa: E402
from langgraph.types import Command  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402
from psycopg_pool import AsyncConnectionPool  # noqa: E402

from orchestrator.llm import scripted  # noqa: E402  (imports litellm only)


def add_counts(old: dict[str, int], new: dict[str, int]) -> dict[str, int]:
    return {**old, **{k: old.get(k, 0) + v for k, v in new.items()}}


class RunState(TypedDict, total=False):
    request: str
    # The transcript: {"role": worker or "supervisor", "content": text}
    reports: Annotated[list[dict[str, str]], operator.add]
    counts: Annotated[dict[str, int], add_counts]  # reports per worker
    reviews: Annotated[list[dict[str, Any]], operator.add]
    instruction: str
    answer: str


class Workload:
    """Nodes built from the spec: the same prompts and tools the Switchboard run sends."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.calls = 0
        self.workers = [w["name"] for w in spec["workers"]]
        self.roster = "\n".join(f"- {w['name']}: {w['role_line']}" for w in spec["workers"])

    async def _complete(self, tier: str, messages: list[dict[str, Any]], **extra: Any) -> Any:
        self.calls += 1
        t = self.spec["tiers"][tier]
        return await litellm.acompletion(
            model=t["model"],
            messages=messages,
            **t["params"],
            **extra,
            timeout=self.spec["timeout_s"],
            max_retries=0,
        )

    def _recent(self, state: RunState) -> str:
        reports = state.get("reports", [])[-self.spec["keep"] :]
        return "\n".join(f"- [{m['role']}] {m['content']}" for m in reports)

    async def supervisor(self, state: RunState) -> Command[Any]:
        counts = state.get("counts", {})
        so_far = ", ".join(f"{w} x{n}" for w, n in counts.items()) or "none yet"
        parts = [
            f"Request: {state['request']}",
            "",
            f"Workers:\n{self.roster}",
            "",
            f"Work so far:\n{so_far}",
        ]
        recent = self._recent(state)
        if recent:
            parts += ["", f"Recent reports:\n{recent}"]
        messages = [
            {"role": "system", "content": self.spec["supervisor"]["system"]},
            {"role": "user", "content": "\n".join(parts) + "\n"},
        ]
        response = await self._complete(
            self.spec["supervisor"]["tier"],
            messages,
            tools=self.spec["supervisor"]["tools"],
            tool_choice="required",
        )
        calls = response.choices[0].message.tool_calls or []
        # The transcript lines the Switchboard supervisor adds: the same prompts next time.
        reviews, lines, goto, update = [], [], None, {}
        for call in calls:
            args = json.loads(call.function.arguments or "{}")
            name = call.function.name
            if name == "review":
                reviews.append(args)
                if not args.get("accepted"):
                    text = f"Review of {args['worker']}: rejected. {args.get('feedback', '')}"
                    lines.append({"role": "supervisor", "content": text.strip()})
            elif name == "assign" and goto is None:
                goto, update = args["worker"], {"instruction": args["instruction"]}
                text = f"Assigned {args['worker']}: {args['instruction']}"
                lines.append({"role": "supervisor", "content": text})
            elif name == "finish_with_report":
                latest = [r for r in state.get("reports", []) if r["role"] == args["worker"]]
                goto, update = "__end__", {"answer": latest[-1]["content"] if latest else ""}
            elif name == "finish":
                goto, update = "__end__", {"answer": args.get("answer", "")}
        if goto is None or (goto != "__end__" and goto not in self.workers):
            raise RuntimeError(f"the supervisor's reply has no decision: {calls!r}")
        return Command(goto=goto, update={**update, "reviews": reviews, "reports": lines})

    def worker(self, name: str) -> Any:
        system = next(w["system"] for w in self.spec["workers"] if w["name"] == name)
        tier = next(w["tier"] for w in self.spec["workers"] if w["name"] == name)

        async def node(state: RunState) -> Command[Any]:
            user = f"Request: {state['request']}\nInstruction: {state['instruction']}\n"
            recent = self._recent(state)
            if recent:
                user += f"\nRecent reports:\n{recent}\n"
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            response = await self._complete(tier, messages)
            text = response.choices[0].message.content or ""
            return Command(
                goto="supervisor",
                update={"reports": [{"role": name, "content": text}], "counts": {name: 1}},
            )

        node.__name__ = name
        return node

    def graph(self) -> StateGraph:
        builder = StateGraph(RunState)
        builder.add_node("supervisor", self.supervisor)
        for name in self.workers:
            builder.add_node(name, self.worker(name))
        builder.add_edge(START, "supervisor")
        return builder


async def checkpoint_bytes(pool: AsyncConnectionPool) -> int:
    """Bytes in every checkpoint* table (payload columns, json as text)."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name LIKE 'checkpoint%' "
                "AND table_name <> 'checkpoint_migrations' "
                "AND data_type IN ('text', 'json', 'jsonb', 'bytea')"
            )
        ).fetchall()
        total = 0
        for row in rows:
            cast = "::text" if row["data_type"] in ("json", "jsonb") else ""
            query = (
                f'SELECT COALESCE(SUM(octet_length("{row["column_name"]}"{cast})), 0) AS n '
                f'FROM "{row["table_name"]}"'
            )
            total += int((await (await conn.execute(query)).fetchone())["n"])
        return total


async def measure(
    graph: Any,
    work: Workload,
    pool: AsyncConnectionPool,
    *,
    lanes: int,
    runs_per_lane: int,
    durability: str,
    tag: str,
) -> dict[str, Any]:
    run_ms: list[float] = []

    async def lane(index: int) -> None:
        for n in range(runs_per_lane):
            config = {"configurable": {"thread_id": f"{tag}-{index}-{n}"}, "recursion_limit": 60}
            started = time.perf_counter()
            final = await graph.ainvoke(
                {"request": f"Summarise the benchmark results #{index}-{n}"},
                config,
                durability=durability,
            )
            run_ms.append((time.perf_counter() - started) * 1000)
            if not final.get("answer"):
                raise RuntimeError(f"run {tag}-{index}-{n} ended without an answer: {final}")

    bytes_before, calls_before = await checkpoint_bytes(pool), work.calls
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane(i) for i in range(lanes)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    calls = work.calls - calls_before
    stored = await checkpoint_bytes(pool) - bytes_before
    return {
        "runs": lanes * runs_per_lane,
        "model_calls": calls,
        "calls_per_run": round(calls / (lanes * runs_per_lane), 2),
        "wall_s": round(wall, 3),
        "ms_per_call": round(wall * 1000 / calls, 3),
        "ms_per_run_median": round(statistics.median(run_ms), 3),
        "calls_per_s": round(calls / wall, 1),
        "cpu_ms_per_call": round(cpu * 1000 / calls, 3),
        "checkpoint_bytes_per_call": round(stored / calls),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="workload spec JSON (from the driver)")
    parser.add_argument("--dsn", required=True, help="libpq DSN of a fresh database")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--lanes", type=int, default=50)
    parser.add_argument("--runs-per-lane", type=int, default=4)
    parser.add_argument("--modes", default="one_at_a_time,in_flight")
    parser.add_argument("--durability", choices=("sync", "async", "exit"), default="sync")
    parser.add_argument("--pool-size", type=int, default=20)
    args = parser.parse_args()
    modes = set(args.modes.split(","))

    spec = json.loads(Path(args.spec).read_text())
    scripted.register()
    work = Workload(spec)
    common = {
        "metric": "langgraph",
        "durability": args.durability,
        "langgraph_version": metadata.version("langgraph"),
        "checkpoint_postgres_version": metadata.version("langgraph-checkpoint-postgres"),
        "litellm_version": metadata.version("litellm"),
    }
    async with AsyncConnectionPool(
        args.dsn,
        min_size=1,
        max_size=args.pool_size,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
    ) as pool:
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await saver.setup()
        graph = work.graph().compile(checkpointer=saver)
        await measure(
            graph, work, pool, lanes=1, runs_per_lane=3, durability=args.durability, tag="warm"
        )
        if "one_at_a_time" in modes:
            record = await measure(
                graph,
                work,
                pool,
                lanes=1,
                runs_per_lane=args.runs,
                durability=args.durability,
                tag="seq",
            )
            print(json.dumps({**common, "mode": "one_at_a_time", "runs_in_flight": 1, **record}))
        if "in_flight" in modes:
            record = await measure(
                graph,
                work,
                pool,
                lanes=args.lanes,
                runs_per_lane=args.runs_per_lane,
                durability=args.durability,
                tag="conc",
            )
            print(
                json.dumps(
                    {
                        **common,
                        "mode": f"in_flight_{args.lanes}",
                        "runs_in_flight": args.lanes,
                        **record,
                    }
                )
            )
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
