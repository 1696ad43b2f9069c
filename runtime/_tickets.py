"""How an escalation ticket reads to a person (the human actor's prompt, `agentrt run`)."""

from __future__ import annotations

import textwrap
from typing import Any

import msgspec

from agentrt.protocols import Escalation

_WIDTH = 100


def _clip(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_ticket(ticket: Escalation | dict[str, Any]) -> list[str]:
    """The ticket as lines: what loop, why, the last outputs, what changed, cost, options."""
    t = ticket if isinstance(ticket, Escalation) else msgspec.convert(ticket, Escalation)
    lines = [
        f"ESCALATION {t.ticket_id}: loop '{t.loop}' at iteration {t.iteration} — {t.reason}",
        *textwrap.wrap(f"why: {t.summary}", _WIDTH, subsequent_indent="     "),
    ]
    if t.best_iteration is not None:
        score = f" (score {t.best_score:.2f})" if t.best_score is not None else ""
        lines.append(f"best so far: iteration {t.best_iteration}{score}")
    lines.append(f"cost so far: {t.tokens} tokens, ${t.cost_usd:.4f}")
    if t.outputs:
        lines.append("last outputs (oldest first):")
        for o in t.outputs:
            score = f" score {o.score:.2f}" if o.score is not None else ""
            lines.append(f"  [{o.iteration}] {o.sender} {o.kind} #{o.digest}{score}:")
            lines += textwrap.wrap(_clip(o.text), _WIDTH, initial_indent="      ", subsequent_indent="      ")
    if t.changes:
        lines.append("what changed between them:")
        lines += [f"  {line}" for line in t.changes.splitlines()]
    lines.append("options: " + ", ".join(t.options))
    return lines
