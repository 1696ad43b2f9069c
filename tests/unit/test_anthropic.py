"""The Anthropic model on the real `anthropic` client, over real HTTP to the local Messages
API server: replies, tool use, usage and cost, and how each error maps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentrt.runtime import ModelRequestError, ModelUnavailable, RateLimited
from agentrt.runtime._anthropic import AnthropicModel, price_of
from tests.messages_api import Fault, MessagesAPI

TOOL = {
    "name": "record_verdict",
    "description": "d",
    "input_schema": {
        "type": "object",
        "properties": {"decision": {"enum": ["accept", "retry"]}, "score": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["decision", "score"],
    },
}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[MessagesAPI]:
    with MessagesAPI(rpm=1000) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", server.api_key)
        yield server


def model(api: MessagesAPI, name: str = "claude-sonnet-4-6") -> AnthropicModel:
    return AnthropicModel(model=name, base_url=api.url, timeout_s=10)


def test_text_reply_with_usage_cost_and_rate_limit_headers(api: MessagesAPI) -> None:
    r = model(api).complete([{"role": "user", "content": "hello there"}], system="be brief", max_tokens=50)
    assert "hello there" in r.text and r.stop_reason == "end_turn" and r.model == "claude-sonnet-4-6"
    sent = api.log[-1]
    assert sent.status == 200 and sent.body["system"] == "be brief" and sent.body["max_tokens"] == 50
    assert sent.headers["anthropic-version"]
    assert api.api_key in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))
    assert (r.usage.input_tokens, r.usage.output_tokens) == (sent.usage["input_tokens"], sent.usage["output_tokens"])
    per_in, per_out = price_of("claude-sonnet-4-6")
    assert r.cost_usd == pytest.approx((r.usage.input_tokens * per_in + r.usage.output_tokens * per_out) / 1e6)
    assert r.rate_limits["requestsLimit"] == 1000 and "requestsRemaining" in r.rate_limits


def test_prices_come_from_one_table_by_model_prefix() -> None:
    assert price_of("claude-haiku-4-5-20251001") == price_of("claude-haiku-4-5")
    assert price_of("claude-opus-4-5") != price_of("claude-opus-4-1")
    assert price_of("claude-opus-4-1-20250805") == price_of("claude-opus-4-1")
    assert price_of("unknown-model") == (0.0, 0.0)


def test_forced_tool_use_comes_back_as_a_tool_call(api: MessagesAPI) -> None:
    r = model(api).complete(
        [{"role": "user", "content": "judge"}], tools=[TOOL], tool_choice={"type": "tool", "name": "record_verdict"}
    )
    assert r.stop_reason == "tool_use" and len(r.tool_calls) == 1
    call = r.tool_calls[0]
    assert call.name == "record_verdict" and call.input["decision"] == "accept" and call.id.startswith("toolu_")
    assert api.log[-1].body["tool_choice"] == {"type": "tool", "name": "record_verdict"}


def test_429_is_rate_limited_with_retry_after_and_the_sdk_does_not_retry(api: MessagesAPI) -> None:
    api.faults.append(Fault(status=429, retry_after_s=2.5))
    with pytest.raises(RateLimited) as info:
        model(api).complete([{"role": "user", "content": "x"}])
    assert info.value.retry_after_s == 2.5 and info.value.retryable
    assert [entry.status for entry in api.log] == [429]


@pytest.mark.parametrize("status", [529, 500])
def test_overloaded_and_server_errors_are_retryable_unavailability(api: MessagesAPI, status: int) -> None:
    api.faults.append(Fault(status=status, message="Overloaded"))
    with pytest.raises(ModelUnavailable, match=f"{status} from the Messages API") as info:
        model(api).complete([{"role": "user", "content": "x"}])
    assert info.value.retryable
    assert len(api.log) == 1  # the runtime retries, never the SDK


def test_a_400_is_not_retryable_and_keeps_the_apis_message(api: MessagesAPI) -> None:
    api.faults.append(Fault(status=400, message="max_tokens: 999999 > 64000, the maximum"))
    with pytest.raises(ModelRequestError, match="max_tokens: 999999 > 64000, the maximum") as info:
        model(api).complete([{"role": "user", "content": "x"}])
    assert not info.value.retryable


def test_a_wrong_key_is_a_request_error(api: MessagesAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong")
    with pytest.raises(ModelRequestError, match="401 from the Messages API"):
        model(api).complete([{"role": "user", "content": "x"}])


def test_no_key_in_the_environment_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ModelRequestError, match="needs ANTHROPIC_API_KEY in the environment"):
        AnthropicModel(model="claude-sonnet-4-6")


def test_a_slow_reply_past_the_timeout_is_unavailability(api: MessagesAPI) -> None:
    api.faults.append(Fault(delay_s=2.0))
    slow = AnthropicModel(model="claude-sonnet-4-6", base_url=api.url, timeout_s=0.5)
    with pytest.raises(ModelUnavailable, match="did not answer"):
        slow.complete([{"role": "user", "content": "x"}])
