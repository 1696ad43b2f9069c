"""MCP tools as skills, against real MCP servers written with the `mcp` SDK
(tests/mcp_server.py): over stdio, started by the actor, and over streamable HTTP, on
127.0.0.1, started by the fixture. Real supervisor, nodes, sockets and SQLite throughout."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agentrt.runtime import (
    RunError,
    Runtime,
    SchemaError,
    load_spec,
    read_events,
    read_trace,
    run,
    spec_from_dict,
)
from agentrt.runtime._spec import with_model_kind

from .conftest import ROOT, alive, make_spec
from .test_demo import agentrt_run, plan_output

pytestmark = pytest.mark.integration

SERVER = ROOT / "tests" / "mcp_server.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpServer:
    """tests/mcp_server.py over streamable HTTP on 127.0.0.1, as its own process."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--http", str(self.port)],
            env=dict(os.environ, MCP_TEST_LOG=str(self.log)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the HTTP MCP server exited at start"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the HTTP MCP server did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server_log(tmp_path: Path) -> Path:
    return tmp_path / "calls.jsonl"


@pytest.fixture
def http_server(server_log: Path) -> Iterator[HttpServer]:
    server = HttpServer(server_log)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def mcp_spec(server: dict[str, Any], *, approve: str = "first", human: dict[str, Any] | None = None, **policy: Any) -> Any:
    core: list[dict[str, Any]] = [
        {"name": "coordinator", "class": "agentrt.actors:Coordinator", "config": {"max_attempts": 3, "backoff_s": 0.05, **policy}}
    ]
    if human is not None:
        core.append({"name": "human", "class": "agentrt.actors:Human", "config": {"interactive": False, **human}})
    return make_spec(
        {
            "tools": [{"name": "mcp", "class": "agentrt.actors:MCPTools", "config": {"servers": [server], "approve": approve}}],
            "core": core,
        },
        run={"entry": "coordinator"},
    )


@pytest.fixture(scope="module", params=["stdio", "http"])
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Path]]:
    """One run with an MCP server over each transport, shared by the tests that only ask it
    (so each transport costs one start): approve = "always", a human that approves by policy."""
    folder = tmp_path_factory.mktemp(f"mcp-{request.param}")
    log = folder / "calls.jsonl"
    http = None
    if request.param == "stdio":
        server: dict[str, Any] = {"name": "notes", "command": [sys.executable, str(SERVER)], "env": {"MCP_TEST_LOG": str(log)}}
    else:
        http = HttpServer(log)
        http.start()
        server = {"name": "notes", "url": http.url}
    try:
        spec = mcp_spec(server, approve="always", human={"fallback": "accept-best"}, per_skill={"hold": 2})
        with Runtime(spec, runs_dir=folder / "runs") as rt:
            yield rt, log
    finally:
        if http is not None:
            http.stop()


def calls(log: Path, tool: str, only: set[str] | None = None) -> list[tuple[float, float]]:
    """(start, end) of each finished call of `tool` (with a query or name in `only`), from the
    server's own log."""
    starts: dict[str, float] = {}
    spans = []
    for i, line in enumerate(log.read_text().splitlines() if log.exists() else []):
        rec = json.loads(line)
        if rec["tool"] != tool:
            continue
        key = str(rec.get("query") or rec.get("name") or i)
        if only is not None and key not in only:
            continue
        if rec["edge"] == "start":
            starts[key] = rec["t"]
        else:
            spans.append((starts.pop(key), rec["t"]))
    return sorted(spans)


def started(log: Path, tool: str) -> int:
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for line in lines if json.loads(line)["tool"] == tool and json.loads(line)["edge"] == "start")


def run_plan(rt: Runtime, tasks: list[dict[str, Any]]) -> Any:
    return rt.ask("coordinator", "run", {"goal": "test", "plan": {"goal": "test", "tasks": tasks}}, timeout_s=90)


def events(rt: Runtime, name: str) -> list[dict[str, Any]]:
    rt.writer.flush()  # the run is live: its trace file is written through a buffer
    return [e for e in read_trace(rt.run_dir / "trace.jsonl") if e.get("event") == name]


# -- discovery --------------------------------------------------------------------------


