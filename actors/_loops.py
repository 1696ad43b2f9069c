"""The loop governor: the sans-I/O core that keeps critic/judge loops from running forever.

A *loop* is a cycle of rounds: something produces an answer, a judge (or an editor, or a QA
agent) gives a verdict, and a retry carries its feedback into the next round. The governor is
told each verdict and answers with what to do next:

- `Redo(feedback, iteration)` — run the round again with this feedback;
- `Conclude(state, reason, ...)` — the loop is over; its answer is the accepted one, or the
  best one so far when a cap or a human ended it;
- `Escalate(ticket)` — stop and ask a human; `Governor.resolve(answer)` then says how to go on.

What it enforces, all in one place:

- **Caps per scope.** A loop has its own cap (`max_iterations`); one task may be redone at
  most `task_max_iterations` times across all loops; the run has `run_max_iterations` over all
  its loops and a hard `token_budget`. A capped loop ends with its best answer so far and its
  parent goes on (`Conclude.scope` says which cap ended it), unless `on_cap` says `fail`, or
  `escalate_on` includes `cap`.
- **Loop detection beyond a blind cap.** Every output of a loop (answers and the feedback
  sent back) is hashed with its sender and kind after normalising its text; the same digest
  recurring inside a sliding window is a ping-pong (the same output again, or a pair of
  outputs alternating). Scores not improving by `min_improvement` over `stall_window` rounds
  is a stall. Either escalates before the cap is reached.

It knows no sockets, threads or clocks: events in, decisions out, so each rule is a unit test.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from agentrt.protocols import (
    Escalation,
    EscalationAnswer,
    EscalationDecision,
    EscalationReason,
    LoopOutput,
    Verdict,
)

CapScope = Literal["loop", "task", "run", "budget"]


class LoopLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How far loops may go; the coordinator's `loops` config table. Every run has them all,
    so no run can loop forever: the defaults are small on purpose."""

    max_iterations: int = 3  # rounds of one loop
    task_max_iterations: int = 5  # times one task may be run by loops, across all of them
    run_max_iterations: int = 20  # rounds of all loops of the run together
    stall_window: int = 3  # rounds without improvement that count as a stall
    min_improvement: float = 0.01  # what counts as improving the best score
    repeat_window: int = 6  # outputs remembered for ping-pong detection
    escalate_on: list[Literal["oscillation", "stall", "cap"]] = msgspec.field(
        default_factory=lambda: ["oscillation", "stall"]
    )
    on_cap: Literal["best", "fail"] = "best"  # a capped loop ends with its best answer, or fails

    def __post_init__(self) -> None:
        for name in (
            "max_iterations",
            "task_max_iterations",
            "run_max_iterations",
            "stall_window",
            "repeat_window",
        ):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"loops.{name} must be >= 1, got {value}")
        if self.repeat_window < 2:
            raise ValueError(f"loops.repeat_window must be >= 2, got {self.repeat_window}")
        if not 0 <= self.min_improvement <= 1:
            raise ValueError(
                f"loops.min_improvement must be within [0, 1], got {self.min_improvement}"
            )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LoopLimits:
        """Build from a spec's config table; a bad key or value names the field and the rule."""
        try:
            return msgspec.convert(config, cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"loops: {exc}") from None


@dataclass(frozen=True)
class Redo:
    """Run the round again, with this feedback."""

    feedback: str
    iteration: int


@dataclass(frozen=True)
class Conclude:
    """The loop is over. `state`: completed (accepted), stopped (a stop verdict or a cap) or
    failed. `answer` is the answer the loop ends with (the accepted or the best one); `scope`
    names the cap that ended it, if one did ("run" and "budget" end the whole run)."""

    state: Literal["completed", "stopped", "failed"]
    reason: str
    answer: Any = None
    iteration: int | None = None
    score: float | None = None
    scope: CapScope | None = None


@dataclass(frozen=True)
class Escalate:
    """Ask a human; resume with `Governor.resolve`."""

    ticket: Escalation


_SPACE = re.compile(r"\s+")


