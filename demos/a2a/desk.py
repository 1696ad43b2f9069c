"""Starts the demo's A2A agent (agent.py, an a2a-sdk server) as a process of its own for the
length of the run, so `agentrt run demos/a2a` needs nothing started by hand."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from agentrt.runtime import Actor

AGENT = Path(__file__).resolve().parent / "agent.py"


class AgentProcess(Actor):
    """Runs `agent.py --port <config.port>` while the run lasts (no skills of its own)."""

    def on_start(self) -> None:
        import os

        port = int(self.config.get("port", 8801))
        self.proc = subprocess.Popen(
            [sys.executable, str(AGENT), "--port", str(port), "--parent", str(os.getpid())],
            stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/.well-known/agent-card.json"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"agent.py exited with {self.proc.returncode}") from None
                time.sleep(0.1)
        raise RuntimeError(f"agent.py did not serve {url} within 30s")

    def on_stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
