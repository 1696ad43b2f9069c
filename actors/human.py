"""The human: where escalation tickets go, and where the answer that resumes a run comes from."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path
from typing import Any

import msgspec

from agentrt.protocols import (
    Escalation,
    EscalationAnswer,
    EscalationDecision,
    EscalationWaiting,
    check_id,
)
from agentrt.runtime import (
    Actor,
    Request,
    child_path,
    format_ticket,
    printable,
    private_dir,
    redact,
    skill,
    write_private,
)

_FALLBACKS = ("accept-best", "abort", "wait-file")
_KEYS: dict[str, EscalationDecision] = {
    "a": "accept-best",
    "accept": "accept-best",
    "accept-best": "accept-best",
    "c": "continue",
    "continue": "continue",
    "b": "abort",
    "abort": "abort",
}


class Human(Actor):
    """Answers escalation tickets. With a terminal (`agentrt run` started from one), it prints
    the ticket there and asks; with none, it applies the run's non-interactive policy.

    Config:
    - `interactive` (true): ask at the terminal when the run has one;
    - `fallback` ("accept-best"): with no terminal, `accept-best`, `abort`, or `wait-file`:
      write the ticket to `<run dir>/escalations/<ticket>.json` and wait for a person to write
      `<ticket>.answer.json` (an `EscalationAnswer`: {"ticketId", "decision", "feedback"?});
    - `wait_s` (900): how long to wait for a person (terminal or file);
    - `on_timeout` ("abort"): the decision when nobody answered in time.

    Every ticket is also written to `<run dir>/escalations/`, answered or not.
    """

    description = "The escalation endpoint: asks a person, or applies the run's policy."

    def on_start(self) -> None:
        self.fallback = str(self.config.get("fallback", "accept-best"))
        if self.fallback not in _FALLBACKS:
            raise ValueError(f"human.fallback must be one of {list(_FALLBACKS)}, got '{self.fallback}'")
        self.on_timeout = str(self.config.get("on_timeout", "abort"))
        if self.on_timeout not in ("accept-best", "abort"):
            raise ValueError(f"human.on_timeout must be 'accept-best' or 'abort', got '{self.on_timeout}'")
        self.wait_s = float(self.config.get("wait_s", 900))
        self.interactive = bool(self.config.get("interactive", True))

    @skill(
        input=msgspec.json.schema(Escalation),
        output=msgspec.json.schema(EscalationAnswer),
        read_only=True,  # it waits for a person: on a pool thread, not the actor's own
    )
    def escalate(self, req: Request) -> EscalationAnswer:
        """Answer one ticket: at the terminal, from an answer file, or by policy."""
        ticket = msgspec.convert(req.data, Escalation)
        check_id(ticket.ticket_id, "ticketId")  # it names files in escalations/
        folder = self._folder()
        if folder is not None:
            write_private(
                child_path(folder, f"{ticket.ticket_id}.json", "ticketId"),
                msgspec.json.format(msgspec.json.encode(redact(msgspec.to_builtins(ticket)))),
            )
        if self.interactive and self.ctx.terminal:
            return self._ask_terminal(req, ticket, self.ctx.terminal)
        if self.fallback == "wait-file" and folder is not None:
            return self._wait_file(req, ticket, folder)
        decision = "accept-best" if self.fallback == "wait-file" else self.fallback
        if decision not in ticket.options:  # e.g. an in-doubt task: never re-run by policy
            decision = "abort"
        return EscalationAnswer(
            ticket_id=ticket.ticket_id,
            decision=decision,  # type: ignore[arg-type]
            by=f"policy (no terminal: {decision})",
        )

    def _folder(self) -> Path | None:
        if self.ctx.run_dir is None:
            return None
        return private_dir(self.ctx.run_dir / "escalations")

    def _timed_out(self, ticket: Escalation, where: str) -> EscalationAnswer:
        return EscalationAnswer(
            ticket_id=ticket.ticket_id,
            decision=self.on_timeout,  # type: ignore[arg-type]
            by=f"policy (no answer {where} within {self.wait_s:g}s: {self.on_timeout})",
        )

    # -- at a terminal -------------------------------------------------------------------

    def _ask_terminal(self, req: Request, ticket: Escalation, device: str) -> EscalationAnswer:
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
        try:
            # Ticket text comes from models and other actors: printed with its controls escaped.
            say = lambda text: os.write(fd, printable(text).replace("\n", "\r\n").encode())  # noqa: E731
            say("\n" + "\n".join(format_ticket(ticket)) + "\n")
            keys = {k: v for k, v in _KEYS.items() if v in ticket.options}
            menu = " / ".join(
                f"[{k}] {v}" for k, v in keys.items() if len(k) == 1
            )
            deadline = time.monotonic() + self.wait_s
            while True:
                say(f"your answer ({menu}): ")
                line = self._read_line(req, fd, deadline)
                if line is None:
                    say("\nno answer in time\n")
                    return self._timed_out(ticket, "at the terminal")
                decision = keys.get(line.strip().lower())
                if decision is None:
                    say(f"'{line.strip()}' is not an option; type one of: {', '.join(keys)}\n")
                    continue
                feedback = None
                if decision == "continue":
                    say("feedback for the next round (empty: keep the judge's): ")
                    feedback = (self._read_line(req, fd, deadline) or "").strip() or None
                answer = self._validated(
                    {"ticketId": ticket.ticket_id, "decision": decision, "feedback": feedback, "by": "human at the terminal"}
                )
                say(f"answer recorded: {answer.decision}\n")
                return answer
        finally:
            os.close(fd)

    @staticmethod
    def _read_line(req: Request, fd: int, deadline: float) -> str | None:
        """One line typed at the terminal, or None when the deadline passed or the run was
        cancelled. Polls, so a cancelled run does not leave this thread blocked."""
        buf = b""
        while not buf.endswith((b"\n", b"\r")):
            left = deadline - time.monotonic()
            if left <= 0 or req.cancelled.is_set():
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 1024)
                if not chunk:
                    return None
                buf += chunk
        return buf.decode(errors="replace")

    # -- from an answer file -------------------------------------------------------------

    def _wait_file(self, req: Request, ticket: Escalation, folder: Path) -> EscalationAnswer:
        path = child_path(folder, f"{ticket.ticket_id}.answer.json", "ticketId")
        self.ctx.notice(
            f"escalation {ticket.ticket_id} ({ticket.reason}) waits for an answer in {path}",
        )
        # For whoever serves answers (the A2A gateway): in the trace of the job that escalated.
        self.ctx.emit(
            EscalationWaiting(
                ticket_id=ticket.ticket_id,
                ticket_path=str(child_path(folder, f"{ticket.ticket_id}.json", "ticketId")),
                answer_path=str(path),
            )
        )
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            if path.is_file():
                raw = path.read_bytes()
                try:
                    answer = self._validated(msgspec.json.decode(raw))
                    if answer.ticket_id != ticket.ticket_id:
                        raise ValueError(
                            f"ticketId is '{answer.ticket_id}', expected '{ticket.ticket_id}'"
                        )
                    if answer.decision not in ticket.options:
                        raise ValueError(
                            f"decision '{answer.decision}' is not one of {ticket.options}"
                        )
                    # Written by a person, now a file of the run: private and redacted too.
                    write_private(path, redact(raw))
                    return answer
                except (ValueError, msgspec.DecodeError) as exc:
                    # Set the bad answer aside with the reason, and keep waiting for a good one.
                    write_private(child_path(folder, path.with_suffix(".rejected").name), redact(raw))
                    path.unlink()
                    write_private(
                        child_path(folder, path.with_suffix(".error.txt").name),
                        redact(f"answer refused: {exc}\n"),
                    )
                    self.ctx.notice(f"answer to {ticket.ticket_id} refused: {exc}")
            if req.cancelled.wait(0.2):
                break
        return self._timed_out(ticket, f"in {path}")

    @staticmethod
    def _validated(data: Any) -> EscalationAnswer:
        try:
            return msgspec.convert(
                {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data,
                EscalationAnswer,
            )
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None
