"""The model interface (messages in; text, tool calls and usage out) and the embedded offline model."""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-6"


class Usage(msgspec.Struct, frozen=True):
    """Tokens a model call consumed, as the Messages API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


class ToolCall(msgspec.Struct, frozen=True):
    """A request by the model to call a tool (a `tool_use` block)."""

    id: str
    name: str
    input: dict[str, Any]


class ModelResponse(msgspec.Struct, frozen=True, kw_only=True):
    """One model reply."""

    text: str
    model: str
    usage: Usage
    stop_reason: str = "end_turn"
    tool_calls: list[ToolCall] = []
    cost_usd: float = 0.0
    # The provider's rate-limit state after this call (e.g. requestsRemaining, requestsResetS).
    rate_limits: dict[str, float] = {}


@runtime_checkable
class Model(Protocol):
    """What actors call. `messages` use the Messages API shape: [{"role", "content"}]."""

    name: str
    kind: str  # "offline" or "anthropic": what roles check to pick rules or prompts

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        system: str | None = None,
        max_tokens: int = 1024,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: dict[str, Any] | None = None,
    ) -> ModelResponse: ...


_WORD = re.compile(r"[A-Za-z][A-Za-z\-]{3,}")
_STOP = frozenset(
    ["this", "that", "with", "from", "into", "about", "their", "there", "which", "would", "should", "could", "these", "those", "your", "what", "when", "where", "have", "been", "being", "than", "then", "them", "they", "will", "also", "only", "some", "such"]
)
_VOCAB = ["evidence", "suggests", "trade-offs", "latency", "throughput", "reliability", "cost", "adoption", "risk", "benchmark", "baseline", "variance", "scaling", "coordination", "isolation", "failure", "recovery", "budget", "quality", "consensus", "dissent", "signal", "noise", "trend", "outlier", "method", "result", "limitation"]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters per token), never zero for non-empty text."""
    return max(1, (len(text) + 3) // 4) if text else 0


class OfflineModel:
    """A deterministic stand-in for an LLM: same seed and prompt, same text, latency and usage.

    Latency is drawn (deterministically, from the prompt's hash) from `latency_s`, then
    multiplied by `time_scale`, and actually slept, so scheduling behaves as with a real model.
    It makes no tool calls: roles that need structured output use rules when `kind` is offline.
    """

    kind = "offline"

    def __init__(
        self,
        *,
        seed: int = 0,
        latency_s: tuple[float, float] = (0.05, 0.2),
        time_scale: float = 1.0,
        name: str = "offline",
    ) -> None:
        lo, hi = latency_s
        if lo < 0 or hi < lo:
            raise ValueError(f"latency_s must be [lo, hi] with 0 <= lo <= hi, got {latency_s}")
        self.seed = seed
        self.latency_s = (float(lo), float(hi))
        self.time_scale = time_scale
        self.name = name

    def _digest(self, system: str | None, prompt: str) -> bytes:
        h = hashlib.blake2b(digest_size=32)
        h.update(f"{self.seed}\x00{system or ''}\x00{prompt}".encode())
        return h.digest()

    def latency_for(self, system: str | None, prompt: str) -> float:
        """The seconds this prompt will take (before `time_scale`)."""
        frac = int.from_bytes(self._digest(system, prompt)[:4], "big") / 2**32
        lo, hi = self.latency_s
        return lo + (hi - lo) * frac

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        system: str | None = None,
        max_tokens: int = 1024,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: dict[str, Any] | None = None,
    ) -> ModelResponse:
        prompt = "\n".join(_content_text(m.get("content")) for m in messages)
        digest = self._digest(system, prompt)
        keywords: list[str] = []
        for w in _WORD.findall(prompt.split("\n")[-1] if prompt else ""):
            lw = w.lower()
            if lw not in _STOP and lw not in keywords:
                keywords.append(lw)
        picks = [_VOCAB[b % len(_VOCAB)] for b in digest[:12]]
        topic = ", ".join(keywords[:4]) or "the question"
        text = (
            f"On {topic}: the {picks[0]} shows {picks[1]} and {picks[2]}; "
            f"{picks[3]} matters for {picks[4]}, while {picks[5]} limits {picks[6]}. "
            f"Net: {picks[7]} over {picks[8]}, with {picks[9]} as the main {picks[10]}."
        )
        out_limit = max(1, max_tokens)
        if estimate_tokens(text) > out_limit:
            text = text[: 4 * out_limit].rstrip() or text[:1]  # ~4 characters a token
        delay = self.latency_for(system, prompt) * self.time_scale
        if delay > 0:
            time.sleep(delay)
        return ModelResponse(
            text=text,
            model=self.name,
            usage=Usage(estimate_tokens((system or "") + prompt), estimate_tokens(text)),
        )


class ModelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A model as a launch spec names it. There is no key field: the Anthropic model reads
    `ANTHROPIC_API_KEY` from the environment, and only from there."""

    kind: Literal["offline", "anthropic"] = "offline"
    seed: int = 0  # offline
    latency_s: tuple[float, float] = (0.05, 0.2)  # offline
    time_scale: float = 1.0  # offline
    name: str | None = None  # the model id for anthropic (default DEFAULT_ANTHROPIC_MODEL)
    quota: str | None = None  # a Quota actor every call draws from (shared rate limits)
    base_url: str | None = None  # anthropic; default: $ANTHROPIC_BASE_URL, then the SDK's
    timeout_s: float = 120.0  # anthropic: per HTTP request


class ModelError(Exception):
    """A model call failed. `retryable` says whether trying again may help."""

    retryable = True

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(ModelError):
    """The provider answered 429; `retry_after_s` is its Retry-After."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s)
        self.retry_after_s: float = retry_after_s


class ModelUnavailable(ModelError):
    """Overloaded (529), a 5xx, a timeout or a lost connection: back off and try again."""


class ModelRequestError(ModelError):
    """The provider refused the request itself (a 4xx other than 429): not retried."""

    retryable = False


class TokenAllowanceExceeded(ModelError):
    """A call was not sent: its input alone does not fit the token allowance the caller
    reserved for this request. `need_tokens` is the call's worst case (input + max_tokens),
    so the caller can reserve that much and ask again, or stop."""

    retryable = False

    def __init__(self, message: str, need_tokens: int, least_tokens: int | None = None) -> None:
        super().__init__(message)
        self.need_tokens = need_tokens
        self.least_tokens = least_tokens if least_tokens is not None else need_tokens


def input_tokens(
    messages: list[dict[str, Any]], system: str | None = None, tools: list[dict[str, Any]] | None = None
) -> int:
    """An upper estimate of a call's input tokens (system, messages and tools): a token per
    three characters plus 8 per message for its framing. The offline model counts one per
    four; English prose runs about four characters a token on Claude."""
    chars = len(system or "") + sum(len(_content_text(m.get("content"))) for m in messages)
    if tools:
        chars += len(msgspec.json.encode(tools))
    return (chars + 2) // 3 + 8 * len(messages)


def clip_to_allowance(
    left: int,
    messages: list[dict[str, Any]],
    system: str | None,
    max_tokens: int,
    tools: list[dict[str, Any]] | None = None,
    *,
    used: int = 0,
) -> int:
    """`max_tokens` clipped so the call's worst case fits `left` tokens; raises
    TokenAllowanceExceeded when not even one output token fits. `used`: what the request's
    earlier calls spent; the need it reports is the whole request's (a request asked again
    makes those calls again), so a caller that reserves it has room for this call too."""
    need_in = input_tokens(messages, system, tools)
    if need_in + 1 > left:
        spent = f", after {used} spent by its earlier calls" if used else ""
        raise TokenAllowanceExceeded(
            f"model call not sent: it needs up to {need_in + max_tokens} tokens "
            f"({need_in} input + max_tokens {max_tokens}) and this request's token allowance "
            f"has {max(0, left)} left{spent}",
            need_tokens=used + need_in + max_tokens,
            least_tokens=used + need_in + 1,
        )
    return min(max_tokens, left - need_in)


def model_from_config(config: ModelConfig) -> Model:
    """Build the model a spec asks for."""
    if config.kind == "anthropic":
        from ._anthropic import AnthropicModel

        return AnthropicModel(
            model=config.name or DEFAULT_ANTHROPIC_MODEL,
            base_url=config.base_url,
            timeout_s=config.timeout_s,
        )
    if config.kind == "offline":
        return OfflineModel(
            seed=config.seed,
            latency_s=config.latency_s,
            time_scale=config.time_scale,
            name=config.name or "offline",
        )
    raise ValueError(f"model kind '{config.kind}' is not available; use 'offline'")
