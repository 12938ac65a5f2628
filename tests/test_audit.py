"""The audit trail (sql/0005_audit-tenant-changes.sql): every change of a tenant lands in
tenant_events, whoever makes it; the actor is transaction-scoped; history outlives the tenant;
replaying the events gives the table back; and ``dbtools tenants history``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pg_errors

from dbtools import db
from dbtools.config import Target
from dbtools.errors import DbToolsError, DuplicateSlug, InvalidActor
from dbtools.tenants import TenantEvent
from tests.helpers import Cli, replay, tenants

Conn = psycopg.Connection[Any]


def kinds(events: list[TenantEvent]) -> list[str]:
    return [event.kind.value for event in events]


def actors(events: list[TenantEvent]) -> list[str | None]:
    return [event.actor for event in events]


def event_count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM tenant_events").fetchone()
    assert row is not None
    return int(row[0])


# --- what is recorded -----------------------------------------------------------------------
@pytest.mark.both_sides  # dbtools.tenants and dbtools.aio.tenants
def test_each_kind_of_change_is_recorded_with_its_old_and_new_values(conn: Conn) -> None:
    acme = tenants.create(conn, "acme", "Acme", settings={"plan": "free"})
    tenants.update(conn, "acme", name="Acme Corp")
    tenants.update(conn, "acme", settings={"plan": "pro"})
    tenants.suspend(conn, "acme")
    tenants.suspend(conn, "acme")  # changes nothing: records nothing
    tenants.activate(conn, "acme")
    tenants.update(conn, "acme", name="Acme Corp")  # the same name: nothing either
    tenants.delete(conn, "acme")

    events = tenants.history(conn, "acme")
    assert kinds(events) == [
        "created",
        "renamed",
        "settings_changed",
        "suspended",
        "activated",
        "deleted",
    ]
    assert {event.tenant_id for event in events} == {acme.id}
    assert [(e.old_values, e.new_values) for e in events[1:5]] == [
        ({"name": "Acme"}, {"name": "Acme Corp"}),
        ({"settings": {"plan": "free"}}, {"settings": {"plan": "pro"}}),
        ({"status": "active"}, {"status": "suspended"}),
        ({"status": "suspended"}, {"status": "active"}),
    ]
    created, deleted = events[0], events[-1]
    assert created.old_values is None
    assert created.new_values is not None
    assert created.new_values["name"] == "Acme"
    assert UUID(created.new_values["id"]) == acme.id
    assert datetime.fromisoformat(created.new_values["created_at"]) == acme.created_at
    assert deleted.new_values is None
    assert deleted.old_values is not None
    assert deleted.old_values["name"] == "Acme Corp"
    assert {event.db_user for event in events} == {conn.info.user}
    assert actors(events) == [None] * 6
    assert [e.id for e in events] == sorted(e.id for e in events)


@pytest.mark.both_sides  # dbtools.tenants and dbtools.aio.tenants
def test_changes_made_in_plain_sql_are_recorded_too(conn: Conn) -> None:
    """psql or another service: the trigger records them, one event for each thing changed."""
    conn.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
    conn.execute(
        """
        UPDATE tenants
        SET slug = 'acme-corp', name = 'Acme Corp', settings = '{"a": 1}', status = 'suspended'
        WHERE slug = 'acme'
        """
    )
    conn.execute("DELETE FROM tenants WHERE slug = 'acme-corp'")

    events = tenants.history(conn, "acme")
    assert kinds(events) == [
        "created",
        "slug_changed",
        "renamed",
        "settings_changed",
        "suspended",
        "deleted",
    ]
    assert [event.slug for event in events] == ["acme", *["acme-corp"] * 5]
    assert events[1].old_values == {"slug": "acme"}
    assert events[1].new_values == {"slug": "acme-corp"}
    assert tenants.history(conn, "acme-corp") == events  # found by either slug


def test_one_statement_inserting_many_tenants_records_each_with_its_row_and_actor(
    conn: Conn,
) -> None:
    """Inserts are recorded per statement (0007), with what the row trigger recorded per row:
    the whole new row, the database user, the actor; an upsert's updated rows as changes."""
    tenants.create(conn, "beta", "Beta")
    with tenants.acting_as(conn, "loader"):
        conn.execute(
            "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme'), ('beta', 'Beta Two'), "
            "('gamma', 'Gamma') ON CONFLICT (slug) DO UPDATE SET name = excluded.name"
        )
    created = {
        event.slug: event
        for slug in ("acme", "gamma")
        for event in tenants.history(conn, slug)
        if event.kind == "created"
    }
    for slug, event in created.items():
        stored = tenants.get_by_slug(conn, slug)
        assert stored is not None
        new = event.new_values or {}
        assert sorted(new) == sorted(tenants.COLUMNS), slug  # the whole row
        assert (new["id"], new["name"], new["status"]) == (str(stored.id), stored.name, "active")
        assert datetime.fromisoformat(new["created_at"]) == stored.created_at
        assert (event.tenant_id, event.actor, event.db_user) == (
            stored.id,
            "loader",
            conn.info.user,
        )
    assert sorted(created) == ["acme", "gamma"]
    assert [event.kind for event in tenants.history(conn, "beta")] == ["created", "renamed"]
    trigger = conn.execute(
        "SELECT tgtype & 1 FROM pg_trigger WHERE tgname = 'tenants_audit_insert'"
    ).fetchone()
    assert trigger == (0,)  # FOR EACH STATEMENT: one call, however many rows


