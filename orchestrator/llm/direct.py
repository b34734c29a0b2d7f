"""The cheap model call: litellm's provider translation without litellm's per-call machinery.

`litellm.acompletion` spends about 2.5 ms of CPU on every call around the provider call
itself (function_setup and its Logging object, the sync `completion()` in an executor
thread, success-callback payloads, response metadata, cost). The gateway needs none of it:
it retries, prices and records calls itself. So for the two kinds of provider Switchboard
runs on, this module calls the pieces litellm's own `completion()` calls, and nothing else:

- custom providers (`litellm.custom_provider_map`, e.g. the offline `scripted/*`): the
  registered handler's `acompletion`, awaited directly with the arguments litellm passes;
- OpenAI-compatible chat over HTTP (`openai/*`, `hosted_vllm/*`): its provider config's
  parameter mapping and request / response transforms, POSTed on one reused
  `httpx2.AsyncClient` per (base URL, event loop), HTTP errors mapped to litellm's
  exception classes by litellm's own mapping.

Every other call goes through `litellm.acompletion` as before: other providers, streaming,
parameters this module does not know, chat models litellm bridges to the Responses API, and
every call while any litellm callback is configured, so operators' logging hooks still fire.

litellm internals this relies on (1.110.x; look here first after a litellm upgrade):
- `litellm.get_llm_provider`; `litellm.custom_provider_map` and
  `litellm.utils.ProviderConfigManager.get_custom_llm_handler` / `get_provider_chat_config`;
- the steps of `litellm.utils.get_optional_params` repeated in `optional_params`:
  `litellm.utils.get_supported_openai_params`, `PROVIDER_UNVALIDATED_PARAMS`,
  `normalize_drop_params`, `litellm.OpenAILikeChatConfig` (a custom provider's mapping);
- the provider config's `map_openai_params`, `validate_environment`, `get_complete_url`,
  `transform_request`, `transform_extra_body`, `transform_response`, `get_error_class`,
  `uses_async_transform_request`, and `litellm.OpenAIGPTConfig.get_api_key` / `get_api_base`;
- `litellm.responses.bridge_check.responses_api_bridge_check` (chat models litellm sends to
  the Responses API);
- what a custom handler is called with, as `_complete_custom_providers` in litellm/main.py
  calls it: `litellm.litellm_core_utils.get_litellm_params.get_litellm_params`,
  `litellm.litellm_core_utils.litellm_logging.Logging`, `litellm.main._get_encoding`,
  `litellm.utils.print_verbose`;
- `litellm.exception_type` and `litellm.exceptions.LITELLM_EXCEPTION_TYPES`; the module-level
  callback lists named in `_CALLBACK_LISTS`, `litellm.model_fallbacks`, `model_alias_map`,
  `headers`, `route_all_chat_openai_to_responses`, `ssl_verify`, `organization`, `drop_params`.
tests/unit/test_llm_direct.py holds the direct path to litellm's own on the same requests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import litellm
from litellm.litellm_core_utils.get_litellm_params import get_litellm_params
from litellm.litellm_core_utils.litellm_logging import Logging
from litellm.llms.base_llm.chat.transformation import BaseConfig, BaseLLMException
from litellm.main import _get_encoding
from litellm.responses.bridge_check import responses_api_bridge_check
from litellm.types.utils import LlmProviders, ModelResponse
from litellm.utils import (
    PROVIDER_UNVALIDATED_PARAMS,
    ProviderConfigManager,
    get_supported_openai_params,
    normalize_drop_params,
    print_verbose,
)

# OpenAI chat parameters the direct path hands to litellm's mapping; any other key in a
# request (stream, extra_body, reasoning_effort, metadata, ...) sends it through
# litellm.acompletion, which knows what to do with it.
_CHAT_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "user",
        "response_format",
        "seed",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
        "safety_identifier",
        "store",
        "prompt_cache_key",
    }
)
_KNOWN_KEYS = _CHAT_PARAMS | {"model", "messages", "api_key", "extra_headers", "drop_params"}
_HTTP_PROVIDERS = frozenset({"openai", "hosted_vllm"})
# Where an operator's litellm hooks live; any of them set means every call goes the stock way.
_CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "success_callback",
    "failure_callback",
    "service_callback",
    "_async_input_callback",
    "_async_success_callback",
    "_async_failure_callback",
)
# 200 runs may be waiting on one provider in one process.
_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=256, keepalive_expiry=30)


@dataclass(frozen=True)
class Target:
    """Where a model string resolves to, once per (model, api_base): what litellm's
    `get_llm_provider` says, plus the handler or provider config that serves it."""

    model: str  # as the provider knows it (no provider prefix)
    provider: str
    api_key: str | None  # the provider's own key litellm resolved, if any
    api_base: str | None
    handler: Any = None  # a litellm CustomLLM; None: OpenAI-compatible HTTP
    config: BaseConfig | None = None  # maps the parameters; for HTTP, translates too
    supported: frozenset[str] = frozenset()  # OpenAI params litellm accepts for it


_TARGETS: dict[tuple[str, str | None, bool, int], Target | None] = {}


def callbacks_configured() -> bool:
    """True when any litellm callback is set: those calls keep litellm's logging."""
    return any(getattr(litellm, name, None) for name in _CALLBACK_LISTS)


