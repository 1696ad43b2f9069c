"""The state store, one suite for both backends: SQLite (a WAL file) and PostgreSQL (a real
server). Namespaces are owned, writes are versioned, and no increment is lost under contention."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agentrt.protocols import ConflictError, OwnershipError, new_id
from agentrt.runtime._store import (
    Namespace,
    PostgresAdmin,
    PostgresStore,
    SQLiteStore,
    Store,
    describe,
    node_role,
    open_store,
)

pytestmark = pytest.mark.integration

# Opens a store as one process of a run would: each call is a separate connection.
Opener = Callable[[], Store]
OWNERS = ["worker", "critic", "judge", "a", "counter"]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite"
        return lambda: SQLiteStore(path)
    url = request.getfixturevalue("postgres_url")
    run_id = f"test-{new_id()[:8]}"
    admin = PostgresAdmin(url, run_id)
    node_url = admin.prepare([("node", OWNERS)])["node"]
    request.addfinalizer(admin.release)
    return lambda: PostgresStore(node_url, run_id)


def test_own_namespace_read_write(opener: Opener) -> None:
    ns = Namespace(opener(), "worker")
    assert ns.put("k", {"v": 1}) == 1
    assert ns.put("k", {"v": 2}) == 2
    assert ns.get("k") == {"v": 2}
    assert ns.get_versioned("k") == ({"v": 2}, 2)
    assert ns.get("missing", "dflt") == "dflt"
    assert ns.keys() == ["k"]


def test_a_key_is_deleted_only_by_its_namespace_owner(opener: Opener) -> None:
    worker, critic = Namespace(opener(), "worker"), Namespace(opener(), "critic")
    worker.put("k", 1)
    worker.put("other", 2)
    with pytest.raises(OwnershipError, match="'critic' cannot write 'k' into namespace 'worker'"):
        critic._store.delete("critic", "worker", "k")
    assert worker.delete("k") is True
    assert worker.delete("k") is False  # already gone
    assert worker.get("k") is None and worker.keys() == ["other"]
    assert worker.put("k", 3, expect_version=0) == 1  # a key deleted starts again


def test_writing_another_namespace_raises(opener: Opener) -> None:
    ns = Namespace(opener(), "critic")
    with pytest.raises(OwnershipError, match="'critic' cannot write 'k' into namespace 'judge'"):
        ns.write("judge", "k", 1)
    assert ns.read("judge", "k") is None


def test_compare_and_set(opener: Opener) -> None:
    ns = Namespace(opener(), "a")
    with pytest.raises(ConflictError, match="at version 0, not 3"):
        ns.put("k", 0, expect_version=3)
    assert ns.put("k", 1, expect_version=0) == 1
    with pytest.raises(ConflictError, match="at version 1, not 0"):
        ns.put("k", 9, expect_version=0)
    assert ns.put("k", 2, expect_version=1) == 2
    with pytest.raises(ConflictError, match="at version 2, not 1"):
        ns.put("k", 3, expect_version=1)
    assert ns.get("k") == 2


def test_update_retries_on_conflict_so_no_increment_is_lost(opener: Opener) -> None:
    # Separate stores, as separate processes would have: only the database arbitrates.
    counters = [Namespace(opener(), "counter") for _ in range(4)]
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


def test_sqlite_is_a_wal_file(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "state.sqlite"), run_id="r")
    Namespace(store, "w").put("k", 1)
    store.close()
    mode = sqlite3.connect(tmp_path / "state.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_postgres_refuses_a_foreign_write_even_past_the_store_api(postgres_url: str) -> None:
    """Row-level security: a node's role writes only the namespaces of the actors it hosts, even
    with raw SQL on its own connection; and runs do not see each other's rows."""
    import psycopg

    run_id = f"test-{new_id()[:8]}"
    admin = PostgresAdmin(postgres_url, run_id)
    urls = admin.prepare([("n1", ["alice"]), ("n2", ["bob"])])
    try:
        Namespace(PostgresStore(urls["n2"], run_id), "bob").put("k", "bob's")
        with psycopg.connect(urls["n1"], autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                conn.execute(
                    "INSERT INTO agentrt_state VALUES (%s, 'bob', 'k2', 'x', 1)", (run_id,)
                )
            # An UPDATE of a row it does not own matches nothing: bob's value is unchanged.
            conn.execute("UPDATE agentrt_state SET value='forged' WHERE run_id=%s AND namespace='bob'", (run_id,))
            # So does a DELETE: the rows it may delete are its own namespaces' only.
            gone = conn.execute("DELETE FROM agentrt_state WHERE run_id=%s", (run_id,))
            assert gone.rowcount == 0
        # The store maps the database's refusal to OwnershipError, even if asked as the owner.
        forger = PostgresStore(urls["n1"], run_id)
        with pytest.raises(OwnershipError, match="does not own that namespace"):
            forger.put("bob", "bob", "k", "forged")
        assert Namespace(forger, "alice").read("bob", "k") == "bob's"
        # Another run's node sees none of this run's rows.
        other = PostgresAdmin(postgres_url, f"test-{new_id()[:8]}")
        stranger = PostgresStore(other.prepare([("n1", ["alice"])])["n1"], other.run_id)
        try:
            with psycopg.connect(stranger.url, autocommit=True) as conn:
                rows = conn.execute("SELECT count(*) FROM agentrt_state WHERE run_id=%s", (run_id,)).fetchone()
            assert rows == (0,)
        finally:
            other.release()
    finally:
        admin.release()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'agentrt_%'").fetchone() == (0,)


def test_postgres_store_connects_again_after_the_server_drops_its_connection(postgres_url: str) -> None:
    """A PostgreSQL restart or an administrator ending a session used to leave a node's store
    on a dead connection for the rest of the run: every read and write failed. Now the call
    that meets the drop fails (a write may have been done: it is not sent again), and the
    next one connects again."""
    import psycopg

    run_id = f"test-{new_id()[:8]}"
    admin = PostgresAdmin(postgres_url, run_id)
    try:
        store = PostgresStore(admin.prepare([("node", ["a"])])["node"], run_id)
        ns = Namespace(store, "a")
        ns.put("k", 1)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            ended = conn.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE usename = %s",
                (node_role(run_id, "node"),),
            ).fetchall()
        assert ended == [(True,)]  # and it has ended (waited for, up to 10 s)
        with pytest.raises(psycopg.OperationalError):
            ns.put("k", 2)
        ns.put("k", 3)
        assert ns.get("k") == 3 and store.keys("a") == ["k"]
        store.close()
    finally:
        admin.release()