def test_tools_are_discovered_with_their_schemas(shared: tuple[Runtime, Path]) -> None:
    rt, _ = shared
    card = rt.messenger.cards["mcp"]
    skills = {s.id: s for s in card.skills}
    assert {"search", "write_note", "fail", "crash_once", "pid"} <= set(skills)
    search, searching = skills["search"], card.contract("search")
    assert searching.read_only and "read-only" in search.tags
    assert searching.input_schema["required"] == ["query"]
    assert searching.input_schema["properties"]["query"]["type"] == "string"
    assert searching.output_schema is not None and "hits" in searching.output_schema["properties"]
    write = skills["write_note"]
    assert not card.contract("write_note").read_only
    assert "destructive" in write.tags and "idempotent" not in write.tags
    assert write.description == "Write a note (replaces one of that name)."
    answer = rt.ask("mcp", "search", {"query": "actors", "delay_s": 0})
    assert answer.state == "completed", answer.error
    assert answer.data == {"query": "actors", "hits": [{"name": "a.md", "line": 1}]}


# -- scheduling: read-only calls fan out, destructive ones are serialised and approved --


def test_read_only_calls_overlap_and_destructive_ones_never_do(shared: tuple[Runtime, Path]) -> None:
    rt, server_log = shared
    tasks = [{"id": f"s{i}", "skill": "search", "args": {"query": f"q{i}", "delay_s": 1.0}} for i in range(4)]
    tasks += [{"id": f"w{i}", "skill": "write_note", "args": {"name": f"n{i}", "text": "x", "delay_s": 0.2}} for i in range(3)]
    result = run_plan(rt, tasks)
    assert result.state == "completed", result.error
    assert result.data["state"] == "completed", result.data
    approvals = events(rt, "mcp.approval")
    tickets = sorted(p.name for p in (rt.run_dir / "escalations").glob("approve-*.json"))
    reads = calls(server_log, "search", {f"q{i}" for i in range(4)})
    writes = calls(server_log, "write_note", {f"n{i}" for i in range(3)})
    assert len(reads) == 4 and len(writes) == 3
    # All four searches were running at one moment: the last to start began before the first ended.
    assert max(s for s, _ in reads) < min(e for _, e in reads)
    # No two writes overlapped.
    for (_, end), (start, _) in itertools.pairwise(writes):
        assert end <= start
    # Each write waited for a person's yes (here the human's non-interactive policy): one
    # ticket per call with approve = "always", each answered before a write started.
    assert len(approvals) == 3 and all(a["approved"] for a in approvals) and len(tickets) == 3
    answered = sorted(a["ts"] for a in approvals)
    for when, (start, _) in zip(answered, writes, strict=True):
        assert when <= start


def test_the_coordinators_bounds_hold_for_mcp_tools(shared: tuple[Runtime, Path]) -> None:
    """An MCP tool is an ordinary skill to the scheduler: per_skill = {hold = 2} keeps at
    most two of six read-only calls at the server at once (the server's own log says)."""
    rt, server_log = shared
    tasks = [{"id": f"h{i}", "skill": "hold", "args": {"seconds": 0.3, "name": f"h{i}"}} for i in range(6)]
    result = run_plan(rt, tasks)
    assert result.data["state"] == "completed", result.data
    spans = calls(server_log, "hold", {f"h{i}" for i in range(6)})
    assert len(spans) == 6
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    running, most = 0, 0
    for _, step in edges:
        running += step
        most = max(most, running)
    assert most == 2


def test_approve_first_asks_once_and_a_refusal_fails_the_task_without_a_call(tmp_path: Path, runs_dir: Path) -> None:
    log = tmp_path / "calls.jsonl"
    server = {"name": "notes", "command": [sys.executable, str(SERVER)], "env": {"MCP_TEST_LOG": str(log)}}
    with Runtime(mcp_spec(server, approve="first", human={"fallback": "accept-best"}), runs_dir=runs_dir) as rt:
        for name in ("a", "b", "c"):
            assert rt.ask("mcp", "write_note", {"name": name, "text": "x", "delay_s": 0}).state == "completed"
        assert len(events(rt, "mcp.approval-asked")) == 1
    assert started(log, "write_note") == 3
    log.unlink()
    with Runtime(mcp_spec(server, approve="first", human={"fallback": "abort"}), runs_dir=runs_dir) as rt:
        refused = rt.ask("mcp", "write_note", {"name": "a", "text": "x"})
        assert refused.state == "failed"
        assert "write_note was not approved" in refused.error and "abort" in refused.error
        assert refused.metadata.get("retryable") is False
    assert started(log, "write_note") == 0, "a refused call never reaches the server"


