"""The worker: runs skills with its model. Its skills are read-only, so many run at once."""

from __future__ import annotations

from typing import Any

from agentrt.runtime import Actor, Request, skill
from agentrt.schemas import load


def _finding_text(finding: Any) -> str:
    if isinstance(finding, dict):
        source = finding.get("source")
        text = finding.get("finding") or finding.get("answer") or finding.get("text") or str(finding)
        return f"[{source}] {text}" if source else str(text)
    return str(finding)


class Worker(Actor):
    """Looks sources up and synthesises findings with a model (offline or Claude)."""

    description = "Runs research skills with a model."
    concurrency = 16

    @skill(input=load("skills/lookup.input"), output=load("skills/lookup.output"), read_only=True)
    def lookup(self, req: Request) -> dict[str, Any]:
        """Research one source for a query."""
        source, query = req.data["source"], req.data["query"]
        response = self.ctx.model.complete(
            [{"role": "user", "content": f"Source: {source}\nFind what it says about: {query}"}],
            system="You are a research assistant. Report what one source says, briefly.",
            max_tokens=self.config.get("max_tokens", 300),
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
        response = self.ctx.model.complete(
            [{"role": "user", "content": prompt}],
            system="You are a careful technical writer.",
            max_tokens=self.config.get("max_tokens", 400),
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
        response = self.ctx.model.complete(
            [{"role": "user", "content": prompt + f"\nAnswer the goal: {req.data['goal']}"}],
            system="You synthesise research findings into one clear answer.",
            max_tokens=self.config.get("max_tokens", 600),
        )
        sources = [f["source"] for f in findings if isinstance(f, dict) and "source" in f]
        return {"answer": response.text, "sources": sources}
