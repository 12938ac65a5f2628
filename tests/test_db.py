"""dbtools.db: one connection or a pool, from a URL or the configuration; failures made clear."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from dbtools import config, db, tenants
from dbtools.errors import ConfigurationError, DatabaseUnavailable, InvalidSlug


def test_connect_to_a_url(db_url: str) -> None:
    with db.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (0,)


def test_connect_uses_database_url(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    with db.connect() as conn:
        assert conn.info.dbname == config.parse_url(db_url)["dbname"]


def test_connect_passes_psycopg_options(db_url: str) -> None:
    with db.connect(db_url, prepare_threshold=None) as conn:
        assert conn.prepare_threshold is None


def test_unreachable_server() -> None:
    with pytest.raises(
        DatabaseUnavailable, match=r"cannot connect to database 'x' on 127\.0\.0\.1:1"
    ):
        db.connect("postgresql://u:Sekrit99@127.0.0.1:1/x")


def test_malformed_url() -> None:
    with pytest.raises(ConfigurationError):
        db.connect("postgresql://u:Sekrit99@host:port/x")


def test_pool_serves_connections(db_url: str) -> None:
    with db.create_pool(db_url, max_size=2, kwargs={"autocommit": True}) as pool:
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


def test_a_serialization_failure_is_not_database_unavailable(connect: Any, conn: Any) -> None:
    """psycopg files it under OperationalError, but the connection is fine: the caller retries."""
    tenants.create(conn, "acme", "Acme")
    first = connect(autocommit=False)
    first.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    assert tenants.get_by_slug(first, "acme") is not None  # takes the snapshot
    tenants.suspend(conn, "acme")  # a concurrent, committed change
    with pytest.raises(psycopg.errors.SerializationFailure):
        tenants.update(first, "acme", name="Changed")
    first.rollback()
    assert tenants.get_by_slug(first, "acme") is not None  # the connection still works


def test_list_after_that_postgresql_cannot_hold_is_invalid(conn: Any) -> None:
    for after in ("a\x00", "a\ud800"):
        with pytest.raises(InvalidSlug):
            tenants.list_tenants(conn, after=after)
