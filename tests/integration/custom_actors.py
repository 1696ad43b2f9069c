"""Custom actors for the integration tests, loaded by specs as `custom_actors:Class`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agentrt.protocols import Part
from agentrt.runtime import Actor, RateLimited, Request, skill

NAME_IN = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1}},
}


class Greeter(Actor):
    """Greets people, and counts calls in its own state namespace."""

    @skill(
        input=NAME_IN,
        output={"type": "object", "required": ["greeting"], "properties": {"greeting": {"type": "string"}}},
        read_only=True,
    )
    def greet(self, req: Request) -> dict[str, Any]:
        """Say hello."""
        return {"greeting": f"hello {req.data['name']}"}

    @skill(input={"type": "object"})
    def count(self, req: Request) -> dict[str, Any]:
        """Count calls (stateful: runs on the actor's thread, one at a time)."""
        n = self.ctx.state.get("calls", 0) + 1
        self.ctx.state.put("calls", n)
        return {"count": n}

    @skill(input={"type": "object"}, output={"type": "object", "required": ["never"]})
    def break_contract(self, req: Request) -> dict[str, Any]:
        """Return output that violates the declared output schema."""
        return {"other": 1}

    @skill(input={"type": "object"})
    def trespass(self, req: Request) -> dict[str, Any]:
        """Try to write into another actor's namespace."""
        self.ctx.state.write("someone-else", "k", 1)
        return {}


class Relay(Actor):
    """Asks another actor over the wire and passes its answer on."""

    @skill(input=NAME_IN, read_only=True)
    def relay(self, req: Request) -> dict[str, Any]:
        result = self.ctx.ask(self.config["to"], "greet", {"name": req.data["name"]}).result(30)
        return {"relayed": result.unwrap()["greeting"]}

    @skill(input={"type": "object"}, read_only=True)
    def relay_invalid(self, req: Request) -> dict[str, Any]:
        """Send a schema-invalid payload: refused here, at the sender."""
        self.ctx.ask(self.config["to"], "greet", {"name": 42}).result(30)
        return {}


class Sleeper(Actor):
    """Sleeps for `s` seconds (default 60): a long task to interrupt."""

    @skill(input={"type": "object"}, read_only=True)
    def sleep(self, req: Request) -> dict[str, Any]:
        time.sleep(float(req.data.get("s", 60)))
        return {"slept": True}


class Chaos(Actor):
    """Misbehaves on purpose, and leaves evidence in files under `args.dir`."""

    @skill(input={"type": "object", "required": ["dir", "fail_first"]}, read_only=True)
    def flaky(self, req: Request) -> dict[str, Any]:
        """Fail the first `fail_first` calls (counted in a file), then succeed."""
        path = Path(req.data["dir"]) / f"flaky-{req.data.get('name', 'x')}"
        calls = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(calls))
        if calls <= req.data["fail_first"]:
            raise RuntimeError(f"flaky failure {calls}")
        return {"calls": calls}

    @skill(input={"type": "object", "required": ["dir", "name", "s"]}, read_only=True)
    def slow(self, req: Request) -> dict[str, Any]:
        """Work for `s` seconds unless cancelled; a cancel leaves a `cancelled-NAME` file."""
        deadline = time.monotonic() + float(req.data["s"])
        while time.monotonic() < deadline:
            if req.cancelled.wait(0.02):
                # Written whole, then renamed into place: a reader never sees it half-written.
                final = Path(req.data["dir"]) / f"cancelled-{req.data['name']}"
                tmp = final.with_suffix(".tmp")
                tmp.write_text(str(req.attempt))
                tmp.replace(final)
                return {"cancelled": True}
        return {"name": req.data["name"]}

    @skill(input={"type": "object", "required": ["why"]}, read_only=True)
    def fail(self, req: Request) -> dict[str, Any]:
        raise RuntimeError(req.data["why"])

    @skill(input={"type": "object", "required": ["dir", "line"]})
    def append(self, req: Request) -> dict[str, Any]:
        """Stateful: append a line to the ledger file (the side effect), slowly."""
        time.sleep(float(req.data.get("s", 0.3)))
        with open(Path(req.data["dir"]) / "ledger", "a") as f:
            f.write(req.data["line"] + "\n")
        return {"appended": req.data["line"]}

    @skill(input={"type": "object", "required": ["dir"]}, read_only=True)
    def limited(self, req: Request) -> dict[str, Any]:
        """Answer like a provider's 429 the first time, then succeed."""
        path = Path(req.data["dir"]) / "limited"
        if not path.exists():
            path.write_text("1")
            raise RateLimited("429 Too Many Requests", retry_after_s=0.3)
        return {"ok": True}


def no_todo(output: Any, request: dict[str, Any]) -> list[str]:
    """A pluggable critic guardrail: drafts must not contain TODO markers."""
    return ["remove the TODO markers"] if "TODO" in str(output) else []


