"""A provider's 200 with nothing to read is said plainly, not as an IndexError."""

from __future__ import annotations

import litellm
import pytest

from orchestrator.llm.gateway import EmptyReply, _reply_from
from orchestrator.teams import Tier


def test_a_reply_without_choices_names_what_is_missing() -> None:
    response = litellm.ModelResponse(model="gpt-test")
    response.choices = []
    with pytest.raises(EmptyReply, match="held no choices"):
        _reply_from(Tier(model="openai/gpt-test"), response, "openai/gpt-test", 1.0)
