"""The LLM gateway: tiers, budgets, retries, fallbacks, replay and the paid-call ledger.

Order of a call: replay a recorded response for (run, step, call index) if there is one;
otherwise check the budget against the projected cost; call litellm with retries
(honouring Retry-After) and per-tier fallbacks; record the response at once, so a step
re-executed after a crash replays it instead of paying again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
os.environ.setdefault("LITELLM_LOG", "ERROR")

import litellm

from orchestrator.llm import scripted
from orchestrator.teams import Tier
from orchestrator.telemetry import metrics
from orchestrator.telemetry.tracing import model_span, record_model_usage

log = logging.getLogger(__name__)

logging.getLogger("LiteLLM").setLevel(logging.ERROR)
litellm.suppress_debug_info = True
litellm.telemetry = False
scripted.register()

RETRYABLE = (
    litellm.RateLimitError,
    litellm.InternalServerError,
    litellm.ServiceUnavailableError,
    litellm.APIConnectionError,
    litellm.Timeout,
)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    content: str
    tool_calls: tuple[ToolCall, ...]
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: float
    replayed: bool = False

    def assistant_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        return message

    def to_json(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "tool_calls": [c.__dict__ for c in self.tool_calls],
            "model": self.model,
        }


@dataclass(frozen=True)
class CallSpec:
    """One model call of one step; `call_index` is deterministic within the step."""

    run_id: int
    step: int
    call_index: int
    tier: str
    purpose: str
    messages: list[dict[str, Any]]
    team: str | None = None
    channel: str | None = None
    tools: list[dict[str, Any]] | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    """What this call may still spend; None means unlimited."""

    dollars: float | None = None
    tokens: int | None = None
    scope: str = "run"  # which limit is the tightest: run, team today, channel today


class BudgetExceeded(Exception):
    def __init__(self, projected_usd: float, projected_tokens: int, budget: Budget) -> None:
        super().__init__(
            f"projected ${projected_usd:.4f} / {projected_tokens} tokens exceeds what is left "
            f"(${budget.dollars if budget.dollars is not None else 'unlimited'}, "
            f"{budget.tokens if budget.tokens is not None else 'unlimited'} tokens)"
        )
        self.projected_usd = projected_usd
        self.projected_tokens = projected_tokens
        self.budget = budget
        over_dollars = budget.dollars is not None and projected_usd > budget.dollars
        self.kind = "dollars" if over_dollars else "tokens"


class ModelUnavailable(Exception):
    """Every model of the tier failed for good; the step ends with a clear error."""


class CallLedger(Protocol):
    def recorded(self, run_id: int, step: int, call_index: int) -> Reply | None: ...

    def record(
        self, spec: CallSpec, model: str, request: dict[str, Any], reply: Reply
    ) -> Reply: ...


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


_UNPRICED: set[str] = set()


def _reply_from(response: Any, model: str, latency_ms: float) -> Reply:
    choice = response.choices[0].message
    calls = tuple(
        ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
        for c in (getattr(choice, "tool_calls", None) or [])
    )
    usage = getattr(response, "usage", None)
    cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    if cost is None and model not in _UNPRICED:
        try:
            cost = litellm.completion_cost(completion_response=response, model=model)
        except Exception:  # unknown price: account tokens, cost stays 0
            # litellm's failing lookup is costly (it tries every generalisation of the
            # name); a model without a price is remembered as such.
            _UNPRICED.add(model)
            cost = 0.0
    return Reply(
        content=choice.content or "",
        tool_calls=calls,
        model=model,
        tokens_in=getattr(usage, "prompt_tokens", 0) or 0,
        tokens_out=getattr(usage, "completion_tokens", 0) or 0,
        cost_usd=float(cost or 0.0),
        latency_ms=latency_ms,
    )


def projected_cost(
    model: str, messages: list[dict[str, Any]], max_output_tokens: int
) -> tuple[float, int]:
    """Cost if the model uses its whole output allowance; unknown prices project zero dollars."""
    try:
        prompt_tokens = litellm.token_counter(model=model, messages=messages)
    except Exception:
        prompt_tokens = litellm.token_counter(model="gpt-3.5-turbo", messages=messages)
    try:
        cost_in, cost_out = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=max_output_tokens
        )
        dollars = cost_in + cost_out
    except Exception:
        dollars = 0.0
    return dollars, prompt_tokens + max_output_tokens


_PRICES: dict[str, tuple[float, float]] = {}


def _prices(model: str) -> tuple[float, float]:
    """The model's highest ($/input token, $/output token) in litellm's cost map (tiered
    prices included), looked up once per model; (0, 0) where `projected_cost` also finds
    no price, so the bound never exceeds what the exact projection would allow."""
    price = _PRICES.get(model)
    if price is None:
        try:
            litellm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=1)
            info = litellm.get_model_info(model)
        except Exception:
            price = (0.0, 0.0)
        else:
            rates = {key: value for key, value in info.items() if isinstance(value, int | float)}
            price = (
                max(
                    (v for k, v in rates.items() if k.startswith("input_cost_per_token")),
                    default=0.0,
                ),
                max(
                    (v for k, v in rates.items() if k.startswith("output_cost_per_token")),
                    default=0.0,
                ),
            )
            price = (float(price[0]), float(price[1]))
        _PRICES[model] = price
    return price


Sleep = Callable[[float], Awaitable[None]]
Observer = Callable[[CallSpec, Reply], None]


class LLMGateway:
    def __init__(
        self,
        tiers: dict[str, Tier],
        ledger: CallLedger,
        *,
        timeout_s: float = 60.0,
        retries: int = 4,
        expected_output_tokens: int = 1024,
        sleep: Sleep = asyncio.sleep,
        observers: tuple[Observer, ...] = (),
    ) -> None:
        self.tiers = tiers
        self.ledger = ledger
        self.timeout_s = timeout_s
        self.retries = retries
        self.expected_output_tokens = expected_output_tokens
        self._sleep = sleep
        self._observers = observers

    def _projected(
        self, model: str, messages: list[dict[str, Any]], max_out: int, budget: Budget
    ) -> tuple[float, int]:
        """The projected cost, or a cheap upper bound of it when that bound already fits.

        Counting the prompt's tokens is the costly part. Every token covers at least one
        byte of the text (UTF-8 has at most 4 bytes a character), plus a few for each
        message's role and template, so that bounds the prompt tokens from above; priced
        at the model's highest per-token rates, the bound bounds the dollars. If the bound
        fits the budget the exact projection fits too, and is not computed. Messages
        with anything but plain text content take the exact path.
        """
        bound = 16
        for message in messages:
            content = message.get("content")
            if not isinstance(content, str) or len(message) > 2:
                return projected_cost(model, messages, max_out)
            bound += (len(content) if content.isascii() else 4 * len(content)) + 16
        tokens = bound + max_out
        if budget.tokens is not None and tokens > budget.tokens:
            return projected_cost(model, messages, max_out)
        price_in, price_out = _prices(model)
        dollars = bound * price_in + max_out * price_out
        if budget.dollars is not None and dollars > budget.dollars:
            return projected_cost(model, messages, max_out)
        return dollars, tokens

    def model_for(self, tier: str) -> str:
        return self.tiers[tier].model

    async def complete(
        self,
        spec: CallSpec,
        budget: Budget | None = None,
        *,
        replays: Mapping[int, Reply] | None = None,
    ) -> Reply:
        """`replays`: every call already recorded for this step, when the caller fetched
        them (the engine does, with the step's lease); None makes the gateway look up the
        ledger itself."""
        if replays is None:
            recorded = await asyncio.to_thread(
                self.ledger.recorded, spec.run_id, spec.step, spec.call_index
            )
        else:
            recorded = replays.get(spec.call_index)
        if recorded is not None:
            return recorded
        tier = self.tiers[spec.tier]
        params = {**tier.params, **spec.params}
        if budget is not None and (budget.dollars is not None or budget.tokens is not None):
            max_out = int(params.get("max_tokens") or self.expected_output_tokens)
            dollars, tokens = self._projected(tier.model, spec.messages, max_out, budget)
            if (budget.dollars is not None and dollars > budget.dollars) or (
                budget.tokens is not None and tokens > budget.tokens
            ):
                raise BudgetExceeded(dollars, tokens, budget)
        last_error: Exception | None = None
        for model in (tier.model, *tier.fallbacks):
            with model_span(model, spec.tier) as span:
                try:
                    reply, request = await self._call_with_retries(model, tier, spec, params)
                except Exception as exc:  # retries exhausted, or refused (bad request, auth)
                    last_error = exc
                    if not isinstance(exc, RETRYABLE):  # retryable ones were counted per attempt
                        metrics.MODEL_ERRORS.labels(
                            model=model, error=metrics.error_label(exc)
                        ).inc()
                    span.set_attribute("error.type", type(exc).__name__)
                    log.warning("model %s failed for good: %s", model, type(exc).__name__)
                    continue
                record_model_usage(
                    span,
                    input_tokens=reply.tokens_in,
                    output_tokens=reply.tokens_out,
                    cost_usd=reply.cost_usd,
                    response_model=model,
                )
            metrics.record_model_call(
                team=spec.team or "unrouted",
                model=model,
                tier=spec.tier,
                seconds=reply.latency_ms / 1000,
                input_tokens=reply.tokens_in,
                output_tokens=reply.tokens_out,
                cost_dollars=reply.cost_usd,
            )
            stored = await asyncio.to_thread(self.ledger.record, spec, model, request, reply)
            for observe in self._observers:
                observe(spec, stored)
            return stored
        raise ModelUnavailable(
            f"tier {spec.tier!r}: every model failed "
            f"({type(last_error).__name__}: {_short(last_error)})"
        )

    async def _call_with_retries(
        self, model: str, tier: Tier, spec: CallSpec, params: dict[str, Any]
    ) -> tuple[Reply, dict[str, Any]]:
        request: dict[str, Any] = {"model": model, "messages": spec.messages, **params}
        if spec.tools:
            request["tools"] = spec.tools
        extra: dict[str, Any] = {"timeout": self.timeout_s, "max_retries": 0}
        if tier.api_base:
            extra["api_base"] = tier.api_base
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            try:
                response = await litellm.acompletion(**request, **extra)
            except RETRYABLE as exc:
                metrics.MODEL_ERRORS.labels(model=model, error=metrics.error_label(exc)).inc()
                if attempt >= self.retries:
                    raise
                delay = _retry_after(exc)
                if delay is None:
                    delay = min(30.0, 0.5 * 2**attempt) * (0.5 + random.random() / 2)
                log.info("model %s: %s, retrying in %.2fs", model, type(exc).__name__, delay)
                await self._sleep(delay)
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            return _reply_from(response, model, latency_ms), request
        raise AssertionError("unreachable")


def _short(exc: Exception | None) -> str:
    text = str(exc or "").strip().splitlines()
    return (text[0] if text else "")[:200]
