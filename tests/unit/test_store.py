"""The SQLite state store: namespaces are owned, writes are versioned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentrt.protocols import ConflictError, OwnershipError
from agentrt.runtime._store import Namespace, Store


def test_own_namespace_read_write_and_wal(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    ns = Namespace(store, "worker")
    assert ns.put("k", {"v": 1}) == 1
    assert ns.put("k", {"v": 2}) == 2
    assert ns.get("k") == {"v": 2}
    assert ns.get_versioned("k") == ({"v": 2}, 2)
    assert ns.get("missing", "dflt") == "dflt"
    store.close()
    mode = sqlite3.connect(tmp_path / "state.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_writing_another_namespace_raises(tmp_path: Path) -> None:
    ns = Namespace(Store(tmp_path / "s.sqlite"), "critic")
    with pytest.raises(OwnershipError, match="'critic' cannot write 'k' into namespace 'judge'"):
        ns.write("judge", "k", 1)
    assert ns.read("judge", "k") is None


def test_compare_and_set(tmp_path: Path) -> None:
    ns = Namespace(Store(tmp_path / "s.sqlite"), "a")
    ns.put("k", 1)
    assert ns.put("k", 2, expect_version=1) == 2
    with pytest.raises(ConflictError, match="at version 2, not 1"):
        ns.put("k", 3, expect_version=1)
    assert ns.get("k") == 2
