"""An MCP tool result as the JSON text of the tool message the model reads.

Text parts are joined, structured content is kept as JSON, images, audio and binary
resources are summarised (the model cannot use the bytes and they would eat the context),
and the whole is capped so one chatty tool cannot crowd out the conversation.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import mcp.types as mt

MAX_RESULT_BYTES = 64 * 1024


def _size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (ValueError, TypeError):
        return len(data)


def part_text(part: Any) -> str:
    """One content block as text; what cannot be read as text is described instead."""
    if isinstance(part, mt.TextContent):
        return part.text
    if isinstance(part, mt.ImageContent):
        return f"[image: {part.mime_type}, {_size(part.data)} bytes]"
    if isinstance(part, mt.AudioContent):
        return f"[audio: {part.mime_type}, {_size(part.data)} bytes]"
    if isinstance(part, mt.ResourceLink):
        mime = f", {part.mime_type}" if part.mime_type else ""
        return f"[resource link: {part.uri} ({part.name}{mime})]"
    if isinstance(part, mt.EmbeddedResource):
        resource = part.resource
        if isinstance(resource, mt.TextResourceContents):
            return f"[resource {resource.uri}]\n{resource.text}"
        if isinstance(resource, mt.BlobResourceContents):
            mime = resource.mime_type or "binary"
            return f"[resource {resource.uri}: {mime}, {_size(resource.blob)} bytes]"
    kind = getattr(part, "type", type(part).__name__)
    return f"[{kind} content]"


def _cut(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", errors="ignore")
    return kept + f"\n[truncated: {limit} of {len(data)} bytes shown]"


def payload(
    result: mt.CallToolResult, server: str, tool: str, limit: int = MAX_RESULT_BYTES
) -> str:
    """The tool message for a result: {"content": ..., "structured_content": ...} or
    {"error": ...} when the server flagged it as an error."""
    text = "\n".join(part_text(part) for part in result.content)
    if result.is_error:
        reason = text.strip() or "the tool reported an error without a message"
        return json.dumps({"error": _cut(f"{server}.{tool} failed: {reason}", limit // 2)})
    body: dict[str, Any] = {}
    structured = result.structured_content
    if structured is not None and _same_json(text, structured):
        text = ""  # the text part only repeats the structured content
    if text:
        body["content"] = text
    if structured is not None:
        body["structured_content"] = structured
    if not body:
        body["content"] = "(the tool returned no content)"
    encoded = json.dumps(body, ensure_ascii=False)
    if len(encoded.encode("utf-8")) <= limit:
        return encoded
    # Too big: one text field, cut to fit, marked so the model knows it saw a part.
    whole = text
    if structured is not None:
        whole = (text + "\n" if text else "") + json.dumps(structured, ensure_ascii=False)
    return _fitted(whole, limit)


def _fitted(text: str, limit: int) -> str:
    """{"content": text cut to fit, "truncated": true}, within `limit` bytes once encoded
    (escaping can make the JSON longer than the text, so shrink until it fits)."""
    budget = limit - 128
    while True:
        encoded = json.dumps({"content": _cut(text, budget), "truncated": True}, ensure_ascii=False)
        size = len(encoded.encode("utf-8"))
        if size <= limit or budget <= 0:
            return encoded
        budget -= size - limit + 64


def _same_json(text: str, structured: Any) -> bool:
    try:
        return json.loads(text) == structured
    except (ValueError, TypeError):
        return False


def error(message: str) -> str:
    return json.dumps({"error": message})
