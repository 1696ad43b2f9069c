"""The live progress line reads typed events and counts plan tasks by their plan-task field,
whatever the entry actor is called."""

from __future__ import annotations

from agentrt.protocols import Notice, PlanAccepted, ScheduleDispatch, TaskStateChanged
from agentrt.runtime._cli import _LiveProgress


def test_the_progress_line_counts_plan_tasks_of_an_entry_called_boss() -> None:
    board = _LiveProgress()  # not started: nothing is drawn, the counts still move
    board(PlanAccepted(actor="boss", tasks=3, final="c"))
    for task in ("a", "b"):
        board(ScheduleDispatch(actor="boss", plan_task=task, skill="s", worker="w"))
    board(TaskStateChanged(actor="w", plan_task="a", task_id="job/a", skill="s", state="working"))
    board(TaskStateChanged(actor="w", plan_task="a", task_id="job/a", skill="s", state="completed", input_tokens=5, output_tokens=2))
    board(TaskStateChanged(actor="w", plan_task="b", task_id="job/b", skill="s", state="failed"))
    # Not plan tasks: a critique the boss asked for, and the boss's own job.
    board(TaskStateChanged(actor="critic", task_id="c1", skill="critique", state="completed", input_tokens=1))
    board(TaskStateChanged(actor="boss", task_id="job", skill="run", state="completed"))
    board(Notice(actor="human", text="hello"))
    line = board._render().plain
    assert line.startswith("tasks 1/3 done · 0 in flight · 1 failed · 1 queued · 8 tokens")
