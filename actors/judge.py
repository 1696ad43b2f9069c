"""The judge: per iteration, accept, retry with feedback, or stop."""

from __future__ import annotations

import msgspec

from agentrt.protocols import Verdict
from agentrt.runtime import Actor, Request, skill
from agentrt.schemas import load

from ._structured import ask_tool, wants_llm

VERDICT_TOOL = {
    "name": "record_verdict",
    "description": "Record your decision on this iteration's answer.",
    "input_schema": {
        "type": "object",
        "properties": {
            "decision": {"enum": ["accept", "retry", "stop"]},
            "reason": {"type": "string"},
            "feedback": {"type": "string", "description": "for retry: what the next round must change"},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["decision", "reason", "score"],
        "additionalProperties": False,
    },
}


class Judge(Actor):
    """Accepts when the critiques' mean score reaches `accept_score`; otherwise asks for a
    retry with the critics' issues as feedback, and stops at the last iteration."""

    description = "Decides each iteration: accept, retry with feedback, or stop."

    @skill(input=load("skills/judge.input"), output=msgspec.json.schema(Verdict), read_only=True)
    def judge(self, req: Request) -> Verdict:
        """Decide one iteration."""
        iteration = req.data["iteration"]
        critiques = req.data.get("critiques", [])
        answer = req.data["answer"]
        if wants_llm(self):
            return self._llm_verdict(req.data, iteration)
        scores = [float(c.get("score", 0.0)) for c in critiques]
        mean = sum(scores) / len(scores) if scores else (1.0 if answer.strip() else 0.0)
        accept_at = float(self.config.get("accept_score", 0.6))
        if not answer.strip():
            issues = ["the answer is empty"]
        else:
            issues = [i for c in critiques for i in c.get("issues", [])]
        if mean >= accept_at and answer.strip():
            return Verdict(
                decision="accept",
                reason=f"mean critic score {mean:.2f} >= {accept_at:.2f}",
                iteration=iteration,
                score=round(mean, 3),
            )
        if iteration >= req.data["maxIterations"]:
            return Verdict(
                decision="stop",
                reason=f"mean critic score {mean:.2f} < {accept_at:.2f} at the last iteration",
                iteration=iteration,
                score=round(mean, 3),
            )
        return Verdict(
            decision="retry",
            reason=f"mean critic score {mean:.2f} < {accept_at:.2f}",
            iteration=iteration,
            feedback="; ".join(issues[:5]) or "improve depth and cite every source",
            score=round(mean, 3),
        )

    def _llm_verdict(self, data: dict, iteration: int) -> Verdict:
        notes = "\n".join(
            f"- {c.get('taskId')}: score {c.get('score')}; issues: {'; '.join(c.get('issues', [])) or 'none'}"
            for c in data.get("critiques", [])
        )
        v = ask_tool(
            self.ctx.model,
            VERDICT_TOOL,
            system="You are the judge of a multi-agent run: accept a good answer, ask for a "
            "retry with concrete feedback, or stop when more rounds will not help.",
            prompt=f"Goal: {data.get('goal', '')}\nIteration {iteration} of at most "
            f"{data['maxIterations']}.\nAnswer:\n{data['answer'][:8000]}\nCritiques:\n{notes or '- none'}",
        )
        return Verdict(
            decision=v["decision"],
            reason=v["reason"],
            iteration=iteration,
            feedback=v.get("feedback"),
            score=float(v["score"]),
        )
