"""The gateway's direct call path against a real OpenAI-compatible server, beside litellm's.

The server is the hosted-model stand-in (tests/support/hosted_model.py): OpenAI's documented
shapes, errors and headers over real HTTP. Each behaviour is checked on the direct path and,
where the two should agree, against `litellm.acompletion` answering the same request. Which
path served a request shows in its User-Agent: the OpenAI SDK (litellm's stock path) names
itself, the direct path's httpx client does not.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest
from litellm import CustomLLM
from litellm.integrations.custom_logger import CustomLogger
from litellm.utils import get_optional_params

from orchestrator.llm import direct, scripted
from orchestrator.llm.gateway import (
    Budget,
    CallSpec,
    FeatureUnsupported,
    LLMGateway,
    ModelUnavailable,
    ProviderAuthError,
    Reply,
)
from orchestrator.protocol import router_tools, supervisor_tools
from orchestrator.settings import Settings
from orchestrator.teams import Tier, load_teams
from tests.support.hosted_model import HostedModel, Styles

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_teams(ROOT / "teams" / "default.yaml")
KEY = "sk-test-direct-0123456789"
PRICES = {"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6}
SUPERVISOR = [
    {"role": "system", "content": "You lead a research desk. (switchboard/supervisor)"},
    {"role": "user", "content": "Request: compare Redis and Postgres queues\n\nWork so far: none"},
]
ROUTER = [
    {"role": "system", "content": "You route requests to the best team. (switchboard/router)"},
    {"role": "user", "content": "Request: compare message queues\n\nTeams:\n- research: r\n"},
]


class Ledger:
    """The ledger seam, in memory: what the gateway recorded."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any], Reply]] = []

    def recorded(self, run_id: int, step: int, call_index: int) -> Reply | None:
        return None

    def record(self, spec: CallSpec, model: str, request: dict[str, Any], reply: Reply) -> Reply:
        self.rows.append((model, request, reply))
        return reply


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def hosted(url: str, model: str = "openai/gpt-test", **fields: Any) -> Tier:
    return Tier(model=model, api_base=url, params={"api_key": KEY}, **{**PRICES, **fields})


def gateway(tier: Tier, **options: Any) -> tuple[LLMGateway, Ledger, Sleeps]:
    ledger, sleeps = Ledger(), Sleeps()
    options.setdefault("retries", 3)
    return LLMGateway({"t": tier}, ledger, sleep=sleeps, **options), ledger, sleeps


def spec(messages: list[dict[str, Any]], **fields: Any) -> CallSpec:
    return CallSpec(
        run_id=1, step=1, call_index=0, tier="t", purpose="test", messages=messages, **fields
    )


def supervise_spec(**params: Any) -> CallSpec:
    return spec(SUPERVISOR, tools=supervisor_tools(CONFIG.teams["research"]), params=params)


def run(coro: Any) -> Any:
    """Each call on a fresh loop, as a test: the direct path's clients are per loop."""

    async def main() -> Any:
        try:
            return await coro
        finally:
            await direct.aclose_clients()

    return asyncio.run(main())


def served_by_sdk(model: HostedModel) -> list[bool]:
    """Per request: did litellm's OpenAI SDK client send it (the stock path)?"""
    return ["openai" in h.get("user-agent", "").lower() for h in model.headers]


def same(a: Reply, b: Reply) -> None:
    assert {**a.__dict__, "latency_ms": 0} == {**b.__dict__, "latency_ms": 0}


@pytest.fixture
def free_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port  # nothing listens on it now: connections are refused


# --- replies -----------------------------------------------------------------------------


def test_parallel_tool_calls_usage_and_cost_match_litellm() -> None:
    styles = Styles(parallel=1.0, prose_with_tool_calls=0.0, capitalised_names=0.0)
    replies, bodies, ledgers = [], [], []
    for direct_on in (True, False):
        with HostedModel(api_key=KEY, styles=styles) as model:
            gw, ledger, _ = gateway(hosted(model.url), direct=direct_on)
            replies.append(run(gw.complete(supervise_spec(temperature=0.2, max_tokens=300))))
            bodies.append(model.completions)
            ledgers.append(ledger)
            assert served_by_sdk(model) == [not direct_on]
    fast, stock = replies
    same(fast, stock)
    assert bodies[0] == bodies[1]  # the same request on the wire
    assert [c.name for c in fast.tool_calls] == ["assign", "assign"]
    assert fast.content == "" and fast.finish_reason == "tool_calls"
    assert fast.tokens_in > 0 and fast.tokens_out > 0 and fast.priced
    assert fast.cost_usd == pytest.approx(fast.tokens_in * 2e-6 + fast.tokens_out * 8e-6)
    ((_, request, recorded),) = ledgers[0].rows
    assert recorded is fast and "api_key" not in request


