"""The run's report: what an entry actor that runs a plan returns for a job, and what the
summary and the CLI read. `schemas/skills/run.output.json` is generated from it."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ._model import Critique, Escalation, EscalationAnswer, Verdict
from ._plan import Plan


class _Report(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """Base of the report's parts: camelCase on the wire, every field written (no omission:
    a reader sees `null` rather than a missing key)."""


class TaskRecord(_Report, kw_only=True):
    """How one plan task ended: where it ran, when, what it used."""

    id: str
    skill: str
    state: str  # an A2A task state, or how the scheduler ended it (skipped, cancelled, failed)
    worker: str = ""
    attempt: int = 1
    started_at: float = 0.0  # unix seconds, at the worker
    finished_at: float = 0.0
    duration_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


class ScheduleFigures(_Report, kw_only=True):
    """The scheduler core's figures for the job."""

    core_cpu_s: float = 0.0
    core_events: int = 0
    dispatches: int = 0
    dispatch_span_s: float = 0.0  # from the first dispatch to the last
    rpm_limit: float | None = None
    max_in_flight: int | None = None
    failed: dict[str, str] = {}  # task -> why
    skipped: dict[str, str] = {}
    cancelled: dict[str, str] = {}


class BudgetFigures(_Report, kw_only=True):
    """The run's one ledger, over every model call of the run (plan, tasks, critiques,
    verdicts): its caps and what was spent."""

    token_budget: float | None = None
    tokens_spent: float = 0.0
    cost_budget: float | None = None
    cost_spent: float = 0.0


class LoopSummary(_Report, kw_only=True):
    """The judge loop: its cap, the cap that ended it (if one did), where the answer came from."""

    name: str
    cap: int
    ended_by: Literal["loop", "task", "run", "budget"] | None = None
    answer_iteration: int | None = None
    answer_score: float | None = None


class EscalationRecord(_Report, kw_only=True):
    """A ticket raised to a human, and the answer that resumed the run."""

    ticket: Escalation
    answer: EscalationAnswer | None = None


RunState = Literal["completed", "partial", "failed", "stopped"]


class RunReport(_Report, kw_only=True):
    """The result of one job: its answer and state, and how it was reached."""

    answer: str
    state: RunState
    tasks: list[TaskRecord]
    reason: str = ""
    results: dict[str, Any] = {}  # every completed task's result (partial when the plan failed)
    schedule: ScheduleFigures = ScheduleFigures()
    budget: BudgetFigures = BudgetFigures()
    iterations: int = 0
    loop: LoopSummary | None = None
    escalations: list[EscalationRecord] = []
    verdict: Verdict | None = None
    critiques: list[Critique] = []
    plan: Plan | None = None


def report_from(data: Any) -> RunReport | None:
    """`data` as a RunReport, or None if it is not one (an entry actor may return anything)."""
    try:
        return msgspec.convert(data, RunReport)
    except msgspec.ValidationError:
        return None
