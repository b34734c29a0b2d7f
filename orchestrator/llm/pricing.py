"""Prices per token: the tier's own, else litellm's map; and what an unpriced model means.

A model with no price anywhere would cost $0 and silently disable every dollar limit, so it
is marked unpriced: its calls account tokens, reports say "unpriced", and a team with dollar
limits on such a tier is warned about at start and by `teams validate`.
"""

from __future__ import annotations

from typing import Any

import litellm

from orchestrator.teams import Tier

Price = tuple[float, float]  # ($ per input token, $ per output token)

_MAP: dict[str, Price | None] = {}


def _litellm_price(model: str) -> Price | None:
    """litellm's highest per-token rates for the model (tiered prices included), once per
    model; None when litellm has no price (its failing lookup is costly, so remembered)."""
    if model in _MAP:
        return _MAP[model]
    price: Price | None
    try:
        litellm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
        info = litellm.get_model_info(model)
    except Exception:
        price = None
    else:
        rates = {key: value for key, value in info.items() if isinstance(value, int | float)}
        price = (
            float(
                max(
                    (v for k, v in rates.items() if k.startswith("input_cost_per_token")),
                    default=0.0,
                )
            ),
            float(
                max(
                    (v for k, v in rates.items() if k.startswith("output_cost_per_token")),
                    default=0.0,
                )
            ),
        )
        if info.get("input_cost_per_token") is None and info.get("output_cost_per_token") is None:
            price = None
    _MAP[model] = price
    return price


def _declared(tier: Tier) -> Price | None:
    if tier.input_cost_per_token is None or tier.output_cost_per_token is None:
        return None
    return (tier.input_cost_per_token, tier.output_cost_per_token)


def price(tier: Tier, model: str) -> Price | None:
    """The highest per-token rates: the tier's declared prices (for all its models, primary
    and fallbacks), else litellm's highest (tiered) rates. An upper bound, for cheap checks."""
    return _declared(tier) or _litellm_price(model)


def projected(tier: Tier, model: str, prompt_tokens: int, output_tokens: int) -> float:
    """What a call of this size costs at the model's standard rates; $0 when unpriced."""
    declared = _declared(tier)
    if declared is not None:
        return prompt_tokens * declared[0] + output_tokens * declared[1]
    if _litellm_price(model) is None:
        return 0.0
    try:
        cost_in, cost_out = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=output_tokens
        )
    except Exception:
        return 0.0
    return float(cost_in + cost_out)


def tier_priced(tier: Tier) -> bool:
    return price(tier, tier.model) is not None


def cost(tier: Tier, model: str, response: Any, tokens_in: int, tokens_out: int) -> float | None:
    """The call's cost in dollars, or None when unpriced."""
    declared = _declared(tier)
    if declared is not None:
        return tokens_in * declared[0] + tokens_out * declared[1]
    hidden = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    if hidden is not None:
        return float(hidden)
    if _litellm_price(model) is None:
        return None
    try:
        return float(litellm.completion_cost(completion_response=response, model=model))
    except Exception:
        return None


def prompt_tokens(model: str, messages: list[dict[str, Any]]) -> int:
    try:
        return int(litellm.token_counter(model=model, messages=messages))
    except Exception:
        return int(litellm.token_counter(model="gpt-3.5-turbo", messages=messages))


__all__ = ["Price", "cost", "price", "projected", "prompt_tokens", "tier_priced"]