def test_a_reply_cut_at_max_tokens_is_truncated_on_both_paths() -> None:
    replies = []
    for direct_on in (True, False):
        with HostedModel(api_key=KEY, styles=Styles(report_tokens=400)) as model:
            gw, _, _ = gateway(hosted(model.url), direct=direct_on)
            worker = [{"role": "user", "content": "Instruction: research message queues"}]
            replies.append(run(gw.complete(spec(worker, params={"max_tokens": 40}))))
    same(*replies)
    assert replies[0].truncated and len(replies[0].content) == 160


def test_json_mode_sends_litellms_request() -> None:
    schema = {"type": "object", "properties": {"team": {"type": "string"}}, "required": ["team"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "route", "schema": schema}}
    bodies = []
    for direct_on in (True, False):
        with HostedModel(api_key=KEY) as model:
            gw, _, _ = gateway(hosted(model.url), direct=direct_on)
            reply = run(gw.complete(spec(ROUTER, response_format=response_format)))
            assert '"team"' in reply.content
            bodies.append(model.completions)
    assert bodies[0] == bodies[1]


def test_the_key_comes_from_the_environment_variable_litellm_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with HostedModel(api_key=KEY) as model:
        tier = Tier(model="openai/gpt-test", api_base=model.url, **PRICES)
        gw, _, _ = gateway(tier)
        assert run(gw.complete(supervise_spec())).tool_calls
        assert model.headers[0]["authorization"] == f"Bearer {KEY}"
        assert served_by_sdk(model) == [False]


def test_a_vllm_server_gets_litellms_request_on_both_paths() -> None:
    replies, bodies = [], []
    for direct_on in (True, False):
        with HostedModel() as model:
            tier = Tier(model="hosted_vllm/llama-3.1-8b", api_base=model.url, **PRICES)
            gw, _, _ = gateway(tier, direct=direct_on)
            replies.append(run(gw.complete(supervise_spec(max_tokens=300))))
            bodies.append(model.completions)
    same(*replies)
    assert bodies[0] == bodies[1]
    # litellm's vLLM mapping drops `additionalProperties` from the tool schemas
    assert "additionalProperties" not in str(bodies[0][0]["tools"])


def test_an_unpriced_model_is_marked_unpriced() -> None:
    with HostedModel(api_key=KEY) as model:
        tier = Tier(model="openai/gpt-test-unlisted", api_base=model.url, params={"api_key": KEY})
        gw, _, _ = gateway(tier)
        reply = run(gw.complete(spec(ROUTER, tools=router_tools(CONFIG))))
    assert reply.tokens_in > 0 and reply.cost_usd == 0.0 and not reply.priced


def test_a_model_in_litellms_price_map_is_priced_from_it() -> None:
    with HostedModel(api_key=KEY) as model:
        tier = Tier(model="openai/gpt-4o-mini", api_base=model.url, params={"api_key": KEY})
        gw, _, _ = gateway(tier)
        reply = run(gw.complete(spec(ROUTER, tools=router_tools(CONFIG))))
    cost_in, cost_out = litellm.cost_per_token(
        model="gpt-4o-mini", prompt_tokens=reply.tokens_in, completion_tokens=reply.tokens_out
    )
    assert reply.priced and reply.cost_usd == pytest.approx(cost_in + cost_out)


def test_clients_are_per_event_loop() -> None:
    with HostedModel(api_key=KEY) as model:
        gw, _, _ = gateway(hosted(model.url))
        for _ in range(2):  # a second loop must not reuse the first loop's connections
            asyncio.run(gw.complete(supervise_spec()))
        assert served_by_sdk(model) == [False, False]


def test_fifty_calls_in_flight_share_one_client() -> None:
    with HostedModel(api_key=KEY, latency=lambda: 0.05) as model:
        gw, _, _ = gateway(hosted(model.url))

        async def many() -> list[Reply]:
            calls = [gw.complete(supervise_spec()) for _ in range(50)]
            replies = await asyncio.gather(*calls)
            loop = asyncio.get_running_loop()
            assert len(direct._CLIENTS[loop]) == 1
            return replies

        started = time.monotonic()
        replies = run(many())
        assert len(replies) == 50 and time.monotonic() - started < 2.0  # not one at a time


# --- failures ----------------------------------------------------------------------------


