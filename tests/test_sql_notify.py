"""The change notifications at the SQL level (sql/0006_notify-tenant-changes.sql): what a listener
of channel dbtools_tenants hears after plain INSERT, UPDATE, DELETE and TRUNCATE, from any client.

Every test reads what it heard up to a fence: a notification on a channel of the tests' own, sent
after the change committed. PostgreSQL delivers notifications in commit order, so whatever the
change announced arrives before the fence, and "nothing" is proven without waiting for a timeout.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql

from dbtools import db, migrations, roles, schema
from dbtools.config import Target
from tests.helpers import MIGRATION_IDS, run_psql

Conn = psycopg.Connection[Any]

# LISTEN is a property of a server session: keep these tests off PgBouncer under
# DBTOOLS_TEST_POOLER, as transaction pooling would hand the session to other clients.
pytestmark = pytest.mark.direct

CHANNEL = "dbtools_tenants"
FENCE = "dbtools_test_fence"
MIGRATION = "0006_notify-tenant-changes"
TRIGGERS = {
    "tenants_notify_insert": "INSERT",
    "tenants_notify_update": "UPDATE",
    "tenants_notify_delete": "DELETE",
    "tenants_notify_truncate": "TRUNCATE",
}
# PostgreSQL refuses a payload of 8000 bytes or more (with the default block size).
PAYLOAD_LIMIT = 8000
INSERT_MANY: LiteralString = (
    "INSERT INTO tenants (slug, name) SELECT s, 'T' FROM unnest(%s::text[]) s"
)


@pytest.fixture
def listener(connect: Callable[..., Conn]) -> Conn:
    """A session of its own listening on dbtools_tenants (and on the tests' fence)."""
    listening = connect(autocommit=True)
    listening.execute(f"LISTEN {CHANNEL}")
    listening.execute(f"LISTEN {FENCE}")
    return listening


def heard_notifies(listener: Conn, fence_from: Conn) -> list[psycopg.Notify]:
    """What ``listener`` heard on dbtools_tenants, in order, up to a fence sent now from
    ``fence_from`` (an autocommit connection: the fence commits at once)."""
    fence = uuid.uuid4().hex
    fence_from.execute("SELECT pg_notify(%s, %s)", [FENCE, fence])
    heard: list[psycopg.Notify] = []
    for notify in listener.notifies(timeout=30):
        if notify.channel == FENCE and notify.payload == fence:
            return heard
        assert notify.channel == CHANNEL
        heard.append(notify)
    pytest.fail("the fence notification never arrived")


def heard(listener: Conn, fence_from: Conn) -> list[str]:
    """The payloads ``listener`` heard on dbtools_tenants, in order, up to now."""
    return [notify.payload for notify in heard_notifies(listener, fence_from)]


def slugs_of(payload: str) -> list[str]:
    """The slugs of one payload, each checked to be there once."""
    slugs = payload.split(" ")
    assert len(slugs) == len(set(slugs)), payload
    return slugs


@pytest.fixture
def acme(conn: Conn, listener: Conn) -> None:
    """Tenant acme (settings {"plan": "pro"}, active), its own notification already heard."""
    conn.execute(
        "INSERT INTO tenants (slug, name, settings) VALUES ('acme', 'Acme', '{\"plan\": \"pro\"}')"
    )
    assert heard(listener, conn) == ["acme"]


# --- each kind of change -------------------------------------------------------------------


def test_an_insert_announces_the_new_slugs(conn: Conn, listener: Conn) -> None:
    conn.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
    conn.execute("INSERT INTO tenants (slug, name) VALUES ('globex', 'Globex'), ('hooli', 'Hooli')")
    first, second = heard(listener, conn)
    assert first == "acme"
    assert sorted(slugs_of(second)) == ["globex", "hooli"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param("UPDATE tenants SET name = 'Acme Corp' WHERE slug = 'acme'", id="name"),
        pytest.param(
            "UPDATE tenants SET settings = '{\"plan\": \"free\"}' WHERE slug = 'acme'",
            id="settings",
        ),
        pytest.param(
            "UPDATE tenants SET settings = settings || '{\"region\": \"eu\"}' WHERE slug = 'acme'",
            id="settings-key-added",
        ),
        pytest.param("UPDATE tenants SET status = 'suspended' WHERE slug = 'acme'", id="status"),
    ],
)
@pytest.mark.usefixtures("acme")
def test_an_update_of_any_column_announces_the_slug(
    conn: Conn, listener: Conn, change: LiteralString
) -> None:
    conn.execute(change)
    assert heard(listener, conn) == ["acme"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param("UPDATE tenants SET slug = 'acme-corp' WHERE slug = 'acme'", id="slug"),
        pytest.param(
            "UPDATE tenants SET slug = 'acme-corp', name = 'Acme Corp', status = 'suspended' "
            "WHERE slug = 'acme'",
            id="slug-name-and-status",
        ),
    ],
)
@pytest.mark.usefixtures("acme")
def test_a_rename_announces_the_old_and_the_new_slug_together(
    conn: Conn, listener: Conn, change: LiteralString
) -> None:
    conn.execute(change)
    [payload] = heard(listener, conn)
    assert sorted(slugs_of(payload)) == ["acme", "acme-corp"]


