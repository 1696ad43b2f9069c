"""The A2A gateway reads a ticket and writes its answer only as the human actor's own files:
`<ticket id>.json` / `<ticket id>.answer.json` in the run's escalations folder, never through
a symlink planted there that leads out (pure path logic: no gateway is started)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from agentrt.protocols import EscalationWaiting
from agentrt.runtime._gateway import Gateway


def _ok(run: Path, ticket_id: str, ticket: str | None = None, answer: str | None = None) -> bool:
    folder = run / "escalations"
    event = EscalationWaiting(
        ticket_id=ticket_id,
        ticket_path=ticket or str(folder / f"{ticket_id}.json"),
        answer_path=answer or str(folder / f"{ticket_id}.answer.json"),
    )
    return Gateway._escalation_paths(SimpleNamespace(runtime=SimpleNamespace(run_dir=run)), event)  # type: ignore[arg-type]


def test_a_ticket_is_read_only_from_the_runs_escalations_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "escalations").mkdir(parents=True)
    (run / "escalations" / "judge-1.json").write_text("{}")
    assert _ok(run, "judge-1")
    assert not _ok(run, "../x") and not _ok(run, "a/b")
    assert not _ok(run, "judge-1", ticket=str(tmp_path / "judge-1.json"))
    assert not _ok(run, "judge-1", answer=str(run / "escalations" / "other.answer.json"))


def test_a_symlink_planted_in_the_folder_that_leads_out_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "escalations").mkdir(parents=True)
    secret = tmp_path / "secret.json"
    secret.write_text('{"summary": "private"}')
    (run / "escalations" / "t1.json").symlink_to(secret)
    assert not _ok(run, "t1")
    (run / "escalations" / "t2.json").write_text("{}")
    (run / "escalations" / "t2.answer.json").symlink_to(tmp_path / "elsewhere")
    assert not _ok(run, "t2")
