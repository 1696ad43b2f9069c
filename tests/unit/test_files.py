"""Run files: private modes, names that stay in their folder, and the terminal's escapes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agentrt.runtime import child_path, printable, private_dir, write_private
from agentrt.runtime._files import append_private
from agentrt.runtime._store import Namespace, SQLiteStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_private_folders_and_files(tmp_path: Path) -> None:
    os.umask(0o022)
    run = private_dir(tmp_path / "runs" / "r1")
    assert mode(run) == 0o700 and mode(tmp_path / "runs") == 0o755  # parents as usual
    path = run / "summary.json"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "{}")  # an existing file is made private too
    assert mode(path) == 0o600 and path.read_text() == "{}"
    with append_private(run / "trace.jsonl") as f:
        f.write(b"x\n")
    assert mode(run / "trace.jsonl") == 0o600


def test_a_symlink_where_a_run_file_goes_is_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    run = private_dir(tmp_path / "run")
    (run / "summary.json").symlink_to(outside)
    with pytest.raises(OSError):
        write_private(run / "summary.json", "{}")
    assert outside.read_text() == "keep"


@pytest.mark.parametrize("name", ["../x.json", "/tmp/x.json", "..", ".", "", "a/b.json"])
def test_child_path_refuses_names_that_leave_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="would leave"):
        child_path(tmp_path, name, "ticketId")


def test_child_path_refuses_a_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "esc").mkdir()
    (tmp_path / "esc" / "t.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ValueError, match="leads out"):
        child_path(tmp_path / "esc", "t.json")
    assert child_path(tmp_path / "esc", "u.json") == tmp_path / "esc" / "u.json"


def test_the_store_file_and_its_wal_are_private_and_hold_no_secret(tmp_path: Path) -> None:
    os.umask(0o022)
    store = SQLiteStore(tmp_path / "state.sqlite")
    key = "sk-ant-api03-" + "k" * 30
    Namespace(store, "coordinator").put("job", {"result": f"the key is {key}", "headers": {"Authorization": "x"}, key: 1})
    for name in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm"):
        assert mode(tmp_path / name) == 0o600, name
        assert key.encode() not in (tmp_path / name).read_bytes()
    assert Namespace(store, "coordinator").get("job") == {
        "result": "the key is [redacted]", "headers": {"Authorization": "[redacted]"}, "[redacted]": 1,
    }  # fmt: skip
    store.close()


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("\x1b]0;pwned\x07title", "\\x1b]0;pwned\\x07title"),  # OSC: set the window title
        ("\x9b31m C1 CSI", "\\x9b31m C1 CSI"),
        ("over\rwrite", "over\\rwrite"),
        ("bidi \u202eevil", "bidi \\u202eevil"),
        ("line 1\nline 2\ttab", "line 1\nline 2\ttab"),
        ("plain ünïcode ✓", "plain ünïcode ✓"),
    ],
)
def test_printable_escapes_controls_and_keeps_lines(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable("a\nb", newlines=False) == "a\\nb"


def test_printable_tree_escapes_every_string_keys_included() -> None:
    from agentrt.runtime._terminal import printable_tree

    tree = {"a\x1b[2J": ["x\x9by", {"k": "ok\nline"}], "n": 3}
    assert printable_tree(tree) == {"a\\x1b[2J": ["x\\x9by", {"k": "ok\nline"}], "n": 3}


def test_an_export_goes_where_the_user_names_it_symlinks_and_devices_too(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`-o` is the user's own choice: a symlink they made, or /dev/stdout, is followed (O_NOFOLLOW
    is for the run's own files); a new file is private; an unwritable place is a clear error."""
    from agentrt.runtime._cli import main

    os.umask(0o022)
    runs = private_dir(tmp_path / "runs")
    private_dir(runs / "r1")
    write_private(runs / "r1" / "trace.jsonl", b"")
    real = tmp_path / "real.json"
    (tmp_path / "link.json").symlink_to(real)
    assert main(["trace", "export", "r1", "--format", "otel", "-o", str(tmp_path / "link.json"), "--runs-dir", str(runs)]) == 0
    assert '"resourceSpans"' in real.read_text() and mode(real) == 0o600
    piped = subprocess.run(
        [sys.executable, "-m", "agentrt.runtime._cli", "trace", "export", "r1", "--format", "chrome", "-o", "/dev/stdout", "--runs-dir", str(runs)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert piped.returncode == 0 and '"traceEvents"' in piped.stdout, piped.stderr
    assert main(["trace", "export", "r1", "--format", "chrome", "-o", str(tmp_path / "no" / "x.json"), "--runs-dir", str(runs)]) == 2
    err = capfd.readouterr().err
    assert "agentrt: error: cannot write chrome trace to" in err and "Traceback" not in err
    # The page's default place is a file of the run: a symlink planted there is refused.
    (runs / "r1" / "trace.html").symlink_to(tmp_path / "elsewhere.html")
    assert main(["trace", "html", "r1", "--runs-dir", str(runs)]) == 2
    assert not (tmp_path / "elsewhere.html").exists()
