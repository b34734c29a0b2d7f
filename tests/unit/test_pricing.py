"""A call's cost from the cached per-token rates, held to litellm's own `completion_cost`."""

from __future__ import annotations

import litellm
import pytest
from litellm.types.utils import ModelResponse, Usage

from orchestrator.llm import pricing
from orchestrator.teams import Tier

UNDECLARED = Tier(model="any")


def response(model: str, prompt: int, completion: int, **usage: object) -> ModelResponse:
    return ModelResponse(
        model=model,
        choices=[{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        usage=Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            **usage,
        ),
    )


def litellms(reply: ModelResponse, model: str) -> float:
    return float(litellm.completion_cost(completion_response=reply, model=model))


@pytest.mark.parametrize(
    "model", ["openai/gpt-4o-mini", "gpt-4.1", "anthropic/claude-sonnet-4-5", "scripted/cheap"]
)
def test_flat_rates_price_plain_calls_as_litellm_does(model: str) -> None:
    from orchestrator.llm import scripted

    scripted.register()
    for prompt, completion in ((1200, 300), (10, 1), (90_000, 4000)):
        reply = response(model, prompt, completion)
        cost = pricing.cost(UNDECLARED, model, reply, prompt, completion)
        assert cost == pytest.approx(litellms(reply, model), rel=1e-9)
    assert pricing._FLAT[model] is not None  # learned: later calls skip completion_cost


def test_cached_tokens_are_priced_by_litellm() -> None:
    model = "openai/gpt-4o-mini"
    pricing.cost(UNDECLARED, model, response(model, 100, 10), 100, 10)
    details = {"cached_tokens": 1024}
    reply = response(model, 2000, 100, prompt_tokens_details=details)
    cost = pricing.cost(UNDECLARED, model, reply, 2000, 100)
    flat_in, flat_out = pricing._FLAT[model] or (0.0, 0.0)
    assert cost == pytest.approx(litellms(reply, model), rel=1e-9)
    assert cost < 2000 * flat_in + 100 * flat_out  # cached input is cheaper


def test_tiered_prices_are_left_to_litellm() -> None:
    model = "dashscope/qwen-flash"
    for prompt in (1000, 300_000):  # the second lands in the upper tier
        reply = response(model, prompt, 500)
        assert pricing.cost(UNDECLARED, model, reply, prompt, 500) == pytest.approx(
            litellms(reply, model), rel=1e-9
        )
    assert pricing._FLAT.get(model) is None


def test_a_provider_with_its_own_cost_rules_keeps_them() -> None:
    model = "together_ai/togethercomputer/CodeLlama-34b-Instruct"  # priced by model size
    reply = response(model, 1000, 200)
    cost = pricing.cost(UNDECLARED, model, reply, 1000, 200)
    assert cost is not None and cost > 0
    assert cost == pytest.approx(litellms(reply, model), rel=1e-9)
    assert pricing._FLAT[model] is None


def test_declared_prices_come_first_and_an_unknown_model_is_unpriced() -> None:
    declared = Tier(model="openai/gpt-4o-mini", input_cost_per_token=1e-6, output_cost_per_token=0)
    reply = response("gpt-4o-mini", 1000, 10)
    assert pricing.cost(declared, "openai/gpt-4o-mini", reply, 1000, 10) == pytest.approx(1e-3)
    unknown = "openai/not-a-model-anyone-prices"
    assert pricing.cost(UNDECLARED, unknown, response(unknown, 10, 10), 10, 10) is None
