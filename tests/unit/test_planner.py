"""The LLM planner's format: parsed into a DAG, or rejected naming what is wrong."""

from __future__ import annotations

import pytest

from agentrt.actors._planner import describe_tools, parse
from agentrt.protocols import AgentSkill, PlanError, SkillContract


def tool(id: str, description: str, input: dict | None = None, read_only: bool = False, tags: tuple[str, ...] = ()) -> tuple[AgentSkill, SkillContract]:
    return AgentSkill(id=id, name=id, description=description, tags=list(tags) or [id]), SkillContract(input_schema=input, read_only=read_only)


TOOLS = {
    "lookup": tool(
        "lookup",
        "what one source says",
        {
            "type": "object",
            "required": ["source", "query"],
            "properties": {"source": {"type": "string"}, "query": {"type": "string"}},
            "additionalProperties": False,
        },
    ),
    "synthesize": tool("synthesize", "synthesize", {"type": "object", "required": ["findings"]}),
}

GOOD = """Thought: two sources, then one synthesis.
1. lookup(source="arxiv", query="actors")
2. lookup(source="blogs", query='actors')
3. synthesize(goal="g", findings=[$1, $2], depth=2, strict=true, extra={"k": null})
4. join()
"""


def test_a_plan_parses_into_a_dag_with_references_resolved_at_dispatch() -> None:
    plan = parse(GOOD, "g", TOOLS)
    assert [t.id for t in plan.tasks] == ["t1", "t2", "t3"] and plan.final == "t3"
    t3 = plan.tasks[2]
    assert t3.deps == ["t1", "t2"]
    assert t3.args == {"goal": "g", "findings": ["${t1}", "${t2}"], "depth": 2, "strict": True, "extra": {"k": None}}
    assert plan.tasks[0].deps == [] and plan.tasks[1].args["query"] == "actors"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("1. search(q=\"x\")\n2. join()", "action 1: unknown tool 'search'; the tools are lookup, synthesize"),
        ("1. synthesize(findings=[$4])\n2. join()", "action 1: refers to $4, which is no action of the plan"),
        ("1. synthesize(findings=[$2])\n2. synthesize(findings=[$1])\n3. join()", "cycle"),
        ("1. synthesize(findings=[$1])\n2. join()", "refers to its own output $1"),
        ("1. lookup(source=\"a\", query=\"b\")", "does not end with join()"),
        ("1. lookup(\"a\", \"b\")\n2. join()", "use keyword arguments"),
        ("1. lookup(source=\"a\")\n2. join()", "lookup() misses required argument(s) query"),
        ("1. lookup(source=\"a\", query=\"b\", page=2)\n2. join()", "lookup() has no argument(s) page"),
        ("1. lookup(source=a, query=\"b\")\n2. join()", "'a' is neither a JSON literal nor a $N reference"),
        ("Here is my plan: do things", "is not 'N. tool(arg=value, ...)'"),
        ("1. join()", "the plan has no actions"),
        ("1. lookup(source=\"a\", query=\"b\")\n1. join()", "the number 1 is used twice"),
    ],
)
def test_malformed_plans_are_rejected_with_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(PlanError, match=None) as info:
        parse(text, "g", TOOLS)
    assert error in str(info.value)


def test_the_prompt_lists_tools_with_their_arguments() -> None:
    text = describe_tools(TOOLS)
    assert "- lookup(source: string, query: string): what one source says" in text


def test_the_prompt_says_which_tools_run_in_parallel_and_which_wait_for_approval() -> None:
    tools = {
        "search_notes": tool("search_notes", "Find lines.", read_only=True, tags=("mcp", "read-only")),
        "write_note": tool("write_note", "Write a note.", tags=("mcp", "destructive")),
        "touch": tool("touch", "Touch."),
    }
    text = describe_tools(tools)
    assert "- search_notes(): Find lines. (read-only)" in text
    assert "- write_note(): Write a note. (destructive: waits for a person's approval)" in text
    assert "- touch(): Touch.\n" in text + "\n"
