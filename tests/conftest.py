"""Every test runs without the developer's Anthropic credentials: nothing may reach the
network. Tests of the Anthropic path set their own key and a local server's URL."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A superuser URL of a real PostgreSQL server started for this test session. Where the
    server programs are missing the tests that need it fail in CI (the set-up installs them)
    and are skipped, saying why, on a developer's machine."""
    from .postgres import postgres_server, server_bin

    if server_bin() is None:
        why = "PostgreSQL is not installed (apt-get install postgresql; scripts/dev.py test does)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with postgres_server() as url:
        yield url
