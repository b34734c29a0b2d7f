"""Prices per token: the tier's own, else litellm's map; and what an unpriced model means.

A call's cost is tokens times the model's per-token rates, cached per model, wherever that is
exact; litellm's `completion_cost` (a few hundred microseconds a call) is asked only where a
flat rate would be wrong: tiered prices (`tiered_pricing`, `..._above_200k_tokens`, per-second
or per-query prices) in the model's entry, a provider with cost rules of its own (litellm's
first answer for the model disagrees with the flat rate), or a response whose usage has
cached, audio or image tokens or server-side tool use.

A model with no price anywhere would cost $0 and silently disable every dollar limit, so it
is marked unpriced: its calls account tokens, reports say "unpriced", and a team with dollar
limits on such a tier is warned about at start and by `teams validate`.
"""

from __future__ import annotations

import math
from typing import Any

import litellm

from orchestrator.teams import Tier

Price = tuple[float, float]  # ($ per input token, $ per output token)

_MAP: dict[str, Price | None] = {}
_FLAT: dict[str, Price | None] = {}

# Rates in a model's entry that do not change the cost of a plain text call: the standard
# pair; rates that only apply when the usage says so (prompt cache, audio tokens, server-side
# tools such as web search, per query), which `_plain_usage` sends to litellm; and service
# tiers the gateway never requests (batches, flex, priority).
_PLAIN_RATE_KEYS = ("input_cost_per_token", "output_cost_per_token")
_PLAIN_RATE_PREFIXES = ("cache_read_input", "cache_creation_input")
_PLAIN_RATE_SUFFIXES = ("_batches", "_flex", "_priority", "_per_query", "_per_audio_token")
# Usage details that never change what the standard pair charges.
_PLAIN_DETAILS = frozenset(
    {"text_tokens", "reasoning_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens"}
)


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


def _flat_candidate(model: str) -> Price | None:
    """The model's standard per-token pair, unless its entry has rates a flat pair misses."""
    info = litellm.get_model_info(model)
    for key, value in info.items():
        if (
            ("cost" in key or "pricing" in key)
            and value
            and key not in _PLAIN_RATE_KEYS
            and not key.startswith(_PLAIN_RATE_PREFIXES)
            and not key.endswith(_PLAIN_RATE_SUFFIXES)
        ):
            return None
    return (
        float(info.get("input_cost_per_token") or 0.0),
        float(info.get("output_cost_per_token") or 0.0),
    )


def _learn_flat(model: str, tokens_in: int, tokens_out: int, exact: float) -> None:
    """Trust the flat pair for this model from now on if litellm's own cost of a plain call
    agrees with it (providers with their own cost rules, e.g. by region or model size, do
    not); decided once per model, on the first call with tokens both ways."""
    if model in _FLAT or tokens_in <= 0 or tokens_out <= 0:
        return
    try:
        pair = _flat_candidate(model)
    except Exception:
        pair = None
    if pair is not None:
        flat = tokens_in * pair[0] + tokens_out * pair[1]
        if not math.isclose(flat, exact, rel_tol=1e-9, abs_tol=1e-15):
            pair = None
    _FLAT[model] = pair


def _plain_usage(usage: Any) -> bool:
    """True when the usage is prompt and completion tokens only (nothing cached, no audio or
    image tokens, no server-side tool use), so the standard pair prices it exactly."""
    if usage is None:
        return False
    for name in ("prompt_tokens_details", "completion_tokens_details"):
        details = getattr(usage, name, None)
        if details is None:
            continue
        fields = details if isinstance(details, dict) else vars(details)
        if any(value for key, value in fields.items() if key not in _PLAIN_DETAILS):
            return False
    return not (
        getattr(usage, "server_tool_use", None)
        or getattr(usage, "_cache_read_input_tokens", 0)
        or getattr(usage, "_cache_creation_input_tokens", 0)
    )


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
    plain = _plain_usage(getattr(response, "usage", None))
    flat = _FLAT.get(model) if plain else None
    if flat is not None:
        return tokens_in * flat[0] + tokens_out * flat[1]
    try:
        exact = float(litellm.completion_cost(completion_response=response, model=model))
    except Exception:
        return None
    if plain:
        _learn_flat(model, tokens_in, tokens_out, exact)
    return exact


def prompt_tokens(model: str, messages: list[dict[str, Any]]) -> int:
    try:
        return int(litellm.token_counter(model=model, messages=messages))
    except Exception:
        return int(litellm.token_counter(model="gpt-3.5-turbo", messages=messages))


__all__ = ["Price", "cost", "price", "projected", "prompt_tokens", "tier_priced"]