def test_without_a_human_a_destructive_call_is_refused_and_the_server_stops_with_its_actor(runs_dir: Path) -> None:
    server = {"name": "notes", "command": [sys.executable, str(SERVER)]}
    with Runtime(mcp_spec(server), runs_dir=runs_dir) as rt:
        refused = rt.ask("mcp", "write_note", {"name": "a", "text": "x"})
        pid = rt.ask("mcp", "pid", {}).data["result"]
        assert alive(pid)
    assert refused.state == "failed"
    assert "no actor offers 'escalate'" in refused.error and 'approve = "never"' in refused.error
    assert not alive(pid), "no server process left after the run"


# -- bad input, tool errors ----------------------------------------------------------------


def test_a_schema_invalid_argument_is_refused_before_the_call(shared: tuple[Runtime, Path]) -> None:
    rt, server_log = shared
    with pytest.raises(SchemaError, match=r"query"):
        rt.ask("mcp", "search", {"query": 3})  # at the sender
    refused = rt.ask("mcp", "search", {"query": 3}, validate=False)  # and at the receiver
    assert refused.state == "rejected"
    assert "$.query" in refused.error and "type" in refused.error
    lines = server_log.read_text().splitlines() if server_log.exists() else []
    assert not [line for line in lines if json.loads(line).get("query") == 3], "never reached the server"


def test_an_is_error_result_fails_the_task_with_the_tools_message(shared: tuple[Runtime, Path]) -> None:
    rt, _ = shared
    result = run_plan(rt, [{"id": "f", "skill": "fail", "args": {"message": "the disk is full"}}])
    assert result.data["state"] == "failed"
    task = next(t for t in result.data["tasks"] if t["id"] == "f")
    assert task["state"] == "failed" and "the disk is full" in task["error"]
    assert task["attempt"] == 1, "a tool's own error is its answer: not retried"


# -- lifecycle ----------------------------------------------------------------------------


def test_a_crashed_stdio_server_is_restarted_the_read_only_call_retried_and_a_write_left_in_doubt(
    tmp_path: Path, server_log: Path, runs_dir: Path
) -> None:
    marker = tmp_path / "crashed"
    server = {"name": "notes", "command": [sys.executable, str(SERVER)], "env": {"MCP_TEST_LOG": str(server_log)}}
    with Runtime(mcp_spec(server, approve="never"), runs_dir=runs_dir) as rt:
        # A read-only call whose server dies under it: the server is started again, the
        # coordinator retries the call (attempt 2) and the new server answers.
        result = run_plan(rt, [{"id": "c", "skill": "crash_once", "args": {"marker": str(marker)}}])
        assert result.data["state"] == "completed", result.data
        task = next(t for t in result.data["tasks"] if t["id"] == "c")
        assert task["attempt"] == 2
        first_pid = int(marker.read_text())
        assert result.data["results"]["c"]["result"] != f"answered by {first_pid}"
        connected = events(rt, "mcp.connected")
        assert [c.get("restarts", 0) for c in connected] == [0, 1]
        assert connected[0]["server_pid"] == first_pid != connected[1]["server_pid"]
        assert events(rt, "mcp.lost")
        assert not alive(first_pid)

        # A write (not idempotent) whose server dies under it: in doubt, not retried.
        result = run_plan(rt, [{"id": "w", "skill": "write_note", "args": {"name": "a", "text": "crash"}}])
        task = next(t for t in result.data["tasks"] if t["id"] == "w")
        assert task["state"] == "failed" and task["attempt"] == 1
        assert "may or may not have happened" in task["error"] and "not idempotent" in task["error"]
        # The server is back for the next call.
        after = rt.ask("mcp", "search", {"query": "after", "delay_s": 0})
        assert after.state == "completed", after.error
    assert started(server_log, "write_note") == 1


def test_an_http_server_that_goes_away_is_reconnected_with_backoff(http_server: HttpServer, runs_dir: Path) -> None:
    server = {"name": "notes", "url": http_server.url}
    with Runtime(mcp_spec(server), runs_dir=runs_dir) as rt:
        first = rt.ask("mcp", "pid", {}).data["result"]
        http_server.stop()
        http_server.start()  # same port, a new process
        again = rt.ask("mcp", "pid", {})
        assert again.state == "completed", again.error
        assert again.data["result"] == http_server.proc.pid != first
        assert [c.get("restarts", 0) for c in events(rt, "mcp.connected")][:1] == [0]
        assert max(c.get("restarts", 0) for c in events(rt, "mcp.connected")) >= 1


