"""The runtime role (``dbtools roles setup``, sql/roles/runtime.sql): connected as it, an
application may read and change tenants and read their history, and nothing more."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg import sql

from dbtools import db, migrations, roles, tenants
from dbtools.config import Target
from dbtools.errors import ConfigurationError
from tests.helpers import Cli

Conn = psycopg.Connection[Any]

# Each table's privileges, as the catalog lists them for a role.
PRIVILEGES: LiteralString = """
    SELECT c.relname, array_agg(a.privilege_type ORDER BY a.privilege_type)
    FROM pg_class c, aclexplode(c.relacl) a
    WHERE a.grantee = to_regrole(%(role)s) AND c.relnamespace = 'public'::regnamespace
    GROUP BY c.relname
"""
EXPECTED = {
    "tenants": ["DELETE", "INSERT", "SELECT", "UPDATE"],
    "tenant_events": ["SELECT"],
    "reserved_slugs": ["SELECT"],
}


def privileges(conn: Conn, role: str) -> dict[str, list[str]]:
    return dict(conn.execute(PRIVILEGES, {"role": role}).fetchall())


def drop_role(conn: Conn, role: str) -> None:
    name = sql.Identifier(role)
    conn.execute(sql.SQL("DROP OWNED BY {}").format(name))
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(name))


@pytest.fixture
def role_name(conn: Conn) -> Iterator[str]:
    """A role name of this test's own (roles are cluster-wide); the role is dropped afterwards."""
    role = f"dbtools_app_{uuid.uuid4().hex[:8]}"
    yield role
    if conn.execute("SELECT to_regrole(%s)", [role]).fetchone() != (None,):
        drop_role(conn, role)


@pytest.fixture
def runtime(conn: Conn, target: Target, role_name: str) -> Iterator[Conn]:
    """An autocommit connection to this test's database as a freshly set-up runtime role."""
    assert roles.setup_runtime_role(conn, role_name) is True
    with db.connect(
        Target.from_params(**(target.params | {"user": role_name})), autocommit=True
    ) as app:
        yield app


def test_setup_creates_a_login_role_with_exactly_the_listed_privileges(
    conn: Conn, role_name: str
) -> None:
    assert roles.setup_runtime_role(conn, role_name) is True
    row = conn.execute(
        "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s",
        [role_name],
    ).fetchone()
    assert row == (True, False, False, False)
    assert privileges(conn, role_name) == EXPECTED


def test_setup_is_idempotent_and_takes_back_extra_privileges(conn: Conn, role_name: str) -> None:
    assert roles.setup_runtime_role(conn, role_name) is True
    assert roles.setup_runtime_role(conn, role_name) is False
    assert privileges(conn, role_name) == EXPECTED

    name = sql.Identifier(role_name)
    conn.execute(sql.SQL("GRANT UPDATE, DELETE, TRUNCATE ON tenant_events TO {}").format(name))
    conn.execute(sql.SQL("GRANT TRUNCATE, TRIGGER ON tenants TO {}").format(name))
    conn.execute(sql.SQL("GRANT ALL ON _yoyo_migration TO {}").format(name))
    assert privileges(conn, role_name) != EXPECTED
    assert roles.setup_runtime_role(conn, role_name) is False
    assert privileges(conn, role_name) == EXPECTED


def test_setup_leaves_the_callers_transaction_open(conn: Conn, role_name: str) -> None:
    with conn.transaction(force_rollback=True):
        roles.setup_runtime_role(conn, role_name)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert conn.execute("SELECT to_regrole(%s)", [role_name]).fetchone() == (None,)


def test_a_superuser_cannot_be_the_runtime_role(conn: Conn) -> None:
    user = conn.info.user
    with pytest.raises(ConfigurationError, match="is a superuser"):
        roles.setup_runtime_role(conn, user)


@pytest.mark.parametrize("name", ["", "pg_app", "a" * 64, "app\n"], ids=repr)
def test_a_bad_role_name_is_refused_before_anything_runs(conn: Conn, name: str) -> None:
    with pytest.raises(ConfigurationError):
        roles.setup_runtime_role(conn, name)


