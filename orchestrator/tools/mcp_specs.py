"""MCP tools as the model sees them: provider-safe names and OpenAI function specs.

Providers accept tool names of `[a-zA-Z0-9_-]{1,64}`; MCP tool names may be longer and hold
dots or slashes. A tool is offered as `server__tool` when that is safe and unambiguous, else
as a shortened form ending in a hash of its label, so the name is a pure function of the
label (`server.tool`): every process, and a step replayed after a crash, agrees on it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

MAX_NAME = 64
MAX_DESCRIPTION = 1024
_SAFE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_UNSAFE_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def label(server: str, tool: str) -> str:
    return f"{server}.{tool}"


def provider_name(server: str, tool: str) -> str:
    """The function name offered to the model for `server.tool`."""
    plain = f"{server}__{tool}"
    if "__" not in server and _SAFE.match(plain):
        return plain
    digest = hashlib.sha256(label(server, tool).encode()).hexdigest()[:8]
    stem = _UNSAFE_CHARS.sub("_", plain)[: MAX_NAME - len(digest) - 1]
    return f"{stem}_{digest}"


def name_prefix(server: str) -> str:
    """How every provider name of this server's tools begins."""
    return _UNSAFE_CHARS.sub("_", server) + "__"


def function_spec(
    name: str, description: str, input_schema: dict[str, Any] | None
) -> dict[str, Any]:
    """An OpenAI function tool from an MCP tool's description and input schema."""
    parameters = dict(input_schema or {})
    parameters.pop("$schema", None)
    parameters["type"] = "object"
    parameters.setdefault("properties", {})
    text = description.strip() or name
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 3] + "..."
    return {
        "type": "function",
        "function": {"name": name, "description": text, "parameters": parameters},
    }


def placeholder_spec(server: str, tool: str, reason: str) -> dict[str, Any]:
    """A tool named in the teams file whose server is unavailable: still offered, with a
    permissive schema, so the model can try it and read the error instead of guessing."""
    return function_spec(
        provider_name(server, tool),
        f"Tool {tool!r} of MCP server {server!r}, currently unavailable ({reason}). "
        "Calling it retries the connection and returns an error if it is still down.",
        {"type": "object", "properties": {}, "additionalProperties": True},
    )
