"""dbtools.db: connections and pools on a Target, and what each kind of failure becomes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dbtools import config, db, tenants
from dbtools.config import Target
from dbtools.errors import (
    ConfigurationError,
    Conflict,
    DatabaseUnavailable,
    InvalidSlug,
    NotMigrated,
    PermissionDenied,
    PoolExhausted,
    Timeout,
)

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]


def test_connect_to_a_target_or_url(target: Target) -> None:
    for where in (target, target.url()):
        with db.connect(where, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (0,)


def test_connect_uses_database_url(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", target.url())
    with db.connect() as conn:
        assert conn.info.dbname == target.dbname


def test_connect_passes_psycopg_options_and_the_connect_timeout(target: Target) -> None:
    with db.connect(target, prepare_threshold=None) as conn:
        assert conn.prepare_threshold is None
        assert conn.info.get_parameters()["connect_timeout"] == str(config.CONNECT_TIMEOUT)


def test_unreachable_server() -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        db.connect("postgresql://u:Sekrit99@127.0.0.1:1/x")
    assert str(caught.value).startswith("cannot connect to database 'x' on 127.0.0.1:1: ")
    assert "Sekrit99" not in str(caught.value)


def test_malformed_url() -> None:
    with pytest.raises(ConfigurationError):
        db.connect("postgresql://u:Sekrit99@host:port/x")


def test_pool_serves_connections(target: Target) -> None:
    with db.create_pool(target, max_size=2, kwargs={"autocommit": True}) as pool:
        with pool.connection() as conn:
            tenants.create(conn, "pooled", "Pooled")
        with pool.connection() as conn:
            found = tenants.get_by_slug(conn, "pooled")
    assert found is not None
    assert found.name == "Pooled"


def test_pool_on_an_unreachable_server_fails_at_creation() -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        db.create_pool("postgresql://u:Sekrit99@127.0.0.1:1/x", timeout=1.0)
    assert "Sekrit99" not in str(caught.value)


def test_a_pool_that_cannot_reconnect_raises_database_unavailable(target: Target) -> None:
    """An outage after start-up: the pool's connection dies and it cannot make another."""
    quoted = sql.Identifier(target.dbname)
    with (
        db.create_pool(target, check=db.Pool.check_connection, reconnect_timeout=60) as pool,
        db.maintenance_connection(target) as admin,
    ):
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(quoted))
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (target.dbname,),
            )
            with pytest.raises(DatabaseUnavailable, match="no working connection within 1 s"):
                pool.getconn(timeout=1)
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(quoted))


def test_a_pool_whose_connections_are_all_busy_raises_pool_exhausted(target: Target) -> None:
    with (
        db.create_pool(target, min_size=1, max_size=1) as pool,
        pool.connection(),
        pytest.raises(PoolExhausted, match="all 1 connections of the pool"),
    ):
        pool.getconn(timeout=0.3)


# --- what a failure becomes --------------------------------------------------------------------


def test_a_lost_connection_names_the_database_and_host(
    conn: Conn, connect: Connect, target: Target
) -> None:
    victim = connect(autocommit=True)
    conn.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
    with pytest.raises(DatabaseUnavailable) as caught:
        tenants.get_by_slug(victim, "acme")
    message = str(caught.value)
    assert message.startswith(
        f"lost the connection to database {target.dbname!r} on {target.params['host']}:"
    )
    assert "terminating connection due to administrator command" in message


def test_a_missing_table_is_not_migrated(conn: Conn) -> None:
    conn.execute("DROP TABLE tenants")
    with pytest.raises(NotMigrated, match=r"is not migrated \(relation \"tenants\" does not exist"):
        tenants.list_tenants(conn)


@pytest.fixture
def role(conn: Conn, target: Target) -> Iterator[Target]:
    """A login role with no privileges: the test's database as that role."""
    name = f"dbtools_role_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield Target.from_params(**(target.params | {"user": name}))
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_missing_privilege_is_permission_denied(role: Target) -> None:
    with db.connect(role, autocommit=True) as as_role, pytest.raises(PermissionDenied) as caught:
        tenants.get_by_slug(as_role, "acme")
    assert str(caught.value) == (
        f"permission denied for table tenants (user {role.user!r}, database {role.dbname!r})"
    )


