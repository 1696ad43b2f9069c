"""One request to a remote A2A agent, as a sans-I/O core: events in, commands out.

`A2AAgent` is the shell: it performs each command (HTTP with the a2a-sdk client, its state
store, the human actor) and feeds the outcome back as the next event. The core decides: send
once, or follow the task a restarted node journaled; poll until the task ends; cancel it
when asked; turn INPUT_REQUIRED into an escalation and its answer into a reply or a cancel.
No clock, no sockets: the poll interval is a field of the command, waiting is the shell's.
"""

from __future__ import annotations

from dataclasses import dataclass

TERMINAL = frozenset({"completed", "failed", "canceled", "rejected"})


# -- commands ------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send the request (a new remote task); answer with `sent(task_id, state)`."""


@dataclass(frozen=True)
class Journal:
    """Record the remote task id for this request (so a restarted node follows it)."""

    task_id: str


@dataclass(frozen=True)
class Get:
    """Read the remote task after `after_s` (0: now); answer with `seen(state)`, or with
    `cancel()` if the request is cancelled while waiting."""

    task_id: str
    after_s: float


@dataclass(frozen=True)
class Cancel:
    """Cancel the remote task; answer with `seen(state)` (what it is now)."""

    task_id: str


@dataclass(frozen=True)
class Escalate:
    """Ask the run's human about the remote's question; answer with `answered(...)`."""

    task_id: str


@dataclass(frozen=True)
class Reply:
    """Send the human's answer on the remote task; answer with `seen(state)`."""

    task_id: str
    text: str


@dataclass(frozen=True)
class Finish:
    """The request is over: `state` is the remote task's last state (or "canceled" when it
    was cancelled before anything was sent); `why` says what happened, when not completed."""

    state: str
    task_id: str | None
    why: str = ""


Command = Send | Journal | Get | Cancel | Escalate | Reply | Finish


class RemoteCall:
    """The core. `start()` first, then one event per command that asks for one."""

    def __init__(
        self, poll_s: float = 0.1, cancel_polls: int = 50, first_poll_s: float = 0.01
    ) -> None:
        self.poll_s = poll_s  # reads of a running task: from first_poll_s, doubling up to this
        self.next_poll_s = min(first_poll_s, poll_s)
        self.cancel_polls = cancel_polls  # reads after a cancel before giving up on it
        self.polls_cancelling = 0
        self.task_id: str | None = None
        self.resuming = False  # following a journaled task (not sent by this attempt)
        self.cancel_requested = False
        self.cancelling = False
        self.no_human = False
        self.finished = False
        self.sends = 0

    def start(self, journaled: str | None, cancelled: bool = False) -> list[Command]:
        if cancelled:
            return self._finish("canceled", "cancelled before it was sent")
        if journaled is not None:
            self.task_id, self.resuming = journaled, True
            return [Get(journaled, 0.0)]
        return self._send()

    def sent(self, task_id: str, state: str) -> list[Command]:
        self.task_id, self.resuming = task_id, False
        return [Journal(task_id), *self._next(state)]

    def seen(self, state: str) -> list[Command]:
        if self.resuming:
            self.resuming = False
            if state in TERMINAL - {"completed"} and not self.cancel_requested:
                return self._send()  # the journaled task failed: this attempt sends anew
        return self._next(state)

    def cancel(self) -> list[Command]:
        """The request was cancelled (a timeout, the run stopping)."""
        self.cancel_requested = True
        if self.finished or self.task_id is None or self.cancelling:
            return []
        self.cancelling = True
        return [Cancel(self.task_id)]

    def answered(self, decision: str | None, feedback: str | None = None) -> list[Command]:
        """The human's answer to the remote's question (None: there is no human)."""
        assert self.task_id is not None
        if decision == "continue":
            return [Reply(self.task_id, feedback or "continue")]
        self.no_human = decision is None
        self.cancelling = True
        return [Cancel(self.task_id)]

    def _send(self) -> list[Command]:
        self.sends += 1
        return [Send()]

    def _next(self, state: str) -> list[Command]:
        assert self.task_id is not None
        if state in TERMINAL:
            why = "the remote needs input and the run has no human actor" if self.no_human else ""
            return self._finish(state, why)
        if self.cancel_requested and not self.cancelling:
            self.cancelling = True
            return [Cancel(self.task_id)]
        if state == "input-required" and not self.cancelling:
            return [Escalate(self.task_id)]
        if self.cancelling:
            self.polls_cancelling += 1
            if self.polls_cancelling > self.cancel_polls:
                return self._finish(
                    "canceled", f"the remote did not confirm the cancel (task {state})"
                )
        after, self.next_poll_s = self.next_poll_s, min(self.next_poll_s * 2, self.poll_s)
        return [Get(self.task_id, after)]

    def _finish(self, state: str, why: str) -> list[Command]:
        self.finished = True
        return [Finish(state, self.task_id, why)]
