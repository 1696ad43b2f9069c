"""The rules of MCP tools as skills (actors/_mcp_core.py), in memory: annotations, approvals,
what a failed call may do next, and reconnecting with backoff."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentrt.actors._mcp_core import (
    Approvals,
    Connect,
    ConnectAt,
    GiveUp,
    Link,
    ToolRule,
    after_failure,
    skill_id,
)


def test_annotations_read_with_mcps_cautious_defaults() -> None:
    assert ToolRule.from_annotations(None) == ToolRule(read_only=False, destructive=True, idempotent=False)
    assert ToolRule.from_annotations({"readOnlyHint": True}) == ToolRule(True, False, True)
    # destructiveHint means something only when the tool is not read-only.
    assert ToolRule.from_annotations({"readOnlyHint": True, "destructiveHint": True}).destructive is False
    assert ToolRule.from_annotations({"destructiveHint": False, "idempotentHint": True}) == ToolRule(False, False, True)
    assert ToolRule.from_annotations({"readOnlyHint": False}).tags() == ("mcp", "destructive")


def test_skill_ids_are_names_a_plan_can_call() -> None:
    assert skill_id("", "search") == "search"
    assert skill_id("fs.", "read/file") == "fs_read_file"
    assert skill_id("", "2fa") == "_2fa"


def test_a_tools_own_error_or_a_refusal_is_its_answer_never_retried() -> None:
    rule = ToolRule(read_only=True, destructive=False, idempotent=True)
    for failure in ("tool-error", "refused"):
        step = after_failure(rule, failure, "search", "disk full")
        assert not step.retryable and not step.in_doubt and step.reason == "disk full"


def test_a_lost_or_timed_out_call_is_retried_only_if_the_tool_is_idempotent() -> None:
    safe = ToolRule(read_only=False, destructive=True, idempotent=True)
    unsafe = ToolRule(read_only=False, destructive=True, idempotent=False)
    for failure in ("lost", "timeout"):
        assert after_failure(safe, failure, "put", "x").retryable
        step = after_failure(unsafe, failure, "write_note", "x")
        assert not step.retryable and step.in_doubt
        assert "may or may not have happened" in step.reason and "not idempotent" in step.reason


def test_approvals_first_always_never() -> None:
    writes = ToolRule(read_only=False, destructive=True, idempotent=False)
    reads = ToolRule(read_only=True, destructive=False, idempotent=True)
    first = Approvals("first")
    assert first.needed(writes, "w") and not first.needed(reads, "r")
    first.answered("w", approved=False)
    assert first.needed(writes, "w"), "a no does not stop the next call from asking"
    first.answered("w", approved=True)
    assert not first.needed(writes, "w") and first.needed(writes, "other")
    always = Approvals("always")
    always.answered("w", approved=True)
    assert always.needed(writes, "w")
    assert not Approvals("never").needed(writes, "w")
    assert first.may_ask(writes) and not first.may_ask(reads) and not Approvals("never").may_ask(writes)


def test_a_link_backs_off_doubling_to_its_cap_and_resets_once_up() -> None:
    link = Link(backoff_s=0.5, backoff_max_s=2.0, max_failures=10)
    assert link.start() == [Connect()]
    assert link.lost(100.0, "refused") == [ConnectAt(100.5)]
    assert link.due() == [Connect()]
    assert link.lost(101.0, "refused") == [ConnectAt(102.0)]
    link.due()
    assert link.lost(103.0, "refused") == [ConnectAt(105.0)]  # capped at 2 s
    link.due()
    link.connected()
    assert link.failures == 0 and link.restarts == 3
    assert link.lost(200.0, "crashed") == [ConnectAt(200.5)], "a new loss starts from the first wait"


def test_a_link_gives_up_after_max_failures_in_a_row() -> None:
    link = Link(max_failures=2)
    link.start()
    link.lost(0.0, "a")
    link.due()
    link.lost(1.0, "b")
    link.due()
    assert link.lost(2.0, "c") == [GiveUp("3 connects in a row failed; last: c")]
    assert link.state == "failed" and link.due() == [] and link.lost(3.0, "d") == []


def test_a_stopped_link_does_nothing_more() -> None:
    link = Link()
    link.start()
    link.stop()
    assert link.lost(1.0, "x") == [] and link.due() == [] and link.connected() == []


events = st.lists(st.sampled_from(["lost", "due", "connected", "stop"]), max_size=60)


@given(events, st.floats(0.01, 1.0), st.floats(1.0, 10.0), st.integers(0, 10))
def test_link_invariants(steps: list[str], backoff: float, cap: float, max_failures: int) -> None:
    """Whatever happens: never a wait past the cap, never two connects without a loss or a
    timer between them, nothing after a stop or a give-up, and one give-up at most."""
    link = Link(backoff_s=backoff, backoff_max_s=cap, max_failures=max_failures)
    now = 0.0
    commands = link.start()
    connecting = True
    gave_up = 0
    for step in steps:
        now += 1.0
        if step == "lost":
            commands = link.lost(now, "x")
        elif step == "due":
            commands = link.due()
        elif step == "connected":
            commands = link.connected()
        else:
            commands = link.stop()
        ended = link.state in ("stopped", "failed")
        for cmd in commands:
            if isinstance(cmd, ConnectAt):
                assert now < cmd.at <= now + cap + 1e-9
            elif isinstance(cmd, Connect):
                assert not connecting, "a second connect while one is open"
                connecting = True
            elif isinstance(cmd, GiveUp):
                gave_up += 1
        if step in ("lost",) and commands:
            connecting = False
        if ended and step != "lost":
            assert commands == []
        assert gave_up <= 1


def test_the_journal_answers_a_finished_call_and_refuses_one_whose_end_is_unknown() -> None:
    from agentrt.actors._mcp_core import on_repeat

    assert on_repeat(None) == "run"
    assert on_repeat({"state": "failed"}) == "run", "the tool answered with an error: a new call"
    assert on_repeat({"state": "done", "result": {"x": 1}}) == "answer"
    assert on_repeat({"state": "started"}) == "refuse", "its node died during the call"
    assert on_repeat({"state": "in-doubt"}) == "refuse"


def test_server_settings_are_checked_naming_the_setting() -> None:
    import sys
    from types import SimpleNamespace

    import pytest

    from agentrt.actors.mcp import MCPTools, ServerConfig
    from agentrt.runtime import SpecError

    with pytest.raises(SpecError, match=r"config.servers\[0\] needs exactly one of 'command'.*it has \['command', 'url'\]"):
        ServerConfig.parse("mcp", 0, {"command": "x", "url": "http://h/mcp"})
    with pytest.raises(SpecError, match=r"config.servers\[1\] has unknown keys \['cmd'\]"):
        ServerConfig.parse("mcp", 1, {"cmd": "x"})
    python = ServerConfig.parse("mcp", 0, {"name": "n", "module": "notes_server", "args": ["--x"]})
    assert python.command == [sys.executable, "-m", "notes_server", "--x"] and "PYTHONPATH" in python.env
    assert ServerConfig.parse("mcp", 0, {"command": "srv", "args": ["a"]}).command == ["srv", "a"]
    with pytest.raises(SpecError, match=r"config.servers\[0\].mode must be 'auto' or 'legacy'"):
        ServerConfig.parse("mcp", 0, {"command": "srv", "mode": "2024"})
    actor = MCPTools()
    actor.ctx = SimpleNamespace(name="mcp")  # type: ignore[assignment]
    actor.config = {"servers": [], "aprove": "never"}
    with pytest.raises(SpecError, match=r"MCPTools 'mcp': unknown config keys \['aprove'\]"):
        actor.on_start()
