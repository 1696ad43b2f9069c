"""The rules of MCP tools as skills, with no I/O: what a tool's annotations make of its skill,
when a destructive call needs a person's approval, what a failed call may do next, and when
a lost server is connected again. `actors/mcp.py` is the shell that does the I/O.

Time is passed in; nothing here sleeps, spawns or sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Approve = Literal["first", "always", "never"]
APPROVE: tuple[Approve, ...] = ("first", "always", "never")

# What can go wrong with one call, as the shell sees it.
Failure = Literal["tool-error", "refused", "lost", "timeout"]


@dataclass(frozen=True)
class ToolRule:
    """What a tool's annotations (MCP's hints) make of its skill."""

    read_only: bool  # readOnlyHint: calls may overlap, retried freely
    destructive: bool  # destructiveHint (MCP's default when not read-only): approval first
    idempotent: bool  # idempotentHint: a call whose fate is unknown may be made again

    @classmethod
    def from_annotations(cls, hints: dict[str, Any] | None) -> ToolRule:
        """MCP's defaults: not read-only, destructive, not idempotent (the cautious reading;
        `destructiveHint` and `idempotentHint` mean something only when not read-only)."""
        hints = hints or {}
        read_only = hints.get("readOnlyHint") is True
        return cls(
            read_only=read_only,
            destructive=not read_only and hints.get("destructiveHint", True) is not False,
            idempotent=read_only or hints.get("idempotentHint") is True,
        )

    def tags(self) -> tuple[str, ...]:
        return tuple(
            t
            for t, on in (
                ("mcp", True),
                ("read-only", self.read_only),
                ("destructive", self.destructive),
                ("idempotent", self.idempotent),
            )
            if on
        )


_SKILL_ID = re.compile(r"[^A-Za-z0-9_\-]")


def skill_id(prefix: str, tool: str) -> str:
    """The skill id of `tool`: `prefix` + the name, with characters a plan's tool names cannot
    hold (LLMCompiler's `name(...)`) replaced by `_`."""
    sid = _SKILL_ID.sub("_", f"{prefix}{tool}")
    return sid if re.match(r"[A-Za-z_]", sid) else f"_{sid}"


@dataclass(frozen=True)
class AfterFailure:
    """What a failed call does next: whether the runtime may try it again, and why not."""

    retryable: bool
    in_doubt: bool  # its effect may or may not have happened
    reason: str


def after_failure(rule: ToolRule, failure: Failure, tool: str, detail: str) -> AfterFailure:
    """The next step after `failure` of a call of `tool`. A tool error (`isError`) or a refusal
    (bad arguments, unknown tool) is the answer: trying again cannot change it. A lost server
    or a timed-out call left the effect unknown: safe to repeat only when the tool says so."""
    if failure in ("tool-error", "refused"):
        return AfterFailure(retryable=False, in_doubt=False, reason=detail)
    what = "the server went away during the call" if failure == "lost" else "the call timed out"
    if rule.idempotent:
        return AfterFailure(retryable=True, in_doubt=False, reason=f"{tool}: {what} ({detail}); it may be retried")
    return AfterFailure(
        retryable=False,
        in_doubt=True,
        reason=(
            f"{tool}: {what} ({detail}); its effect may or may not have happened and the tool "
            "is not idempotent (no idempotentHint), so it is not retried: check, then run it again"
        ),
    )


# -- the journal of calls that must not happen twice ----------------------------------
#
# A call of a tool that is not idempotent is journaled in the actor's namespace, keyed by the
# idempotency key: "started" before it is made, then "done" (with its result), "failed" (the
# tool answered with an error: trying again is a new call) or "in-doubt" (its effect is
# unknown). The journal outlives the node, so a repeat after a crash is decided from it.

Repeat = Literal["run", "answer", "refuse"]


def on_repeat(record: dict[str, Any] | None) -> Repeat:
    """What a call whose key may have been seen before does: run it, answer with the result
    journaled, or refuse (a call with this key started and its end is unknown)."""
    state = (record or {}).get("state")
    if state == "done":
        return "answer"
    if state in ("started", "in-doubt"):
        return "refuse"
    return "run"


@dataclass
class Approvals:
    """The approval policy of destructive tools: ask a person before the `first` call of each
    tool (one yes covers its later calls), before `always` every call, or `never`."""

    policy: Approve = "first"
    granted: set[str] = field(default_factory=set)

    def needed(self, rule: ToolRule, skill: str) -> bool:
        if not rule.destructive or self.policy == "never":
            return False
        return self.policy == "always" or skill not in self.granted

    def may_ask(self, rule: ToolRule) -> bool:
        """Whether calls of a tool may wait for a person at all."""
        return rule.destructive and self.policy != "never"

    def answered(self, skill: str, approved: bool) -> None:
        if approved:
            self.granted.add(skill)


# -- the link to one server ------------------------------------------------------------

LinkState = Literal["connecting", "up", "waiting", "stopped", "failed"]


@dataclass(frozen=True)
class Connect:
    """Open the connection now (start the server, for stdio)."""


@dataclass(frozen=True)
class ConnectAt:
    """Open it again at `at` (monotonic seconds): backing off after a failure."""

    at: float


@dataclass(frozen=True)
class GiveUp:
    """Stop trying: calls fail with `reason`."""

    reason: str


LinkCommand = Connect | ConnectAt | GiveUp


@dataclass
class Link:
    """One server's connection: connect, and after a loss or a failed connect, connect again
    with exponential backoff (`backoff_s` doubling to `backoff_max_s`); after `max_failures`
    connects in a row that fail, give up. A connection that stays up resets the count."""

    backoff_s: float = 0.2
    backoff_max_s: float = 5.0
    max_failures: int = 8
    state: LinkState = "stopped"
    failures: int = 0  # connects in a row that failed or were lost before they were up
    restarts: int = 0  # connections opened after the first
    last_error: str = ""

    def start(self) -> list[LinkCommand]:
        self.state = "connecting"
        return [Connect()]

    def connected(self) -> list[LinkCommand]:
        if self.state != "connecting":
            return []
        self.state, self.failures, self.last_error = "up", 0, ""
        return []

    def lost(self, now: float, error: str) -> list[LinkCommand]:
        """The connection failed to open, or an open one was lost."""
        if self.state in ("stopped", "failed", "waiting"):
            return []
        self.failures += 1
        self.last_error = error
        if self.failures > self.max_failures:
            self.state = "failed"
            return [GiveUp(f"{self.failures} connects in a row failed; last: {error}")]
        self.state = "waiting"
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (self.failures - 1))
        return [ConnectAt(now + delay)]

    def due(self) -> list[LinkCommand]:
        """The backoff timer fired."""
        if self.state != "waiting":
            return []
        self.state = "connecting"
        self.restarts += 1
        return [Connect()]

    def stop(self) -> list[LinkCommand]:
        self.state = "stopped"
        return []
