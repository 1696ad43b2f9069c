"""The state store: one namespace per actor, versioned writes; SQLite (embedded) or PostgreSQL.

Both backends keep the same rules: anyone of the run may read, only a namespace's owner
writes it, and a write with `expect_version` is a compare-and-set. SQLite is one WAL file
per run, for one host. PostgreSQL is for runs whose nodes live on several hosts: there the
database itself enforces ownership (row-level security, one login role per node of the run,
allowed to write only the namespaces of the actors that node hosts), so a node that bypasses
this module still cannot write another actor's state.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

from agentrt.protocols import ConflictError, OwnershipError, SpecError

from ._files import FILE_MODE
from ._redact import known_secrets, redact

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
)
"""


def _refuse_foreign(owner: str, namespace: str, key: str) -> None:
    if owner != namespace:
        raise OwnershipError(
            f"actor '{owner}' cannot write '{key}' into namespace '{namespace}': each actor "
            f"writes only its own namespace; ask '{namespace}' by message instead"
        )


def _conflict(namespace: str, key: str, current: int, expected: int) -> ConflictError:
    return ConflictError(
        f"'{namespace}/{key}' is at version {current}, not {expected}; read it again and retry"
    )


class Store(Protocol):
    """What every backend offers; actors see it through their `Namespace`."""

    def get(self, namespace: str, key: str) -> tuple[Any, int]:
        """(value, version); (None, 0) when the key is absent. Anyone may read."""

    def put(
        self, owner: str, namespace: str, key: str, value: Any, *, expect_version: int | None = None
    ) -> int:
        """Write `value` and return the new version. Only the owner writes its namespace;
        with `expect_version`, the write happens only if the stored version matches."""

    def delete(self, owner: str, namespace: str, key: str) -> bool:
        """Remove `key`; True if it was there. Only the owner deletes in its namespace."""

    def keys(self, namespace: str) -> list[str]: ...

    def close(self) -> None: ...


