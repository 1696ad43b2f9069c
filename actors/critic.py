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
    returns a list of issues; every issue lowers the score).
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
        # A small deterministic spread, so scores are not all equal for equal-quality outputs.
        jitter = (
            int.from_bytes(hashlib.blake2b(text.encode(), digest_size=2).digest(), "big") / 65535
        )
        score = max(0.0, min(1.0, 0.8 + 0.2 * jitter - 0.35 * len(issues)))
        threshold = float(self.config.get("pass_score", 0.6))
        return Critique(
            task_id=req.data["taskId"],
            score=round(score, 3),
            passed=score >= threshold,
            issues=issues,
        )