def target(model: str, api_base: str | None, request: Mapping[str, Any]) -> Target | None:
    """The direct route for this request, or None when it must go through litellm.acompletion."""
    if (
        callbacks_configured()
        or litellm.model_fallbacks
        or litellm.model_alias_map
        or litellm.headers
        or getattr(litellm, "route_all_chat_openai_to_responses", False)
        or not _KNOWN_KEYS.issuperset(request)
    ):
        return None
    tools = request.get("tools")
    if tools and any(not isinstance(t, dict) or t.get("type") != "function" for t in tools):
        return None
    # Re-registering custom providers replaces the map: the key sees that.
    key = (model, api_base, bool(tools), id(litellm.custom_provider_map))
    try:
        return _TARGETS[key]
    except KeyError:
        resolved = _TARGETS[key] = _resolve(model, api_base, bool(tools))
        return resolved


def _resolve(model: str, api_base: str | None, tools: bool) -> Target | None:
    try:
        bare, provider, dynamic_key, base = litellm.get_llm_provider(model, api_base=api_base)
    except Exception:
        return None  # litellm.acompletion raises the error a person can read
    if any(entry.get("provider") == provider for entry in litellm.custom_provider_map):
        handler = ProviderConfigManager.get_custom_llm_handler(provider)
        if handler is None:
            return None
        # litellm maps a custom provider's parameters as for any OpenAI-like API.
        return Target(
            bare,
            provider,
            dynamic_key,
            base,
            handler=handler,
            config=litellm.OpenAILikeChatConfig(),
            supported=_supported(bare, provider),
        )
    if provider not in _HTTP_PROVIDERS:
        return None
    sample = [{"type": "function", "function": {"name": "f", "parameters": {}}}] if tools else None
    try:
        info, bridged_model = responses_api_bridge_check(
            model=bare, custom_llm_provider=provider, tools=sample, api_base=base
        )
    except Exception:
        return None
    if info.get("mode") == "responses" or bridged_model != bare:
        return None  # litellm sends this one to the Responses API
    config = ProviderConfigManager.get_provider_chat_config(
        model=bare, provider=LlmProviders(provider)
    )
    if config is None or config.uses_async_transform_request:
        return None
    if provider == "openai":
        base = base or litellm.OpenAIGPTConfig.get_api_base(None)
    if not base:
        return None  # hosted_vllm without HOSTED_VLLM_API_BASE: litellm says so
    return Target(
        bare, provider, dynamic_key, base, config=config, supported=_supported(bare, provider)
    )


def _supported(model: str, provider: str) -> frozenset[str]:
    """What litellm's get_optional_params checks a request against (a custom provider gets
    OpenAI's list), plus the parameters it never checks."""
    names = get_supported_openai_params(model=model, custom_llm_provider=provider)
    if names is None:
        names = get_supported_openai_params(model=model, custom_llm_provider="openai") or []
    return frozenset(names) | PROVIDER_UNVALIDATED_PARAMS


def optional_params(target: Target, params: Mapping[str, Any], drop_params: Any) -> dict[str, Any]:
    """What litellm's `get_optional_params` makes of these parameters for this target: an
    unsupported one refused (UnsupportedParamsError) or, with drop_params, dropped; then the
    provider config's own `map_openai_params` (litellm's OpenAI-like one for a custom
    provider). The same steps without its per-call scan of every provider name, which costs
    as much as the rest of this module's work; tests/unit/test_llm_direct.py holds the two to
    each other."""
    given = {k: v for k, v in params.items() if v is not None}
    drop = normalize_drop_params(drop_params) is True or litellm.drop_params is True
    unsupported = [k for k in given if k not in target.supported]
    if unsupported:
        if not drop:
            raise litellm.UnsupportedParamsError(
                status_code=500,
                message=f"{target.provider} does not support parameters: {unsupported}, "
                f"for model={target.model}. To drop these, set `litellm.drop_params=True`.",
            )
        given = {k: v for k, v in given.items() if k not in unsupported}
    given["max_retries"] = 0  # as the gateway asks litellm for it: retries are the gateway's
    assert target.config is not None
    return target.config.map_openai_params(
        non_default_params=given, optional_params={}, model=target.model, drop_params=drop
    )


