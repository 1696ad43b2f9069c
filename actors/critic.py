"""The critic: reviews each task's output as it arrives (schema, guardrails, a score)."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from typing import Any

import msgspec

from agentrt.protocols import Critique, SchemaError
from agentrt.runtime import Actor, Request, skill, validate
from agentrt.schemas import load

from ._structured import ask_tool, wants_llm

CRITIQUE_TOOL = {
    "name": "record_critique",
    "description": "Record your review of one task's output.",
    "input_schema": {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "0 useless .. 1 excellent"},
            "issues": {"type": "array", "items": {"type": "string"}, "description": "what is wrong, each concrete"},
        },
        "required": ["score", "issues"],
        "additionalProperties": False,
    },
}

Guardrail = Callable[[Any, dict[str, Any]], list[str]]


def load_guardrail(ref: str) -> Guardrail:
    """`module:function`; the function takes (output, request) and returns its issues."""
    module, _, name = ref.partition(":")
    if not module or not name:
        raise ValueError(f"critic.guardrails: '{ref}' is not 'module:function'")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"critic.guardrails: '{ref}' names nothing callable")
    return fn  # type: ignore[no-any-return]


class Critic(Actor):
    """Scores outputs by rules: schema conformance, emptiness, length, banned phrases, and
    any pluggable guardrails.

    Config: `min_chars` (40), `banned` (phrases), `pass_score` (0.6), `guardrails`
    (["module:function", ...]: each is called with the output and the critique request and
    returns a list of issues; every issue lowers the score), `llm` ("auto": on a real model,
    the model also reviews the output, through a forced `record_critique` tool call, and
    its score replaces the rules' base score; on the offline model, rules only).
    """

    description = "Reviews task outputs: schema, guardrails, score."

    def on_start(self) -> None:
        self.guardrails = [load_guardrail(ref) for ref in self.config.get("guardrails", [])]

    @skill(
        input=load("skills/critique.input"), output=msgspec.json.schema(Critique), read_only=True
    )
    def critique(self, req: Request) -> Critique:
        """Review one task's output."""
        output: Any = req.data["output"]
        issues: list[str] = []
        schema = req.data.get("outputSchema")
        if schema:
            try:
                validate(schema, output, what="output")
            except SchemaError as exc:
                issues.append(str(exc))
        text = output if isinstance(output, str) else msgspec.json.encode(output).decode()
        min_chars = int(self.config.get("min_chars", 40))
        if not text.strip() or text.strip() in ("{}", "[]", '""'):
            issues.append("output is empty")
        elif len(text) < min_chars:
            issues.append(f"output is shorter than {min_chars} characters")
        for phrase in self.config.get("banned", []):
            if phrase.lower() in text.lower():
                issues.append(f"output contains banned phrase '{phrase}'")
        for guardrail in self.guardrails:
            try:
                issues += [str(i) for i in guardrail(output, req.data)]
            except Exception as exc:  # a broken guardrail is an issue, not a crash
                issues.append(f"guardrail {guardrail.__name__} failed: {exc}")
        if wants_llm(self):
            review = ask_tool(
                self.ctx.model,
                CRITIQUE_TOOL,
                system="You are a strict reviewer of one step of a multi-agent run.",
                prompt=f"Task {req.data['taskId']} (skill {req.data.get('skill', '?')}) produced:\n{text[:8000]}",
            )
            base = float(review["score"])
            issues += [str(i) for i in review["issues"]]
            score = max(0.0, min(1.0, base - 0.35 * (len(issues) - len(review["issues"]))))
        else:
            # A small deterministic spread, so scores are not all equal for equal outputs.
            jitter = (
                int.from_bytes(hashlib.blake2b(text.encode(), digest_size=2).digest(), "big")
                / 65535
            )
            score = max(0.0, min(1.0, 0.8 + 0.2 * jitter - 0.35 * len(issues)))
        threshold = float(self.config.get("pass_score", 0.6))
        return Critique(
            task_id=req.data["taskId"],
            score=round(score, 3),
            passed=score >= threshold,
            issues=issues,
        )
