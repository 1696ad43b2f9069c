from agentrt.runtime import Actor, Request, skill

TEXT = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}


class Shouter(Actor):
    """Upper-cases text. Read-only, so many requests run at once."""

    @skill(input=TEXT, output=TEXT, read_only=True)
    def shout(self, req: Request) -> dict:
        return {"text": req.data["text"].upper() + "!"}


class Greeter(Actor):
    """Asks the shouter, on another node, to shout a greeting; counts greetings in its state."""

    @skill(input={"type": "object", "required": ["name"]})
    def greet(self, req: Request) -> dict:
        loud = self.ctx.ask("shouter", "shout", {"text": f"hello {req.data['name']}"})
        count = self.ctx.state.get("greeted", 0) + 1
        self.ctx.state.put("greeted", count)
        return {"greeting": loud.result(30).unwrap()["text"], "greeted": count}
