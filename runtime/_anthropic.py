"""Claude through the `anthropic` SDK.

Retries are the runtime's, not the SDK's (`max_retries=0`): every attempt goes through the
shared quota and the caller's retry policy (its backoff), so the limits see each one. Errors map to the
runtime's model errors: 429 -> `RateLimited` (with Retry-After), 529 / 5xx / timeouts / lost
connections -> `ModelUnavailable` (back off, retry), any other 4xx -> `ModelRequestError`
(not retried; the API's message kept). The key comes from `ANTHROPIC_API_KEY` only.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import anthropic

from ._models import (
    ModelRequestError,
    ModelResponse,
    ModelUnavailable,
    RateLimited,
    ToolCall,
    Usage,
)

# USD per million tokens (input, output), by model id prefix: the one price table.
# Source: platform.claude.com/docs/en/about-claude/pricing (base input and output rates).
# A model missing here is priced at 0 (its tokens are still counted).
PRICES: dict[str, tuple[float, float]] = {
    "claude-fable-5": (10.0, 50.0),
    "claude-mythos-5": (10.0, 50.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-opus-4-8": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
}


def price_of(model: str) -> tuple[float, float]:
    """(input, output) USD per million tokens; the longest matching prefix wins."""
    matches = [p for p in PRICES if model.startswith(p)]
    return PRICES[max(matches, key=len)] if matches else (0.0, 0.0)


def cost_usd(model: str, usage: Usage) -> float:
    per_in, per_out = price_of(model)
    return round((usage.input_tokens * per_in + usage.output_tokens * per_out) / 1e6, 8)


def _seconds_until(stamp: str) -> float | None:
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def rate_limits(headers: Any) -> dict[str, float]:
    """The rate-limit headers of a response, as numbers (resets as seconds from now)."""
    out: dict[str, float] = {}
    for kind in ("requests", "tokens", "input-tokens", "output-tokens"):
        camel = kind.replace("-t", "T")
        for field in ("limit", "remaining"):
            value = headers.get(f"anthropic-ratelimit-{kind}-{field}")
            if value is not None and value.isdigit():
                out[f"{camel}{field.capitalize()}"] = float(value)
        reset = headers.get(f"anthropic-ratelimit-{kind}-reset")
        if reset:
            seconds = _seconds_until(reset)
            if seconds is not None:
                out[f"{camel}ResetS"] = seconds
    return out


def retry_after(headers: Any, default: float = 1.0) -> float:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


class AnthropicModel:
    """The `Model` interface on Claude."""

    kind = "anthropic"

    def __init__(self, *, model: str, base_url: str | None = None, timeout_s: float = 120.0) -> None:
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ModelRequestError(
                "model kind 'anthropic' needs ANTHROPIC_API_KEY in the environment "
                "(keys are never read from a spec file)"
            )
        self.name = model
        self._client = anthropic.Anthropic(
            api_key=key,
            base_url=base_url or os.environ.get("ANTHROPIC_BASE_URL") or None,
            max_retries=0,
            timeout=timeout_s,
        )

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        system: str | None = None,
        max_tokens: int = 1024,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: dict[str, Any] | None = None,
    ) -> ModelResponse:
        kwargs: dict[str, Any] = {"model": self.name, "max_tokens": max_tokens, "messages": messages}
        if system:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = tools
        if tool_choice:
            kwargs["tool_choice"] = tool_choice
        try:
            raw = self._client.messages.with_raw_response.create(**kwargs)
            message = raw.parse()
        except anthropic.RateLimitError as exc:
            raise RateLimited(f"429 from the Messages API: {exc.message}", retry_after(exc.response.headers)) from None
        except anthropic.APIStatusError as exc:
            if exc.status_code >= 500:  # 529 overloaded, 500, 502, 503, 504
                raise ModelUnavailable(
                    f"{exc.status_code} from the Messages API: {exc.message}",
                    retry_after(exc.response.headers, default=0.0) or None,
                ) from None
            raise ModelRequestError(f"{exc.status_code} from the Messages API: {exc.message}") from None
        except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
            raise ModelUnavailable(f"the Messages API did not answer: {exc}") from None
        usage = Usage(message.usage.input_tokens, message.usage.output_tokens)
        text = "".join(b.text for b in message.content if b.type == "text")
        calls = [
            ToolCall(id=b.id, name=b.name, input=dict(b.input))  # type: ignore[arg-type]
            for b in message.content
            if b.type == "tool_use"
        ]
        return ModelResponse(
            text=text,
            model=message.model,
            usage=usage,
            stop_reason=message.stop_reason or "end_turn",
            tool_calls=calls,
            cost_usd=cost_usd(message.model, usage),
            rate_limits=rate_limits(raw.headers),
        )
