"""Every test runs without the developer's Anthropic credentials: nothing may reach the
network. Tests of the Anthropic path set their own key and a local server's URL."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        os.environ.pop(name, None)