def test_http_headers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, http_server: HttpServer, runs_dir: Path) -> None:
    monkeypatch.setenv("NOTES_HTTP_TOKEN", "Bearer tok-abcdef123456")
    server = {"name": "notes", "url": http_server.url, "headers": {"Authorization": "${NOTES_HTTP_TOKEN}"}}
    with Runtime(mcp_spec(server), runs_dir=runs_dir) as rt:
        answer = rt.ask("mcp", "header", {"name": "Authorization"})
    assert answer.state == "completed", answer.error
    assert answer.data == {"result": "Bearer tok-abcdef123456"}


def test_the_tool_list_is_refreshed_when_the_server_says_it_changed(runs_dir: Path) -> None:
    server = {"name": "notes", "command": [sys.executable, str(SERVER)]}
    spec = make_spec(
        {
            "tools": [
                {"name": "mcp", "class": "agentrt.actors:MCPTools", "config": {"servers": [server]}},
                {"name": "caller", "class": "custom_actors:Caller"},
            ]
        },
        run={"entry": "caller"},
    )
    with Runtime(spec, runs_dir=runs_dir) as rt:
        assert rt.ask("mcp", "add_tool", {}).state == "completed"
        deadline = time.monotonic() + 20
        while not events(rt, "mcp.tools-changed") and time.monotonic() < deadline:
            time.sleep(0.1)
        changed = events(rt, "mcp.tools-changed")
        assert changed and changed[0]["added"] == ["late"]
        # An actor on the MCP actor's node sees the new tool on its card and can call it.
        answer = rt.ask("caller", "call", {"actor": "mcp", "skill": "late", "data": {}})
        assert answer.state == "completed", answer.error
        assert answer.data["text"] == "late answer"  # no outputSchema: the text content


def test_server_stderr_goes_to_the_nodes_log_redacted(monkeypatch: pytest.MonkeyPatch, runs_dir: Path) -> None:
    # The token comes from the environment (`${NAME}`), not from the spec.
    monkeypatch.setenv("NOTES_TOKEN", "tok-1234567890")
    server = {"name": "notes", "command": [sys.executable, str(SERVER)], "env": {"SERVER_TOKEN": "${NOTES_TOKEN}"}}
    with Runtime(mcp_spec(server), runs_dir=runs_dir) as rt:
        assert rt.ask("mcp", "leak", {}).state == "completed"
        run_dir = rt.run_dir
    text = (run_dir / "logs" / "tools.log").read_text()
    assert "[mcp notes] token in use: [redacted] and [redacted]" in text
    for written in run_dir.rglob("*"):
        if written.is_file() and written.suffix != ".sqlite":
            assert "tok-1234567890" not in written.read_text(errors="replace"), written
    assert "sk-ant-api03" not in text
    assert "KEYBODY" not in text and "[mcp notes] [redacted]" in text


def test_a_server_setting_that_names_a_missing_environment_variable_is_refused(runs_dir: Path) -> None:
    server = {"name": "notes", "command": [sys.executable, str(SERVER)], "env": {"SERVER_TOKEN": "${NO_SUCH_VARIABLE_X}"}}
    with pytest.raises(RunError, match=r"config.servers\[0\].env.SERVER_TOKEN refers to \$\{NO_SUCH_VARIABLE_X\}, which is not set"), Runtime(mcp_spec(server), runs_dir=runs_dir):
        pass


