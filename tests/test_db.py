"""dbtools.db: one connection or a pool, from a URL or the configuration; failures made clear."""

from __future__ import annotations

import pytest

from dbtools import config, db, tenants
from dbtools.errors import ConfigurationError, DatabaseUnavailable


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
