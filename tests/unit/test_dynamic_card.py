"""Skills declared at run time (Actor.declare_skill): on the instance's agent card next to the
class's `@skill` methods, checked as JSON Schemas, withdrawn again."""

from __future__ import annotations

import pytest

from agentrt.protocols import MAX_NAME
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


def test_a_declared_skill_whose_id_no_card_can_carry_is_refused_naming_it() -> None:
    """A skill id longer than a card may carry (MAX_NAME: a remote A2A agent's, an MCP tool's)
    is refused when declared, naming the rule. (Found by review: an A2AAgent in front of a
    remote whose card had a 200-character skill id started, its node's card could not be
    sent, and the run failed 30 s later: "nodes p did not register within 30s".)"""
    Tools().declare_skill("s" * MAX_NAME, lambda req: None)
    with pytest.raises(ValueError, match=rf"Tools skill 's+' has a {MAX_NAME + 1}-character id; a skill id is at most {MAX_NAME}"):
        Tools().declare_skill("s" * (MAX_NAME + 1), lambda req: None)
