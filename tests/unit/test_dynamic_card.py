"""Skills declared at run time (Actor.declare_skill): on the instance's agent card next to the
class's `@skill` methods, checked as JSON Schemas, withdrawn again."""

from __future__ import annotations

import pytest

from agentrt.runtime import Actor, Request, SchemaError, skill


class Tools(Actor):
    @skill(input={"type": "object"}, read_only=True)
    def ping(self, req: Request) -> dict[str, str]:
        """Answer pong."""
        return {"pong": "yes"}


def test_declared_skills_join_the_class_skills_on_the_card() -> None:
    actor = Tools()
    actor.declare_skill(
        "search",
        lambda req: {"hits": []},
        input={"type": "object", "required": ["q"], "properties": {"q": {"type": "string"}}},
        output={"type": "object"},
        read_only=True,
        timeout_s=5.0,
        description="Search the notes.",
        tags=("mcp",),
    )
    card = actor.agent_card("tools", "ipc://x")
    assert [s.id for s in card.skills] == ["ping", "search"]
    search, contract = card.skill("search"), card.contract("search")
    assert search is not None and contract.read_only and contract.timeout_s == 5.0
    assert contract.input_schema["required"] == ["q"] and search.tags == ["mcp"]
    assert [s.id for s in Tools.card("tools").skills] == ["ping"], "the class's card is unchanged"
    assert [s.id for s in Tools().agent_card("other").skills] == ["ping"], "per instance"
    actor.withdraw_skill("search")
    assert [s.id for s in actor.agent_card("tools").skills] == ["ping"]


def test_a_declared_skill_with_a_broken_schema_is_refused_naming_it() -> None:
    with pytest.raises(SchemaError, match=r"Tools skill 'bad' input is not a valid JSON Schema"):
        Tools().declare_skill("bad", lambda req: None, input={"type": "no-such-type"})