@pytest.mark.both_sides  # dbtools.tenants and dbtools.aio.tenants
def test_history_survives_the_deletion_and_covers_every_tenant_of_the_slug(conn: Conn) -> None:
    first = tenants.create(conn, "acme", "Acme")
    tenants.delete(conn, "acme")
    second = tenants.create(conn, "acme", "Acme again")
    tenants.create(conn, "other", "Other")

    events = tenants.history(conn, "acme")
    assert [(e.tenant_id, e.kind.value) for e in events] == [
        (first.id, "created"),
        (first.id, "deleted"),
        (second.id, "created"),
    ]
    assert tenants.history(conn, "nobody") == []
    assert tenants.history(conn, "NOT A SLUG") == []


# --- the actor ------------------------------------------------------------------------------
@pytest.mark.both_sides  # dbtools.tenants and dbtools.aio.tenants
def test_the_actor_is_recorded_inside_acting_as_only(conn: Conn) -> None:
    tenants.create(conn, "acme", "Acme")
    with tenants.acting_as(conn, "alice"):  # autocommit: one transaction for the block
        tenants.suspend(conn, "acme")
        tenants.update(conn, "acme", name="Acme Corp")
    tenants.activate(conn, "acme")  # the next transaction: no actor

    assert actors(tenants.history(conn, "acme")) == [None, "alice", "alice", None]
    row = conn.execute("SELECT current_setting('dbtools.actor', true)").fetchone()
    assert row is not None
    assert row[0] in (None, "")


@pytest.mark.both_sides  # dbtools.tenants and dbtools.aio.tenants
def test_acting_as_inside_the_callers_transaction_restores_the_previous_actor(conn: Conn) -> None:
    with conn.transaction():
        tenants.create(conn, "acme", "Acme")
        with tenants.acting_as(conn, "alice"):
            tenants.suspend(conn, "acme")
            with tenants.acting_as(conn, "bob"):
                tenants.activate(conn, "acme")
            tenants.update(conn, "acme", name="Acme Corp")
        tenants.update(conn, "acme", settings={"a": 1})
    assert actors(tenants.history(conn, "acme")) == [None, "alice", "bob", "alice", None]


def test_acting_as_on_a_connection_that_is_not_autocommit_leaves_the_commit_to_the_caller(
    target: Target, conn: Conn
) -> None:
    with db.connect(target) as own:
        with tenants.acting_as(own, "alice"):
            tenants.create(own, "acme", "Acme")
        assert tenants.history(conn, "acme") == []  # not committed yet
        own.commit()
        tenants.suspend(own, "acme")
        own.commit()
    assert actors(tenants.history(conn, "acme")) == ["alice", None]


@pytest.mark.both_sides  # dbtools.tenants and dbtools.aio.tenants
def test_a_failed_block_records_nothing(conn: Conn) -> None:
    def create_twice() -> None:
        with tenants.acting_as(conn, "alice"):
            tenants.create(conn, "acme", "Acme")
            tenants.create(conn, "acme", "Acme twice")  # DuplicateSlug: the block rolls back

    with pytest.raises(DuplicateSlug):
        create_twice()
    assert event_count(conn) == 0


