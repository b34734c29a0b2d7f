"""What one model call costs on each call path: the bare provider client, stock litellm, and
Switchboard's (the gateway and its direct path).

One chat completion with tool calls: the router's real prompt and `route` tool, answered by a
tool call. Two providers:

- http: a local OpenAI-compatible server, started by this script in its own process (an
  asyncio HTTP/1.1 server with keep-alive that answers every POST with the same tool-call
  completion, in the shape OpenAI documents for Chat Completions), so its CPU is not counted.
  Paths: `openai_sdk` (a reused `openai.AsyncOpenAI`), `litellm` (`litellm.acompletion`, as
  the gateway called it before), `direct` (`orchestrator.llm.direct` alone), `gateway`
  (`LLMGateway.complete`: budget check, retries, cost, metrics, span, the ledger hand-off,
  on the direct path) and `gateway_stock` (the same with SWITCHBOARD_LLM_DIRECT off).
- scripted: the offline custom provider (`scripted/cheap`, in process). `handler` is the
  provider's own `acompletion` awaited directly (the bare provider), then the same
  litellm / direct / gateway / gateway_stock paths.

Each path runs `--calls` (200) calls one at a time (`sequential`) and `--concurrent-calls`
(400) calls with `--concurrency` (50) in flight (`concurrent_50`), after `--warmup` (20) calls
one at a time and one burst of `--concurrency` (so every client's pool is open).
`ms_per_call` is wall time / calls (for the concurrent mode: the inverse of the throughput),
`cpu_ms_per_call` this process's CPU (time.process_time: every thread, litellm's executor
included) / calls, `p50_ms` / `p99_ms` the latency of one call. Paths are interleaved and
the whole set repeated `--reps` (3) times; the table gives the median of the reps.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

MODEL = "gpt-bench"
KEY = "sk-bench-0123456789"
HTTP_PATHS = ("openai_sdk", "litellm", "direct", "gateway", "gateway_stock")
SCRIPTED_PATHS = ("handler", "litellm", "direct", "gateway", "gateway_stock")

# The reply every call gets: a tool call with `content: null`, as OpenAI documents it.
REPLY = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": MODEL,
    "system_fingerprint": "fp_bench",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_bench0001",
                        "type": "function",
                        "function": {"name": "route", "arguments": '{"team": "research"}'},
                    }
                ],
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 96,
        "completion_tokens": 12,
        "total_tokens": 108,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
}


# --- the server (its own process) -----------------------------------------------------------


async def _serve(sock: socket.socket) -> None:
    body = json.dumps(REPLY).encode()
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                headers = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in headers.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=sock, backlog=1024)
    async with server:
        await server.serve_forever()


def serve() -> None:
    """`model_call.py --serve`: print the port, then answer until killed."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    asyncio.run(_serve(sock))


class Server:
    """The model server in a child process (so its CPU is not this process's)."""

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --- the paths ------------------------------------------------------------------------------

Call = Callable[[], Awaitable[Any]]


class NoLedger:
    """The gateway's ledger seam with nothing behind it: the figures are the call path's."""

    def recorded(self, run_id: int, step: int, call_index: int) -> Any:
        return None

    def record(self, spec: Any, model: str, request: dict[str, Any], reply: Any) -> Any:
        return reply


def _prompt() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    from orchestrator import defaults, prompts, protocol
    from orchestrator.teams import load_teams

    config = load_teams(defaults.teams_file())
    messages = prompts.router_messages(config, "Compare Redis and Postgres as job queues")
    choice = {"type": "function", "function": {"name": "route"}}
    return messages, protocol.router_tools(config), choice


def http_paths(url: str) -> dict[str, Call]:
    import litellm
    import openai

    from orchestrator.llm import direct
    from orchestrator.llm.gateway import LLMGateway
    from orchestrator.teams import Tier

    messages, tools, choice = _prompt()
    sdk = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0)
    tier = Tier(
        model=f"openai/{MODEL}",
        api_base=url,
        params={"api_key": KEY},
        input_cost_per_token=0.5e-6,
        output_cost_per_token=1.5e-6,
    )
    fast = LLMGateway({"t": tier}, NoLedger())
    stock = LLMGateway({"t": tier}, NoLedger(), direct=False)
    request = {
        "model": f"openai/{MODEL}",
        "messages": messages,
        "api_key": KEY,
        "tools": tools,
        "tool_choice": choice,
    }
    spec = _spec(messages, tools, choice)
    route = direct.target(request["model"], url, request)
    assert route is not None, "the benchmark's request should take the direct path"

    return {
        "openai_sdk": lambda: sdk.chat.completions.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            tools=tools,  # type: ignore[arg-type]
            tool_choice=choice,  # type: ignore[arg-type]
        ),
        "litellm": lambda: litellm.acompletion(**request, api_base=url, timeout=60, max_retries=0),
        "direct": lambda: direct.acompletion(route, request, timeout=60),
        "gateway": lambda: fast.complete(spec, replays={}),
        "gateway_stock": lambda: stock.complete(spec, replays={}),
    }


def _spec(messages: list[dict[str, Any]], tools: Any, choice: Any) -> Any:
    """The gateway's view of the benchmark's one call."""
    from orchestrator.llm.gateway import CallSpec

    return CallSpec(
        run_id=1,
        step=1,
        call_index=0,
        tier="t",
        purpose="route",
        messages=messages,
        tools=tools,
        tool_choice=choice,
    )


