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


def test_update_retries_on_conflict_so_no_increment_is_lost(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "state.sqlite"
    # Separate Store objects, as separate processes would have: only SQLite arbitrates.
    counters = [Namespace(Store(path), "counter") for _ in range(4)]
    errors: list[BaseException] = []

    def bump(ns: Namespace) -> None:
        try:
            for _ in range(50):
                ns.update("n", lambda v: v + 1, default=0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(ns,)) for ns in counters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and counters[0].get("n") == 200
    with pytest.raises(ConflictError, match="kept changing: 1 attempts conflicted"):
        ns = counters[0]

        def meddle(v: int) -> int:
            counters[1].put("n", v + 100)  # someone else writes between our read and write
            return v + 1

        ns.update("n", meddle, attempts=1)