def test_the_runtime_role_reads_and_changes_tenants(conn: Conn, runtime: Conn) -> None:
    tenants.create(runtime, "acme", "Acme")
    assert tenants.get_by_slug(runtime, "acme") is not None
    tenants.update(runtime, "acme", name="Acme Corp", settings={"plan": "pro"})
    with tenants.acting_as(runtime, "alice"):
        tenants.suspend(runtime, "acme")
    assert [t.slug for t in tenants.list_tenants(runtime)] == ["acme"]
    tenants.delete(runtime, "acme")
    runtime.execute("INSERT INTO tenants (slug, name) VALUES ('globex', 'Globex')")  # plain SQL

    # The trigger wrote the events, in the runtime role's name, which may read them back.
    events = tenants.history(runtime, "acme")
    assert [e.kind.value for e in events] == [
        "created",
        "renamed",
        "settings_changed",
        "suspended",
        "deleted",
    ]
    assert {e.db_user for e in events} == {runtime.info.user}
    assert events[3].actor == "alice"
    assert tenants.history(conn, "globex")[0].db_user == runtime.info.user


REFUSED: list[LiteralString] = [
    "ALTER TABLE tenants ADD COLUMN plan text",
    "ALTER TABLE tenants DISABLE TRIGGER tenants_audit",
    "DROP TABLE tenants",
    "TRUNCATE tenants",
    "CREATE TRIGGER mine AFTER INSERT ON tenants FOR EACH ROW EXECUTE FUNCTION tg_tenants__audit()",
    "SELECT * FROM _yoyo_migration",
    "INSERT INTO _yoyo_migration (migration_hash, migration_id) VALUES ('x', 'x')",
    "DELETE FROM _yoyo_migration",
    "DELETE FROM _dbtools_migration_checksum",
    "UPDATE _dbtools_migration_checksum SET sha256 = 'x'",
    "INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 1)",
    "DELETE FROM yoyo_lock",
    "INSERT INTO reserved_slugs (slug, reason) VALUES ('mine', 'mine')",
    "DELETE FROM reserved_slugs",
    "TRUNCATE reserved_slugs",
    "INSERT INTO tenant_events (tenant_id, slug, kind, new_values, db_user) "
    "VALUES (gen_random_uuid(), 'fake', 'created', '{}', 'nobody')",
    "UPDATE tenant_events SET actor = 'mallory'",
    "DELETE FROM tenant_events",
    "TRUNCATE tenant_events",
    "ALTER TABLE tenant_events DISABLE TRIGGER tenant_events_append_only",
    "DROP TABLE tenant_events",
]


def test_the_runtime_role_is_refused_everything_else(conn: Conn, runtime: Conn) -> None:
    tenants.create(conn, "acme", "Acme")
    before = tenants.history(conn, "acme")
    for statement in REFUSED:
        with pytest.raises(pg_errors.InsufficientPrivilege):
            runtime.execute(statement)
    assert tenants.history(conn, "acme") == before
    assert [t.slug for t in tenants.list_tenants(conn)] == ["acme"]


def test_the_command_sets_up_the_role_twice(
    cli: Cli, db_url: str, conn: Conn, role_name: str
) -> None:
    first = cli("--database-url", db_url, "--json", "roles", "setup", "--role", role_name)
    assert first.returncode == 0, first.stderr
    assert '"created": true' in first.stdout
    second = cli("--database-url", db_url, "roles", "setup", "--role", role_name)
    assert second.returncode == 0, second.stderr
    assert second.stdout == (
        f"role {role_name!r} may read and change tenants and read tenant_events in "
        f"{conn.info.dbname!r}, and nothing more\n"
    )
    assert privileges(conn, role_name) == EXPECTED


def test_setup_works_on_the_schema_a_rollback_left(
    conn: Conn, target: Target, role_name: str
) -> None:
    """After `dbtools rollback` (of 0009, then of 0008 too) the role is set up on the schema
    that is there: no trigger function of a rolled-back migration is named."""
    for count in (1, 2):
        migrations.rollback(target)
        assert roles.setup_runtime_role(conn, role_name) is (count == 1)
        assert privileges(conn, role_name) == EXPECTED
        name = sql.Identifier(role_name)
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION tg_tenants__notify() TO {}").format(name))
        roles.setup_runtime_role(conn, role_name)
        may_execute = conn.execute(
            "SELECT has_function_privilege(%s, 'tg_tenants__notify()', 'EXECUTE')", [role_name]
        ).fetchone()
        assert may_execute == (False,)
    migrations.apply(target)


def test_the_command_refuses_a_reserved_role_name(cli: Cli, db_url: str) -> None:
    result = cli("--database-url", db_url, "roles", "setup", "--role", "pg_mine")
    assert result.returncode == 2
    assert result.stderr == "dbtools: error: role names starting with pg_ are reserved: 'pg_mine'\n"