def test_a_delete_announces_the_slugs_deleted(conn: Conn, listener: Conn) -> None:
    conn.execute(INSERT_MANY, [["acme", "globex", "hooli"]])
    heard(listener, conn)
    conn.execute("DELETE FROM tenants WHERE slug = 'acme'")
    conn.execute("DELETE FROM tenants WHERE slug IN ('globex', 'hooli')")
    first, second = heard(listener, conn)
    assert first == "acme"
    assert sorted(slugs_of(second)) == ["globex", "hooli"]


def test_truncate_announces_every_tenant(conn: Conn, listener: Conn) -> None:
    conn.execute(INSERT_MANY, [["acme", "globex"]])
    heard(listener, conn)
    conn.execute("TRUNCATE tenants")
    assert heard(listener, conn) == ["*"]


def test_an_upsert_announces_what_it_changed_once(conn: Conn, listener: Conn) -> None:
    """INSERT ... ON CONFLICT DO UPDATE fires both triggers; the insert's has no rows."""
    conn.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
    heard(listener, conn)
    conn.execute(
        "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme Corp'), ('globex', 'Globex') "
        "ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name"
    )
    payloads = heard(listener, conn)
    assert sorted(payloads) == ["acme", "globex"]  # one from each trigger


def test_merge_announces_what_it_inserted_and_updated(conn: Conn, listener: Conn) -> None:
    if conn.info.server_version < 150000:
        pytest.skip("MERGE is PostgreSQL 15+")
    conn.execute(INSERT_MANY, [["acme", "globex"]])
    heard(listener, conn)
    conn.execute(
        """
        MERGE INTO tenants t
        USING (VALUES ('acme', 'Acme Corp'), ('globex', 'T'), ('hooli', 'Hooli')) v (slug, name)
        ON t.slug = v.slug
        WHEN MATCHED THEN UPDATE SET name = v.name
        WHEN NOT MATCHED THEN INSERT (slug, name) VALUES (v.slug, v.name)
        """
    )
    assert sorted(heard(listener, conn)) == ["acme", "hooli"]  # globex's name stayed 'T'


# --- nothing changed, nothing said ------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE tenants SET name = 'Acme' WHERE slug = 'acme'", id="same-name"),
        pytest.param(
            "UPDATE tenants SET settings = '{\"plan\": \"pro\"}' WHERE slug = 'acme'",
            id="same-settings",
        ),
        pytest.param("UPDATE tenants SET status = 'active' WHERE slug = 'acme'", id="same-status"),
        pytest.param("UPDATE tenants SET slug = 'acme' WHERE slug = 'acme'", id="same-slug"),
        pytest.param("UPDATE tenants SET name = name, settings = settings", id="every-row-as-is"),
        pytest.param(
            "UPDATE tenants SET updated_at = now() + interval '1 day'",
            id="updated-at-only",  # tenants_timestamps keeps it: the row does not change
        ),
        pytest.param("UPDATE tenants SET name = 'X' WHERE slug = 'nobody'", id="no-row-matched"),
        pytest.param("DELETE FROM tenants WHERE slug = 'nobody'", id="delete-of-no-row"),
        pytest.param(
            "INSERT INTO tenants (slug, name) VALUES ('acme', 'Other') "
            "ON CONFLICT (slug) DO NOTHING",
            id="on-conflict-do-nothing",
        ),
        pytest.param(
            "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme') "
            "ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name",
            id="on-conflict-update-to-the-same",
        ),
        pytest.param(
            "INSERT INTO tenants (slug, name) SELECT 'globex', 'Globex' WHERE false",
            id="insert-of-no-row",
        ),
    ],
)
@pytest.mark.usefixtures("acme")
def test_a_statement_that_changes_nothing_announces_nothing(
    conn: Conn, listener: Conn, statement: LiteralString
) -> None:
    before = conn.execute("SELECT tenants.* FROM tenants").fetchall()
    conn.execute(statement)
    assert conn.execute("SELECT tenants.* FROM tenants").fetchall() == before
    assert heard(listener, conn) == []