async def acompletion(
    target: Target, request: Mapping[str, Any], *, timeout: float
) -> ModelResponse:
    """One chat completion on the direct route; raises litellm's exception classes."""
    messages = request["messages"]
    params = {k: v for k, v in request.items() if k in _CHAT_PARAMS}
    api_key = request.get("api_key") or target.api_key
    if target.handler is None and target.provider == "openai":
        api_key = api_key or litellm.OpenAIGPTConfig.get_api_key(None)
    optional = optional_params(target, params, request.get("drop_params"))
    call_id = str(uuid.uuid4())
    litellm_params = get_litellm_params(
        acompletion=True,
        api_key=api_key,
        api_base=target.api_base,
        custom_llm_provider=target.provider,
        litellm_call_id=call_id,
        drop_params=request.get("drop_params"),
    )
    logging_obj = Logging(
        model=target.model,
        messages=messages,
        stream=False,
        call_type="acompletion",
        start_time=time.time(),
        litellm_call_id=call_id,
        function_id="",
    )
    logging_obj.update_environment_variables(
        litellm_params=litellm_params, optional_params=optional, model=target.model
    )
    call = _Call(
        target,
        messages,
        optional,
        litellm_params,
        logging_obj,
        dict(request.get("extra_headers") or {}),
        api_key,
        timeout,
    )
    return await (_custom(call) if target.handler is not None else _http(call))


@dataclass
class _Call:
    """One completion as litellm's provider code takes it, prepared once for either route."""

    target: Target
    messages: list[dict[str, Any]]
    optional: dict[str, Any]
    litellm_params: dict[str, Any]
    logging_obj: Logging
    headers: dict[str, Any]
    api_key: str | None
    timeout: float


async def _custom(call: _Call) -> ModelResponse:
    """As litellm's `_complete_custom_providers` calls the handler, minus the executor hop."""
    target = call.target
    model_response = ModelResponse()
    model_response.usage = litellm.Usage()  # type: ignore[attr-defined]
    try:
        response = await target.handler.acompletion(
            model=target.model,
            messages=call.messages,
            headers=call.headers,
            model_response=model_response,
            print_verbose=print_verbose,
            api_key=call.api_key,
            api_base=target.api_base,
            acompletion=True,
            logging_obj=call.logging_obj,
            optional_params=call.optional,
            litellm_params=call.litellm_params,
            logger_fn=None,
            timeout=call.timeout,
            custom_prompt_dict={},
            client=None,
            encoding=_get_encoding(),
        )
    except Exception as exc:
        raise _mapped(exc, target) from exc
    return response  # type: ignore[no-any-return]


