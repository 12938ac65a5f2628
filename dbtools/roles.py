"""The runtime role: creating it and granting it exactly what an application needs.

Two roles with distinct duties work on the system database. The migration owner owns every
object (``dbtools migrate``, ``rollback``, ``seed`` and ``roles setup`` run as it). The runtime
role, ``dbtools_app`` unless named otherwise, is what applications log in as (or a group their
own login roles are members of): it reads and changes rows of ``tenants``, reads
``tenant_events``, and nothing else. Its privileges are SQL a DBA can read, shipped in the
package: ``sql/roles/runtime.sql`` (:data:`RUNTIME_SQL`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from dbtools.db import Scope, scope
from dbtools.errors import ConfigurationError, excerpt

__all__ = ["DEFAULT_RUNTIME_ROLE", "RUNTIME_SQL", "setup_runtime_role", "validate_role_name"]

DEFAULT_RUNTIME_ROLE = "dbtools_app"
RUNTIME_SQL = Path(__file__).resolve().parent / "sql" / "roles" / "runtime.sql"
# PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes): a longer name would quietly
# become another one.
ROLE_NAME_MAX_BYTES = 63
# Serialises concurrent `roles setup` runs on one database ("dbtroles"), so that two of them never
# race on CREATE ROLE. Held until the end of the transaction.
_LOCK_KEY = 0x6462_7472_6F6C_6573

ROLE_STATE: LiteralString = """
    SELECT r.rolsuper, pg_has_role(r.oid, t.relowner, 'USAGE')
    FROM pg_roles r, pg_class t
    WHERE r.rolname = %(role)s AND t.oid = 'public.tenants'::regclass
"""
TAKE_LOCK: LiteralString = "SELECT pg_advisory_xact_lock(%(key)s)"
# What the role owns in this database (objects and default privileges), from pg_shdepend.
OWNED: LiteralString = """
    SELECT count(*)
    FROM pg_shdepend d
    JOIN pg_roles r ON r.oid = d.refobjid
    WHERE r.rolname = %(role)s AND d.deptype = 'o'
      AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
MEMBERSHIPS: LiteralString = """
    SELECT g.rolname
    FROM pg_auth_members m
    JOIN pg_roles g ON g.oid = m.roleid
    JOIN pg_roles r ON r.oid = m.member
    WHERE r.rolname = %(role)s
    ORDER BY 1
"""
# LOGIN without a password: nobody can log in with a password until a DBA sets one (psql's
# \password), and trust, peer or certificate authentication works as pg_hba.conf says.
CREATE_ROLE: LiteralString = "CREATE ROLE {role} LOGIN"


# Names PostgreSQL keeps for itself in role specifications (GRANT ... TO public, and so on).
_RESERVED_ROLE_NAMES = frozenset(
    {"public", "none", "current_user", "session_user", "current_role", "all"}
)


def validate_role_name(role: object) -> str:
    """``role`` if it can name the runtime role, else ConfigurationError saying why."""
    if not isinstance(role, str) or not role:
        raise ConfigurationError(f"the runtime role needs a name, not {excerpt(role)}")
    if "\x00" in role or not role.isprintable():
        reason = "holds control characters"
        raise ConfigurationError(f"the runtime role's name {excerpt(role)} {reason}")
    if len(role.encode("utf-8", "replace")) > ROLE_NAME_MAX_BYTES:
        raise ConfigurationError(
            f"the runtime role's name {excerpt(role)} is longer than {ROLE_NAME_MAX_BYTES} bytes"
        )
    if role.startswith("pg_"):
        raise ConfigurationError(f"role names starting with pg_ are reserved: {excerpt(role)}")
    if role.lower() in _RESERVED_ROLE_NAMES:
        raise ConfigurationError(f"{excerpt(role)} is a reserved role name in PostgreSQL")
    return role


def setup_runtime_role(conn: psycopg.Connection[Any], role: str = DEFAULT_RUNTIME_ROLE) -> bool:
    """Create the runtime role ``role`` if it is missing (LOGIN, no password) and give it exactly
    the privileges of :data:`RUNTIME_SQL`, in one transaction; whether it was created.

    Idempotent: a second run changes nothing. Run it as the migration owner (it needs CREATEROLE
    to create the role, and to own the tables to grant on them). An existing role keeps its
    password and LOGIN; privileges beyond the file's (memberships in other roles, CREATEDB...)
    are taken back. Refuses a superuser, or a role that owns the tables
    (or is a member of their owner), for which privileges would mean nothing.
    """
    validate_role_name(role)
    name = sql.Identifier(role)
    with scope(conn, Scope.ATOMIC), conn.cursor() as cur:
        cur.execute(TAKE_LOCK, {"key": _LOCK_KEY})
        cur.execute(ROLE_STATE, {"role": role})
        state = cur.fetchone()
        if state is not None and (state[0] or state[1]):
            what = "a superuser" if state[0] else "the owner of the tables (or a member of it)"
            raise ConfigurationError(
                f"role {excerpt(role)} is {what}: privileges cannot restrict it, so it cannot be "
                "the runtime role; name another with --role"
            )
        owned = cur.execute(OWNED, {"role": role}).fetchone()
        if owned is not None and owned[0]:
            raise ConfigurationError(
                f"role {excerpt(role)} owns {owned[0]} object(s) in database "
                f"{conn.info.dbname!r} (a schema, a table, default privileges...): an owner may "
                "alter and drop what it owns; hand them over first (REASSIGN OWNED BY ... TO ...)"
            )
        created = state is None
        if created:
            cur.execute(sql.SQL(CREATE_ROLE).format(role=name))
        database = sql.Identifier(conn.info.dbname)
        script = sql.SQL(RUNTIME_SQL.read_text()).format(role=name, database=database)
        cur.execute(script)
        # Membership in another role (pg_write_all_data, the owner's group...) would hand the
        # runtime role that role's privileges: every one is taken back.
        for (granted,) in cur.execute(MEMBERSHIPS, {"role": role}).fetchall():
            cur.execute(
                sql.SQL("REVOKE {granted} FROM {role}").format(
                    granted=sql.Identifier(granted), role=name
                )
            )
    return created