class Drafter(Actor):
    """Writes drafts: the first one has a TODO; with feedback, a clean one (unless `stubborn`,
    when every round is a new draft with a TODO). `use` echoes what it was given."""

    def on_start(self) -> None:
        self.rounds = 0

    @skill(
        input={
            "type": "object",
            "required": ["topic"],
            "properties": {"topic": {"type": "string"}, "feedback": {"type": "string"}},
            "additionalProperties": False,
        },
    )
    def draft(self, req: Request) -> dict[str, Any]:
        self.rounds += 1
        fixed = req.data.get("feedback") and not self.config.get("stubborn")
        body = f"a careful draft about {req.data['topic']}, round {self.rounds}, long enough to pass"
        return {"text": body if fixed else f"{body}. TODO: finish"}

    @skill(input={"type": "object", "required": ["draft"]}, read_only=True)
    def use(self, req: Request) -> dict[str, Any]:
        return {"text": f"published: {req.data['draft']['text']}"}


class Leaky(Actor):
    """Tries every way to put the API key into the trace: an event field, a header-shaped
    field, free text, and its own output."""

    @skill(input={"type": "object"}, read_only=True)
    def leak(self, req: Request) -> dict[str, Any]:
        import os

        key = os.environ["ANTHROPIC_API_KEY"]
        self.ctx.event("leak.attempt", api_key=key, headers={"Authorization": f"Bearer {key}"}, note=f"key is {key}")
        return {"text": f"the key is {key}", "headers": {"x-api-key": key}}


class Chatty(Actor):
    """Logs with structlog, as STYLE.md asks of code: in a node, that line is shipped to the
    run's trace like every event, though it is none of the runtime's typed events."""

    @skill(input={"type": "object"}, read_only=True)
    def chat(self, req: Request) -> dict[str, Any]:
        import structlog

        structlog.get_logger().info("fetched", url="http://example.test/a", size=3)
        return {"said": "fetched"}


class Effect(Actor):
    """Two skills over a folder `dir`. `compute` is read-only: it counts each run in
    `runs.log` and returns n squared (running it twice is harmless). `effect` is stateful:
    each run appends its effect to `effects.log` (`s` seconds before, `after_s` seconds after)
    and nothing here deduplicates it: that an effect happens once must come from the
    runtime (idempotency keys, delivery dedup, in-doubt handling), never from this actor."""

    @skill(
        input={"type": "object", "required": ["dir", "n"], "properties": {"s": {"type": "number"}}},
        read_only=True,
    )
    def compute(self, req: Request) -> dict[str, Any]:
        import os

        d = Path(req.data["dir"])
        time.sleep(float(req.data.get("s", 0.02)))
        with open(d / "runs.log", "a") as f:
            f.write(f"{req.data['n']} {self.ctx.name} {os.getpid()}\n")
        return {"n": req.data["n"], "value": req.data["n"] ** 2}

    @skill(
        input={
            "type": "object",
            "required": ["dir", "n"],
            "properties": {"s": {"type": "number"}, "after_s": {"type": "number"}},
        }
    )
    def effect(self, req: Request) -> dict[str, Any]:
        import os

        d = Path(req.data["dir"])
        time.sleep(float(req.data.get("s", 0.02)))
        with open(d / "effects.log", "a") as f:
            f.write(f"{req.data['n']} {self.ctx.name} {os.getpid()}\n")
        time.sleep(float(req.data.get("after_s", 0.0)))
        return {"n": req.data["n"], "value": req.data["n"] ** 2}


def effect_counts(d: Path) -> dict[int, int]:
    """How many times each n's effect happened (from `effects.log`)."""
    from collections import Counter

    log = d / "effects.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return dict(Counter(int(line.split()[0]) for line in lines))


class CrashOnStart(Actor):
    """A node that dies while starting, every time."""

    def on_start(self) -> None:
        import os

        os._exit(3)

    @skill(input={"type": "object"})
    def noop(self, req: Request) -> dict[str, Any]:
        return {}


class Ledger(Actor):
    """A stateful skill: writing to the ledger is a side effect that must not happen twice."""

    @skill(input={"type": "object", "required": ["dir"]})
    def record(self, req: Request) -> dict[str, Any]:
        time.sleep(float(req.data.get("s", 1.0)))
        with open(Path(req.data["dir"]) / "ledger.txt", "a") as f:
            f.write(f"{req.data.get('what', 'entry')}\n")
        return {"recorded": True}


class BadConfig(Actor):
    """Refuses its config in `on_start`, as the built-in Human, Critic and Quota actors do."""

    def on_start(self) -> None:
        raise ValueError(f"bad-config.mode must be 'a' or 'b', got {self.config.get('mode')!r}")

    @skill(input={"type": "object"})
    def noop(self, req: Request) -> dict[str, Any]:
        return {}


