"""The state store: one SQLite (WAL) file per run, one namespace per actor, versioned writes."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from agentrt.protocols import ConflictError, OwnershipError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
)
"""


class Store:
    """A SQLite state store shared by the processes of a run; each writer names itself."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            conn.commit()
            self._conn = conn
        return self._conn

    def get(self, namespace: str, key: str) -> tuple[Any, int]:
        """(value, version); (None, 0) when the key is absent. Anyone may read."""
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT value, version FROM state WHERE namespace=? AND key=?", (namespace, key)
                )
                .fetchone()
            )
        if row is None:
            return None, 0
        return msgspec.json.decode(row[0]), int(row[1])

    def put(
        self, owner: str, namespace: str, key: str, value: Any, *, expect_version: int | None = None
    ) -> int:
        """Write `value` and return the new version. Only the owner writes its namespace;
        with `expect_version`, the write happens only if the stored version matches."""
        if owner != namespace:
            raise OwnershipError(
                f"actor '{owner}' cannot write '{key}' into namespace '{namespace}': each actor "
                f"writes only its own namespace; ask '{namespace}' by message instead"
            )
        blob = msgspec.json.encode(value)
        with self._lock:
            db = self._db()
            # BEGIN IMMEDIATE takes the write lock before the version is read, so the check
            # and the write are one step for every process sharing the file.
            db.execute("BEGIN IMMEDIATE")
            with db:
                row = db.execute(
                    "SELECT version FROM state WHERE namespace=? AND key=?", (namespace, key)
                ).fetchone()
                current = int(row[0]) if row else 0
                if expect_version is not None and expect_version != current:
                    raise ConflictError(
                        f"'{namespace}/{key}' is at version {current}, not {expect_version}; "
                        "read it again and retry"
                    )
                db.execute(
                    "INSERT INTO state(namespace, key, value, version) VALUES (?,?,?,?) "
                    "ON CONFLICT(namespace, key) DO UPDATE SET value=excluded.value, "
                    "version=excluded.version",
                    (namespace, key, blob, current + 1),
                )
        return current + 1

    def keys(self, namespace: str) -> list[str]:
        with self._lock:
            rows = (
                self._db()
                .execute("SELECT key FROM state WHERE namespace=? ORDER BY key", (namespace,))
                .fetchall()
            )
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class Namespace:
    """An actor's view of the store: reads anywhere, writes only into its own namespace."""

    def __init__(self, store: Store, owner: str) -> None:
        self._store = store
        self.owner = owner

    def get(self, key: str, default: Any = None) -> Any:
        value, version = self._store.get(self.owner, key)
        return default if version == 0 else value

    def get_versioned(self, key: str) -> tuple[Any, int]:
        return self._store.get(self.owner, key)

    def put(self, key: str, value: Any, *, expect_version: int | None = None) -> int:
        return self._store.put(self.owner, self.owner, key, value, expect_version=expect_version)

    def update(self, key: str, change: Callable[[Any], Any], *, default: Any = None, attempts: int = 100) -> Any:
        """Optimistic read-modify-write: `change(current)` gives the new value, written only if
        nobody wrote `key` meanwhile; on a conflict, wait a little (random, growing), read
        again and retry, up to `attempts` times. Returns the value written."""
        for i in range(attempts):
            value, version = self._store.get(self.owner, key)
            new = change(default if version == 0 else value)
            try:
                self._store.put(self.owner, self.owner, key, new, expect_version=version)
                return new
            except ConflictError:
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**i)))
        raise ConflictError(f"'{self.owner}/{key}' kept changing: {attempts} attempts conflicted")

    def write(self, namespace: str, key: str, value: Any) -> int:
        """Write into `namespace`; raises OwnershipError unless it is this actor's own."""
        return self._store.put(self.owner, namespace, key, value)

    def read(self, namespace: str, key: str) -> Any:
        return self._store.get(namespace, key)[0]

    def keys(self) -> list[str]:
        return self._store.keys(self.owner)
