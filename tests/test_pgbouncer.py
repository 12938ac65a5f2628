"""Behind PgBouncer in transaction pooling mode: no client ever runs another client's prepared
statement, while a direct connection keeps them (the hot path is faster with them).

The pooler is Debian's real PgBouncer (the ``pgbouncer`` fixture), with two server connections
per database that every client of a test shares.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbtools import config, db, migrations, tenants
from dbtools.config import Target
from dbtools.errors import ConfigurationError, TenantNotFound
from tests.helpers import Cli, Forwarder

Conn = psycopg.Connection[Any]
# psycopg's default: a statement is prepared on the server from its fifth execution.
PSYCOPG_DEFAULT_THRESHOLD = 5
WORKERS = 4  # readers, and as many deleters
CALLS = 60  # each, well past the prepare threshold


@pytest.fixture
def forwarded_target(target: Target) -> Iterator[Target]:
    """This test's database through a plain TCP port forwarding (another port, no pooling)."""
    forwarder = Forwarder(target)
    try:
        yield _elsewhere(target, "127.0.0.1", str(forwarder.port))
    finally:
        forwarder.close()


def _elsewhere(target: Target, host: str, port: str) -> Target:
    """``target``'s database and credentials on other hosts and ports."""
    return Target.from_params(**(target.params | {"host": host, "port": port}))


def _prepared_here(conn: Conn) -> int:
    """How many statements the session of ``conn`` has prepared on its server."""
    row = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert row is not None
    return int(row[0])


# --- the cross-talk of the issue ---------------------------------------------------------------


