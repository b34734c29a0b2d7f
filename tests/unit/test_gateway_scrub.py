"""What the ledger and chat get of a model call: never credentials."""

from __future__ import annotations

from orchestrator.llm.gateway import _short, stored_request
from orchestrator.telemetry.logs import register_secret


def test_stored_requests_drop_credentials_and_headers() -> None:
    request = {
        "model": "openai/gpt-4.1",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "api_key": "sk-live-should-never-be-stored",
        "extra_headers": {"Authorization": "Bearer abc"},
        "api_base": "https://user:hunter2@proxy.example.com/v1",
    }
    kept = stored_request(request)
    assert "api_key" not in kept and "extra_headers" not in kept
    assert kept["temperature"] == 0.2 and kept["messages"] == request["messages"]
    assert "hunter2" not in kept["api_base"]


def test_provider_error_text_is_scrubbed() -> None:
    register_secret("sk-proj-abcdefghijklmnopqrstuvwxyz0123")
    error = RuntimeError(
        "AuthenticationError: Incorrect API key provided: sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    )
    assert "sk-proj-abcdefghijklmnopqrstuvwxyz0123" not in _short(error)
