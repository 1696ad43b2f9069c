"""The built-in roles, built from agentrt.runtime's public API only."""

from .coordinator import Coordinator
from .critic import Critic
from .human import Human
from .judge import Judge
from .producer import Producer
from .quota import Quota
from .worker import Worker

__all__ = ["Coordinator", "Critic", "Human", "Judge", "Producer", "Quota", "Worker"]
