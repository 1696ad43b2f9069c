"""Fixtures for tests with real processes: specs, a runs folder, and orphan checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agentrt.runtime import Spec, spec_from_dict

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def make_spec(nodes: dict[str, list[dict[str, Any]]], *, run: dict[str, Any] | None = None, **extra: Any) -> Spec:
    """A spec whose custom actors are imported from tests/integration."""
    data = {
        "run": {"start_timeout_s": 60, **(run or {})},
        "nodes": [{"name": n, "actors": actors} for n, actors in nodes.items()],
        **extra,
    }
    return spec_from_dict(data, "test-spec", base_dir=str(HERE))


def alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d


@pytest.fixture
def greeter_spec() -> Spec:
    return make_spec(
        {
            "n1": [{"name": "greeter", "class": "custom_actors:Greeter"}],
            "n2": [{"name": "relay", "class": "custom_actors:Relay", "config": {"to": "greeter"}}],
        },
        run={"entry": "relay", "skill": "relay", "input": {"name": "ada"}},
        limits={"max_frame_bytes": 65536, "max_depth": 16},
    )


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("AGENTRT_RUNS_DIR", str(ROOT / "runs"))
