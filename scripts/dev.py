#!/usr/bin/env python3
"""Routine jobs, from a fresh clone with only python3: `python3 scripts/dev.py JOB`.

setup    create .venv and install agentrt with its dev tools (re-run when pyproject changes)
demo     set up, then run the flagship demo (demos/research) on the offline model
test     set up, then lint (ruff), check schemas for drift, and run every test (pytest)
bench    set up, then run the benchmarks in bench/ (figures, not pass/fail)
schemas  set up, then regenerate schemas/ from the protocol Structs
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".agentrt-installed"


def sh(*cmd: str | Path) -> None:
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=ROOT)
    if code != 0:
        sys.exit(code)


def setup() -> None:
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pyproject = ROOT / "pyproject.toml"
    if not STAMP.exists() or STAMP.stat().st_mtime < pyproject.stat().st_mtime:
        sh(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        sh(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[dev]")
        STAMP.touch()


def demo(args: list[str]) -> None:
    setup()
    sh(BIN / "agentrt", "run", "demos/research", "--model", "offline", *args)


def debian_packages() -> None:
    """What some tests need from Debian: headless Chromium (the trace page's browser test), a
    PostgreSQL server (the state store's second backend) and iproute2 (`ip netns`: the multi-host
    tests' hosts). Installed when missing and this machine
    can (root with apt-get); otherwise those tests say why they cannot run."""
    wanted = {
        "chromium": Path("/usr/bin/chromium").exists(),
        "postgresql": any(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        "iproute2": shutil.which("ip") is not None,
    }
    missing = [name for name, present in wanted.items() if not present]
    if not missing:
        return
    if os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
        print(f"{', '.join(missing)}: not installed, and no root apt-get to install them", flush=True)
        return
    print(f"+ apt-get install {' '.join(missing)} (for the browser, store and multi-host tests)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        try:  # bounded, so a slow mirror cannot stall the test run
            code = subprocess.call(cmd, stdout=subprocess.DEVNULL, env=env, timeout=900)
        except subprocess.TimeoutExpired:
            code = -1
        if code != 0:
            print(f"`{' '.join(cmd)}` failed; the tests that need {', '.join(missing)} will say so", flush=True)
            return


def test(args: list[str]) -> None:
    setup()
    debian_packages()
    sh(
        BIN / "ruff",
        "check",
        "runtime",
        "actors",
        "protocols",
        "schemas",
        "tests",
        "demos",
        "bench",
        "scripts",
    )
    sh(BIN / "agentrt", "schemas", "--check")
    sh(BIN / "python", "-m", "pytest", *args)


def bench(args: list[str]) -> None:
    setup()
    for script in sorted((ROOT / "bench").glob("[!_]*.py")):  # _modules are helpers
        sh(BIN / "python", script, *args)


def schemas(_args: list[str]) -> None:
    setup()
    sh(BIN / "agentrt", "schemas")


JOBS = {"setup": lambda _a: setup(), "demo": demo, "test": test, "bench": bench, "schemas": schemas}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in JOBS:
        print(__doc__)
        sys.exit(2)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    JOBS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