def test_get_or_create_that_keeps_losing_is_a_conflict(conn: Conn, role: Target) -> None:
    """Row-level security hides the existing row from the read, so the insert keeps finding it
    there and the read keeps finding nothing: what a tenant deleted between the two looks like."""
    who = sql.Identifier(role.params["user"])
    conn.execute(sql.SQL("GRANT SELECT, INSERT ON tenants TO {}").format(who))
    conn.execute("ALTER TABLE tenants ENABLE ROW LEVEL SECURITY")
    # The old "ghost" row is hidden from reads; a row being inserted now stays visible, as the
    # insert's RETURNING needs.
    conn.execute(
        "CREATE POLICY hide_ghost ON tenants FOR SELECT "
        "USING (slug <> 'ghost' OR created_at >= now())"
    )
    conn.execute("CREATE POLICY insert_any ON tenants FOR INSERT WITH CHECK (true)")
    tenants.create(conn, "ghost", "Ghost")
    with db.connect(role, autocommit=True) as as_role, pytest.raises(Conflict) as caught:
        tenants.get_or_create(as_role, "ghost", "Ghost")
    assert "'ghost'" in str(caught.value)
    assert str(caught.value).endswith("; try again")


def test_error_for_maps_timeouts_and_conflicts(conn: Conn, connect: Connect) -> None:
    """What the CLI and the migrations map, and the data-access layer leaves to the caller."""
    holder = connect()
    holder.execute("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
    waiter = connect(autocommit=True)
    waiter.execute("SET lock_timeout = '50ms'")
    with pytest.raises(psycopg.errors.LockNotAvailable) as lock_error:
        tenants.get_by_slug(waiter, "acme")
    mapped = db.error_for(lock_error.value, waiter)
    assert isinstance(mapped, Timeout)
    assert (mapped.kind, mapped.setting) == ("lock", "lock_timeout")
    assert str(mapped).startswith(f"timed out on database {conn.info.dbname!r} (lock_timeout): ")

    waiter.execute("SET lock_timeout = 0; SET statement_timeout = '50ms'")
    with pytest.raises(psycopg.errors.QueryCanceled) as statement_error:
        tenants.get_by_slug(waiter, "acme")
    mapped = db.error_for(statement_error.value, waiter)
    assert isinstance(mapped, Timeout)
    assert mapped.setting == "statement_timeout"
    holder.rollback()


def test_a_serialization_failure_stays_the_callers_and_maps_to_conflict(
    connect: Connect, conn: Conn
) -> None:
    """psycopg files it under OperationalError, but the connection is fine: the caller retries."""
    tenants.create(conn, "acme", "Acme")
    first = connect(autocommit=False)
    first.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    assert tenants.get_by_slug(first, "acme") is not None  # takes the snapshot
    tenants.suspend(conn, "acme")  # a concurrent, committed change
    with pytest.raises(psycopg.errors.SerializationFailure) as caught:
        tenants.update(first, "acme", name="Changed")
    assert isinstance(db.error_for(caught.value, first), Conflict)
    first.rollback()
    assert tenants.get_by_slug(first, "acme") is not None  # the connection still works


def test_a_statement_timeout_inside_the_callers_transaction_keeps_it_usable(
    connect: Connect, conn: Conn
) -> None:
    holder = connect()
    holder.execute("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
    caller = connect(autocommit=False)
    with caller.transaction():
        caller.execute("SET LOCAL lock_timeout = '50ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            tenants.update(caller, "acme", name="X")  # a write: in a savepoint
        holder.rollback()
        assert tenants.create(caller, "after", "After").slug == "after"
    assert tenants.get_by_slug(conn, "after") is not None


def test_list_after_that_postgresql_cannot_hold_is_invalid(conn: Conn) -> None:
    for after in ("a\x00", "a\ud800"):
        with pytest.raises(InvalidSlug):
            tenants.list_tenants(conn, after=after)


def test_maintenance_connection_falls_back_to_template1(
    conn: Conn, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "MAINTENANCE_DBS", ("no_such_database_here", "template1"))
    with db.maintenance_connection(target) as admin:
        assert admin.info.dbname == "template1"
        assert admin.autocommit
