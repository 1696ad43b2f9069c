"""Custom actors for the integration tests, loaded by specs as `custom_actors:Class`."""

from __future__ import annotations

import time
from typing import Any

from agentrt.runtime import Actor, Request, skill

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