@pytest.mark.parametrize("name", ["public", "NONE", "current_user", "session_user"])
def test_names_postgresql_keeps_for_itself_are_refused(cli: Cli, db_url: str, name: str) -> None:
    result = cli("--database-url", db_url, "roles", "setup", "--role", name)
    assert (result.returncode, result.stderr) == (
        2,
        f"dbtools: error: {name!r} is a reserved role name in PostgreSQL\n",
    )


def test_setup_takes_back_what_reaches_past_the_grants(
    conn: Conn, target: Target, role_name: str
) -> None:
    """Schema and database CREATE, role attributes, memberships and PUBLIC's grants on the
    migrations' tables: each would let the role do what the file does not grant."""
    roles.setup_runtime_role(conn, role_name)
    name = sql.Identifier(role_name)
    database = sql.Identifier(conn.info.dbname)
    for statement in (
        "GRANT CREATE ON SCHEMA public TO {role}",
        "GRANT CREATE ON DATABASE {database} TO {role}",
        "GRANT EXECUTE ON FUNCTION tg_tenants__audit() TO {role}",
        "GRANT EXECUTE ON FUNCTION tg_tenants__notify() TO {role}",
        "GRANT EXECUTE ON FUNCTION tg_tenants__audit_insert() TO {role}",
        "ALTER ROLE {role} CREATEDB",
        "GRANT pg_write_all_data TO {role}",
        "GRANT INSERT ON reserved_slugs TO PUBLIC",
    ):
        conn.execute(sql.SQL(statement).format(role=name, database=database))
    assert roles.setup_runtime_role(conn, role_name) is False

    with db.connect(
        Target.from_params(**(target.params | {"user": role_name})), autocommit=True
    ) as app:
        for statement in (
            "CREATE TABLE public.app_owned (x int)",
            "CREATE SCHEMA app_schema",
            "INSERT INTO reserved_slugs (slug, reason) VALUES ('zz-pub', 'x')",
            "INSERT INTO tenant_events (tenant_id, slug, kind, new_values, db_user) "
            "VALUES (gen_random_uuid(), 'fake', 'created', '{}', 'nobody')",
        ):
            with pytest.raises(pg_errors.InsufficientPrivilege):
                app.execute(statement)
    state = conn.execute(
        "SELECT rolcreatedb, pg_has_role(%s, 'pg_write_all_data', 'MEMBER'), "
        "has_function_privilege(%s, 'tg_tenants__audit()', 'EXECUTE'), "
        "has_function_privilege(%s, 'tg_tenants__notify()', 'EXECUTE'), "
        "has_function_privilege(%s, 'tg_tenants__audit_insert()', 'EXECUTE') FROM pg_roles "
        "WHERE rolname = %s",
        (role_name, role_name, role_name, role_name, role_name),
    ).fetchone()
    assert state == (False, False, False, False, False)


def test_setup_takes_back_grant_options_and_role_settings(conn: Conn, role_name: str) -> None:
    roles.setup_runtime_role(conn, role_name)
    name = sql.Identifier(role_name)
    database = sql.Identifier(conn.info.dbname)
    for statement in (
        "GRANT USAGE ON SCHEMA public TO {role} WITH GRANT OPTION",
        "GRANT CONNECT ON DATABASE {database} TO {role} WITH GRANT OPTION",
        "GRANT USAGE ON TYPE tenant_status TO {role} WITH GRANT OPTION",
        "ALTER ROLE {role} SET search_path = evil, public",
    ):
        conn.execute(sql.SQL(statement).format(role=name, database=database))
    roles.setup_runtime_role(conn, role_name)
    grant_options = conn.execute(
        """
        SELECT has_schema_privilege(%(r)s, 'public', 'USAGE WITH GRANT OPTION'),
               has_database_privilege(%(r)s, current_database(), 'CONNECT WITH GRANT OPTION'),
               has_type_privilege(%(r)s, 'tenant_status', 'USAGE WITH GRANT OPTION'),
               (SELECT rolconfig FROM pg_roles WHERE rolname = %(r)s)
        """,
        {"r": role_name},
    ).fetchone()
    assert grant_options == (False, False, False, None)
    assert privileges(conn, role_name) == EXPECTED


def test_a_role_that_owns_objects_is_refused(conn: Conn, role_name: str) -> None:
    roles.setup_runtime_role(conn, role_name)
    conn.execute(sql.SQL("CREATE SCHEMA evil AUTHORIZATION {}").format(sql.Identifier(role_name)))
    with pytest.raises(ConfigurationError, match=r"owns 1 object\(s\) in database .*REASSIGN"):
        roles.setup_runtime_role(conn, role_name)