def test_429_is_retried_after_the_servers_retry_after() -> None:
    with HostedModel(api_key=KEY) as model:
        model.fail_next(429, retry_after=2.5)
        gw, _, sleeps = gateway(hosted(model.url))
        reply = run(gw.complete(supervise_spec()))
        assert sleeps.delays == [2.5]
        assert len(model.completions) == 2 and served_by_sdk(model) == [False, False]
    assert reply.tool_calls


def test_500_is_retried_with_backoff() -> None:
    with HostedModel(api_key=KEY) as model:
        model.fail_next(500, times=2)
        gw, _, sleeps = gateway(hosted(model.url))
        assert run(gw.complete(supervise_spec())).tool_calls
        assert len(sleeps.delays) == 2 and 0.25 <= sleeps.delays[0] <= 0.5
        assert len(model.completions) == 3


@pytest.mark.parametrize("direct_path", [True, False], ids=["direct", "litellm"])
@pytest.mark.parametrize("status", [502, 503, 529])
def test_overloaded_and_bad_gateway_are_retried(status: int, direct_path: bool) -> None:
    """What the OpenAI SDK retries (any 5xx): a proxy's HTML 502, an overloaded 503, the
    529 Anthropic answers when overloaded (litellm calls it a plain APIError)."""
    with HostedModel(api_key=KEY) as model:
        model.fail_next(status, times=2)
        gw, ledger, sleeps = gateway(hosted(model.url), direct=direct_path)
        assert run(gw.complete(supervise_spec())).tool_calls
        assert len(sleeps.delays) == 2 and len(model.completions) == 3
        assert len(ledger.rows) == 1


@pytest.mark.parametrize("direct_path", [True, False], ids=["direct", "litellm"])
def test_an_exhausted_quota_is_not_retried_and_says_so(direct_path: bool) -> None:
    """OpenAI's 429 insufficient_quota: out of credit, which waiting does not fix."""
    with HostedModel(api_key=KEY) as model:
        model.fail_next(429, quota=True)
        gw, ledger, sleeps = gateway(hosted(model.url), direct=direct_path)
        with pytest.raises(ModelUnavailable, match="exceeded your current quota"):
            run(gw.complete(supervise_spec()))
        assert len(model.completions) == 1 and sleeps.delays == [] and ledger.rows == []


def test_a_bad_gateway_page_is_named_by_its_title_when_the_model_stays_down() -> None:
    with HostedModel(api_key=KEY) as model:
        model.fail_next(502, times=3)
        gw, _, _ = gateway(hosted(model.url), retries=2)
        with pytest.raises(ModelUnavailable) as raised:
            run(gw.complete(supervise_spec()))
    assert "502 Bad Gateway" in str(raised.value) and "<" not in str(raised.value)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_fail_at_once_naming_the_key(status: int) -> None:
    with HostedModel(api_key=KEY) as model:
        model.fail_next(status)
        gw, ledger, sleeps = gateway(hosted(model.url))
        with pytest.raises(ProviderAuthError, match="set OPENAI_API_KEY for tier t"):
            run(gw.complete(supervise_spec()))
        assert len(model.headers) == 1 and sleeps.delays == [] and ledger.rows == []


def test_a_wrong_key_is_a_401_from_the_server() -> None:
    with HostedModel(api_key=KEY) as model:
        tier = Tier(model="openai/gpt-test", api_base=model.url, params={"api_key": "sk-wrong"})
        gw, _, _ = gateway(tier)
        with pytest.raises(ProviderAuthError):
            run(gw.complete(supervise_spec()))
        assert len(model.headers) == 1 and model.headers[0]["authorization"] == "Bearer sk-wrong"


def test_a_400_about_tools_asks_for_a_simpler_mode() -> None:
    with HostedModel(api_key=KEY) as model:
        model.refuses_tools = True
        gw, _, sleeps = gateway(hosted(model.url))
        with pytest.raises(FeatureUnsupported, match="tools is not supported"):
            run(gw.complete(supervise_spec()))
        assert len(model.headers) == 1 and sleeps.delays == []
        reply = run(gw.complete(spec(ROUTER)))  # the same model, asked in text
        assert reply.content


def test_connection_refused_is_retried_then_the_model_is_unavailable(free_port: int) -> None:
    gw, _, sleeps = gateway(hosted(f"http://127.0.0.1:{free_port}/v1"), retries=2)
    with pytest.raises(ModelUnavailable, match="APIConnectionError"):
        run(gw.complete(supervise_spec()))
    assert len(sleeps.delays) == 2


