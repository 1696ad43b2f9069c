"""Actors for the A2A tests (gateway and A2A agents as workers), loaded as `a2a_actors:Class`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentrt.runtime import Actor, Request, skill

TEXT_IN = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {"text": {"type": "string", "minLength": 1}},
}


class Shouter(Actor):
    """Upper-cases text: one skill, so a message needs not name it."""

    @skill(
        input=TEXT_IN,
        output={"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
        read_only=True,
    )
    def shout(self, req: Request) -> dict[str, Any]:
        """Shout the text."""
        return {"text": req.data["text"].upper() + "!"}


class Desk(Actor):
    """Two skills: `count` (how many times it ran for real) and `hold` (waits to be cancelled)."""

    @skill(input={"type": "object", "required": ["dir"], "properties": {"dir": {"type": "string"}}})
    def count(self, req: Request) -> dict[str, Any]:
        """Append a line to <dir>/count and return how many lines it has."""
        path = Path(req.data["dir"]) / "count"
        with path.open("a") as f:
            f.write("x\n")
        return {"count": len(path.read_text().splitlines())}

    @skill(
        input={
            "type": "object",
            "required": ["dir"],
            "properties": {"dir": {"type": "string"}, "s": {"type": "number"}},
        },
        read_only=True,
    )
    def hold(self, req: Request) -> dict[str, Any]:
        """Wait up to `s` seconds (60) for a cancel; write <dir>/cancelled when one came."""
        (Path(req.data["dir"]) / "started").write_text(req.task_id)
        if req.cancelled.wait(float(req.data.get("s", 60))):
            (Path(req.data["dir"]) / "cancelled").write_text(req.task_id)
            return {"held": "cancelled"}
        return {"held": "done"}


class Slow(Actor):
    """A skill that outlives its timeout: its asker is answered `failed` while it still runs."""

    @skill(input={"type": "object", "properties": {"dir": {"type": "string"}}}, read_only=True, timeout_s=0.5)
    def slow(self, req: Request) -> dict[str, Any]:
        """Write <dir>/ran, then take longer than the skill's timeout."""
        (Path(req.data["dir"]) / "ran").write_text(req.task_id)
        req.cancelled.wait(5)
        return {"late": True}


class Forger(Actor):
    """A misbehaving actor: records trace events that claim to be another node's actor's (a
    result, the end of a task), and an escalation pointing at files outside its run's
    escalations folder, in the trace of a task it was told of."""

    @skill(input={"type": "object", "required": ["trace", "task", "read", "write"]})
    def forge(self, req: Request) -> dict[str, Any]:
        from agentrt.protocols import EscalationWaiting, ResultAccepted, TaskStateChanged

        d = req.data
        claim = {"trace_id": d["trace"], "actor": "desk", "node": "n1"}  # desk runs on n1, not here
        self.ctx.emit(ResultAccepted(plan_task="t-forged", skill="forge", output={"forged": True}, **claim))
        self.ctx.emit(TaskStateChanged(state="completed", task_id=d["task"], skill="hold", **claim))
        self.ctx.emit(
            EscalationWaiting(
                trace_id=d["trace"], ticket_id="t-forged", ticket_path=d["read"], answer_path=d["write"]
            )
        )
        return {"forged": 3}

    @skill(input={"type": "object", "required": ["trace", "task"]})
    def forge_as_self(self, req: Request) -> dict[str, Any]:
        """The same misbehaviour under its own name (which its node does host): a result of
        a plan it runs no part of, and an end of the gateway's task, which is not its own."""
        from agentrt.protocols import ResultAccepted, TaskStateChanged

        d = req.data
        self.ctx.emit(ResultAccepted(trace_id=d["trace"], plan_task="t-forged", skill="forge", output={"forged": True}))
        self.ctx.emit(TaskStateChanged(trace_id=d["trace"], state="completed", task_id=d["task"], skill="hold"))
        return {"forged": 2}