class Mortal(Actor):
    """Its thread dies on `die` (a BaseException gets past every handler)."""

    @skill(input={"type": "object"})
    def die(self, req: Request) -> dict[str, Any]:
        raise SystemExit("mortal: asked to die")

    @skill(input={"type": "object"})
    def live(self, req: Request) -> dict[str, Any]:
        return {"alive": True}

    @skill(input={"type": "object", "required": ["dir"]}, read_only=True)
    def linger(self, req: Request) -> dict[str, Any]:
        """Runs on the skill pool (read-only): writes <dir>/lingering, then waits up to 30 s."""
        (Path(req.data["dir"]) / "lingering").write_text(req.task_id)
        req.cancelled.wait(30)
        return {"lingered": True}


class Big(Actor):
    """Returns a result of `mb` megabytes (over any sane frame limit)."""

    @skill(input={"type": "object"}, read_only=True)
    def big(self, req: Request) -> dict[str, Any]:
        return {"blob": "x" * int(float(req.data.get("mb", 5)) * 1_000_000)}

    @skill(input={"type": "object"}, read_only=True)
    def parts(self, req: Request) -> list[Part]:
        """A result of `n` text parts: small, but over the schema's bound on parts."""
        return [Part(text="p")] * int(req.data.get("n", 300))


class Asker(Actor):
    """Asks `to` for `skill` with `data` and reports how it ended (for authorization tests)."""

    @skill(input={"type": "object", "required": ["to", "skill"]}, read_only=True)
    def ask_of(self, req: Request) -> dict[str, Any]:
        result = self.ctx.ask(
            req.data["to"], req.data["skill"], req.data.get("data", {}), task_id=req.data.get("task_id")
        ).result(30)
        return {"state": result.state, "error": result.error, "data": result.data}

    @skill(input={"type": "object", "required": ["to", "task_id"]}, read_only=True)
    def cancel_of(self, req: Request) -> dict[str, Any]:
        """Send a cancel for another's task (refused: only who asked may cancel)."""
        from agentrt.protocols import CancelTask

        self.ctx.send(req.data["to"], CancelTask(task_id=req.data["task_id"], reason="meddling"))
        return {}


class Caller(Actor):
    """Asks any actor of the run for any skill, as its own node's directory knows them."""

    @skill(input={"type": "object", "required": ["actor", "skill"]}, read_only=True)
    def call(self, req: Request) -> dict[str, Any]:
        data = req.data
        return self.ctx.ask(data["actor"], data["skill"], data.get("data", {})).result(30).unwrap()


class Holder(Actor):
    """Never finishes draining; when asked to, tells `meddler` (which answers in its name)."""

    @skill(input={"type": "object"})
    def hold(self, req: Request) -> dict[str, Any]:
        return {}

    def on_drain(self, drain: Any) -> None:
        from agentrt.protocols import Message, MessageBody

        seen = Message(message_id="drain-seen", role="ROLE_AGENT", parts=[Part(text="now")])
        self.ctx.send("meddler", MessageBody(message=seen))


class Meddler(Actor):
    """Answers the supervisor's drain of `holder` as if it were `holder`."""

    @skill(input={"type": "object"})
    def idle(self, req: Request) -> dict[str, Any]:
        return {}

    def on_message(self, envelope: Any) -> None:
        from agentrt.protocols import Drained

        self.ctx.send("supervisor", Drained(actor="holder", detail="forged"))

    @skill(input={"type": "object", "required": ["to", "kind"]})
    def control(self, req: Request) -> dict[str, Any]:
        """Send a control operation of the supervisor's (stop, node-down) to `to`, as itself."""
        from agentrt.protocols import NodeDown, Stop

        body = Stop() if req.data["kind"] == "stop" else NodeDown(node="a", pid=1, actors=["holder"])
        self.ctx.send(req.data["to"], body)
        return {}


class Misbehaving(Actor):
    """Does what an ordinary actor may do by mistake, and what a hostile one may try."""

    @skill(input={"type": "object"}, read_only=True)
    def tuple_event(self, req: Request) -> dict[str, Any]:
        """A trace event msgpack can encode and JSON cannot (a tuple key)."""
        self.ctx.event("pair.stats", counts={("a", "b"): 1})
        return {"ok": True}

    @skill(input={"type": "object"})
    def poison_io(self, req: Request) -> dict[str, Any]:
        """Make the next frame this node receives kill its I/O thread, past every guard (a
        BaseException): what no input should ever do, to see what the node does then."""

        class Poison(BaseException):
            pass

        def die(peer: Any, frame: bytes) -> None:
            raise Poison("a frame the I/O thread could not survive")

        self.ctx._messenger.transport._on_frame = die  # type: ignore[attr-defined]
        return {"poisoned": True}
