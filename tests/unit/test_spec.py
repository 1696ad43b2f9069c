"""Launch specs: bad ones are refused with the file, the field and the rule."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from agentrt.protocols import Limits
from agentrt.runtime import Runtime, SpecError, load_spec, spec_from_dict
from agentrt.runtime._spec import placement, refusal

ROOT = Path(__file__).resolve().parents[2]


def base() -> dict:
    return {
        "run": {"entry": "a"},
        "nodes": [{"name": "n1", "actors": [{"name": "a", "class": "m:A"}]}],
    }


def test_demo_spec_loads() -> None:
    spec = load_spec(ROOT / "demos" / "research")
    assert len(spec.nodes) == 5
    assert spec.actor("coordinator") is not None
    assert spec.base_dir == str((ROOT / "demos" / "research").resolve())


def test_unknown_field_is_named() -> None:
    data = base()
    data["nodes"][0]["actorz"] = []
    with pytest.raises(SpecError, match=r"unknown field `actorz`.*\$\.nodes\[0\]"):
        spec_from_dict(data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["nodes"].append(d["nodes"][0]), "used by two nodes"),
        (lambda d: d["run"].update(entry="ghost"), "run.entry 'ghost' is not an actor"),
        (
            lambda d: d["nodes"][0]["actors"][0].update({"class": "nocolon"}),
            "must be 'module:Class'",
        ),
        (
            lambda d: d["nodes"][0].update(name="bad name"),
            r"nodes\[0\]\.name 'bad name' must match",
        ),
        (lambda d: d.update(nodes=[]), "'nodes' is empty"),
        (lambda d: d["nodes"][0]["actors"][0].update(name="supervisor"), "is taken"),
    ],
)
def test_rules(mutate, message: str) -> None:
    data = base()
    mutate(data)
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data, "my.toml")


@pytest.mark.parametrize(
    ("limits", "rule"),
    [
        ({"max_depth": -1}, r"Expected `int` >= 16 - at `\$\.limits\.max_depth`"),
        ({"max_depth": 100_000}, r"Expected `int` <= 256 - at `\$\.limits\.max_depth`"),
        ({"max_frame_bytes": 0}, r"Expected `int` >= 65536 - at `\$\.limits\.max_frame_bytes`"),
        ({"max_frame_bytes": 10**12}, r"Expected `int` <= 268435456 - at `\$\.limits\.max_frame_bytes`"),
    ],
)
def test_limits_out_of_their_bounds_are_refused_naming_the_field_and_the_bound(limits: dict, rule: str) -> None:
    """A negative depth or a terabyte frame limit used to be taken as given: every frame
    refused, or one member able to make each receiver hold a terabyte."""
    with pytest.raises(SpecError, match=rule):
        spec_from_dict({**base(), "limits": limits}, "my.toml")


def test_a_gateway_keeping_no_task_is_refused() -> None:
    with pytest.raises(SpecError, match=r"Expected `int` >= 1 - at `\$\.a2a\.keep_tasks`"):
        spec_from_dict({**base(), "a2a": {"keep_tasks": 0}})
    assert spec_from_dict({**base(), "a2a": {"keep_tasks": 1}}).a2a.keep_tasks == 1


def test_limits_at_their_bounds_are_taken() -> None:
    for limits in ({"max_depth": 16, "max_frame_bytes": 64 * 1024}, {"max_depth": 256, "max_frame_bytes": 256 * 1024 * 1024}):
        spec = spec_from_dict({**base(), "limits": limits})
        assert (spec.limits.max_depth, spec.limits.max_frame_bytes) == (limits["max_depth"], limits["max_frame_bytes"])


def test_a_spec_built_in_code_is_checked_before_a_run_starts(tmp_path: Path) -> None:
    """Runtime(spec) checks a spec as a spec file is checked: one whose structs were made or
    changed in code used to reach the nodes unchecked (a depth limit of 4 failed each node's
    boot, seen only as "did not register within 60s"; two nodes of one name, one socket)."""
    spec = spec_from_dict(base())
    for bad, rule in (
        (msgspec.structs.replace(spec, limits=Limits(max_depth=4)), r"max_depth"),
        (msgspec.structs.replace(spec, nodes=spec.nodes * 2), "used by two nodes"),
    ):
        with pytest.raises(SpecError, match=rule):
            Runtime(bad, runs_dir=tmp_path)
        assert not list(tmp_path.iterdir())  # refused before anything was made


def test_bad_toml_and_missing(tmp_path: Path) -> None:
    (tmp_path / "spec.toml").write_text("[run\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(tmp_path)
    with pytest.raises(SpecError, match=r"no spec\.toml or spec\.py"):
        load_spec(tmp_path / "..")
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.toml")


def test_python_spec(tmp_path: Path) -> None:
    (tmp_path / "spec.py").write_text(f"SPEC = {base()!r}\n")
    assert load_spec(tmp_path).run.entry == "a"


def test_a_key_in_a_spec_is_refused_without_echoing_it() -> None:
    data = base()
    data["nodes"][0]["actors"][0]["model"] = {"kind": "anthropic", "api_key": "sk-ant-secret"}
    with pytest.raises(SpecError, match=r"nodes\[0\].actors\[0\].model.api_key: keys are never read from a spec file") as info:
        spec_from_dict(data, "s.toml")
    assert "sk-ant-secret" not in str(info.value)


def test_model_kinds_are_checked() -> None:
    data = base()
    data["model"] = {"kind": "gpt"}
    with pytest.raises(SpecError, match=r"model\.kind"):
        spec_from_dict(data, "s.toml")


# -- [[allow]]: who may ask which skills of whom ----------------------------------------------


def allowing(*rules: dict) -> dict:
    data = base()
    data["nodes"][0]["actors"] += [{"name": "worker-1", "class": "m:W"}, {"name": "worker-2", "class": "m:W"}]
    data["allow"] = list(rules)
    return data


def test_no_allow_rules_means_everyone_may_ask_everything() -> None:
    spec = spec_from_dict(base())
    assert spec.allow == []
    assert refusal(spec.allow, "anyone", "a", "anything") is None


def test_allow_rules_match_names_globs_and_skills() -> None:
    spec = spec_from_dict(allowing({"from": ["a"], "to": ["worker-*"], "skills": ["lookup"]}))
    assert refusal(spec.allow, "a", "worker-2", "lookup") is None
    assert refusal(spec.allow, "supervisor", "worker-2", "other") is None  # the run's own asks
    denied = refusal(spec.allow, "worker-1", "worker-2", "lookup")
    assert denied is not None
    assert "'worker-1' may not ask skill 'lookup' of 'worker-2'" in denied
    assert "from ['a'] to ['worker-*'] skills ['lookup']" in denied
    assert refusal(spec.allow, "a", "worker-1", "synthesize") is not None


def test_an_allow_rule_naming_an_unknown_actor_is_refused() -> None:
    with pytest.raises(SpecError, match=r"allow\[0\]\.to names 'wrker-1', which is not an actor"):
        spec_from_dict(allowing({"from": ["a"], "to": ["wrker-1"]}))


@pytest.mark.parametrize("field", ["from", "to", "skills"])
def test_an_allow_rule_with_an_empty_list_is_refused_naming_it(field: str) -> None:
    """An empty list matched nothing: the rule allowed nothing, yet turned the allow-list on,
    so every ask was refused with no word of why in the spec."""
    rule = {"from": ["a"], "to": ["worker-*"], "skills": ["lookup"], field: []}
    with pytest.raises(SpecError, match=rf"Expected `array` of length >= 1 - at `\$\.allow\[0\]\.{field}`"):
        spec_from_dict(allowing(rule), "my.toml")


@pytest.mark.parametrize(
    ("rule", "rule_broken"),
    [
        ({"from": ["wrker-*"], "to": ["a"]}, r"allow\[0\]\.from has the glob 'wrker-\*', which matches no actor"),
        ({"from": ["a"], "to": ["worker-[3-9]"]}, r"allow\[0\]\.to has the glob 'worker-\[3-9\]', which matches no actor"),
        ({"from": ["a"], "to": ["a"], "skills": [""]}, r"Expected `str` of length >= 1 - at `\$\.allow\[0\]\.skills\[0\]`"),
    ],
)
def test_an_allow_rule_that_matches_nothing_is_refused_naming_it(rule: dict, rule_broken: str) -> None:
    """A glob matching no actor, or an empty skill name, matched nothing as an empty list did:
    the rule allowed nothing, yet turned the allow-list on."""
    with pytest.raises(SpecError, match=rule_broken):
        spec_from_dict(allowing(rule), "my.toml")


def test_the_entry_defaults_to_the_one_actor_offering_the_run_skill() -> None:
    from agentrt.runtime._spec import entry_actor

    data = base()
    del data["run"]["entry"]
    run = spec_from_dict(data, "s.toml").run
    assert run.entry is None  # nothing in the runtime assumes an actor's name
    assert entry_actor(run, ["boss"]) == "boss"
    with pytest.raises(SpecError, match=r"no actor offers it; set run\.entry"):
        entry_actor(run, [])
    with pytest.raises(SpecError, match=r"skill 'run' \(run\.skill\), but 2 actors offer it \(a, boss\)"):
        entry_actor(run, ["boss", "a"])
    assert entry_actor(spec_from_dict(base(), "s.toml").run, ["boss"]) == "a"  # a named entry wins


def _nodes(n: int, **extra: object) -> dict[str, object]:
    nodes = [{"name": f"n{i}", "actors": [{"name": f"a{i}", "class": "m:C"}]} for i in range(n)]
    return {"nodes": nodes, **extra}


def test_placement_pins_each_node_to_a_cpu_of_its_own_when_there_are_enough() -> None:
    assert placement(spec_from_dict(_nodes(2)), [0, 1]) == {"n0": [0], "n1": [1]}
    assert placement(spec_from_dict(_nodes(3)), [0, 1]) == {}  # auto: more nodes than CPUs
    assert placement(spec_from_dict(_nodes(3, placement={"pin": "on"})), [0, 1]) == {"n0": [0], "n1": [1], "n2": [0]}
    assert placement(spec_from_dict(_nodes(2, placement={"pin": "off"})), [0, 1]) == {}


def test_a_nodes_own_cpus_win_and_must_be_the_hosts() -> None:
    data = _nodes(2, placement={"pin": "off"})
    data["nodes"][0]["cpus"] = [1]  # type: ignore[index]
    assert placement(spec_from_dict(data), [0, 1]) == {"n0": [1]}
    data["nodes"][0]["cpus"] = [7]  # type: ignore[index]
    with pytest.raises(SpecError, match=r"nodes\[0\].cpus names CPU 7.*CPUs 0, 1"):
        placement(spec_from_dict(data), [0, 1])


def test_the_built_in_roles_cards_fit_the_lowest_limits_a_spec_may_set() -> None:
    """At the lowest limits a spec may set, the run's own messages still go: each built-in
    role's Register, and a directory of all their cards. With max_depth 8 allowed, the
    coordinator's Register (its skill schemas nest 11 levels in its card) was refused
    `over-limit`, and the run failed 60 s later as "did not register"."""
    import agentrt.actors as roles
    from agentrt.protocols import Directory, Envelope, Register, encode
    from agentrt.protocols._codec import MIN_DEPTH, MIN_FRAME_BYTES, Limits, check_limits

    lowest = msgspec.convert({"max_frame_bytes": MIN_FRAME_BYTES, "max_depth": MIN_DEPTH}, Limits)
    names = ["Producer", "Coordinator", "Worker", "Critic", "Judge", "Human"]
    cards = [getattr(roles, n).card(n.lower(), "tcp://10.0.0.1:7000") for n in names]

    def sent(body: Register | Directory) -> None:
        ids = {"message_id": "m" * 32, "trace_id": "t" * 32, "span_id": "s" * 16}
        envelope = Envelope(**ids, sender="node:n", recipient="supervisor", sent_at=1.0, body=body)
        check_limits(envelope, encode(envelope), lowest)

    for card in cards:
        sent(Register(node="n", pid=1, endpoint="tcp://10.0.0.1:7000", cards=[card]))
    sent(Directory(routes={c.name: "tcp://10.0.0.1:7000" for c in cards}, cards=cards, epochs={"n": 1}))
