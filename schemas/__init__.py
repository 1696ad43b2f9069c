"""JSON Schema files: generated from agentrt.protocols, plus the built-in skills' schemas."""

import json
from pathlib import Path
from typing import Any

DIR = Path(__file__).parent


def load(name: str) -> dict[str, Any]:
    """Load `schemas/<name>.json` (e.g. "envelope.schema", "skills/lookup.input")."""
    return json.loads((DIR / f"{name}.json").read_text())  # type: ignore[no-any-return]
