"""The built-in roles, built from agentrt.runtime's public API only."""

from __future__ import annotations

from typing import Any

from .coordinator import Coordinator
from .critic import Critic
from .human import Human
from .judge import Judge
from .producer import Producer
from .quota import Quota
from .worker import Worker

__all__ = ["A2AAgent", "Coordinator", "Critic", "Human", "Judge", "MCPTools", "Producer", "Quota", "Worker"]


def __getattr__(name: str) -> Any:
    # MCPTools and A2AAgent pull in their protocol's SDK (half a second, and over a second, of
    # imports): only nodes that host one pay.
    if name == "MCPTools":
        from .mcp import MCPTools

        return MCPTools
    if name == "A2AAgent":
        from .a2a import A2AAgent

        return A2AAgent
    raise AttributeError(f"module 'agentrt.actors' has no attribute '{name}'")