def test_rows_an_update_leaves_as_they_were_are_not_announced(conn: Conn, listener: Conn) -> None:
    conn.execute(INSERT_MANY, [["acme", "globex", "hooli"]])
    conn.execute("UPDATE tenants SET status = 'suspended' WHERE slug = 'acme'")
    heard(listener, conn)
    conn.execute("UPDATE tenants SET status = 'suspended'")
    assert sorted(slugs_of(*heard(listener, conn))) == ["globex", "hooli"]


# --- transactions ---------------------------------------------------------------------------


def test_nothing_is_heard_before_the_commit(
    conn: Conn, listener: Conn, connect: Callable[..., Conn]
) -> None:
    writer = connect()  # not autocommit: the transaction stays open
    writer.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
    writer.execute("UPDATE tenants SET name = 'Acme Corp' WHERE slug = 'acme'")
    assert heard(listener, conn) == []
    writer.commit()
    assert heard(listener, conn) == ["acme"]  # the same payload twice is sent once


def test_a_rolled_back_transaction_announces_nothing(
    conn: Conn, listener: Conn, connect: Callable[..., Conn]
) -> None:
    conn.execute("INSERT INTO tenants (slug, name) VALUES ('globex', 'Globex')")
    heard(listener, conn)
    writer = connect()
    writer.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
    writer.execute("UPDATE tenants SET slug = 'globex-corp' WHERE slug = 'globex'")
    writer.execute("DELETE FROM tenants WHERE slug = 'acme'")
    writer.execute("TRUNCATE tenants")
    writer.rollback()
    assert heard(listener, conn) == []