def test_the_actor_does_not_leak_to_another_client_behind_pgbouncer(
    pooled_target: Target, conn: Conn
) -> None:
    """Transaction pooling: the clients share two server connections, so a session-wide
    setting would show up in another client's changes."""
    tenants.create(conn, "acme", "Acme")
    with (
        db.connect(pooled_target, autocommit=True) as one,
        db.connect(pooled_target, autocommit=True) as two,
    ):
        for round_ in range(4):
            with tenants.acting_as(one, "alice"):
                tenants.update(one, "acme", settings={"round": round_, "by": "alice"})
            tenants.update(two, "acme", settings={"round": round_, "by": "nobody"})
    events = tenants.history(conn, "acme")[1:]
    assert [(e.new_values or {})["settings"]["by"] for e in events] == ["alice", "nobody"] * 4
    assert actors(events) == ["alice", None] * 4


@pytest.mark.parametrize(
    "actor", ["", "   ", "x" * 256, "alice\nroot", "\x1b[2J", 42, "\ud800"], ids=repr
)
@pytest.mark.both_sides  # dbtools.tenants and dbtools.aio.tenants
def test_a_bad_actor_is_invalid_actor(conn: Conn, actor: Any) -> None:
    with pytest.raises(InvalidActor) as caught, tenants.acting_as(conn, actor):
        tenants.create(conn, "acme", "Acme")
    assert caught.value.actor == actor
    assert event_count(conn) == 0


@pytest.mark.both_sides  # dbtools.tenants and dbtools.aio.tenants
def test_the_longest_actor_is_accepted_by_the_schema(conn: Conn) -> None:
    with tenants.acting_as(conn, "é" * tenants.ACTOR_MAX_LENGTH):
        tenants.create(conn, "acme", "Acme")
    assert actors(tenants.history(conn, "acme")) == ["é" * 255]


# --- append-only ----------------------------------------------------------------------------


def test_events_cannot_be_changed_even_by_their_owner(conn: Conn) -> None:
    """The tests run as a superuser: privileges do not stop it, the trigger does."""
    tenants.create(conn, "acme", "Acme")
    for statement in (
        "UPDATE tenant_events SET actor = 'mallory'",
        "DELETE FROM tenant_events",
        "TRUNCATE tenant_events",
    ):
        with pytest.raises(pg_errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
    assert actors(tenants.history(conn, "acme")) == [None]


# --- replaying the events gives the table ---------------------------------------------------

SLUGS = ("acme", "globex", "initech")
NAMES = st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1, max_size=12)
SETTINGS = st.dictionaries(
    st.sampled_from(["plan", "region", "seats"]),
    st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans(), st.none()),
    max_size=3,
)
OPERATIONS = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(SLUGS), NAMES, SETTINGS),
    st.tuples(st.just("rename"), st.sampled_from(SLUGS), NAMES),
    st.tuples(st.just("settings"), st.sampled_from(SLUGS), SETTINGS),
    st.tuples(st.just("suspend"), st.sampled_from(SLUGS)),
    st.tuples(st.just("activate"), st.sampled_from(SLUGS)),
    st.tuples(st.just("delete"), st.sampled_from(SLUGS)),
    # From SQL: a change of slug, and several columns at once.
    st.tuples(st.just("move"), st.sampled_from(SLUGS), st.sampled_from(SLUGS)),
    st.tuples(st.just("everything"), st.sampled_from(SLUGS), NAMES, SETTINGS),
)


def apply(conn: Conn, operation: tuple[Any, ...]) -> None:
    kind, slug, *rest = operation
    try:
        with tenants.acting_as(conn, f"actor-{kind}"):
            if kind == "create":
                tenants.create(conn, slug, rest[0], settings=rest[1])
            elif kind == "rename":
                tenants.update(conn, slug, name=rest[0])
            elif kind == "settings":
                tenants.update(conn, slug, settings=rest[0])
            elif kind == "suspend":
                tenants.suspend(conn, slug)
            elif kind == "activate":
                tenants.activate(conn, slug)
            elif kind == "delete":
                tenants.delete(conn, slug)
            elif kind == "move":
                conn.execute(
                    "UPDATE tenants SET slug = %(new)s WHERE slug = %(old)s",
                    {"old": slug, "new": rest[0]},
                )
            else:
                conn.execute(
                    """
                    UPDATE tenants
                    SET name = %(name)s, settings = %(settings)s::jsonb,
                        status = CASE status WHEN 'active' THEN 'suspended'::tenant_status
                                             ELSE 'active' END
                    WHERE slug = %(slug)s
                    """,
                    {"slug": slug, "name": rest[0], "settings": json.dumps(rest[1])},
                )
    except (DbToolsError, pg_errors.UniqueViolation):  # a taken or missing slug: no change
        pass