def test_a_timeout_is_retried_then_the_model_is_unavailable() -> None:
    with HostedModel(api_key=KEY, latency=lambda: 1.0) as model:
        gw, _, sleeps = gateway(hosted(model.url), retries=1, timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(ModelUnavailable, match="Timeout"):
            run(gw.complete(supervise_spec()))
        assert len(sleeps.delays) == 1 and time.monotonic() - started < 1.5


def test_the_budget_is_checked_before_the_direct_call() -> None:
    from orchestrator.llm.gateway import BudgetExceeded

    with HostedModel(api_key=KEY) as model:
        gw, _, _ = gateway(hosted(model.url))
        with pytest.raises(BudgetExceeded):
            run(gw.complete(supervise_spec(max_tokens=1000), Budget(dollars=0.001)))
        assert model.headers == []


# --- which path --------------------------------------------------------------------------


class Recorder(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.successes: list[Any] = []

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self.successes.append(response_obj)


@pytest.fixture
def callbacks() -> Iterator[None]:
    saved = {name: list(getattr(litellm, name)) for name in direct._CALLBACK_LISTS}
    yield
    for name, value in saved.items():
        setattr(litellm, name, value)


def test_with_a_litellm_callback_configured_calls_take_litellms_path(callbacks: None) -> None:
    recorder = Recorder()
    litellm.callbacks = [recorder]
    with HostedModel(api_key=KEY) as model:
        gw, _, _ = gateway(hosted(model.url))

        async def call_and_wait() -> Reply:
            reply = await gw.complete(supervise_spec())
            for _ in range(100):  # litellm logs success in a background task
                if recorder.successes:
                    break
                await asyncio.sleep(0.02)
            return reply

        reply = run(call_and_wait())
        assert served_by_sdk(model) == [True]
    assert reply.tool_calls and len(recorder.successes) == 1
    assert direct.target("openai/gpt-test", model.url, {"model": "x", "messages": []}) is None


def test_switchboard_llm_direct_off_takes_litellms_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SWITCHBOARD_LLM_DIRECT", "false")
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}")  # type: ignore[call-arg]
    assert settings.llm_direct is False
    assert Settings().llm_direct is False and Settings(SWITCHBOARD_LLM_DIRECT="1").llm_direct  # type: ignore[call-arg]
    with HostedModel(api_key=KEY) as model:
        gw, _, _ = gateway(hosted(model.url), direct=settings.llm_direct)
        run(gw.complete(supervise_spec()))
        assert served_by_sdk(model) == [True]


def test_the_runtime_builds_its_gateway_from_the_setting(tmp_path: Path) -> None:
    from tasks import runtime

    for value, expected in (("false", False), ("true", True)):
        settings = Settings(  # type: ignore[call-arg]
            DATABASE_URL=f"sqlite:///{tmp_path / f'{value}.db'}",
            SWITCHBOARD_TEAMS_FILE=str(ROOT / "teams" / "default.yaml"),
            SWITCHBOARD_LLM_DIRECT=value,
        )
        rt = runtime.build(settings, tools=object())
        assert rt.engine.gateway._direct is expected


@pytest.mark.parametrize(
    "request_params",
    [
        {"stream": True},
        {"extra_body": {"top_k": 5}},
        {"reasoning_effort": "low"},
        {"metadata": {"team": "x"}},
        {"tools": [{"type": "web_search"}]},
    ],
)
def test_what_the_direct_path_does_not_know_goes_to_litellm(request_params: dict) -> None:
    request = {"model": "openai/gpt-test", "messages": ROUTER, **request_params}
    assert direct.target("openai/gpt-test", "http://127.0.0.1:9/v1", request) is None


@pytest.mark.parametrize(
    ("model", "api_base", "routed"),
    [
        ("openai/gpt-test", "http://127.0.0.1:9/v1", True),
        ("hosted_vllm/llama-3", "http://127.0.0.1:9/v1", True),
        ("scripted/cheap", None, True),
        ("anthropic/claude-3-5-haiku-20241022", None, False),
        ("ollama/llama3", "http://127.0.0.1:9", False),
    ],
)
def test_which_providers_take_the_direct_path(
    model: str, api_base: str | None, routed: bool
) -> None:
    request = {"model": model, "messages": ROUTER, "tools": router_tools(CONFIG)}
    assert (direct.target(model, api_base, request) is not None) is routed


# --- custom providers --------------------------------------------------------------------


def test_the_scripted_provider_answers_alike_on_both_paths() -> None:
    scripted.register()
    tier = Tier(model="scripted/premium")
    replies = []
    for direct_on in (True, False):
        gw, _, _ = gateway(tier, direct=direct_on)
        call = spec(
            ROUTER,
            tools=router_tools(CONFIG),
            tool_choice={"type": "function", "function": {"name": "route"}},
        )
        replies.append(run(gw.complete(call)))
    same(*replies)
    price_in, price_out = scripted.PRICES["premium"]
    fast = replies[0]
    assert fast.tool_calls[0].name == "route" and fast.priced
    assert fast.cost_usd == pytest.approx(fast.tokens_in * price_in + fast.tokens_out * price_out)


class Recording(CustomLLM):
    """A custom provider that keeps what it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.calls.append({"model": model, "messages": messages, **kwargs})
        response = kwargs["model_response"]
        response.choices[0].message.content = "noted"
        response.usage = litellm.Usage(prompt_tokens=3, completion_tokens=1, total_tokens=4)
        return response


@pytest.fixture
def recording() -> Iterator[Recording]:
    handler = Recording()
    saved = litellm.custom_provider_map
    litellm.custom_provider_map = [*saved, {"provider": "recording", "custom_handler": handler}]
    yield handler
    litellm.custom_provider_map = saved


def test_a_custom_provider_gets_what_litellm_passes_it(recording: Recording) -> None:
    tier = Tier(model="recording/echo", params={"temperature": 0.1, "max_tokens": 64})
    for direct_on in (True, False):
        gw, _, _ = gateway(tier, direct=direct_on)
        reply = run(gw.complete(spec(ROUTER, tools=router_tools(CONFIG))))
        assert reply.content == "noted" and reply.tokens_in == 3 and not reply.priced
    fast, stock = recording.calls
    assert fast.keys() == stock.keys()
    for name in ("model", "messages", "optional_params", "headers", "api_key", "api_base"):
        assert fast[name] == stock[name], name
    assert fast["timeout"] == stock["timeout"] and fast["acompletion"] is True
    assert fast["litellm_params"]["custom_llm_provider"] == "recording"
    assert fast["encoding"] is stock["encoding"]


def test_a_custom_providers_error_is_mapped_as_litellm_maps_it(recording: Recording) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("upstream exploded")

    recording.acompletion = broken  # type: ignore[method-assign]
    errors = []
    for direct_on in (True, False):
        gw, _, sleeps = gateway(Tier(model="recording/echo"), direct=direct_on, retries=1)
        with pytest.raises(ModelUnavailable) as raised:
            run(gw.complete(spec(ROUTER)))
        errors.append((str(raised.value), len(sleeps.delays)))
    assert errors[0] == errors[1]


# --- parameters --------------------------------------------------------------------------

PARAMS = [
    {"temperature": 0.3, "max_tokens": 200, "seed": 7, "user": "u-1", "stop": ["\n\n"]},
    {"tools": router_tools(CONFIG), "tool_choice": "required", "parallel_tool_calls": False},
    {"response_format": {"type": "json_object"}, "top_p": 0.9, "n": 1},
    {"max_completion_tokens": 100, "logprobs": True, "top_logprobs": 2},
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize(
    "model",
    [
        "openai/gpt-test",
        "openai/gpt-4o-mini",
        "openai/o3-mini",
        "openai/gpt-5",
        "hosted_vllm/m",
        "scripted/cheap",
    ],
)
def test_parameters_are_mapped_as_litellm_maps_them(model: str, params: dict[str, Any]) -> None:
    scripted.register()
    request = {"model": model, "messages": ROUTER, **params}
    target = direct.target(model, "http://127.0.0.1:9/v1", request)
    assert target is not None
    try:
        expected = get_optional_params(
            model=target.model,
            custom_llm_provider=target.provider,
            messages=ROUTER,
            max_retries=0,
            **params,
        )
    except litellm.UnsupportedParamsError:
        with pytest.raises(litellm.UnsupportedParamsError):
            direct.optional_params(target, params, None)
        return
    expected.pop("stream", None)
    expected.pop("extra_body", None)
    assert direct.optional_params(target, params, None) == expected


def test_an_unsupported_parameter_is_refused_or_dropped_as_litellm_does() -> None:
    request = {"model": "openai/o3-mini", "messages": ROUTER}
    target = direct.target("openai/o3-mini", None, request)
    assert target is not None
    with pytest.raises(litellm.UnsupportedParamsError):
        direct.optional_params(target, {"temperature": 0.2}, None)
    dropped = direct.optional_params(target, {"temperature": 0.2, "max_tokens": 9}, True)
    expected = get_optional_params(
        model="o3-mini",
        custom_llm_provider="openai",
        temperature=0.2,
        max_tokens=9,
        max_retries=0,
        drop_params=True,
    )
    expected.pop("extra_body", None)
    expected.pop("stream", None)
    assert dropped == expected
