"""The LLM gateway: tiers, budgets, retries, fallbacks, replay and the paid-call ledger.

Order of a call: replay a recorded response for (run, step, call index) if there is one;
otherwise check the budget against the projected cost; call litellm with retries
(honouring Retry-After) and per-tier fallbacks; record the response at once, so a step
re-executed after a crash replays it instead of paying again. Calls litellm can make without
its per-call machinery (custom providers, OpenAI-compatible HTTP, no litellm callbacks set)
take `direct`, which uses litellm's provider translation and error mapping only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
os.environ.setdefault("LITELLM_LOG", "ERROR")

import litellm

from orchestrator.llm import direct, pricing, scripted
from orchestrator.teams import Tier
from orchestrator.telemetry import metrics
from orchestrator.telemetry.logs import redact
from orchestrator.telemetry.tracing import model_span, record_model_usage

log = logging.getLogger(__name__)

logging.getLogger("LiteLLM").setLevel(logging.ERROR)
litellm.suppress_debug_info = True
litellm.telemetry = False
scripted.register()

Mode = Literal["tools", "json", "text"]

RETRYABLE = (
    litellm.RateLimitError,
    litellm.InternalServerError,
    litellm.ServiceUnavailableError,
    litellm.APIConnectionError,
    litellm.Timeout,
)


_QUOTA = re.compile(r"insufficient_quota|exceeded your current quota", re.IGNORECASE)


def retryable(exc: BaseException) -> bool:
    """Worth another attempt: the statuses the OpenAI SDK retries (408, 409, 429, any 5xx,
    which includes a proxy's 502 and Anthropic's 529 "overloaded" that litellm maps to
    plain APIError) and connection failures; never a refused credential or spent quota."""
    if _QUOTA.search(str(exc)):
        return False  # a 429 for an account out of credit: waiting does not help
    if isinstance(exc, RETRYABLE):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in (408, 409) or status >= 500)


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
    finish_reason: str = "stop"  # "length": cut off at max_tokens
    priced: bool = True  # False: no price known, cost_usd is 0 but not free

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def filtered(self) -> bool:
        """The provider's content filter withheld (part of) the reply."""
        return self.finish_reason == "content_filter"

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
            "finish_reason": self.finish_reason,
            "priced": self.priced,
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
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


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
    """Every model of the tier failed for good; the run pauses and asks (Retry / Abort)."""

    def __init__(self, message: str, *, tier: str = "", model: str = "") -> None:
        super().__init__(message)
        self.tier, self.model = tier, model


class ProviderAuthError(Exception):
    """The provider refused the credentials (401 / 403): retrying cannot help, so the run
    fails at once with the name of the key to set."""


class FeatureUnsupported(Exception):
    """The provider refused tools or a response format for this model (a 400 about them);
    the caller asks again in a simpler protocol mode."""


AUTH_ERRORS = (litellm.AuthenticationError, litellm.PermissionDeniedError)
_KEY_NAMES = {
    "openai": "OPENAI_API_KEY",
    "text-completion-openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "vertex_ai": "GOOGLE_APPLICATION_CREDENTIALS",
    "bedrock": "AWS_ACCESS_KEY_ID",
}
_SECRET_PARAM = re.compile(r"key|token|secret|password|authori[sz]ation|credential|header", re.I)


def key_name(model: str) -> str:
    """The environment variable litellm reads this model's key from."""
    try:
        missing = litellm.validate_environment(model=model).get("missing_keys") or []
    except Exception:
        missing = []
    for name in missing:
        if not name.endswith("_API_BASE"):
            return str(name)
    try:
        provider = litellm.get_llm_provider(model)[1]
    except Exception:
        provider = model.split("/", 1)[0]
    return _KEY_NAMES.get(provider, f"{provider.upper().replace('-', '_')}_API_KEY")


_KEYS_PRESENT: set[str] = set()
_CREDENTIALS_MISSING = re.compile(r"missing credentials|api_key client option must be set", re.I)


def missing_key(model: str, tier: Tier) -> str | None:
    """The key variable this model needs and the environment lacks, if any. A tier that
    passes `api_key` in its params, or a provider that needs none, has nothing missing."""
    if model in _KEYS_PRESENT or "api_key" in tier.params or model.startswith("scripted/"):
        return None
    try:
        missing = litellm.validate_environment(model=model).get("missing_keys") or []
    except Exception:
        missing = []
    needed = [k for k in missing if not k.endswith("_API_BASE") or not tier.api_base]
    if not needed:
        _KEYS_PRESENT.add(model)
        return None
    return str(needed[0])