@settings(
    max_examples=40,
    deadline=None,
    # The database is shared by the examples: the property holds whatever came before.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operations=st.lists(OPERATIONS, max_size=15))
def test_replaying_the_events_of_a_slug_gives_its_current_row(
    conn: Conn, operations: list[tuple[Any, ...]]
) -> None:
    for operation in operations:
        apply(conn, operation)
    for slug in SLUGS:
        current = tenants.get_by_slug(conn, slug)
        events = tenants.history(conn, slug)
        replayed = [row for row in replay(events).values() if row["slug"] == slug]
        if current is None:
            assert replayed == [], slug
            continue
        assert len(replayed) == 1, slug
        row = replayed[0]
        assert (
            UUID(row["id"]),
            row["slug"],
            row["name"],
            row["status"],
            row["settings"],
            datetime.fromisoformat(row["created_at"]),
        ) == (
            current.id,
            current.slug,
            current.name,
            current.status.value,
            current.settings,
            current.created_at,
        ), slug
        # updated_at is not an event's value: it moves with each change, as occurred_at does.
        assert current.updated_at >= max(e.occurred_at for e in events if e.tenant_id == current.id)


# --- the command ----------------------------------------------------------------------------


def test_the_history_command_shows_every_change_and_the_actor(cli: Cli, db_url: str) -> None:
    assert cli("--database-url", db_url, "tenants", "create", "acme", "Acme").returncode == 0
    for argv in (
        ("tenants", "rename", "acme", "Acme Corp", "--actor", "alice"),
        ("tenants", "suspend", "acme", "--actor", "bob"),
        ("tenants", "activate", "acme"),
        ("tenants", "delete", "acme", "--yes", "--actor", "carol"),
    ):
        assert cli("--database-url", db_url, *argv).returncode == 0, argv

    result = cli("--database-url", db_url, "tenants", "history", "acme")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["WHEN", "SLUG", "EVENT", "CHANGE", "DB", "USER", "ACTOR"]
    assert [line.split()[3] for line in lines[1:]] == [
        "created",
        "renamed",
        "suspended",
        "activated",
        "deleted",
    ]
    assert 'name: "Acme" -> "Acme Corp"' in lines[2]
    assert lines[2].endswith("alice")
    assert lines[3].endswith("bob")
    assert lines[5].endswith("carol")

    document = json.loads(
        cli("--database-url", db_url, "--json", "tenants", "history", "acme").stdout
    )
    assert [(e["kind"], e["actor"]) for e in document["events"]] == [
        ("created", None),
        ("renamed", "alice"),
        ("suspended", "bob"),
        ("activated", None),
        ("deleted", "carol"),
    ]
    assert document["events"][1]["new_values"] == {"name": "Acme Corp"}


def test_the_history_of_a_slug_nobody_had_is_not_found(cli: Cli, db_url: str) -> None:
    result = cli("--database-url", db_url, "tenants", "history", "nobody")
    assert result.returncode == 1
    assert result.stderr == "dbtools: error: no tenant with slug 'nobody'\n"


def test_a_bad_actor_on_the_command_line_changes_nothing(cli: Cli, db_url: str, conn: Conn) -> None:
    result = cli("--database-url", db_url, "tenants", "create", "acme", "Acme", "--actor", "")
    assert result.returncode == 1
    assert result.stderr.startswith("dbtools: error: invalid actor '': must be 1 to 255")
    assert tenants.get_by_slug(conn, "acme") is None


@pytest.mark.both_sides  # dbtools.tenants and dbtools.aio.tenants
def test_an_actor_left_on_the_session_by_another_client_is_not_taken(conn: Conn) -> None:
    """Behind a transaction pooler, a server session is shared: a session-level dbtools.actor
    that some other client set must not name the author of this client's changes."""
    tenants.create(conn, "acme", "Acme")
    conn.execute("SELECT set_config('dbtools.actor', 'LEAKED', false)")  # session-level
    tenants.suspend(conn, "acme")
    with tenants.acting_as(conn, "alice"):
        tenants.activate(conn, "acme")
    tenants.update(conn, "acme", name="Acme Corp")
    assert actors(tenants.history(conn, "acme")) == [None, None, "alice", None]


def test_an_import_records_its_actor(cli: Cli, db_url: str, conn: Conn, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("slug,name\nacme,Acme\nbeta,Beta\n")
    result = cli("--database-url", db_url, "tenants", "import", "in.csv", "--actor", "loader")
    assert result.returncode == 0, result.stderr
    assert [actors(tenants.history(conn, slug)) for slug in ("acme", "beta")] == [
        ["loader"],
        ["loader"],
    ]
