"""What a run leaves behind can be handed to someone else: no secret in any file of
runs/<id>/ nor in what `agentrt run` prints, private file modes, ids that cannot lead out of
their folder, a trace page that runs no foreign script, a terminal that gets no escape codes
from data, and user modules from the spec's folder only. Real processes throughout."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pexpect
import pytest

from agentrt.protocols import Escalation
from agentrt.runtime import RunError, Runtime

from .conftest import ROOT, make_spec

pytestmark = pytest.mark.integration

AGENTRT = str(Path(sys.executable).parent / "agentrt")  # the console script, as a user runs it


def rand(n: int = 24, alphabet: str = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def planted() -> dict[str, Any]:
    """Fresh secrets of every listed form (random, so a hit can only be a leak)."""
    return {
        # Recognised by their form, wherever they are.
        "values": {
            "sk-ant": "sk-ant-api03-" + rand(40),
            "sk-proj": "sk-proj-" + rand(40),
            "sk": "sk-" + rand(40),
            "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJ" + rand(30) + "." + rand(40),
            "github": "ghp_" + rand(36),
            "github-pat": "github_pat_" + rand(50),
            "aws-key-id": "AKIA" + rand(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
        },
        # Opaque values, recognised by the name they go with.
        "named": {
            name: "v" + rand(20)
            for name in (
                "token", "access_token", "refresh_token", "cookie", "Proxy-Authorization",
                "client_secret", "api-key", "aws_secret_access_key", "password", "credential",
            )
        },
        "bearer": rand(32),  # in `Bearer <it>`
        "url_password": rand(16),  # in `https://ada:<it>@host`
        "env": "e" + rand(30),  # the value of ACME_SERVICE_TOKEN in the run's environment
    }


def every_secret(p: dict[str, Any]) -> list[str]:
    return [*p["values"].values(), *p["named"].values(), p["bearer"], p["url_password"], p["env"]]


SPILL = '''
import json, os, sys, traceback
from pathlib import Path

import msgspec

from agentrt.protocols import Escalation
from agentrt.runtime import Actor, Request, skill

P = json.loads((Path(__file__).parent / "planted.json").read_text())


def text():
    """Every planted secret in the form it would take in a message or a log line."""
    parts = list(P["values"].values())
    parts += [f"{k}={v}" for k, v in P["named"].items()]
    parts += [f"{k}: {v}" for k, v in P["named"].items()]
    parts += [f"https://ada:{P['url_password']}@example.com/x", f"Authorization: Bearer {P['bearer']}"]
    parts.append(os.environ["ACME_SERVICE_TOKEN"])
    return " ; ".join(parts)


class Spill(Actor):
    """Puts every planted secret everywhere it can: its output, headers, dict keys, its
    state, stdout and stderr (a traceback too), a notice, a ticket and an error."""

    @skill(input={"type": "object"}, read_only=True)
    def leak(self, req: Request) -> dict:
        t = text()
        print("stdout:", t, flush=True)
        print("stderr:", t, file=sys.stderr, flush=True)
        try:
            raise RuntimeError(t)
        except RuntimeError:
            traceback.print_exc()
        self.ctx.event("notice", text=f"leaking {t}")
        self.ctx.event("leak.attempt", headers=dict(P["named"]), note=t)
        result = {
            "answer": t,
            "headers": {**P["named"], "Authorization": "Bearer " + P["bearer"]},
            "keys": {v: 1 for v in [*P["values"].values(), os.environ["ACME_SERVICE_TOKEN"]]},
        }
        self.ctx.state.put("last", result)
        ticket = Escalation(
            ticket_id="spill-1", loop="spill", reason="other", summary=t, iteration=1,
            options=["accept-best", "abort"], details=result,
        )
        self.ctx.ask("human", "escalate", msgspec.to_builtins(ticket)).result(60).unwrap()
        return result

    @skill(input={"type": "object"}, read_only=True)
    def boom(self, req: Request) -> dict:
        raise RuntimeError("upstream refused request with " + text())
'''

SPILL_SPEC = """
[run]
name = "spill"
entry = "coordinator"
skill = "run"
input = { goal = "leak", plan = { goal = "leak", final = "leak", tasks = [
  { id = "leak", skill = "leak" },
  { id = "boom", skill = "boom" },
] } }

[[nodes]]
name = "coord"
actors = [{ name = "coordinator", class = "agentrt.actors:Coordinator", config = { max_attempts = 1 } }]