def normalise(payload: Any) -> str:
    """The text a digest is taken of: case-folded, whitespace collapsed, trailing punctuation
    dropped, so cosmetic differences do not hide a repeat. Structured payloads are
    canonical JSON (sorted keys) of their normalised strings."""
    if isinstance(payload, str):
        return _SPACE.sub(" ", payload.casefold()).strip().rstrip(".!?;:, ")
    if isinstance(payload, dict):
        return msgspec.json.encode(
            {str(k): normalise(v) for k, v in sorted(payload.items(), key=lambda kv: str(kv[0]))}
        ).decode()
    if isinstance(payload, list | tuple):
        return msgspec.json.encode([normalise(v) for v in payload]).decode()
    return msgspec.json.encode(payload).decode()


def digest(sender: str, kind: str, payload: Any) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{sender}\x00{kind}\x00{normalise(payload)}".encode())
    return h.hexdigest()


def _text(payload: Any) -> str:
    return payload if isinstance(payload, str) else msgspec.json.encode(payload).decode()


@dataclass
class _Round:
    iteration: int
    answer: Any
    score: float | None


@dataclass
class Loop:
    """One loop's state. Open it with `Governor.open`."""

    name: str
    cap: int
    parent: Loop | None = None
    iteration: int = 1
    rounds: list[_Round] = field(default_factory=list)
    window: deque[LoopOutput] = field(default_factory=deque)
    watch_from: int = 0  # rounds before this one are not looked at for a stall
    last_feedback: str = ""
    ended: Conclude | None = None

    def best(self) -> _Round | None:
        """The highest-scoring round (the earliest on a tie); unscored rounds rank lowest."""
        best: _Round | None = None
        for r in self.rounds:
            if best is None or (r.score if r.score is not None else -1.0) > (
                best.score if best.score is not None else -1.0
            ):
                best = r
        return best

    def path(self) -> str:
        return f"{self.parent.path()}/{self.name}" if self.parent else self.name