def _cross_talk(conn: Conn, session: Callable[[], AbstractContextManager[Conn]]) -> None:
    """Readers look up victim-N while deleters delete nobody-N, each on its own connection from
    ``session()``; no victim may be deleted, no read may come back wrong, nothing raw may
    escape. With psycopg's prepared statements behind the pooler, a reader's lookup runs a
    deleter's DELETE (the issue's data loss), or fails with DuplicatePreparedStatement..."""
    victims = [f"victim-{n}" for n in range(WORKERS)]
    for slug in victims:
        tenants.create(conn, slug, slug.title())
    failures: list[str] = []
    start = threading.Barrier(2 * WORKERS)

    def read(slug: str) -> None:
        with session() as mine:
            start.wait()
            for _ in range(CALLS):
                try:
                    found = tenants.get_by_slug(mine, slug)
                except Exception as exc:  # every kind is a failure to report
                    failures.append(f"get_by_slug: {type(exc).__name__}: {exc}")
                    continue
                if found is None or found.slug != slug:
                    failures.append(f"get_by_slug({slug!r}) returned {found!r}")

    def delete(slug: str) -> None:
        with session() as mine:
            start.wait()
            for _ in range(CALLS):
                try:
                    tenants.delete(mine, slug)
                except TenantNotFound:
                    pass  # the answer: nobody is called that
                except Exception as exc:  # every kind is a failure to report
                    failures.append(f"delete: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=read, args=(slug,)) for slug in victims]
    threads += [threading.Thread(target=delete, args=(f"nobody-{n}",)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    survivors = conn.execute("SELECT slug FROM tenants ORDER BY slug").fetchall()
    assert [slug for (slug,) in survivors] == victims, "victims were deleted"
    assert failures == []


def test_readers_never_run_a_deleters_statement_through_pgbouncer(
    conn: Conn, pooled_target: Target
) -> None:
    """The issue's reproduction: every thread on its own db.connect() with default settings."""
    _cross_talk(conn, lambda: db.connect(pooled_target, autocommit=True))


def test_a_pool_through_pgbouncer_is_just_as_safe(conn: Conn, pooled_target: Target) -> None:
    with db.create_pool(
        pooled_target, min_size=2 * WORKERS, max_size=2 * WORKERS, kwargs={"autocommit": True}
    ) as pool:
        _cross_talk(conn, pool.connection)


# --- what decides prepared statements ----------------------------------------------------------


def test_through_pgbouncer_prepared_statements_are_off(pooled_target: Target) -> None:
    with db.connect(pooled_target) as conn:
        assert conn.prepare_threshold is None
        assert db.behind_pooler(conn)
        # The check ran outside any transaction: nothing is left open on the pooler.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_direct_connection_keeps_prepared_statements(target: Target) -> None:
    """The hot path keeps its server-side prepared statement: that is the 1.6x."""
    with db.connect(target, autocommit=True) as conn:
        assert conn.prepare_threshold == PSYCOPG_DEFAULT_THRESHOLD
        assert not db.behind_pooler(conn)
        for _ in range(PSYCOPG_DEFAULT_THRESHOLD + 1):
            tenants.get_by_slug(conn, "acme")
        assert _prepared_here(conn) == 1


def test_detection_is_not_fooled_by_another_port_or_several_hosts(
    target: Target, forwarded_target: Target, pooled_target: Target
) -> None:
    """A port forwarding (a Docker port mapping, an SSH tunnel) shows the server another port
    than the client dialled, yet is no pooler; in a list of hosts, the one libpq reached counts."""
    with db.connect(forwarded_target) as conn:
        row = conn.execute("SHOW port").fetchone()
        assert row is not None
        assert row[0] != str(conn.info.port)  # what a port comparison would call a pooler
        assert conn.prepare_threshold == PSYCOPG_DEFAULT_THRESHOLD
        assert not db.behind_pooler(conn)
    dead = "/nonexistent-dbtools-socket-dir"
    hosts = [
        (
            f"{dead},{target.params['host']}",
            f"1,{target.params['port']}",
            PSYCOPG_DEFAULT_THRESHOLD,
        ),
        ("127.0.0.1,127.0.0.1", f"1,{pooled_target.params['port']}", None),
    ]
    for host, port, threshold in hosts:
        with db.connect(_elsewhere(target, host, port)) as conn:
            assert conn.prepare_threshold == threshold, host


@pytest.mark.parametrize(
    ("setting", "direct", "pooled"),
    [
        ("off", None, None),
        ("on", PSYCOPG_DEFAULT_THRESHOLD, PSYCOPG_DEFAULT_THRESHOLD),  # PgBouncer 1.21+
        ("auto", PSYCOPG_DEFAULT_THRESHOLD, None),
        ("", PSYCOPG_DEFAULT_THRESHOLD, None),
    ],
)
def test_the_setting_decides_before_detection(
    target: Target,
    pooled_target: Target,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    direct: int | None,
    pooled: int | None,
) -> None:
    monkeypatch.setenv(config.PREPARED_STATEMENTS_VAR, setting)
    with db.connect(target) as conn:
        assert conn.prepare_threshold == direct
    with db.connect(pooled_target) as conn:
        assert conn.prepare_threshold == pooled
        assert db.behind_pooler(conn)  # the setting never changes what the pooler is
    with db.create_pool(pooled_target, max_size=1) as pool, pool.connection() as conn:
        assert conn.prepare_threshold == pooled


def test_an_explicit_prepare_threshold_wins(pooled_target: Target, target: Target) -> None:
    with db.connect(pooled_target, prepare_threshold=7) as conn:
        assert conn.prepare_threshold == 7
    with db.connect(target, prepare_threshold=None) as conn:
        assert conn.prepare_threshold is None
    with (
        db.create_pool(pooled_target, max_size=1, kwargs={"prepare_threshold": 7}) as pool,
        pool.connection() as conn,
    ):
        assert conn.prepare_threshold == 7


def test_a_pool_runs_its_own_configure_hook_after_the_check(pooled_target: Target) -> None:
    seen: list[int | None] = []

    def configure(conn: Conn) -> None:
        seen.append(conn.prepare_threshold)

    with (
        db.create_pool(pooled_target, max_size=1, configure=configure) as pool,
        pool.connection() as conn,
    ):
        assert conn.prepare_threshold is None
    assert seen == [None]


def test_a_bad_setting_fails_before_connecting(
    monkeypatch: pytest.MonkeyPatch, target: Target
) -> None:
    monkeypatch.setenv(config.PREPARED_STATEMENTS_VAR, "sometimes")
    for attempt in (lambda: db.connect(target), lambda: db.create_pool(target)):
        with pytest.raises(ConfigurationError, match=config.PREPARED_STATEMENTS_VAR):
            attempt()


def test_behind_pooler_refuses_a_failed_transaction(target: Target) -> None:
    with db.connect(target) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.ProgrammingError, match="failed transaction"):
            db.behind_pooler(conn)
        conn.rollback()
        assert not db.behind_pooler(conn)


# --- the dbtools command -----------------------------------------------------------------------


def test_the_command_works_through_pgbouncer(
    cli: Cli, pooled_target: Target, tmp_path: Path
) -> None:
    """Each command's statements share a transaction where they need one (the import's
    temporary staging table): nothing relies on a session that the pooler does not keep."""

    def run(*argv: str, code: int = 0) -> str:
        result = cli("--database-url", pooled_target.url(), *argv)
        assert result.returncode == code, (argv, result.stderr)
        return result.stdout

    assert "Acme Corp" in run("tenants", "create", "acme", "Acme Corp")
    assert "Acme Corp" in run("tenants", "show", "acme")
    assert "acme" in run("tenants", "list")
    run("tenants", "delete", "acme", "--yes")
    assert "acme" not in run("tenants", "list")
    (tmp_path / "tenants.csv").write_text("slug,name\nglobex,Globex\ninitech,Initech\n")
    run("tenants", "import", str(tmp_path / "tenants.csv"))
    assert "Initech" in run("tenants", "show", "initech")
    run("tenants", "show", "acme", code=1)


def test_the_command_honours_the_setting(cli: Cli, pooled_target: Target) -> None:
    result = cli(
        "--database-url",
        pooled_target.url(),
        "tenants",
        "list",
        env={config.PREPARED_STATEMENTS_VAR: "sometimes"},
    )
    assert result.returncode == 2
    assert config.PREPARED_STATEMENTS_VAR in result.stderr


def test_the_pgbouncer_fixture_is_a_transaction_pooler(pooled_target: Target) -> None:
    """What every test above relies on: between two transactions of a client that is still
    connected, its server session serves another client (PgBouncer reuses the server
    connection released last)."""
    backend_pid = "SELECT pg_backend_pid()"
    with db.connect(pooled_target, autocommit=True) as one, db.connect(pooled_target) as other:
        first = one.execute(backend_pid).fetchone()
        with other.transaction():
            assert other.execute(backend_pid).fetchone() == first


@pytest.mark.parametrize("command", ["migrate", "rollback"])
def test_migrations_through_a_transaction_pooler_refuse_and_change_nothing(
    cli: Cli, pooled_target: Target, target: Target, command: str
) -> None:
    """They hold an advisory lock on one server session for the whole run: through a
    transaction pooler that would be any session, any time."""
    before = migrations.status(target)
    result = cli("--database-url", pooled_target.url(), command)
    assert result.returncode == 2, result.stderr
    assert "through a connection pooler" in result.stderr
    assert "the URL of the PostgreSQL server itself" in result.stderr
    assert migrations.status(target) == before
    with db.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,)


def test_migrate_through_a_pooler_creates_no_database_first(
    cli: Cli, pgbouncer: Any, missing_db: Target
) -> None:
    pooled = pgbouncer.target(missing_db.dbname)
    result = cli("--database-url", pooled.url(), "migrate")
    assert result.returncode == 2, result.stderr
    assert "through a connection pooler" in result.stderr
    assert not migrations.database_exists(missing_db)


def test_a_dry_run_through_a_pooler_refuses_as_migrate_would(
    cli: Cli, pgbouncer: Any, missing_db: Target
) -> None:
    pooled = pgbouncer.target(missing_db.dbname)
    result = cli("--database-url", pooled.url(), "migrate", "--dry-run")
    assert (result.returncode, result.stdout) == (2, "")
    assert "through a connection pooler" in result.stderr
