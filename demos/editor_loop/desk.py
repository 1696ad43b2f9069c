"""A writer and an editor with conflicting instructions: the writer is told to keep it casual,
the editor to make it formal. Each rewrites the other's version in its own register, so the
loop never converges: the writer's draft comes back word for word every other round.

On the offline model the rewriting is done by the rules below (the offline model cannot
follow instructions); each actor still makes its model call with its brief, so tokens and
latency are accounted as for a real model.
"""

from __future__ import annotations

from agentrt.protocols import Verdict
from agentrt.runtime import Actor, Request, skill

WRITER_BRIEF = "You are a blog writer. Keep it casual and friendly."
EDITOR_BRIEF = "You are the publication's editor. The house style is formal."

# (casual, formal) phrase pairs: each side maps to the other, so rewriting one way and back
# gives the same text again.
REGISTER = [
    ("Hey folks! ", "Dear readers, "),
    ("So here's the deal. ", "In summary: "),
    (" shows ", " demonstrates "),
    (" matters for ", " is material to "),
    (" limits ", " constrains "),
    (", while ", ", whereas "),
    ("Net: ", "In conclusion, "),
    (" Cheers!", " Yours faithfully."),
]


def casual(text: str) -> str:
    for informal, formal in REGISTER:
        text = text.replace(formal, informal)
    return text


def formal(text: str) -> str:
    for informal, formal_ in REGISTER:
        text = text.replace(informal, formal_)
    return text


def formality(text: str) -> float:
    """The share of the register's markers that are in their formal form."""
    hits = [f in text for _, f in REGISTER if f in text or _ in text]
    return sum(hits) / len(hits) if hits else 0.5


POST = {
    "type": "object",
    "required": ["topic"],
    "properties": {"topic": {"type": "string"}, "feedback": {"type": "string"}},
    "additionalProperties": False,
}
ANSWER = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}


class Writer(Actor):
    """Writes a short post; given the editor's version as feedback, rewrites it casually."""

    @skill(input=POST, output=ANSWER, read_only=True)
    def write_post(self, req: Request) -> dict:
        """A casual post on `topic`, or the editor's version (`feedback`) made casual again."""
        edit = req.data.get("feedback")
        prompt = f"Rewrite this in your own voice:\n{edit}" if edit else f"Write a short post on {req.data['topic']}"
        body = self.ctx.model.complete([{"role": "user", "content": prompt}], system=WRITER_BRIEF).text
        if edit:
            return {"answer": casual(edit)}
        return {"answer": casual(f"Hey folks! So here's the deal. {body} Cheers!")}


class Editor(Actor):
    """Judges each draft against the house style: accepts a formal one; otherwise sends back
    its own formal edit as the feedback."""

    @skill(
        input={"type": "object", "required": ["answer", "iteration", "maxIterations"]},
        read_only=True,
    )
    def judge(self, req: Request) -> Verdict:
        """Accept a formal draft; return a casual one with the formal edit as feedback."""
        draft, iteration = req.data["answer"], req.data["iteration"]
        self.ctx.model.complete(
            [{"role": "user", "content": f"Edit to house style:\n{draft}"}], system=EDITOR_BRIEF
        )
        score = round(formality(draft), 3)
        if score >= 0.9:
            return Verdict(decision="accept", reason="reads formally", iteration=iteration, score=score)
        return Verdict(
            decision="retry",
            reason=f"too casual for the house style (formality {score:.2f})",
            iteration=iteration,
            feedback=formal(draft),
            score=max(0.2, score),
        )