def test_store_urls_are_described_without_their_password() -> None:
    assert describe("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "s3cret" not in describe("postgres://u:s3cret@h/db")
    assert describe("/tmp/state.sqlite") == "/tmp/state.sqlite"


def test_postgres_set_up_that_fails_half_way_leaves_no_role_and_nodes_see_only_their_run(postgres_url: str) -> None:
    """A set-up that fails after a node's role was made (here: an owner row the database
    refuses) still drops that role on release; and a node's role sees its own rows of the
    ownership table only, not which runs and actors share the database."""
    import psycopg

    def roles() -> set[str]:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            return {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'agentrt_%'")}

    before = roles()
    broken = PostgresAdmin(postgres_url, f"test-{new_id()[:8]}")
    with pytest.raises(psycopg.errors.DataError):
        broken.prepare([("n1", ["ok"]), ("n2", ["nul\x00"])])
    broken.release()
    assert roles() == before
    mine, other = (PostgresAdmin(postgres_url, f"test-{new_id()[:8]}") for _ in range(2))
    url = mine.prepare([("n", ["alice"])])["n"]
    other.prepare([("m", ["bob"])])
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT run_id, namespace FROM agentrt_owner").fetchall()
        assert rows == [(mine.run_id, "alice")]
        ns = Namespace(PostgresStore(url, mine.run_id), "alice")  # the state policies still hold
        ns.put("k", 1)
        assert ns.get("k") == 1
    finally:
        mine.release()
        other.release()
    assert roles() == before


def test_postgres_refuses_a_second_live_run_with_the_same_id(postgres_url: str) -> None:
    """Two runs started with the same run id on one database: the second is refused while the
    first's nodes are connected (it would share the first's rows, and drop its roles on
    release); once the first has stopped, the id can be used again (a resume)."""
    run_id = f"test-{new_id()[:8]}"
    first = PostgresAdmin(postgres_url, run_id)
    store = PostgresStore(first.prepare([("n1", ["alice"])])["n1"], run_id)
    Namespace(store, "alice").put("k", "first's")
    second = PostgresAdmin(postgres_url, run_id)
    with pytest.raises(ConflictError, match=f"run '{run_id}' is live in this database"):
        second.prepare([("n1", ["alice"])])
    second.release()  # nothing of the first's is dropped
    Namespace(store, "alice").put("k", "still writing")  # the first's role and password hold
    store.close()
    first.release()
    again = PostgresAdmin(postgres_url, run_id)
    resumed = PostgresStore(again.prepare([("n1", ["alice"])])["n1"], run_id)
    try:
        assert Namespace(resumed, "alice").get("k") == "still writing"
    finally:
        resumed.close()
        again.release()
