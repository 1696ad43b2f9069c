"""The editor loop with real processes: oscillation detected, escalated before the cap, and
answered by policy, by an answer file, and by a person at a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pexpect
import pytest

from agentrt.runtime import load_spec, read_trace, run, spec_from_dict

from .conftest import ROOT

pytestmark = pytest.mark.integration

DEMO = ROOT / "demos" / "editor_loop"
CLI = [sys.executable, "-m", "agentrt.runtime._cli"]


def demo_spec(human: dict[str, Any]) -> Any:
    """The demo's spec with another config for its human actor."""
    data = msgspec.to_builtins(load_spec(str(DEMO)))
    for node in data["nodes"]:
        for actor in node["actors"]:
            if actor["name"] == "human":
                actor["config"] = human
    return spec_from_dict(data, "editor_loop (test)", base_dir=str(DEMO))


def test_non_interactive_run_escalates_before_the_cap_and_accepts_the_best(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "run", str(DEMO), "--runs-dir", str(tmp_path), "--run-id", "loop", "--non-interactive"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((tmp_path / "loop" / "summary.json").read_text())["output"]
    assert len(out["escalations"]) == 1
    ticket, answer = out["escalations"][0]["ticket"], out["escalations"][0]["answer"]
    cap = out["loop"]["cap"]
    assert ticket["reason"] == "oscillation"
    assert ticket["iteration"] < cap, f"escalated at {ticket['iteration']}, cap {cap}"
    # Both alternating drafts are in the ticket: the writer's (twice, same digest) and the
    # editor's formal edit in between.
    writer = [o for o in ticket["outputs"] if o["sender"] == "writer"]
    editor = [o for o in ticket["outputs"] if o["sender"] == "editor"]
    assert len(writer) >= 2 and len({o["digest"] for o in writer}) == 1
    assert editor and editor[0]["text"] != writer[0]["text"]
    assert "Hey folks!" in writer[0]["text"] and "Dear readers," in editor[0]["text"]
    assert "-Hey folks!" in ticket["changes"] and "+Dear readers," in ticket["changes"]
    # The policy's answer, and the run ends with the best draft.
    assert answer["decision"] == "accept-best" and answer["by"].startswith("policy")
    assert out["state"] == "completed" and out["answer"] == writer[0]["text"]
    assert out["iterations"] == ticket["iteration"] < cap
    assert "ESCALATION judge-1" in proc.stdout and "options: accept-best, continue, abort" in proc.stdout
    # The ticket was also filed in the run folder, and the trace records the escalation.
    assert (tmp_path / "loop" / "escalations" / f"{ticket['ticketId']}.json").is_file()
    events = [e["event"] for e in read_trace(tmp_path / "loop" / "trace.jsonl")]
    assert events.index("loop.escalated") < events.index("loop.answer") < events.index("loop.end")


def test_wait_file_policy_refuses_a_bad_answer_then_takes_a_good_one(tmp_path: Path) -> None:
    spec = demo_spec({"fallback": "wait-file", "wait_s": 120})
    folder = tmp_path / "filed" / "escalations"
    seen: dict[str, Any] = {}
    planted = ["q9Z" + os.urandom(12).hex(), "w8Y" + os.urandom(12).hex()]  # in the answers' feedback

    def answer_when_asked() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(folder.glob("judge-1.json")):
            time.sleep(0.05)
        answer = folder / "judge-1.answer.json"
        os.umask(0o022)  # a person's file, with the usual modes
        answer.write_text(json.dumps({"ticketId": "judge-1", "decision": "maybe", "feedback": f"token={planted[0]}"}))
        while time.monotonic() < deadline and not (folder / "judge-1.answer.error.txt").exists():
            time.sleep(0.05)
        seen["error"] = (folder / "judge-1.answer.error.txt").read_text()
        tmp = folder / "tmp.json"
        tmp.write_text(json.dumps({"ticketId": "judge-1", "decision": "abort", "by": "ops", "feedback": f"password={planted[1]}"}))
        tmp.rename(answer)

    helper = threading.Thread(target=answer_when_asked, daemon=True)
    helper.start()
    summary = run(spec, run_id="filed", runs_dir=tmp_path)
    helper.join(10)
    assert "Invalid enum value 'maybe' - at `$.decision`" in seen["error"]
    assert (folder / "judge-1.answer.rejected").is_file()
    out = summary.output
    assert out["state"] == "failed" and "aborted by ops after escalation (oscillation)" in out["reason"]
    assert out["escalations"][0]["answer"]["decision"] == "abort"
    # The answer files, written by a person, are files of the run now: private and redacted.
    files = sorted(folder.iterdir())
    assert {f.name for f in files} >= {"judge-1.answer.json", "judge-1.answer.rejected"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert not any(secret.encode() in f.read_bytes() for secret in planted), f
    assert json.loads((folder / "judge-1.answer.json").read_text())["feedback"] == "password=[redacted]"


def test_interactive_prompt_in_a_real_pseudo_terminal(tmp_path: Path) -> None:
    child = pexpect.spawn(
        CLI[0],
        [*CLI[1:], "run", str(DEMO), "--runs-dir", str(tmp_path), "--run-id", "tty", "--quiet"],
        cwd=str(ROOT),
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 200),
    )
    try:
        child.expect(r"ESCALATION judge-1: loop 'judge' at iteration 2 — oscillation")
        child.expect(r"your answer \(\[a\] accept-best / \[c\] continue / \[b\] abort\): ")
        child.sendline("x")
        child.expect("'x' is not an option")
        child.expect("your answer")
        child.sendline("c")
        child.expect(r"feedback for the next round")
        child.sendline("")  # keep the editor's
        child.expect("answer recorded: continue")
        # The loop runs on, oscillates again, and asks again.
        child.expect(r"ESCALATION judge-2: loop 'judge' at iteration 4 — oscillation")
        child.expect("your answer")
        child.sendline("a")
        child.expect("answer recorded: accept-best")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    out = json.loads((tmp_path / "tty" / "summary.json").read_text())["output"]
    answers = [e["answer"] for e in out["escalations"]]
    assert [a["decision"] for a in answers] == ["continue", "accept-best"]
    assert all(a["by"] == "human at the terminal" for a in answers)
    assert out["state"] == "completed" and out["iterations"] == 4
