"""Real MCP servers for tests, written with the SDK's own server class (MCPServer).

One server, "notes", with a read-only tool and a destructive tool that appends to a file,
plus tools that let tests look at what a client must get right (its environment, the HTTP
headers it sent, errors, slowness, a crash mid-call, a tool list that changes). It runs as
a subprocess over either transport:

    python tests/support/mcp_servers.py stdio --notes /tmp/notes.txt
    python tests/support/mcp_servers.py http --port 8765 --notes /tmp/notes.txt

and the helpers below start it for a test: `stdio_server(notes)` returns the teams-file
entry for a stdio server, `HttpServer(notes)` starts the HTTP one on a free port (waits for
the port; `stop()` / `start()` again on the same port to take it down and bring it back;
`HttpServer(notes, token="t")` puts it behind a bearer token).
Every append (append_note, slow_append) is also recorded, one JSON line per call, in
`<notes>.calls`, so end-to-end tests can count side effects exactly; slow_append writes its
text to `<notes>.started` before it waits, so a test knows when the call is in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ImageContent, TextContent, ToolAnnotations

THIS_FILE = str(Path(__file__).resolve())


def build_server(notes: str) -> MCPServer:
    app = MCPServer("notes", instructions="A notes file: read it, append to it.")
    read_only = ToolAnnotations(readOnlyHint=True)

    @app.tool(annotations=read_only)
    def read_notes() -> str:
        """Read the whole notes file."""
        path = Path(notes)
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def append(text: str, tool: str) -> str:
        with open(notes, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
        with open(notes + ".calls", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"tool": tool, "text": text, "pid": os.getpid()}) + "\n")
        return f"appended {len(text) + 1} bytes"

    @app.tool(annotations=ToolAnnotations(destructiveHint=True))
    def append_note(text: str) -> str:
        """Append one line to the notes file."""
        return append(text, "append_note")

    @app.tool(annotations=ToolAnnotations(destructiveHint=True))
    async def slow_append(text: str, seconds: float) -> str:
        """Wait, then append one line to the notes file (a call that is long in flight)."""
        with open(notes + ".started", "a", encoding="utf-8") as handle:
            handle.write(text + "\n")  # tests wait for this to know the call is in flight
        await asyncio.sleep(seconds)
        return append(text, "slow_append")

    @app.tool(annotations=read_only)
    def show_env() -> dict[str, str]:
        """The server's own environment variables."""
        return dict(os.environ)

    @app.tool(annotations=read_only)
    def show_process() -> dict[str, int]:
        """The server's pid, process group and session."""
        return {"pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0)}

    @app.tool(annotations=read_only)
    def show_headers(ctx: Context) -> dict[str, str]:
        """The HTTP headers of this request (empty over stdio)."""
        return {k.lower(): v for k, v in (ctx.headers or {}).items()}

    @app.tool()
    def fail(message: str) -> str:
        """Always fails with the given message (no annotations: a client must ask)."""
        raise ToolError(message)

    @app.tool(annotations=read_only)
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @app.tool(annotations=read_only)
    def big(size: int) -> str:
        """A text of `size` characters."""
        return "x" * size

    @app.tool(annotations=read_only)
    def picture() -> list[Any]:
        """A text part and a small PNG."""
        return [
            TextContent(type="text", text="a red dot"),
            ImageContent(type="image", data="iVBORw0KGgo=", mimeType="image/png"),
        ]

    @app.tool(annotations=ToolAnnotations(destructiveHint=True))
    def crash() -> str:
        """The server process dies in the middle of the call."""
        os._exit(3)

    @app.tool()
    async def add_tool(name: str, ctx: Context) -> str:
        """Register a new read-only tool `name` and announce the changed tool list."""

        def echo(text: str) -> str:
            return text

        app.add_tool(echo, name=name, description=f"echo, added at run time as {name}")
        # 2025-era clients hear of it on the connection, 2026-era ones on subscriptions/listen.
        try:
            await ctx.session.send_tool_list_changed()
        except Exception as exc:  # not every era has this channel
            print(f"tools/list_changed on the session: {exc!r}", file=sys.stderr)
        await ctx.notify_tools_changed()
        return f"added {name}"

    return app


def stdio_server(notes: str | Path, **entry: Any) -> dict[str, Any]:
    """The teams-file `mcp_servers` entry that runs this server over stdio."""
    return {
        "command": sys.executable,
        "args": [THIS_FILE, "stdio", "--notes", str(notes)],
        **entry,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


class HttpServer:
    """This server over streamable HTTP in a subprocess, on a free port of 127.0.0.1."""

    def __init__(self, notes: str | Path, port: int | None = None, token: str = "") -> None:
        self.notes = str(notes)
        self.port = port or free_port()
        self.token = token  # when set, requests without `Authorization: Bearer <token>` get 401
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def entry(self, **entry: Any) -> dict[str, Any]:
        """The teams-file `mcp_servers` entry for this server."""
        return {"url": self.url, **entry}

    def start(self) -> HttpServer:
        self.process = subprocess.Popen(
            [
                *(sys.executable, THIS_FILE, "http", "--port", str(self.port)),
                *("--notes", self.notes, "--token", self.token),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--notes", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="", help="HTTP only: require this bearer token")
    args = parser.parse_args(argv)
    app = build_server(args.notes)
    if args.transport == "stdio":
        app.run("stdio")
    elif not args.token:
        app.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        import uvicorn

        asgi = bearer_only(app.streamable_http_app(host="127.0.0.1"), args.token)
        uvicorn.run(asgi, host="127.0.0.1", port=args.port, log_level="warning")


def bearer_only(asgi: Any, token: str) -> Any:
    """The app behind a bearer token, as a gateway in front of an MCP server does:
    401 with `WWW-Authenticate: Bearer` (RFC 6750) for a missing or wrong token."""

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization") != f"Bearer {token}".encode():
                body = b'{"error": "invalid_token"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"www-authenticate", b'Bearer error="invalid_token"'),
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await asgi(scope, receive, send)

    return guarded


if __name__ == "__main__":
    main()