def scripted_paths() -> dict[str, Call]:
    import litellm

    from orchestrator.llm import direct, scripted
    from orchestrator.llm.gateway import LLMGateway
    from orchestrator.teams import Tier

    messages, tools, choice = _prompt()
    tier = Tier(model="scripted/cheap")
    fast = LLMGateway({"t": tier}, NoLedger())
    stock = LLMGateway({"t": tier}, NoLedger(), direct=False)
    request = {"model": "scripted/cheap", "messages": messages, "tools": tools}
    request["tool_choice"] = choice
    spec = _spec(messages, tools, choice)
    route = direct.target("scripted/cheap", None, request)
    assert route is not None, "the scripted provider should take the direct path"
    handler = scripted.ScriptedLLM()
    optional = {"tools": tools, "tool_choice": choice}

    return {
        "handler": lambda: handler.acompletion("cheap", messages, optional_params=optional),
        "litellm": lambda: litellm.acompletion(**request, timeout=60, max_retries=0),
        "direct": lambda: direct.acompletion(route, request, timeout=60),
        "gateway": lambda: fast.complete(spec, replays={}),
        "gateway_stock": lambda: stock.complete(spec, replays={}),
    }


# --- measuring ------------------------------------------------------------------------------


async def _timed(call: Call, latencies: list[float]) -> None:
    started = time.perf_counter()
    await call()
    latencies.append((time.perf_counter() - started) * 1000)


async def measure(call: Call, calls: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue = iter(range(calls))
    gc.collect()  # the previous path's garbage is not this one's to collect

    async def lane() -> None:
        for _ in queue:
            await _timed(call, latencies)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "ms_per_call": wall * 1000 / calls,
        "cpu_ms_per_call": cpu * 1000 / calls,
        "p50_ms": c.percentile(latencies, 50),
        "p99_ms": c.percentile(latencies, 99),
    }


async def run(args: argparse.Namespace, url: str | None) -> list[dict[str, Any]]:
    from orchestrator.llm import direct

    sets: dict[str, dict[str, Call]] = {}
    if url is not None:
        sets["http"] = {k: v for k, v in http_paths(url).items() if k in args.paths}
    if "scripted" in args.providers:
        sets["scripted"] = {k: v for k, v in scripted_paths().items() if k in args.paths}
    modes = (("sequential", args.calls, 1), (f"concurrent_{args.concurrency}",
             args.concurrent_calls, args.concurrency))  # fmt: skip
    rows = []
    for paths in sets.values():
        for call in paths.values():
            await measure(call, args.warmup, 1)
            await measure(call, args.concurrency, args.concurrency)  # opens the pool
    for rep in range(args.reps):
        for provider, paths in sets.items():
            order = list(paths.items())
            if rep % 2:
                order.reverse()  # neither end of the set always runs first
            for path, call in order:
                for mode, calls, concurrency in modes:
                    figures = await measure(call, calls, concurrency)
                    row = {
                        "metric": "model_call",
                        "provider": provider,
                        "path": path,
                        "mode": mode,
                        "rep": rep + 1,
                        "calls": calls,
                        **{k: round(v, 3) for k, v in figures.items()},
                    }
                    c.emit(row)
                    rows.append(row)
    await direct.aclose_clients()
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (provider, mode, path): the median of the reps."""
    out: list[dict[str, Any]] = []
    keys = dict.fromkeys((r["provider"], r["mode"], r["path"]) for r in rows)
    for provider, mode, path in keys:
        group = [r for r in rows if (r["provider"], r["mode"], r["path"]) == (provider, mode, path)]
        out.append(
            {
                "metric": "model_call_median",
                "provider": provider,
                "mode": mode,
                "path": path,
                "reps": len(group),
                **{
                    k: round(statistics.median(r[k] for r in group), 3)
                    for k in ("ms_per_call", "cpu_ms_per_call", "p50_ms", "p99_ms")
                },
            }
        )
    return sorted(out, key=lambda r: (r["provider"], r["mode"] != "sequential", r["mode"]))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--providers", default="http,scripted", help="comma-separated (default %(default)s)"
    )
    parser.add_argument(
        "--paths",
        default=",".join(dict.fromkeys(HTTP_PATHS + SCRIPTED_PATHS)),
        help="comma-separated paths to measure (default: all: %(default)s)",
    )
    parser.add_argument("--calls", type=int, default=200, help="sequential calls (200)")
    parser.add_argument(
        "--concurrent-calls", type=int, default=400, help="calls in the concurrent mode (400)"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="calls in flight (50)")
    parser.add_argument("--warmup", type=int, default=20, help="calls per path first (20)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the set (3)")
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.serve:
        serve()
        return
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    args.providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if "http" in args.providers:
        with Server() as server:
            rows = asyncio.run(run(args, server.url))
    else:
        rows = asyncio.run(run(args, None))
    medians = summary(rows)
    for row in medians:
        c.emit(row)
    print()
    print(
        c.table(
            medians,
            ["provider", "mode", "path", "ms_per_call", "cpu_ms_per_call", "p50_ms", "p99_ms"],
        )
    )
    load = os.getloadavg()
    print(f"\nload average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