class SQLiteStore:
    """A SQLite (WAL) state store shared by the processes of a run on one host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it: its -wal and -shm files take its mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
            # Switching a new file to WAL takes an exclusive lock, and SQLite answers "database
            # is locked" at once (no busy wait) when another process does the same: retry.
            deadline = time.monotonic() + 30
            for attempt in range(1000):
                conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.execute(_SQLITE_SCHEMA)
                    conn.commit()
                    break
                except sqlite3.OperationalError as exc:
                    conn.close()
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
            self._conn = conn
        return self._conn

    def get(self, namespace: str, key: str) -> tuple[Any, int]:
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
        _refuse_foreign(owner, namespace, key)
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
                    raise _conflict(namespace, key, current, expect_version)
                db.execute(
                    "INSERT INTO state(namespace, key, value, version) VALUES (?,?,?,?) "
                    "ON CONFLICT(namespace, key) DO UPDATE SET value=excluded.value, "
                    "version=excluded.version",
                    (namespace, key, blob, current + 1),
                )
        return current + 1

    def delete(self, owner: str, namespace: str, key: str) -> bool:
        _refuse_foreign(owner, namespace, key)
        with self._lock:
            db = self._db()
            with db:
                gone = db.execute("DELETE FROM state WHERE namespace=? AND key=?", (namespace, key))
        return gone.rowcount > 0

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


# -- PostgreSQL ------------------------------------------------------------------------------

_PG_TABLES = """
CREATE TABLE IF NOT EXISTS agentrt_state (
    run_id    TEXT NOT NULL,
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BYTEA NOT NULL,
    version   BIGINT NOT NULL,
    PRIMARY KEY (run_id, namespace, key)
);
CREATE TABLE IF NOT EXISTS agentrt_owner (
    run_id    TEXT NOT NULL,
    namespace TEXT NOT NULL,
    role      NAME NOT NULL,
    PRIMARY KEY (run_id, namespace)
);
ALTER TABLE agentrt_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE agentrt_owner ENABLE ROW LEVEL SECURITY;
"""

# A node's role reads its run's rows and writes only rows of the namespaces it owns; of the
# ownership table it sees only its own rows (not the runs and actors of others).
_PG_POLICIES = {
    "agentrt_owner_read": ("agentrt_owner", "FOR SELECT USING (role = current_user)"),
    "agentrt_read": (
        "agentrt_state",
        "FOR SELECT USING (EXISTS (SELECT 1 FROM agentrt_owner o "
        "WHERE o.run_id = agentrt_state.run_id AND o.role = current_user))",
    ),
    "agentrt_insert": (
        "agentrt_state",
        "FOR INSERT WITH CHECK (EXISTS (SELECT 1 FROM agentrt_owner o "
        "WHERE o.run_id = agentrt_state.run_id AND o.namespace = agentrt_state.namespace "
        "AND o.role = current_user))",
    ),
    "agentrt_update": (
        "agentrt_state",
        "FOR UPDATE USING (EXISTS (SELECT 1 FROM agentrt_owner o "
        "WHERE o.run_id = agentrt_state.run_id AND o.namespace = agentrt_state.namespace "
        "AND o.role = current_user)) WITH CHECK (EXISTS (SELECT 1 FROM agentrt_owner o "
        "WHERE o.run_id = agentrt_state.run_id AND o.namespace = agentrt_state.namespace "
        "AND o.role = current_user))",
    ),
    "agentrt_delete": (
        "agentrt_state",
        "FOR DELETE USING (EXISTS (SELECT 1 FROM agentrt_owner o "
        "WHERE o.run_id = agentrt_state.run_id AND o.namespace = agentrt_state.namespace "
        "AND o.role = current_user))",
    ),
}

_RLS_ERROR = re.compile(r"row-level security", re.IGNORECASE)


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency; this is for a broken env
        raise SpecError(
            "a postgresql:// store needs psycopg 3 (pip install 'psycopg[binary]')"
        ) from None
    return psycopg


def describe(location: str) -> str:
    """The store's location with any password masked, for messages and traces."""
    if not is_postgres(location):
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore:
    """The state of one run in a PostgreSQL database, as one node's login role sees it.

    Writes that break ownership are refused twice: here (OwnershipError, before any SQL) and by
    the database's row-level security (also raised as OwnershipError), so the rule holds even
    for a process that talks to the database directly with its node's credentials.
    """

    def __init__(self, url: str, run_id: str) -> None:
        self.url = url
        self.run_id = run_id
        self._lock = threading.Lock()
        self._conn: Any = None

    def _db(self) -> Any:
        if self._conn is not None and self._conn.closed:
            # The server dropped it (a restart, a failover, an administrator): the call that
            # met that failed; this one and the later ones get a new connection. A failed
            # write is not sent again here: it may have been done before the drop.
            self._conn = None
        if self._conn is None:
            psycopg = _psycopg()
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        return self._conn

    def get(self, namespace: str, key: str) -> tuple[Any, int]:
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT value, version FROM agentrt_state "
                    "WHERE run_id=%s AND namespace=%s AND key=%s",
                    (self.run_id, namespace, key),
                )
                .fetchone()
            )
        if row is None:
            return None, 0
        return msgspec.json.decode(bytes(row[0])), int(row[1])

    def put(
        self, owner: str, namespace: str, key: str, value: Any, *, expect_version: int | None = None
    ) -> int:
        _refuse_foreign(owner, namespace, key)
        blob = msgspec.json.encode(value)
        ids = (self.run_id, namespace, key)
        # Each write is one statement, so the version check and the write are atomic.
        if expect_version is None:
            sql = (
                "INSERT INTO agentrt_state(run_id, namespace, key, value, version) "
                "VALUES (%s,%s,%s,%s,1) ON CONFLICT (run_id, namespace, key) DO UPDATE SET "
                "value=excluded.value, version=agentrt_state.version+1 RETURNING version"
            )
            params: tuple[Any, ...] = (*ids, blob)
        elif expect_version == 0:
            sql = (
                "INSERT INTO agentrt_state(run_id, namespace, key, value, version) "
                "VALUES (%s,%s,%s,%s,1) ON CONFLICT DO NOTHING RETURNING version"
            )
            params = (*ids, blob)
        else:
            sql = (
                "UPDATE agentrt_state SET value=%s, version=version+1 "
                "WHERE run_id=%s AND namespace=%s AND key=%s AND version=%s RETURNING version"
            )
            params = (blob, *ids, expect_version)
        psycopg = _psycopg()
        with self._lock:
            try:
                row = self._db().execute(sql, params).fetchone()
            except psycopg.errors.InsufficientPrivilege as exc:
                if _RLS_ERROR.search(str(exc)):
                    raise OwnershipError(
                        f"the database refused '{owner}' writing '{key}' into namespace "
                        f"'{namespace}': this node's role does not own that namespace"
                    ) from None
                raise
        if row is None:
            current = self.get(namespace, key)[1]
            raise _conflict(namespace, key, current, expect_version or 0)
        return int(row[0])

    def delete(self, owner: str, namespace: str, key: str) -> bool:
        _refuse_foreign(owner, namespace, key)
        with self._lock:
            gone = self._db().execute(
                "DELETE FROM agentrt_state WHERE run_id=%s AND namespace=%s AND key=%s",
                (self.run_id, namespace, key),
            )
        # Row-level security hides another's rows from a DELETE (nothing is removed), as
        # _refuse_foreign already refused above.
        return bool(gone.rowcount)

    def keys(self, namespace: str) -> list[str]:
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT key FROM agentrt_state WHERE run_id=%s AND namespace=%s ORDER BY key",
                    (self.run_id, namespace),
                )
                .fetchall()
            )
        return [r[0] for r in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def node_role(run_id: str, node: str) -> str:
    """The database role of one node of one run (a short, fixed-shape name: roles are global)."""
    return "agentrt_" + hashlib.sha256(f"{run_id}\0{node}".encode()).hexdigest()[:20]


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` with its user and password replaced (host, port, database and options kept)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresAdmin:
    """The supervisor's side of a PostgreSQL store: creates the tables and policies once, a
    login role per node of the run (a fresh password each time the run starts or resumes),
    records which namespaces each role owns, and drops the roles when the run stops."""

    def __init__(self, url: str, run_id: str) -> None:
        self.url = url
        self.run_id = run_id
        self._roles: list[str] = []

    def _connect(self) -> Any:
        return _psycopg().connect(self.url, autocommit=True, connect_timeout=10)

    def prepare(self, nodes: Iterable[tuple[str, list[str]]]) -> dict[str, str]:
        """Set up the run's tables, roles and ownership; returns each node's connection URL."""
        psycopg = _psycopg()
        sql = psycopg.sql
        urls: dict[str, str] = {}
        with self._connect() as conn:
            # One set-up at a time: CREATE ... IF NOT EXISTS races between concurrent runs.
            conn.execute("SELECT pg_advisory_lock(hashtext('agentrt-schema'))")
            try:
                conn.execute(_PG_TABLES)
                for name, (table, clause) in _PG_POLICIES.items():
                    exists = conn.execute(
                        "SELECT 1 FROM pg_policies WHERE tablename=%s AND policyname=%s", (table, name)
                    ).fetchone()
                    if not exists:
                        conn.execute(f"CREATE POLICY {name} ON {table} {clause}")
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext('agentrt-schema'))")
            nodes = list(nodes)
            # A run id names one run at a time: if another live run holds this id (its node roles
            # have sessions), taking its roles over would hand this run its rows and let our
            # release() drop its roles under it. (Roles without sessions, left by a run that was
            # killed, are taken over: that is a resume.)
            roles = [node_role(self.run_id, node) for node, _ in nodes]
            live = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY(%s)", (roles,)
            ).fetchone()[0]
            if live:
                raise ConflictError(
                    f"run '{self.run_id}' is live in this database ({live} open session(s) of its "
                    f"node roles): a run id names one run at a time; pick another run id, or stop "
                    f"that run first"
                )
            for node, actors in nodes:
                role = node_role(self.run_id, node)
                password = secrets.token_urlsafe(24)
                ident = sql.Identifier(role)
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname=%s", (role,)).fetchone():
                    conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(ident, sql.Literal(password)))
                else:
                    conn.execute(sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(ident, sql.Literal(password)))
                # Dropped by release() from now on, even if a later step of the set-up fails.
                self._roles.append(role)
                conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON agentrt_state TO {}").format(ident))
                conn.execute(sql.SQL("GRANT SELECT ON agentrt_owner TO {}").format(ident))
                for actor in actors:
                    conn.execute(
                        "INSERT INTO agentrt_owner(run_id, namespace, role) VALUES (%s,%s,%s) "
                        "ON CONFLICT (run_id, namespace) DO UPDATE SET role=excluded.role",
                        (self.run_id, actor, role),
                    )
                urls[node] = with_credentials(self.url, role, password)
        return urls

    def release(self) -> None:
        """Drop the run's node roles (its rows stay, for `--resume`)."""
        if not self._roles:
            return
        sql = _psycopg().sql
        with self._connect() as conn:
            for role in self._roles:
                ident = sql.Identifier(role)
                conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
        self._roles.clear()


def open_store(location: str, *, run_id: str) -> Store:
    """The store at `location`: a `postgresql://` URL, or the path of a SQLite file."""
    if is_postgres(location):
        return PostgresStore(location, run_id)
    return SQLiteStore(Path(location))


class Namespace:
    """An actor's view of the store: reads anywhere, writes only into its own namespace.

    The store is part of what a run leaves behind (a file of the run, or a shared database):
    secrets in a value are redacted before it is written (`agentrt.runtime.redact`), so they
    never come back from `get` either. Journal values pass here like any other."""

    def __init__(self, store: Store, owner: str) -> None:
        self._store = store
        self.owner = owner
        self._secrets = known_secrets()  # the environment is read once, not at every write

    def get(self, key: str, default: Any = None) -> Any:
        value, version = self._store.get(self.owner, key)
        return default if version == 0 else value

    def get_versioned(self, key: str) -> tuple[Any, int]:
        return self._store.get(self.owner, key)

    def put(self, key: str, value: Any, *, expect_version: int | None = None) -> int:
        return self._put(self.owner, key, value, expect_version)

    def delete(self, key: str) -> bool:
        """Remove `key` from this namespace; True if it was there."""
        return self._store.delete(self.owner, self.owner, key)

    def _put(self, namespace: str, key: str, value: Any, expect_version: int | None = None) -> int:
        clean = redact(msgspec.to_builtins(value), self._secrets)
        return self._store.put(self.owner, namespace, key, clean, expect_version=expect_version)

    def update(self, key: str, change: Callable[[Any], Any], *, default: Any = None, attempts: int = 100) -> Any:
        """Optimistic read-modify-write: `change(current)` gives the new value, written only if
        nobody wrote `key` meanwhile; on a conflict, wait a little (random, growing), read
        again and retry, up to `attempts` times. Returns the value written."""
        for i in range(attempts):
            value, version = self._store.get(self.owner, key)
            new = change(default if version == 0 else value)
            try:
                self._put(self.owner, key, new, version)
                return new
            except ConflictError:
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**i)))
        raise ConflictError(f"'{self.owner}/{key}' kept changing: {attempts} attempts conflicted")

    def write(self, namespace: str, key: str, value: Any) -> int:
        """Write into `namespace`; raises OwnershipError unless it is this actor's own."""
        return self._put(namespace, key, value)

    def read(self, namespace: str, key: str) -> Any:
        return self._store.get(namespace, key)[0]

    def keys(self) -> list[str]:
        return self._store.keys(self.owner)
