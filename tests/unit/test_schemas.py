"""schemas/: generated files match the Structs, and real envelopes validate against them."""

from __future__ import annotations

from typing import Any

import jsonschema
import msgspec
from hypothesis import given
from hypothesis import strategies as st

from agentrt.protocols import (
    AgentSkill,
    Artifact,
    Critique,
    Envelope,
    Event,
    LoopSummary,
    Part,
    Plan,
    PlanTask,
    RunReport,
    SkillContract,
    Task,
    TaskRecord,
    TaskReply,
    TaskStatus,
    Verdict,
    agent_card,
    report_from,
    to_json_dict,
)
from agentrt.runtime import _schemas
from agentrt.schemas import load


def test_checked_in_schemas_match_the_structs(tmp_path) -> None:
    assert _schemas.drift() == [], "run `agentrt schemas` and commit the result"
    # and drift is detected when a file differs
    for path in _schemas.write(tmp_path):
        path.write_text(path.read_text().replace('"type": "string"', '"type": "integer"', 1))
    assert set(_schemas.drift(tmp_path)) == set(_schemas.GENERATED)


def test_envelope_validates_and_invalid_does_not() -> None:
    schema = load("envelope.schema")
    env = Envelope(
        message_id="m",
        trace_id="t" * 32,
        span_id="s" * 16,
        sender="a",
        recipient="b",
        sent_at=1.0,
        body=TaskReply(
            task=Task(
                id="t",
                context_id="c",
                status=TaskStatus(state="TASK_STATE_COMPLETED"),
                artifacts=[Artifact(artifact_id="x", parts=[Part(data={"a": 1}), Part(text="t")])],
            )
        ),
    )
    jsonschema.validate(to_json_dict(env), schema)
    bad = to_json_dict(env)
    bad["body"]["task"]["status"]["state"] = "completed"  # A2A 0.3's spelling
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(bad))


def test_agent_card_schema() -> None:
    card = agent_card(
        "w", "d", [(AgentSkill(id="s", name="s", description="s", tags=["s"]), SkillContract(read_only=True))]
    )
    data = msgspec.to_builtins(card)
    jsonschema.validate(data, load("agent-card.schema"))
    assert data["capabilities"]["extensions"][0]["params"]["skills"]["s"]["readOnly"] is True


def test_skill_schemas_are_valid_json_schema() -> None:
    for path in (_schemas.schema_dir() / "skills").glob("*.json"):
        jsonschema.Draft202012Validator.check_schema(load(f"skills/{path.stem}"))


def test_trace_events_and_the_run_report_are_generated_schemas() -> None:
    assert _schemas.GENERATED["trace-event"] is Event
    assert _schemas.GENERATED["skills/run.output"] is RunReport
    assert (_schemas.schema_dir() / "trace-event.schema.json").is_file()


def test_a_run_report_validates_against_the_run_skill_output_schema() -> None:
    plan = Plan(goal="g", tasks=[PlanTask(id="a", skill="lookup")])
    report = RunReport(
        answer="42",
        state="completed",
        tasks=[TaskRecord(id="a", skill="lookup", state="completed", worker="w", started_at=1.0)],
        verdict=Verdict(decision="accept", reason="fine", iteration=1, score=0.9),
        critiques=[Critique(task_id="a", score=0.9, passed=True)],
        loop=LoopSummary(name="judge", cap=3, answer_iteration=1),
        plan=plan,
    )
    data = msgspec.json.decode(msgspec.json.encode(report))
    jsonschema.validate(data, load("skills/run.output"))
    assert data["tasks"][0]["startedAt"] == 1.0 and data["verdict"] == {**data["verdict"], "kind": "verdict"}
    assert report_from(data) == report
    bad = dict(data, state="done-ish")
    assert list(jsonschema.Draft202012Validator(load("skills/run.output")).iter_errors(bad))
    assert report_from(bad) is None
    assert report_from({"greeting": "HELLO ADA!"}) is None  # an entry actor may return anything


def test_the_part_rule_is_in_the_schema_too() -> None:
    """A part holds exactly one of text, raw, url, data: the published schema says it, as the
    Struct's own check does."""
    schema = load("envelope.schema")
    part = {"$ref": "#/$defs/Part", "$defs": schema["$defs"]}
    assert jsonschema.Draft202012Validator(part).is_valid({"text": "t", "mediaType": "text/plain"})
    assert not jsonschema.Draft202012Validator(part).is_valid({"text": "t", "data": {"a": 1}})
    assert not jsonschema.Draft202012Validator(part).is_valid({"mediaType": "text/plain"})


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "text": st.sampled_from([None, "t", ""]),
            "raw": st.sampled_from([None, "eHg="]),
            "url": st.sampled_from([None, "https://example.test/f"]),
            "data": st.sampled_from([None, {"a": 1}, 0, [], False]),
            "mediaType": st.sampled_from([None, "text/plain"]),
        },
    )
)
def test_the_part_schema_takes_exactly_the_parts_the_decoder_takes(part: dict[str, Any]) -> None:
    """An explicit null is no content, for the schema as for `Part`: `{"text": "t", "url":
    null}` is a part, `{"data": null}` is none. (Found by review: the schema's oneOf only asked
    for the key, so it refused the first and took the second, the decoder's opposite.)"""
    schema = load("envelope.schema")
    validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/Part", "$defs": schema["$defs"]})
    try:
        msgspec.json.decode(msgspec.json.encode(part), type=Part)
        decodes = True
    except msgspec.ValidationError:
        decodes = False
    assert validator.is_valid(part) == decodes, part
