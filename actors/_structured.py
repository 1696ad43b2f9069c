"""Structured output from a model: one forced tool call, validated against the tool's schema."""

from __future__ import annotations

from typing import Any

from agentrt.runtime import Actor, Model, ModelUnavailable, SchemaError, validate


def wants_llm(actor: Actor) -> bool:
    """An actor's config `llm`: true, false, or "auto" (the default): the model when it is a
    real one, the rules on the offline model."""
    mode = actor.config.get("llm", "auto")
    return bool(mode) and (mode != "auto" or actor.ctx.model.kind != "offline")


def ask_tool(model: Model, tool: dict[str, Any], *, system: str, prompt: str, max_tokens: int = 1024) -> dict[str, Any]:
    """Ask `model` to answer by calling `tool`; its input, checked against the tool's
    input schema. A reply without that call, or with an invalid input, is a retryable
    model error (the coordinator retries the task with backoff)."""
    response = model.complete(
        [{"role": "user", "content": prompt}],
        system=system,
        max_tokens=max_tokens,
        tools=[tool],
        tool_choice={"type": "tool", "name": tool["name"]},
    )
    call = next((c for c in response.tool_calls if c.name == tool["name"]), None)
    if call is None:
        raise ModelUnavailable(f"the model did not call {tool['name']} (stop reason {response.stop_reason})")
    try:
        validate(tool["input_schema"], call.input, what=f"{tool['name']} input")
    except SchemaError as exc:
        raise ModelUnavailable(f"the model's {tool['name']} call is invalid: {exc}") from None
    return call.input