def stored_request(request: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of a request: never credentials, headers or secrets in URLs."""
    kept: dict[str, Any] = {}
    for name, value in request.items():
        if _SECRET_PARAM.search(name):
            continue
        kept[name] = redact(value) if isinstance(value, str) and name != "messages" else value
    return kept


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


class EmptyReply(ValueError):
    """A 200 with no choices (a provider's content filter does this): nothing to read."""


def _reply_from(tier: Tier, response: Any, model: str, latency_ms: float) -> Reply:
    if not getattr(response, "choices", None):
        raise EmptyReply("the provider's reply held no choices (filtered, or cut off)")
    first = response.choices[0]
    choice = first.message
    calls = tuple(
        ToolCall(
            id=c.id or f"call_{index}",
            name=c.function.name or "",
            arguments=c.function.arguments or "{}",
        )
        for index, c in enumerate(getattr(choice, "tool_calls", None) or [])
    )
    usage = getattr(response, "usage", None)
    tokens_in = getattr(usage, "prompt_tokens", 0) or 0
    tokens_out = getattr(usage, "completion_tokens", 0) or 0
    cost = pricing.cost(tier, model, response, tokens_in, tokens_out)
    return Reply(
        # A refusal (OpenAI: `refusal` set, `content` null) is what the model said: a worker's
        # report, or the text a protocol error quotes, instead of nothing.
        content=choice.content or getattr(choice, "refusal", None) or "",
        tool_calls=calls,
        model=model,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=float(cost or 0.0),
        latency_ms=latency_ms,
        finish_reason=str(getattr(first, "finish_reason", None) or "stop"),
        priced=cost is not None,
    )


def projected_cost(
    tier: Tier, model: str, messages: list[dict[str, Any]], max_output_tokens: int
) -> tuple[float, int]:
    """Cost if the model uses its whole output allowance; an unpriced model projects $0."""
    prompt = pricing.prompt_tokens(model, messages)
    return pricing.projected(tier, model, prompt, max_output_tokens), prompt + max_output_tokens


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
        direct: bool = True,
    ) -> None:
        """`direct`: take the cheaper call path where it applies (SWITCHBOARD_LLM_DIRECT);
        False sends every call through litellm.acompletion."""
        self.tiers = tiers
        self.ledger = ledger
        self.timeout_s = timeout_s
        self.retries = retries
        self.expected_output_tokens = expected_output_tokens
        self._sleep = sleep
        self._observers = observers
        self._direct = direct
        self._modes: dict[str, Mode] = {}

    def mode_for(self, tier_name: str) -> Mode:
        """How decisions are asked of this tier: the tier's setting, else what litellm knows
        of the model; a model litellm does not know is tried with tools (a refusal of tools
        degrades to JSON, then text)."""
        mode = self._modes.get(tier_name)
        if mode is None:
            tier = self.tiers[tier_name]
            mode = tier.protocol if tier.protocol != "auto" else _model_mode(tier.model)
            self._modes[tier_name] = mode
        return mode

    def degrade(self, tier_name: str, mode: Mode) -> Mode | None:
        """The next simpler mode after the provider refused `mode`, remembered per tier."""
        simpler: Mode | None = {"tools": "json", "json": "text"}.get(mode)  # type: ignore[assignment]
        if simpler is not None:
            log.warning(
                "tier %s refused %s; asking in %s mode from now on", tier_name, mode, simpler
            )
            self._modes[tier_name] = simpler
        return simpler

    def _projected(
        self, tier: Tier, model: str, messages: list[dict[str, Any]], max_out: int, budget: Budget
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
                return projected_cost(tier, model, messages, max_out)
            bound += (len(content) if content.isascii() else 4 * len(content)) + 16
        tokens = bound + max_out
        if budget.tokens is not None and tokens > budget.tokens:
            return projected_cost(tier, model, messages, max_out)
        price_in, price_out = pricing.price(tier, model) or (0.0, 0.0)
        dollars = bound * price_in + max_out * price_out
        if budget.dollars is not None and dollars > budget.dollars:
            return projected_cost(tier, model, messages, max_out)
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
            dollars, tokens = self._projected(tier, tier.model, spec.messages, max_out, budget)
            if (budget.dollars is not None and dollars > budget.dollars) or (
                budget.tokens is not None and tokens > budget.tokens
            ):
                raise BudgetExceeded(dollars, tokens, budget)
        last_error: Exception | None = None
        auth_failures: list[str] = []
        for model in (tier.model, *tier.fallbacks):
            if missing_key(model, tier) is not None:
                auth_failures.append(model)  # no call can succeed; do not retry it for 20 s
                continue
            with model_span(model, spec.tier) as span:
                try:
                    reply, request = await self._call_with_retries(model, tier, spec, params)
                except FeatureUnsupported:
                    raise
                except Exception as exc:  # retries exhausted, or refused (bad request, auth)
                    last_error = exc
                    if _is_auth_error(exc):
                        auth_failures.append(model)
                    if not retryable(exc):  # retryable ones were counted per attempt
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
            arecord = getattr(self.ledger, "arecord", None)
            if arecord is not None:  # the store awaits it on the async driver, no thread hop
                stored = await arecord(spec, model, request, reply)
            else:
                stored = await asyncio.to_thread(self.ledger.record, spec, model, request, reply)
            for observe in self._observers:
                observe(spec, stored)
            return stored
        if auth_failures:
            keys = ", ".join(dict.fromkeys(key_name(m) for m in auth_failures))
            raise ProviderAuthError(
                f"The provider refused the credentials for tier {spec.tier} "
                f"({', '.join(auth_failures)}): set {keys} for tier {spec.tier}."
            )
        raise ModelUnavailable(
            f"tier {spec.tier!r}: every model failed "
            f"({type(last_error).__name__}: {_short(last_error)})",
            tier=spec.tier,
            model=tier.model,
        )

    async def _call_with_retries(
        self, model: str, tier: Tier, spec: CallSpec, params: dict[str, Any]
    ) -> tuple[Reply, dict[str, Any]]:
        request: dict[str, Any] = {"model": model, "messages": spec.messages, **params}
        if spec.tools:
            request["tools"] = spec.tools
            if spec.tool_choice is not None:
                request["tool_choice"] = spec.tool_choice
        if spec.response_format is not None:
            request["response_format"] = spec.response_format
        extra: dict[str, Any] = {"timeout": self.timeout_s, "max_retries": 0}
        if tier.api_base:
            extra["api_base"] = tier.api_base
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            route = direct.target(model, tier.api_base, request) if self._direct else None
            try:
                if route is not None:
                    response = await direct.acompletion(route, request, timeout=self.timeout_s)
                else:
                    response = await litellm.acompletion(**request, **extra)
            except (litellm.BadRequestError, litellm.UnsupportedParamsError) as exc:
                if _refuses_feature(exc, request):
                    raise FeatureUnsupported(_short(exc)) from exc
                raise
            except Exception as exc:
                if not retryable(exc) or _is_auth_error(exc):
                    raise
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
            return _reply_from(tier, response, model, latency_ms), stored_request(request)
        raise AssertionError("unreachable")


def _is_auth_error(exc: Exception) -> bool:
    """401 / 403, or a client that refused to send without credentials (litellm reports
    that as a server error, which must not be retried)."""
    return isinstance(exc, AUTH_ERRORS) or bool(_CREDENTIALS_MISSING.search(str(exc)))


def _model_mode(model: str) -> Mode:
    try:
        litellm.get_model_info(model)
    except Exception:
        return "tools"  # unknown to litellm: an OpenAI-compatible server most likely
    try:
        if litellm.supports_function_calling(model=model):
            return "tools"
        if litellm.supports_response_schema(model=model):
            return "json"
    except Exception:
        return "tools"
    return "text"


def _refuses_feature(exc: Exception, request: dict[str, Any]) -> bool:
    """A 400 that names tools or the response format, for a request that used them."""
    text = str(exc).lower()
    if "tools" in request and ("tool" in text or "function" in text):
        return True
    return "response_format" in request and ("response_format" in text or "json_schema" in text)


def _short(exc: Exception | None) -> str:
    """First line of a provider error, scrubbed: it reaches chat and runs.error. An HTML
    error page (a proxy's 502) is said by its title."""
    text = str(exc or "")
    page = _HTML_TITLE.search(text)
    if page is not None:
        text = text[: text.find("<")] + " ".join(page.group(1).split())
    lines = text.strip().splitlines()
    return redact((lines[0] if lines else "")[:200])


_HTML_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
