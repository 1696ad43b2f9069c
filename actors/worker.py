"""The worker: runs skills with its model. Its skills are read-only, so many run at once."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import msgspec

from agentrt.runtime import Actor, ModelResponse, Request, TaskResult, ToolCall, skill
from agentrt.schemas import load


def _finding_text(finding: Any) -> str:
    if isinstance(finding, dict):
        source = finding.get("source")
        text = finding.get("finding") or finding.get("answer") or finding.get("text") or str(finding)
        return f"[{source}] {text}" if source else str(text)
    return str(finding)


class Worker(Actor):
    """Looks sources up and synthesises findings with a model (offline or Claude).

    Config: `tools`, names of actors (e.g. `agentrt.actors:MCPTools` ones) whose skills the
    model may call in its own tool-use loop (`max_tool_rounds`, 5): each call is an ask of
    that actor, traced as a child of the worker's task, with that actor's rules (schemas,
    approvals). The offline model makes no tool calls.
    """

    description = "Runs research skills with a model."
    concurrency = 16

    def _complete(self, prompt: str, system: str, max_tokens: int) -> ModelResponse:
        """One answer from the model; with `tools` configured, after the tool calls it asks
        for (those of one turn run at once)."""
        tools = self._tools()
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        rounds = int(self.config.get("max_tool_rounds", 5))
        for _ in range(rounds + 1):
            response = self.ctx.model.complete(
                messages,
                system=system,
                max_tokens=max_tokens,
                tools=[definition for _, definition in tools.values()] or None,
            )
            if not response.tool_calls or not tools:
                return response
            blocks: list[dict[str, Any]] = [{"type": "text", "text": response.text}] if response.text else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in response.tool_calls]
            messages.append({"role": "assistant", "content": blocks})
            asked = [(c, self._use(tools, c)) for c in response.tool_calls]
            messages.append({"role": "user", "content": [_tool_result(c, outcome) for c, outcome in asked]})
        raise RuntimeError(f"the model still asked for tools after {rounds} rounds (max_tool_rounds)")

    def _tools(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """The tools the model may call (name -> the actor offering it, the tool's definition):
        every skill of the actors named in `tools`, as their cards say now."""
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for actor in self.config.get("tools", []):
            card = self.ctx.card(actor)
            for s in card.skills:
                definition = {
                    "name": s.id,
                    "description": s.description or s.name,
                    "input_schema": card.contract(s.id).input_schema or {"type": "object"},
                }
                found.setdefault(s.id, (actor, definition))
        return found

    def _use(self, tools: dict[str, tuple[str, dict[str, Any]]], call: ToolCall) -> Future[TaskResult] | str:
        """Ask the tool's actor (a child of this task in the trace), or say why not."""
        if call.name not in tools:
            return f"no tool called '{call.name}'; the tools are: {', '.join(sorted(tools))}"
        try:
            return self.ctx.ask(tools[call.name][0], call.name, call.input)
        except Exception as exc:  # a schema-invalid input: the model may correct it
            return f"{type(exc).__name__}: {exc}"

    @skill(input=load("skills/lookup.input"), output=load("skills/lookup.output"), read_only=True)
    def lookup(self, req: Request) -> dict[str, Any]:
        """Research one source for a query."""
        source, query = req.data["source"], req.data["query"]
        response = self._complete(
            f"Source: {source}\nFind what it says about: {query}",
            "You are a research assistant. Report what one source says, briefly.",
            self.config.get("max_tokens", 300),
        )
        return {"source": source, "finding": response.text}

    @skill(input=load("skills/write.input"), output=load("skills/write.output"), read_only=True)
    def write(self, req: Request) -> dict[str, Any]:
        """Write one piece of text (an outline, a draft, examples, a review, ...)."""
        task = req.data["task"]
        context = req.data.get("context")
        prompt = f"Task: {task}"
        if context is not None:
            items = context if isinstance(context, list) else [context]
            prompt += "\nBuild on:\n" + "\n".join(f"- {_finding_text(c)}" for c in items)
        if req.data.get("feedback"):
            prompt += f"\nReviewer feedback to address: {req.data['feedback']}"
        response = self._complete(
            prompt, "You are a careful technical writer.", self.config.get("max_tokens", 400)
        )
        return {"task": task, "text": response.text}

    @skill(
        input=load("skills/synthesize.input"),
        output=load("skills/synthesize.output"),
        read_only=True,
    )
    def synthesize(self, req: Request) -> dict[str, Any]:
        """Combine findings into one answer to the goal."""
        findings = req.data["findings"]
        lines = "\n".join(f"- {_finding_text(f)}" for f in findings)
        prompt = f"Goal: {req.data['goal']}\nFindings:\n{lines}"
        if req.data.get("feedback"):
            prompt += f"\nReviewer feedback to address: {req.data['feedback']}"
        response = self._complete(
            prompt + f"\nAnswer the goal: {req.data['goal']}",
            "You synthesise research findings into one clear answer.",
            self.config.get("max_tokens", 600),
        )
        sources = [f["source"] for f in findings if isinstance(f, dict) and "source" in f]
        return {"answer": response.text, "sources": sources}


def _tool_result(call: ToolCall, outcome: Future[TaskResult] | str) -> dict[str, Any]:
    """The `tool_result` block for one call: its result, or the error the model should see."""
    if isinstance(outcome, str):
        return {"type": "tool_result", "tool_use_id": call.id, "content": outcome, "is_error": True}
    result = outcome.result()
    if not result.ok:
        return {"type": "tool_result", "tool_use_id": call.id, "content": result.error or result.state, "is_error": True}
    content = result.text or msgspec.json.encode(result.data).decode()
    return {"type": "tool_result", "tool_use_id": call.id, "content": content}