[[nodes]]
name = "work"
actors = [{ name = "spill", class = "spill:Spill" }, { name = "human", class = "agentrt.actors:Human" }]
"""


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTRT, *args], cwd=cwd, capture_output=True, text=True, timeout=150, env=env)


def test_a_planted_secret_of_every_form_is_in_no_file_of_the_run_and_not_printed(tmp_path: Path) -> None:
    p = planted()
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "planted.json").write_text(json.dumps(p))
    (spec_dir / "spill.py").write_text(SPILL)
    (spec_dir / "spec.toml").write_text(SPILL_SPEC)
    runs = tmp_path / "runs"
    env = dict(os.environ, ACME_SERVICE_TOKEN=p["env"])
    env.pop("ANTHROPIC_API_KEY", None)
    outputs = []
    run = cli("run", str(spec_dir), "--run-id", "spill", "--runs-dir", str(runs), "--non-interactive", cwd=tmp_path, env=env)
    outputs.append(run.stdout + run.stderr)
    run_dir = runs / "spill"
    summary = json.loads((run_dir / "summary.json").read_text())
    # It ran: the leaking task completed (its result is the answer), the other failed.
    assert "leaking" in run.stdout and "[redacted]" in json.dumps(summary["output"]), run.stdout + run.stderr
    tasks = {t["id"]: t for t in summary["output"]["tasks"]}
    assert tasks["leak"]["state"] == "completed" and tasks["boom"]["state"] == "failed"
    assert "upstream refused request with" in run.stdout
    assert (run_dir / "escalations" / "spill-1.json").is_file()
    assert "Traceback" in (run_dir / "logs" / "work.log").read_text()
    # The exports, into the run's folder, and the terminal views.
    for args in (
        ("trace", "html", "spill"),
        ("trace", "export", "spill", "--format", "chrome", "-o", str(run_dir / "chrome.json")),
        ("trace", "export", "spill", "--format", "otel", "-o", str(run_dir / "otel.json")),
        ("trace", "show", "spill"),
        ("trace", "why", "spill", "leak"),
        ("trace", "ls"),
    ):
        done = cli(*args, "--runs-dir", str(runs), cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    names = {f.relative_to(run_dir).as_posix() for f in files}
    assert {"trace.jsonl", "summary.json", "state.sqlite", "logs/work.log", "escalations/spill-1.json", "trace.html"} <= names
    for secret in every_secret(p):
        for f in files:
            assert secret.encode() not in f.read_bytes(), (secret, f)
        for out in outputs:
            assert secret not in out, secret
    # Private: the run's folder and every folder in it 0700, every file 0600.
    for path in [run_dir, *run_dir.rglob("*")]:
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, path


def test_a_secret_in_a_node_that_cannot_start_is_not_in_the_error_or_its_log(tmp_path: Path) -> None:
    key = "sk-ant-api03-" + rand(40)
    (tmp_path / "broken.py").write_text(f"raise RuntimeError('cannot connect with x-api-key {key}')\n")
    (tmp_path / "spec.toml").write_text(
        '[run]\nentry = "a"\nskill = "s"\n[[nodes]]\nname = "n"\nactors = [{ name = "a", class = "broken:A" }]\n'
    )
    done = cli("run", str(tmp_path), "--run-id", "broken", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 2 and "could not start" in done.stderr, done.stderr
    assert key not in done.stdout + done.stderr and "[redacted]" in done.stderr
    log = (tmp_path / "runs" / "broken" / "logs" / "n.log").read_text()
    assert "Traceback" in log and "[redacted]" in log and key not in log


DYING = """
import os, sys
from agentrt.runtime import Actor, Request, skill


class Dying(Actor):
    @skill(input={"type": "object"})
    def die(self, req: Request) -> dict:
        print("giving up; Authorization: Bearer " + req.data["bearer"], file=sys.stderr, flush=True)
        print("upstream said x-api-key " + req.data["key"], flush=True)
        # A key block arrives in the log a line at a time; a dict's repr quotes a passphrase.
        pem = "-----BEGIN RSA PRIVATE KEY-----\\n" + req.data["pem"] + "\\n-----END RSA PRIVATE KEY-----"
        print(pem, file=sys.stderr, flush=True)
        print("login failed:", {"password": req.data["passphrase"]}, file=sys.stderr, flush=True)
        os._exit(3)