class Governor:
    """Governs the loops of one run. `token_budget` is the run's hard cap on tokens (every
    run has one); `usd_per_mtok` prices tokens for the tickets' cost so far."""

    def __init__(
        self, limits: LoopLimits | None = None, *, token_budget: int, usd_per_mtok: float = 0.0
    ) -> None:
        if token_budget < 1:
            raise ValueError(f"token_budget must be >= 1, got {token_budget}")
        self.limits = limits or LoopLimits()
        self.token_budget = token_budget
        self.usd_per_mtok = usd_per_mtok
        self.tokens = 0
        self.run_iterations = 0
        self.task_runs: dict[str, int] = {}
        self.loops: dict[str, Loop] = {}
        self.tickets: dict[str, tuple[Loop, Escalation]] = {}  # open ones
        self.issued = 0

    # -- events ------------------------------------------------------------------------

    def open(self, name: str, parent: Loop | None = None, max_iterations: int | None = None) -> Loop:
        """Open a loop, nested in `parent` if given; its cap is `max_iterations` or the limit."""
        if name in self.loops:
            raise ValueError(f"a loop named '{name}' is already open")
        cap = max_iterations if max_iterations is not None else self.limits.max_iterations
        if cap < 1:
            raise ValueError(f"max_iterations of loop '{name}' must be >= 1, got {cap}")
        loop = Loop(name=name, cap=cap, parent=parent)
        loop.window = deque(maxlen=self.limits.repeat_window)
        self.loops[name] = loop
        return loop

    def charge(self, tokens: int) -> None:
        """Count tokens the run spent (for the budget cap and the tickets' cost so far)."""
        self.tokens += max(0, tokens)

    @property
    def cost_usd(self) -> float:
        return round(self.tokens * self.usd_per_mtok / 1e6, 6)

    def on_verdict(
        self,
        loop: Loop,
        verdict: Verdict,
        *,
        answer: Any,
        sender: str,
        judge: str,
        task: str | None = None,
    ) -> Redo | Conclude | Escalate:
        """One round of `loop` ended: `sender` produced `answer`, `judge` gave `verdict`."""
        if loop.ended is not None:
            raise ValueError(f"loop '{loop.name}' has ended ({loop.ended.reason})")
        if task is not None:
            self.task_runs.setdefault(task, 1)
        loop.rounds.append(_Round(loop.iteration, answer, verdict.score))
        self.run_iterations += 1
        repeat = self._observe(loop, sender, "answer", answer, verdict.score)
        if verdict.decision == "accept":
            return self._end(loop, "completed", verdict.reason, loop.rounds[-1])
        if verdict.decision == "stop":
            return self._end(loop, "stopped", verdict.reason, loop.best())
        feedback = verdict.feedback or verdict.reason
        loop.last_feedback = feedback
        echoed = self._observe(loop, judge, "feedback", feedback, None)
        repeat = repeat or echoed  # the answer repeating is the clearer report
        if repeat is not None and "oscillation" in self.limits.escalate_on:
            return self._escalate(loop, "oscillation", repeat=repeat)
        stall = self._stall(loop)
        if stall is not None and "stall" in self.limits.escalate_on:
            return self._escalate(loop, "stall", stall)
        cap = self._cap(loop, task)
        if cap is not None:
            scope, why = cap
            if "cap" in self.limits.escalate_on and scope in ("loop", "task"):
                return self._escalate(loop, "cap", why)
            if self.limits.on_cap == "fail":
                return self._end(loop, "failed", why, loop.best(), scope)
            return self._end(loop, "stopped", why, loop.best(), scope)
        return self._redo(loop, feedback, task)

    def resolve(self, answer: EscalationAnswer, task: str | None = None) -> Redo | Conclude:
        """A human answered a ticket: accept the best answer, abort, or run the loop on."""
        if answer.ticket_id not in self.tickets:
            raise ValueError(f"ticketId '{answer.ticket_id}' names no open ticket")
        loop, ticket = self.tickets[answer.ticket_id]
        if answer.decision not in ticket.options:
            raise ValueError(
                f"decision '{answer.decision}' is not one of the ticket's options {ticket.options}"
            )
        del self.tickets[answer.ticket_id]
        who = answer.by or "human"
        if answer.decision == "abort":
            return self._end(
                loop, "failed", f"aborted by {who} after escalation ({ticket.reason}): {ticket.summary}", loop.best()
            )
        if answer.decision == "accept-best":
            best = loop.best()
            which = f"iteration {best.iteration}" if best else "no answer"
            return self._end(
                loop,
                "completed",
                f"{who} accepted the best answer ({which}) after escalation ({ticket.reason})",
                best,
            )
        # continue: look afresh (what was seen before the ticket does not trigger it again)
        loop.window.clear()
        loop.watch_from = len(loop.rounds)
        cap = self._cap(loop, task)
        if cap is not None:
            return self._end(loop, "stopped", cap[1], loop.best(), cap[0])
        return self._redo(loop, answer.feedback or loop.last_feedback, task)

    # -- rules -------------------------------------------------------------------------

    def _redo(self, loop: Loop, feedback: str, task: str | None) -> Redo:
        loop.iteration += 1
        if task is not None:
            self.task_runs[task] = self.task_runs.get(task, 1) + 1
        return Redo(feedback, loop.iteration)

    def _observe(
        self, loop: Loop, sender: str, kind: str, payload: Any, score: float | None
    ) -> tuple[LoopOutput, LoopOutput] | None:
        """Remember one output; return (earlier, now) if its digest recurs within the window."""
        out = LoopOutput(
            iteration=loop.iteration,
            sender=sender,
            kind=kind,
            digest=digest(sender, kind, payload),
            text=_text(payload),
            score=score,
        )
        earlier = next((o for o in reversed(loop.window) if o.digest == out.digest), None)
        loop.window.append(out)
        return (earlier, out) if earlier is not None else None

    @staticmethod
    def _cycle(loop: Loop, repeat: tuple[LoopOutput, LoopOutput]) -> list[LoopOutput]:
        """The outputs from the earlier occurrence to the repeat, both included."""
        window = list(loop.window)
        start = next(i for i, o in enumerate(window) if o is repeat[0])
        end = next(i for i, o in enumerate(window) if o is repeat[1])
        return window[start : end + 1]

    @staticmethod
    def _repeat_summary(cycle: list[LoopOutput]) -> str:
        earlier, now, between = cycle[0], cycle[-1], cycle[1:-1]
        if not between or all(o.digest == now.digest for o in between):
            return (
                f"{now.sender}'s {now.kind} at iteration {now.iteration} is the same as at "
                f"iteration {earlier.iteration} (digest {now.digest})"
            )
        others = ", ".join(f"{o.sender}'s {o.kind} ({o.digest})" for o in between)
        return (
            f"ping-pong: {now.sender}'s {now.kind} at iteration {now.iteration} repeats the one "
            f"of iteration {earlier.iteration} (digest {now.digest}); in between: {others}"
        )

    def _stall(self, loop: Loop) -> str | None:
        rounds = [r for r in loop.rounds[loop.watch_from :] if r.score is not None]
        w = self.limits.stall_window
        if len(rounds) <= w:
            return None
        before = max(r.score for r in rounds[:-w])  # type: ignore[type-var]
        recent = max(r.score for r in rounds[-w:])  # type: ignore[type-var]
        if recent >= before + self.limits.min_improvement:  # type: ignore[operator]
            return None
        scores = ", ".join(f"{r.score:.2f}" for r in rounds)
        return (
            f"no improvement over the last {w} rounds: best before {before:.2f}, best since "
            f"{recent:.2f} (needs +{self.limits.min_improvement:g}); scores {scores}"
        )

    def _cap(self, loop: Loop, task: str | None) -> tuple[CapScope, str] | None:
        best = loop.best()
        keep = (
            f"; best so far: iteration {best.iteration}"
            + (f" (score {best.score:.2f})" if best and best.score is not None else "")
            if best
            else ""
        )
        if self.tokens >= self.token_budget:
            return "budget", f"token budget reached ({self.tokens} >= {self.token_budget}){keep}"
        if self.run_iterations >= self.limits.run_max_iterations:
            return "run", (
                f"run iteration cap reached ({self.limits.run_max_iterations} rounds over all "
                f"loops){keep}"
            )
        if task is not None and self.task_runs.get(task, 1) >= self.limits.task_max_iterations:
            return "task", (
                f"task '{task}' iteration cap reached ({self.limits.task_max_iterations} runs){keep}"
            )
        if loop.iteration >= loop.cap:
            return "loop", f"loop '{loop.path()}' iteration cap reached ({loop.cap}){keep}"
        return None

    def _end(
        self,
        loop: Loop,
        state: Literal["completed", "stopped", "failed"],
        reason: str,
        chosen: _Round | None,
        scope: CapScope | None = None,
    ) -> Conclude:
        loop.ended = Conclude(
            state=state,
            reason=reason,
            answer=chosen.answer if chosen else None,
            iteration=chosen.iteration if chosen else None,
            score=chosen.score if chosen else None,
            scope=scope,
        )
        return loop.ended

    def _escalate(
        self,
        loop: Loop,
        reason: EscalationReason,
        summary: str = "",
        repeat: tuple[LoopOutput, LoopOutput] | None = None,
    ) -> Escalate:
        outputs = list(loop.window)
        if repeat is not None:
            cycle = self._cycle(loop, repeat)
            summary = self._repeat_summary(cycle)
            distinct: list[LoopOutput] = []
            for o in cycle:  # each output as first seen
                if all(d.digest != o.digest for d in distinct):
                    distinct.append(o)
            pair = distinct[-2:] if len(distinct) >= 2 else []
        else:
            answers = [o for o in outputs if o.kind == "answer"]
            pair = answers[-2:] if len(answers) >= 2 else []
        changes = ""
        if len(pair) == 2:
            a, b = pair
            changes = "\n".join(
                difflib.unified_diff(
                    a.text.splitlines() or [""],
                    b.text.splitlines() or [""],
                    f"{a.sender} {a.kind} (iteration {a.iteration})",
                    f"{b.sender} {b.kind} (iteration {b.iteration})",
                    lineterm="",
                )
            )
        options: list[EscalationDecision] = (
            ["accept-best", "abort"] if reason == "cap" else ["accept-best", "continue", "abort"]
        )
        best = loop.best()
        ticket = Escalation(
            ticket_id=f"{loop.name}-{self.issued + 1}",
            loop=loop.path(),
            reason=reason,
            summary=summary,
            iteration=loop.iteration,
            options=options,
            outputs=outputs,
            changes=changes,
            best_iteration=best.iteration if best else None,
            best_score=best.score if best else None,
            tokens=self.tokens,
            cost_usd=self.cost_usd,
            details={
                "cap": loop.cap,
                "runIterations": self.run_iterations,
                "runMaxIterations": self.limits.run_max_iterations,
                "tokenBudget": self.token_budget,
            },
        )
        self.issued += 1
        self.tickets[ticket.ticket_id] = (loop, ticket)
        return Escalate(ticket)
