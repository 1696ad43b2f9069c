"""A short run of bench/fuzz.py: a few thousand bad frames from a member's socket, then an ask."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.integration


def test_a_short_fuzz_crashes_nothing_and_the_node_still_answers() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--frames", "3000", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    found = re.fullmatch(
        r"fuzzed frames: (\d+), node crashes: (\d+), still answering: (yes|no), rss growth: (-?[\d.]+|nan) MiB", last
    )
    assert found, last
    frames, crashes, answering, growth = found.groups()
    assert (int(frames), int(crashes), answering) == (3000, 0, "yes"), done.stdout
    assert float(growth) < 20, done.stdout