"""


def test_a_run_error_quoting_a_dead_node_log_holds_no_secret(tmp_path: Path) -> None:
    """A node that dies is not restarted (temporary) while the run waits on it: the RunError
    quotes the last lines of its log, which held secrets when it printed them."""
    (tmp_path / "dying.py").write_text(DYING)
    key, bearer, pem, passphrase = "sk-ant-api03-" + rand(40), rand(32), "MIIE" + rand(60), f"{rand(8)} {rand(8)} {rand(8)}"
    from agentrt.runtime import spec_from_dict

    spec = spec_from_dict(
        {"run": {"entry": "d", "skill": "die"}, "nodes": [{"name": "n", "restart": "temporary", "actors": [{"name": "d", "class": "dying:Dying"}]}]},
        "dying",
        base_dir=str(tmp_path),
    )
    with pytest.raises(RunError) as info, Runtime(spec, run_id="dying", runs_dir=tmp_path / "runs") as rt:
        rt.ask("d", "die", {"key": key, "bearer": bearer, "pem": pem, "passphrase": passphrase}, timeout_s=60)
    message = str(info.value)
    assert "last lines of" in message and "giving up; Authorization: Bearer [redacted]" in message
    assert "x-api-key [redacted]" in message
    log = (tmp_path / "runs" / "dying" / "logs" / "n.log").read_text()
    assert "x-api-key [redacted]" in log and "login failed: {'password': '[redacted]'}" in log
    for secret in (key, bearer, pem, *passphrase.split()):
        assert secret not in message and secret not in log, secret


def test_names_that_look_secret_keep_every_trace_event_valid(tmp_path: Path) -> None:
    """A node called `auth` and a plan task called `token`: the events and the summary that
    are keyed by them stay valid typed records (redaction masks strings, keeps numbers)."""
    from agentrt.runtime import read_events, read_trace, run

    spec = make_spec(
        {
            "auth": [{"name": "coordinator", "class": "agentrt.actors:Coordinator"}],
            "w": [{"name": "secret", "class": "custom_actors:Greeter"}],
        },
        run={"entry": "coordinator", "skill": "run", "input": {"goal": "g", "plan": {"goal": "g", "tasks": [
            {"id": "token", "skill": "greet", "args": {"name": "ada"}},
            {"id": "after", "skill": "greet", "args": {"name": "bob"}, "deps": ["token"]},
            # Ids of the id rule that start like a secret's name: kept, and kept apart.
            {"id": "auth:login", "skill": "greet", "args": {"name": "cy"}, "deps": ["after"]},
            {"id": "auth:logout", "skill": "greet", "args": {"name": "di"}, "deps": ["auth:login"]},
            {"id": "zz", "skill": "greet", "args": {"name": "ed"}},
            {"id": "last", "skill": "greet", "args": {"name": "fy"}, "deps": ["token", "zz"]},  # 2 deps: not a header pair
        ]}}},
    )  # fmt: skip
    summary = run(spec, run_id="names", runs_dir=tmp_path)
    assert summary.state == "completed" and isinstance(summary.pids["auth"], int)
    assert summary.report is not None
    assert {t.id for t in summary.report.tasks} == {"token", "after", "auth:login", "auth:logout", "zz", "last"}
    trace = tmp_path / "names" / "trace.jsonl"
    assert len(read_events(trace)) == len(read_trace(trace))
    assert '"auth:logout":["auth:login"]' in trace.read_text()  # the plan's deps, as planned
    assert '"last":["token","zz"]' in trace.read_text()


# -- ids that name files -------------------------------------------------------------------


def ticket(ticket_id: str) -> dict[str, Any]:
    return msgspec.to_builtins(
        Escalation(ticket_id=ticket_id, loop="l", reason="cap", summary="s", iteration=1, options=["abort"])
    )


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_traversal_ids_are_refused_and_nothing_is_written_outside(tmp_path: Path) -> None:
    runs = tmp_path / "a" / "b" / "runs"
    runs.mkdir(parents=True)
    outside = tmp_path / "x"
    spec = make_spec(
        {
            "n": [
                {"name": "human", "class": "agentrt.actors:Human", "config": {"fallback": "wait-file", "wait_s": 0.5}},
                {"name": "coordinator", "class": "agentrt.actors:Coordinator"},
                {"name": "greeter", "class": "custom_actors:Greeter"},
            ]
        },
        run={"entry": "coordinator", "skill": "run"},
    )
    depth = len(runs.relative_to(tmp_path).parts) + 2  # runs/<id>/escalations -> tmp_path
    bad_ids = ["../" * depth + "x/relative", str(outside / "absolute"), "..", "a/../../b"]
    with Runtime(spec, run_id="trav", runs_dir=runs) as rt:
        before = tree(tmp_path)
        for bad in bad_ids:
            result = rt.ask("human", "escalate", ticket(bad), timeout_s=30)
            assert result.state == "failed", bad
            assert f"ticketId {bad!r} is not a valid id" in result.error and "must match" in result.error
        # A plan task id becomes an in-doubt ticket's name: refused with the plan.
        plan = {"goal": "g", "tasks": [{"id": "../../../../x/task", "skill": "greet", "args": {"name": "a"}}]}
        result = rt.ask("coordinator", "run", {"goal": "g", "plan": plan}, timeout_s=30)
        assert result.state == "failed" or (result.data or {}).get("state") == "failed"
        assert "tasks[0].id '../../../../x/task' is not a valid id" in json.dumps([result.error, result.data])
        # A good ticket id still works, and its files stay in escalations/.
        assert rt.ask("human", "escalate", ticket("ok-1"), timeout_s=30).ok
    assert not outside.exists()
    new = tree(tmp_path) - before
    assert new and all(n.startswith("a/b/runs/trav/") for n in new), new


@pytest.mark.parametrize("flag", ["--run-id", "--resume"])
def test_a_run_id_that_is_a_path_is_refused_by_the_cli(tmp_path: Path, flag: str) -> None:
    runs = tmp_path / "runs"
    done = cli("run", str(ROOT / "demos" / "hello"), flag, "../escaped", "--runs-dir", str(runs), cwd=tmp_path)
    assert done.returncode == 2
    rule = "is not a valid id: it becomes a file name, so it must match"
    assert f"agentrt: error: {flag}" in done.stderr and "'../escaped'" in done.stderr and rule in done.stderr
    assert not (tmp_path / "escaped").exists() and not runs.exists()


def test_the_runtime_refuses_a_run_id_that_is_a_path(tmp_path: Path) -> None:
    spec = make_spec({"n": [{"name": "greeter", "class": "custom_actors:Greeter"}]}, run={"entry": "greeter", "skill": "greet"})
    with pytest.raises(ValueError, match=r"run id '/tmp/abs' is not a valid id"):
        Runtime(spec, run_id="/tmp/abs", runs_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- the terminal ------------------------------------------------------------------------


# Set the window title, clear the screen, red; then red again as a one-byte C1 CSI.
ANSI = "\x1b]0;PWNED\x07\x1b[2J\x1b[31mRED \x9b31mC1"
ANSI_SHOWN = "\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mRED \\x9b31mC1"

ANSWER = f'''
from agentrt.runtime import Actor, Request, skill


class Answerer(Actor):
    @skill(input={{"type": "object"}})
    def answer(self, req: Request) -> dict:
        self.ctx.event("notice", text={ANSI!r})
        return {{"answer": "the model says " + {ANSI!r}}}
'''


def test_an_ansi_sequence_in_a_model_answer_is_printed_escaped(tmp_path: Path) -> None:
    (tmp_path / "answerer.py").write_text(ANSWER)
    (tmp_path / "spec.toml").write_text(
        '[run]\nentry = "a"\nskill = "answer"\n[[nodes]]\nname = "n"\nactors = [{ name = "a", class = "answerer:Answerer" }]\n'
    )
    piped = cli("run", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stdout + piped.stderr and "\x9b" not in piped.stdout + piped.stderr
    assert f"[a] {ANSI_SHOWN}" in piped.stdout  # the notice
    # The output, as JSON (which writes ESC as \u001b but leaves C1 as is): C1 escaped too.
    assert '"answer": "the model says \\u001b]0;PWNED\\u0007\\u001b[2J\\u001b[31mRED \\x9b31mC1"' in piped.stdout
    # At a terminal (live progress drawn by rich): the planted sequences never arrive raw.
    child = pexpect.spawn(AGENTRT, ["run", str(tmp_path), "--runs-dir", str(tmp_path / "runs")], cwd=str(tmp_path), encoding="utf-8", timeout=120)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    shown = child.before
    assert "\x1b]0;PWNED" not in shown and "\x1b[2J" not in shown and "\x1b[31mRED" not in shown
    assert "\\x1b]0;PWNED\\x07" in shown


def test_ticket_text_is_escaped_at_the_human_prompt(tmp_path: Path) -> None:
    """The human actor prints the ticket at the terminal `agentrt run` was started from."""
    asker = f'''
import msgspec
from agentrt.protocols import Escalation, LoopOutput
from agentrt.runtime import Actor, Request, skill


class Asker(Actor):
    @skill(input={{"type": "object"}}, read_only=True)
    def ask(self, req: Request) -> dict:
        t = Escalation(ticket_id="t-1", loop="l", reason="cap", summary="model said " + {ANSI!r},
                       iteration=1, options=["accept-best", "abort"],
                       outputs=[LoopOutput(iteration=1, sender="w", kind="draft", digest="d", text={ANSI!r})])
        answer = self.ctx.ask("human", "escalate", msgspec.to_builtins(t)).result(60).unwrap()
        return {{"decision": answer["decision"]}}
'''
    (tmp_path / "asker.py").write_text(asker)
    (tmp_path / "spec.toml").write_text(
        '[run]\nentry = "a"\nskill = "ask"\n[[nodes]]\nname = "n"\n'
        'actors = [{ name = "a", class = "asker:Asker" }, { name = "human", class = "agentrt.actors:Human" }]\n'
    )
    child = pexpect.spawn(
        AGENTRT, ["run", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), "--quiet"], cwd=str(tmp_path), encoding="utf-8", timeout=120
    )
    try:
        child.expect("your answer")
        prompt = child.before
        child.sendline("a")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "ESCALATION t-1" in prompt and "\\x1b]0;PWNED\\x07" in prompt
    assert "\x1b]0;PWNED" not in prompt and "\x1b[2J" not in prompt


# -- where nodes import from ---------------------------------------------------------------


def test_modules_in_the_working_directory_shadow_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "imported-from-cwd"
    for name in ("shout", "sqlite3"):  # a spec module, and one the node imports itself
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write('{name} ')\nraise ImportError('from cwd')\n")
    done = cli("run", str(ROOT / "demos" / "hello"), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'output: {"greeting": "HELLO ADA!", "greeted": 1}' in done.stdout
    assert not marker.exists(), marker.read_text()


def test_a_module_only_in_the_working_directory_is_not_imported(tmp_path: Path) -> None:
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    shutil.copy(ROOT / "demos" / "hello" / "spec.toml", spec_dir / "spec.toml")
    shutil.copy(ROOT / "demos" / "hello" / "shout.py", tmp_path / "shout.py")  # in the cwd only
    done = cli("run", str(spec_dir), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 2 and "cannot import module 'shout'" in done.stderr, done.stderr


# -- the trace page ------------------------------------------------------------------------

XSS = "<img src=x onerror=\"document.title='XSS'\">"


def test_a_hostile_task_id_runs_no_script_in_the_trace_page(tmp_path: Path) -> None:
    """A trace whose plan task id is markup (an older run's, or a hand-made trace): the page
    shows it as text, its title and DOM stay, and it still draws its timeline and graph."""
    runs = tmp_path / "runs"
    done = cli("run", str(ROOT / "demos" / "pipeline"), "--run-id", "pipe", "--runs-dir", str(runs), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    (runs / "hostile").mkdir()
    quoted = json.dumps(XSS)[1:-1]
    lines = (runs / "pipe" / "trace.jsonl").read_text().splitlines()
    hostile = [re.sub(r'(?<=["/{])research(?=["/}])', lambda _m: quoted, line) for line in lines]
    (runs / "hostile" / "trace.jsonl").write_text("\n".join(hostile) + "\n")
    page = tmp_path / "page.html"
    done = cli("trace", "html", "hostile", "-o", str(page), "--runs-dir", str(runs), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    html = page.read_text()
    assert "<img" not in html and "innerHTML" not in html
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    assert csp and "script-src 'sha256-" in csp.group(1) and "unsafe-inline" not in csp.group(1)
    assert "default-src 'none'" in csp.group(1)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        why = "Chromium is not installed (scripts/dev.py test installs Debian's chromium where it can)"
        if os.environ.get("CI"):  # as for PostgreSQL: in CI a missing browser fails, never passes as a skip
            pytest.fail(why)
        pytest.skip(why)
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip
    dom = subprocess.run(
        [chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert "<title>agentrt run hostile</title>" in dom and "XSS</title>" not in dom
    assert '<img src="x"' not in dom  # no element was made of it (an element serialises so)
    escaped = "&lt;img src=x onerror=\"document.title='XSS'\"&gt;"  # a text node's form
    for task in ["outline", "draft", "examples", "review"]:
        assert f'data-task="{task}"' in dom and f'data-node="{task}"' in dom, task
    assert dom.count('class="bar ') >= 5 and dom.count('class="node"') == 5
    assert f"{escaped} (worker-" in dom  # the hostile task's row label, as text
    shot = Path("/tmp/agentrt-xss-page.png")
    subprocess.run(
        [chromium, *flags, "--window-size=1300,900", f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120
    )
    assert shot.is_file() and shot.stat().st_size > 5000