def test_a_rolled_back_savepoint_takes_its_notifications_with_it(
    conn: Conn, listener: Conn
) -> None:
    """What dbtools.tenants does in the caller's transaction: a failed write rolls back to a
    savepoint, and what it would have announced goes with it."""
    with conn.transaction():
        conn.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
        with contextlib.suppress(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute("INSERT INTO tenants (slug, name) VALUES ('globex', 'Globex')")
            conn.execute("INSERT INTO tenants (slug, name) VALUES ('Not A Slug', 'X')")
    assert conn.execute("SELECT slug FROM tenants").fetchall() == [("acme",)]
    assert heard(listener, conn) == ["acme"]


def test_one_transaction_announces_each_change_in_order(conn: Conn, listener: Conn) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
        conn.execute("INSERT INTO tenants (slug, name) VALUES ('globex', 'Globex')")
        conn.execute("UPDATE tenants SET slug = 'acme-corp' WHERE slug = 'acme'")
    first, second, third = heard(listener, conn)
    assert (first, second) == ("acme", "globex")
    assert sorted(slugs_of(third)) == ["acme", "acme-corp"]


# --- batches of at most 100 slugs -----------------------------------------------------------


def long_slugs(count: int) -> list[str]:
    """``count`` slugs of the longest kind, 50 characters each."""
    return [f"{i:04d}-{'a' * 45}" for i in range(count)]


def check_batches(payloads: list[str], slugs: list[str], notifications: int) -> None:
    """``payloads`` are ``notifications`` notifications of 1-100 slugs, each under the payload
    limit, that name every one of ``slugs`` exactly once."""
    assert len(payloads) == notifications
    batches = [payload.split(" ") for payload in payloads]
    assert all(1 <= len(batch) <= 100 for batch in batches)
    assert all(len(payload.encode()) < PAYLOAD_LIMIT for payload in payloads)
    announced = [slug for batch in batches for slug in batch]
    assert sorted(announced) == sorted(slugs)


@pytest.mark.parametrize(
    ("count", "notifications"), [(1, 1), (99, 1), (100, 1), (101, 2), (250, 3)]
)
def test_an_insert_announces_its_slugs_100_at_a_time(
    conn: Conn, listener: Conn, count: int, notifications: int
) -> None:
    slugs = long_slugs(count)
    assert all(len(slug) == 50 for slug in slugs)
    conn.execute(INSERT_MANY, [slugs])
    check_batches(heard(listener, conn), slugs, notifications)


def test_an_update_and_a_delete_of_250_tenants_announce_them_100_at_a_time(
    conn: Conn, listener: Conn
) -> None:
    slugs = long_slugs(250)
    conn.execute(INSERT_MANY, [slugs])
    heard(listener, conn)
    conn.execute('UPDATE tenants SET settings = \'{"plan": "pro"}\'')
    check_batches(heard(listener, conn), slugs, 3)
    conn.execute("DELETE FROM tenants")
    check_batches(heard(listener, conn), slugs, 3)


def test_a_rename_of_250_tenants_announces_500_slugs_100_at_a_time(
    conn: Conn, listener: Conn
) -> None:
    old = [f"tenant-{i:03d}" for i in range(250)]
    conn.execute(INSERT_MANY, [old])
    heard(listener, conn)
    conn.execute("UPDATE tenants SET slug = 'renamed-' || substr(slug, 8)")
    new = [f"renamed-{i:03d}" for i in range(250)]
    check_batches(heard(listener, conn), old + new, 5)


# --- any client, any role -------------------------------------------------------------------


def test_changes_made_by_a_psql_process_are_heard(
    conn: Conn, listener: Conn, target: Target
) -> None:
    result = run_psql(
        target,
        "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')",
        "UPDATE tenants SET slug = 'acme-corp' WHERE slug = 'acme'",
        "DELETE FROM tenants WHERE slug = 'acme-corp'",
    )
    assert result.returncode == 0, result.stderr
    notifies = heard_notifies(listener, conn)
    assert [sorted(slugs_of(n.payload)) for n in notifies] == [
        ["acme"],
        ["acme", "acme-corp"],
        ["acme-corp"],
    ]
    senders = {n.pid for n in notifies}
    assert len(senders) == 1  # psql's own server process, which is gone by now
    assert senders.isdisjoint({conn.info.backend_pid, listener.info.backend_pid})


def test_the_runtime_role_announces_its_changes_without_execute_on_the_function(
    conn: Conn, listener: Conn, target: Target
) -> None:
    """The function is revoked from PUBLIC; a trigger needs no EXECUTE to fire."""
    role = f"dbtools_app_{uuid.uuid4().hex[:8]}"
    name = sql.Identifier(role)
    roles.setup_runtime_role(conn, role)
    try:
        allowed = conn.execute(
            "SELECT has_function_privilege(%s, 'tg_tenants__notify()', 'EXECUTE')", [role]
        ).fetchone()
        assert allowed == (False,)
        as_role = Target.from_params(**(target.params | {"user": role}))
        with db.connect(as_role, autocommit=True) as app:
            app.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
            app.execute("UPDATE tenants SET status = 'suspended' WHERE slug = 'acme'")
            app.execute("DELETE FROM tenants WHERE slug = 'acme'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("SELECT tg_tenants__notify()")
        assert heard(listener, conn) == ["acme"] * 3
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(name))
        conn.execute(sql.SQL("DROP ROLE {}").format(name))


# --- the schema, and the rollback -----------------------------------------------------------

NOTIFY_TRIGGERS: LiteralString = """
    SELECT t.tgname, pg_get_triggerdef(t.oid), obj_description(t.oid, 'pg_trigger')
    FROM pg_trigger t
    WHERE t.tgrelid = 'tenants'::regclass AND NOT t.tgisinternal
      AND (t.tgname LIKE 'tenants\\_notify\\_%' OR t.tgfoid::regproc::text = 'tg_tenants__notify')
"""
NOTIFY_FUNCTION: LiteralString = """
    SELECT p.provolatile, obj_description(p.oid, 'pg_proc'),
           EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                   WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
    FROM pg_proc p
    WHERE p.proname = 'tg_tenants__notify'
"""


def test_four_statement_triggers_call_one_documented_function(conn: Conn) -> None:
    triggers = {
        name: (definition, comment)
        for name, definition, comment in conn.execute(NOTIFY_TRIGGERS).fetchall()
    }
    assert set(triggers) == set(TRIGGERS)
    for name, event in TRIGGERS.items():
        definition, comment = triggers[name]
        assert f" AFTER {event} ON public.tenants " in definition
        assert definition.endswith("FOR EACH STATEMENT EXECUTE FUNCTION tg_tenants__notify()")
        assert comment
    function = conn.execute(NOTIFY_FUNCTION).fetchone()
    assert function is not None
    volatility, comment, public_may_execute = function
    assert (volatility, public_may_execute) == ("v", False)
    assert comment


def test_the_rollback_removes_the_triggers_and_the_function(
    conn: Conn, listener: Conn, target: Target
) -> None:
    migrated = schema.dump(target)
    assert "tg_tenants__notify" in migrated
    since = MIGRATION_IDS[MIGRATION_IDS.index(MIGRATION) :]
    assert migrations.rollback(target, count=len(since)) == since[::-1]

    assert conn.execute(NOTIFY_TRIGGERS).fetchall() == []
    assert conn.execute(NOTIFY_FUNCTION).fetchall() == []
    rolled_back = schema.dump(target)
    assert "notify" not in rolled_back
    assert "CREATE TRIGGER tenants_audit" in rolled_back  # 0005 is untouched
    conn.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
    assert heard(listener, conn) == []

    assert migrations.apply(target) == since
    assert schema.dump(target) == migrated
    conn.execute("DELETE FROM tenants WHERE slug = 'acme'")
    assert heard(listener, conn) == ["acme"]