def test_no_server_process_is_left_after_kill_9_of_its_node(server_log: Path, runs_dir: Path) -> None:
    server = {"name": "notes", "command": [sys.executable, str(SERVER)], "env": {"MCP_TEST_LOG": str(server_log)}}
    with Runtime(mcp_spec(server), runs_dir=runs_dir) as rt:
        pid = rt.ask("mcp", "pid", {}).data["result"]
        # Busy in a call, the server would outlive its stdin closing by a minute.
        rt.ask_async("mcp", "hold", {"seconds": 60})
        deadline = time.monotonic() + 10
        while not started(server_log, "hold") and time.monotonic() < deadline:
            time.sleep(0.05)
        node = rt.nodes["tools"]
        os.kill(node.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the server died with its node"
        # The supervisor restarts the node, which starts a server of its own again.
        deadline = time.monotonic() + 30
        again = None
        while time.monotonic() < deadline:
            again = rt.ask("mcp", "pid", {}, timeout_s=5)
            if again.state == "completed":
                break
            time.sleep(0.2)
        assert again is not None and again.state == "completed", again
        second = again.data["result"]
        assert second != pid and alive(second)
    assert not alive(second)


def test_a_server_that_cannot_start_fails_the_nodes_start_naming_it(runs_dir: Path) -> None:
    server = {"name": "broken", "command": [sys.executable, "-c", "import sys; sys.exit('no such server')"]}
    spec = make_spec(
        {"tools": [{"name": "mcp", "class": "agentrt.actors:MCPTools", "config": {"servers": [server], "max_reconnects": 0}}]},
        run={"entry": "mcp"},
    )
    with pytest.raises(RunError, match=r"MCP server 'broken' did not start: 1 connects in a row failed"), Runtime(spec, runs_dir=runs_dir):
        pass
    log = next(runs_dir.glob("*/logs/tools.log")).read_text()
    assert "[mcp broken] no such server" in log


# -- the demo ------------------------------------------------------------------------------


def test_mcp_demo_fans_out_the_lookups_and_writes_the_note_after_approval(tmp_path: Path) -> None:
    proc = agentrt_run("demos/mcp", tmp_path, "m")
    assert proc.returncode == 0, proc.stderr
    t = {task["id"]: task for task in plan_output(tmp_path, "m")["tasks"]}
    lookups = [t[i] for i in ("notes", "actors", "supervision", "backpressure")]
    assert all(task["worker"] == "notes" and task["state"] == "completed" for task in lookups)
    assert max(x["startedAt"] for x in lookups) < min(x["finishedAt"] for x in lookups), "ran at once"
    assert t["digest"]["worker"] == "worker" and t["digest"]["startedAt"] >= max(x["finishedAt"] for x in lookups)
    assert t["save"]["state"] == "completed" and t["save"]["startedAt"] >= t["digest"]["finishedAt"]
    run_dir = tmp_path / "m"
    ticket = json.loads(next((run_dir / "escalations").glob("approve-write_note-*.json")).read_text())
    assert ticket["reason"] == "approval" and ticket["options"] == ["accept-best", "abort"]
    trace = run_dir / "trace.jsonl"
    assert len(read_events(trace)) == len(read_trace(trace)), "every MCP event is a typed one"
    approval = next(e for e in read_trace(trace) if e.get("event") == "mcp.approval")
    assert approval["approved"] and approval["ts"] <= t["save"]["finishedAt"]
    assert (run_dir / "notes" / "digest.md").read_text().startswith("# What keeps an actor system healthy")
    assert not (ROOT / "demos" / "mcp" / "notes" / "digest.md").exists()
    timeline = subprocess.run(
        [sys.executable, "-m", "agentrt.runtime._cli", "trace", "timeline", str(run_dir / "trace.jsonl")],
        capture_output=True, text=True, timeout=60,
    )
    assert timeline.returncode == 0, timeline.stderr
    assert all(name in timeline.stdout for name in ("actors", "supervision", "backpressure", "save"))


# -- the LLM planner sees MCP tools --------------------------------------------------------


def test_the_llm_planner_mixes_mcp_tools_and_model_calls_in_one_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The demo on 'Claude' (the local Messages API server): the producer's prompt lists the
    MCP tools with what the scheduler makes of them, and the plan the model writes runs them
    beside a model call."""
    from tests.messages_api import MessagesAPI, default_responder

    prompts: list[str] = []

    def respond(body: dict[str, Any]) -> Any:
        if str(body.get("system", "")).startswith("You are the planner"):
            prompts.append(body["messages"][0]["content"])
            return [{"type": "text", "text": (
                '1. search_notes(query="actor")\n'
                '2. search_notes(query="restart")\n'
                '3. synthesize(goal="healthy actor systems", findings=[$1, $2])\n'
                '4. write_note(name="digest", text="a digest")\n'
                "5. join()"
            )}], "end_turn"
        return default_responder(body)

    data = msgspec.to_builtins(with_model_kind(load_spec(ROOT / "demos" / "mcp"), "anthropic"))
    for node in data["nodes"]:
        for actor in node["actors"]:
            if actor["name"] == "producer":
                actor["config"] = {"strategy": "llm"}
    spec = spec_from_dict(data, "mcp on claude", base_dir=str(ROOT / "demos" / "mcp"))
    key = "sk-ant-api03-PLANTED-SECRET-mcp0"
    with MessagesAPI(api_key=key, rpm=10_000) as api:
        api.responder = respond
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        summary = run(spec, run_id="llm", runs_dir=tmp_path)
    assert summary.state == "completed", summary.error
    assert "- search_notes(query: string): Find the lines of the notes that mention a word (case-insensitive). (read-only)" in prompts[0]
    assert "- write_note(name: string, text: string): " in prompts[0] and "waits for a person's approval" in prompts[0]
    t = {task["id"]: task for task in summary.output["tasks"]}
    assert {t[i]["worker"] for i in ("t1", "t2", "t4")} == {"notes"} and t["t3"]["worker"] == "worker"
    assert max(t["t1"]["startedAt"], t["t2"]["startedAt"]) < min(t["t1"]["finishedAt"], t["t2"]["finishedAt"])
    assert t["t4"]["state"] == "completed"


# -- a worker on Claude with MCP tools in its own tool-use loop ----------------------------


def test_a_worker_on_claude_calls_mcp_tools_in_its_tool_use_loop_each_a_child_of_its_task(
    monkeypatch: pytest.MonkeyPatch, server_log: Path, runs_dir: Path
) -> None:
    from tests.messages_api import MessagesAPI

    requests: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]) -> Any:
        requests.append(body)
        last = body["messages"][-1]["content"]
        if isinstance(last, str):  # the first turn: two searches at once, and a write
            return [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"query": "alpha", "delay_s": 0.5}},
                {"type": "tool_use", "id": "toolu_2", "name": "search", "input": {"query": "beta", "delay_s": 0.5}},
                {"type": "tool_use", "id": "toolu_3", "name": "write_note", "input": {"name": "n", "text": "t", "delay_s": 0}},
            ], "tool_use"
        results = [b["content"] for b in last if b.get("type") == "tool_result"]
        return [{"type": "text", "text": "found: " + " | ".join(results)}], "end_turn"

    server = {"name": "notes", "command": [sys.executable, str(SERVER)], "env": {"MCP_TEST_LOG": str(server_log)}}
    spec = make_spec(
        {
            "tools": [
                {"name": "mcp", "class": "agentrt.actors:MCPTools", "config": {"servers": [server]}},
                {"name": "human", "class": "agentrt.actors:Human", "config": {"interactive": False}},
            ],
            "work": [
                {"name": "worker", "class": "agentrt.actors:Worker", "config": {"tools": ["mcp"]},
                 "model": {"kind": "anthropic", "name": "claude-haiku-4-5"}},
            ],
        },
        run={"entry": "worker"},
    )
    key = "sk-ant-api03-PLANTED-SECRET-mcp1"
    with MessagesAPI(api_key=key, rpm=10_000) as api:
        api.responder = respond
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        with Runtime(spec, runs_dir=runs_dir) as rt:
            result = rt.ask("worker", "write", {"task": "a note on alpha and beta"}, timeout_s=60)
            trace = events(rt, "envelope.sent")
    assert result.state == "completed", result.error
    assert '"query":"alpha"' in result.data["text"] and '"query":"beta"' in result.data["text"]
    assert '"result":"wrote n"' in result.data["text"]
    assert {t["name"] for t in requests[0]["tools"]} >= {"search", "write_note", "pid"}
    assert [b["tool_use_id"] for b in requests[1]["messages"][-1]["content"]] == ["toolu_1", "toolu_2", "toolu_3"]
    searches = calls(server_log, "search")
    assert len(searches) == 2 and max(s for s, _ in searches) < min(e for _, e in searches), "one turn's calls run at once"
    task = next(e for e in trace if e["kind"] == "task-request" and e["recipient"] == "worker")
    tool_asks = [e for e in trace if e["kind"] == "task-request" and e["sender"] == "worker" and e["recipient"] == "mcp"]
    assert len(tool_asks) == 3
    assert all(e["trace_id"] == task["trace_id"] and e["parent_span_id"] == task["span_id"] for e in tool_asks)


def test_a_timed_out_call_is_retried_only_if_the_tool_is_idempotent(server_log: Path, runs_dir: Path) -> None:
    server = {"name": "notes", "command": [sys.executable, str(SERVER)], "env": {"MCP_TEST_LOG": str(server_log)}, "timeout_s": 0.5}
    with Runtime(mcp_spec(server, approve="never"), runs_dir=runs_dir) as rt:
        result = run_plan(rt, [
            {"id": "read", "skill": "search", "args": {"query": "slow", "delay_s": 1.5}},
            {"id": "write", "skill": "write_note", "args": {"name": "slow", "text": "x", "delay_s": 1.5}},
        ])
        dispatched = [e["plan_task"] for e in events(rt, "schedule.dispatch")]
    t = {task["id"]: task for task in result.data["tasks"]}
    assert t["read"]["state"] == "failed" and dispatched.count("read") == 3, "max_attempts"
    assert started(server_log, "search") >= 2, "the idempotent call was made again"
    assert t["write"]["state"] == "failed"
    assert started(server_log, "write_note") == 1, "the non-idempotent one was not"
    # Said by the MCP actor ("not idempotent", "ended in doubt"), or by the coordinator, which
    # holds a stateful attempt that timed out as in doubt and does not retry it blindly.
    assert "not idempotent" in t["write"]["error"] or "in doubt" in t["write"]["error"], t["write"]


def test_a_non_idempotent_call_outlives_a_kill_9_of_its_node_in_the_journal(server_log: Path, runs_dir: Path) -> None:
    """The journal (the actor's namespace) answers a repeat of a finished call after its node
    was restarted, and refuses one whose node died during the call, instead of calling twice."""
    server = {"name": "notes", "command": [sys.executable, str(SERVER)], "env": {"MCP_TEST_LOG": str(server_log)}}
    with Runtime(mcp_spec(server, approve="never"), runs_dir=runs_dir) as rt:
        first = rt.ask("mcp", "write_note", {"name": "done", "text": "x", "delay_s": 0}, idempotency_key="k-done")
        assert first.state == "completed"
        os.kill(rt.nodes["tools"].pid, signal.SIGKILL)
        # Waiting on it, the supervisor restarts the node and sends the ask again.
        again = rt.ask("mcp", "write_note", {"name": "done", "text": "x", "delay_s": 0}, idempotency_key="k-done")
        assert again.state == "completed" and again.data == first.data

        future = rt.ask_async("coordinator", "run", {"goal": "g", "plan": {"goal": "g", "tasks": [
            {"id": "w", "skill": "write_note", "args": {"name": "cut", "text": "x", "delay_s": 5}},
        ]}})
        deadline = time.monotonic() + 20
        while not calls_started(server_log, "write_note", "cut") and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(rt.nodes["tools"].pid, signal.SIGKILL)  # mid-call: did the note get written? nobody knows
        result = rt.wait(future, timeout_s=60)
    task = next(t for t in result.data["tasks"] if t["id"] == "w")
    # Refused by the MCP actor's journal ("its end is unknown") if the coordinator sends it
    # again; the coordinator now holds a stateful task lost with its node as in doubt itself
    # and does not send it again without a decision ("in doubt").
    assert task["state"] == "failed" and ("its end is unknown" in task["error"] or "in doubt" in task["error"]), task
    assert calls_started(server_log, "write_note", "done") == 1
    assert calls_started(server_log, "write_note", "cut") == 1, "not made a second time"


def calls_started(log: Path, tool: str, name: str) -> int:
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for line in lines if (r := json.loads(line))["tool"] == tool and r["edge"] == "start" and r.get("name") == name)


def test_a_handshake_era_server_works_the_same(tmp_path: Path, server_log: Path, runs_dir: Path) -> None:
    """mode = "legacy": the initialize handshake (servers before 2026-07-28). Tools listed,
    tools/list_changed as a plain notification, a crashed server restarted."""
    marker = tmp_path / "crashed"
    server = {"name": "notes", "command": [sys.executable, str(SERVER)], "env": {"MCP_TEST_LOG": str(server_log)}, "mode": "legacy"}
    with Runtime(mcp_spec(server), runs_dir=runs_dir) as rt:
        assert events(rt, "mcp.connected")[0]["protocol"] != "2026-07-28"
        assert rt.ask("mcp", "add_tool", {}).state == "completed"
        deadline = time.monotonic() + 20
        while not events(rt, "mcp.tools-changed") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert events(rt, "mcp.tools-changed")[0]["added"] == ["late"]
        result = run_plan(rt, [{"id": "c", "skill": "crash_once", "args": {"marker": str(marker)}}])
        assert result.data["state"] == "completed", result.data
        assert [c.get("restarts", 0) for c in events(rt, "mcp.connected")] == [0, 1]