async def _http(call: _Call) -> ModelResponse:
    """As litellm's HTTP handler runs a provider config, on a client this module keeps."""
    target, messages, optional = call.target, call.messages, call.optional
    litellm_params, logging_obj, headers = call.litellm_params, call.logging_obj, call.headers
    api_key, timeout = call.api_key, call.timeout
    config = target.config
    assert config is not None
    if api_key is None and target.provider == "openai":
        raise litellm.AuthenticationError(
            message="The api_key client option must be set either by passing api_key to the "
            "client or by setting the OPENAI_API_KEY environment variable",
            llm_provider=target.provider,
            model=target.model,
        )
    json_mode = bool(optional.pop("json_mode", False))
    extra_body = optional.pop("extra_body", None)
    if not optional.get("stream"):
        optional.pop("stream", None)
    organization = litellm.organization or litellm.get_secret_str("OPENAI_ORGANIZATION")
    if organization and target.provider == "openai":
        headers.setdefault("OpenAI-Organization", organization)
    headers = config.validate_environment(
        headers=headers,
        model=target.model,
        messages=messages,  # type: ignore[arg-type]
        optional_params=optional,
        litellm_params=litellm_params,
        api_key=api_key,
        api_base=target.api_base,
    )
    url = config.get_complete_url(
        api_base=target.api_base,
        api_key=api_key,
        model=target.model,
        optional_params=optional,
        litellm_params=litellm_params,
        stream=False,
    )
    data = config.transform_request(
        model=target.model,
        messages=messages,  # type: ignore[arg-type]
        optional_params=optional,
        litellm_params=litellm_params,
        headers=headers,
    )
    if extra_body:
        extra = config.transform_extra_body(
            extra_body=extra_body, request=data, model=target.model, litellm_params=litellm_params
        )
        data = {**data, **extra}
    try:
        sent = await client_for(target.api_base or url).post(
            url, content=json.dumps(data), headers=headers, timeout=timeout
        )
    except httpx2.TimeoutException as exc:
        raise litellm.Timeout(
            message=f"{type(exc).__name__}: no answer within {timeout}s",
            model=target.model,
            llm_provider=target.provider,
        ) from exc
    except httpx2.TransportError as exc:
        raise litellm.APIConnectionError(
            message=f"{type(exc).__name__}: {exc}",
            llm_provider=target.provider,
            model=target.model,
        ) from exc
    # litellm reads an httpx.Response; this one's request carries no credentials.
    raw = httpx.Response(
        sent.status_code,
        headers=sent.headers.multi_items(),
        content=sent.content,
        request=httpx.Request("POST", url),
    )
    if raw.status_code >= 400:
        raise _mapped(_provider_error(config, raw), target)
    try:
        return config.transform_response(
            model=target.model,
            raw_response=raw,
            model_response=ModelResponse(),
            logging_obj=logging_obj,
            request_data=data,
            messages=messages,  # type: ignore[arg-type]
            optional_params=optional,
            litellm_params=litellm_params,
            encoding=None,
            api_key=api_key,
            json_mode=json_mode,
        )
    except Exception as exc:
        raise _mapped(exc, target) from exc


def _provider_error(config: BaseConfig, raw: httpx.Response) -> BaseLLMException:
    """The provider config's exception for an HTTP error, carrying the response (for its
    Retry-After) and the decoded error object (for litellm's message extraction)."""
    error = config.get_error_class(
        error_message=raw.text, status_code=raw.status_code, headers=raw.headers
    )
    error.response = raw
    try:
        body = raw.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        inner = body.get("error")
        error.body = inner if isinstance(inner, dict) else body
    return error


def _mapped(exc: Exception, target: Target) -> Exception:
    """litellm's own mapping of a provider exception onto its exception classes; a 403 is
    reported as PermissionDeniedError (litellm's OpenAI mapping calls it a generic APIError)."""
    if isinstance(exc, tuple(litellm.exceptions.LITELLM_EXCEPTION_TYPES)):
        return exc
    try:
        litellm.exception_type(
            model=target.model,
            custom_llm_provider=target.provider,
            original_exception=exc,
            completion_kwargs={},
            extra_kwargs={},
        )
    except Exception as mapped:
        response = getattr(exc, "response", None)
        if (
            getattr(exc, "status_code", None) == 403
            and isinstance(response, httpx.Response)
            and not isinstance(mapped, litellm.PermissionDeniedError)
        ):
            return litellm.PermissionDeniedError(
                message=str(getattr(mapped, "message", mapped)),
                llm_provider=target.provider,
                model=target.model,
                response=response,
            )
        return mapped
    return exc


# One client per event loop and base URL: a client's connections belong to the loop that
# opened them. Loops that are gone drop out of the weak mapping. The client is httpx2's (as
# the OpenAI SDK's here): httpcore 1.0's pool, under httpx, re-checks every pooled connection
# for each request, which at 50 calls in flight costs more CPU than the call itself.
_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx2.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
_CLIENTS_LOCK = threading.Lock()


def client_for(base_url: str) -> httpx2.AsyncClient:
    """The running loop's reused client for this base URL (keep-alive, pooled)."""
    loop = asyncio.get_running_loop()
    clients = _CLIENTS.get(loop)
    client = clients.get(base_url) if clients is not None else None
    if client is None or client.is_closed:
        with _CLIENTS_LOCK:
            clients = _CLIENTS.setdefault(loop, {})
            client = clients.get(base_url)
            if client is None or client.is_closed:
                client = clients[base_url] = httpx2.AsyncClient(
                    limits=_LIMITS, verify=litellm.ssl_verify
                )
    return client


async def aclose_clients() -> None:
    """Close the running loop's clients (before the loop itself closes: tests, benchmarks)."""
    with _CLIENTS_LOCK:
        clients = _CLIENTS.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.aclose()


__all__ = [
    "Target",
    "aclose_clients",
    "acompletion",
    "callbacks_configured",
    "client_for",
    "optional_params",
    "target",
]
