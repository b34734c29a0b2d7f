"""What the model reads back from an MCP tool: text joined, structure kept, the rest
summarised, errors as errors, and nothing bigger than the cap."""

from __future__ import annotations

import json

import mcp.types as mt

from orchestrator.tools.mcp_results import MAX_RESULT_BYTES, payload


def text(value: str) -> mt.TextContent:
    return mt.TextContent(type="text", text=value)


def test_text_parts_are_joined() -> None:
    result = mt.CallToolResult(content=[text("first"), text("second")])
    assert json.loads(payload(result, "notes", "read")) == {"content": "first\nsecond"}


def test_structured_content_is_kept_and_its_text_echo_dropped() -> None:
    data = {"files": ["a", "b"], "count": 2}
    result = mt.CallToolResult(content=[text(json.dumps(data))], structured_content=data)
    assert json.loads(payload(result, "files", "list")) == {"structured_content": data}


def test_other_parts_are_summarised() -> None:
    result = mt.CallToolResult(
        content=[
            text("chart below"),
            mt.ImageContent(type="image", data="iVBORw0KGgoAAAANSUhEUg==", mime_type="image/png"),
            mt.AudioContent(type="audio", data="AAAA", mime_type="audio/wav"),
            mt.ResourceLink(type="resource_link", uri="file:///srv/a.txt", name="a.txt"),
            mt.EmbeddedResource(
                type="resource",
                resource=mt.TextResourceContents(uri="file:///srv/b.txt", text="hello"),
            ),
            mt.EmbeddedResource(
                type="resource",
                resource=mt.BlobResourceContents(
                    uri="file:///srv/c.bin", blob="AAAA", mime_type="application/zip"
                ),
            ),
        ]
    )
    content = json.loads(payload(result, "files", "show"))["content"]
    assert content.splitlines() == [
        "chart below",
        "[image: image/png, 16 bytes]",
        "[audio: audio/wav, 3 bytes]",
        "[resource link: file:///srv/a.txt (a.txt)]",
        "[resource file:///srv/b.txt]",
        "hello",
        "[resource file:///srv/c.bin: application/zip, 3 bytes]",
    ]


def test_is_error_comes_back_as_an_error() -> None:
    result = mt.CallToolResult(content=[text("no such file: /srv/x")], is_error=True)
    assert json.loads(payload(result, "files", "read")) == {
        "error": "files.read failed: no such file: /srv/x"
    }


def test_big_results_are_cut_to_the_cap_and_marked() -> None:
    huge = '"quoted"\n' * 20_000  # escaping makes the JSON longer than the text
    result = mt.CallToolResult(content=[text(huge)], structured_content={"rows": list(range(9))})
    out = payload(result, "db", "query")
    assert len(out.encode()) <= MAX_RESULT_BYTES
    body = json.loads(out)
    assert body["truncated"] is True
    assert "[truncated:" in body["content"]
    assert body["content"].startswith('"quoted"\n"quoted"')


def test_an_empty_result_says_so() -> None:
    assert json.loads(payload(mt.CallToolResult(content=[]), "x", "y")) == {
        "content": "(the tool returned no content)"
    }
