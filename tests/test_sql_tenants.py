"""The tenants table at the SQL level: each constraint and the trigger, by plain INSERT/UPDATE."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors

from dbtools import migrations
from dbtools.config import Target

Conn = psycopg.Connection[Any]


def insert(conn: Conn, slug: str = "acme", name: str = "Acme", **columns: Any) -> Any:
    """Insert one tenant with plain SQL; returns the whole row."""
    values = {"slug": slug, "name": name, **columns}
    names = ", ".join(values)
    placeholders = ", ".join(f"%({column})s" for column in values)
    return conn.execute(
        f"INSERT INTO tenants ({names}) VALUES ({placeholders}) RETURNING *",
        values,
    ).fetchone()


def violates(
    conn: Conn, error: type[psycopg.Error], constraint: str, sql: str, params: Any
) -> None:
    with pytest.raises(error) as caught:
        conn.execute(sql, params)
    assert caught.value.diag.constraint_name == constraint


INSERT = "INSERT INTO tenants (slug, name, status, settings) VALUES (%s, %s, %s, %s)"


@pytest.mark.parametrize(
    "slug",
    [
        pytest.param("ab", id="too-short"),
        pytest.param("a" * 51, id="too-long"),
        pytest.param("", id="empty"),
        pytest.param("Acme", id="uppercase"),
        pytest.param("acme_corp", id="underscore"),
        pytest.param("acme corp", id="space"),
        pytest.param("acme.corp", id="dot"),
        pytest.param("-acme", id="leading-hyphen"),
        pytest.param("acme-", id="trailing-hyphen"),
        pytest.param("café", id="non-ascii-letter"),
        pytest.param("ａｂｃ", id="fullwidth-letters"),
        pytest.param("acme\n", id="trailing-newline"),
        pytest.param("\nacme", id="leading-newline"),
        pytest.param("---", id="only-hyphens"),
    ],
)
def test_slug_check_rejects(conn: Conn, slug: str) -> None:
    violates(
        conn,
        errors.CheckViolation,
        "tenants_slug_format_check",
        INSERT,
        (slug, "X", "active", "{}"),
    )


@pytest.mark.parametrize(
    "slug",
    [
        pytest.param("abc", id="3-chars"),
        pytest.param("a" * 50, id="50-chars"),
        pytest.param("a--b", id="inner-double-hyphen"),
        pytest.param("123", id="digits-only"),
        pytest.param("acme-corp-2", id="words-and-digits"),
    ],
)
def test_slug_check_accepts(conn: Conn, slug: str) -> None:
    assert insert(conn, slug)[1] == slug


def test_slug_is_unique(conn: Conn) -> None:
    insert(conn, "acme")
    violates(
        conn, errors.UniqueViolation, "tenants_slug_key", INSERT, ("acme", "Y", "active", "{}")
    )


def test_unknown_status_is_rejected(conn: Conn) -> None:
    with pytest.raises(errors.InvalidTextRepresentation, match="tenant_status"):
        conn.execute(INSERT, ("acme", "Acme", "deleted", "{}"))


def test_status_enum_has_exactly_active_and_suspended(conn: Conn) -> None:
    labels = conn.execute("SELECT enum_range(NULL::tenant_status)::text[]").fetchone()
    assert labels == (["active", "suspended"],)


def test_defaults(conn: Conn) -> None:
    row = conn.execute(
        "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme') "
        "RETURNING id IS NOT NULL, status, settings, created_at = now(), updated_at = now()"
    ).fetchone()
    assert row == (True, "active", {}, True, True)


@pytest.mark.parametrize("settings", ["[]", '"text"', "42", "true", "null"])
def test_settings_must_be_an_object(conn: Conn, settings: str) -> None:
    violates(
        conn,
        errors.CheckViolation,
        "tenants_settings_object_check",
        INSERT,
        ("acme", "Acme", "active", settings),
    )


# "\t\n" is blank too, but tenants_name_control_check refuses it first (checks run in name order).
@pytest.mark.parametrize("name", ["", " ", "\u00a0", "\u3000 \u2003"])
def test_blank_name_is_rejected(conn: Conn, name: str) -> None:
    violates(
        conn,
        errors.CheckViolation,
        "tenants_name_not_blank_check",
        INSERT,
        ("acme", name, "active", "{}"),
    )


def test_name_length_limit(conn: Conn) -> None:
    assert insert(conn, "longest", "n" * 255)[2] == "n" * 255
    violates(
        conn,
        errors.CheckViolation,
        "tenants_name_length_check",
        INSERT,
        ("acme", "n" * 256, "active", "{}"),
    )


def test_name_may_be_padded(conn: Conn) -> None:
    assert insert(conn, "acme", "  Acme  ")[2] == "  Acme  "


def test_not_null_columns(conn: Conn) -> None:
    with pytest.raises(errors.NotNullViolation):
        conn.execute("INSERT INTO tenants (slug, name) VALUES ('acme', NULL)")


def test_updated_at_cannot_precede_created_at(conn: Conn) -> None:
    violates(
        conn,
        errors.CheckViolation,
        "tenants_updated_at_check",
        "INSERT INTO tenants (slug, name, created_at, updated_at)"
        " VALUES ('acme', 'A', now(), now() - interval '1 day')",
        None,
    )


def timestamps(conn: Conn, slug: str = "acme") -> tuple[Any, Any]:
    row = conn.execute(
        "SELECT created_at, updated_at FROM tenants WHERE slug = %s", (slug,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_update_that_changes_the_row_advances_updated_at(conn: Conn) -> None:
    insert(conn)
    created, before = timestamps(conn)
    conn.execute("UPDATE tenants SET name = 'Acme 2' WHERE slug = 'acme'")
    assert timestamps(conn) > (created, before)
    assert timestamps(conn)[0] == created


def test_updated_at_advances_twice_in_one_transaction(conn: Conn) -> None:
    insert(conn)
    _, before = timestamps(conn)
    with conn.transaction():
        conn.execute("UPDATE tenants SET name = 'Acme 2' WHERE slug = 'acme'")
        _, first = timestamps(conn)
        conn.execute("UPDATE tenants SET status = 'suspended' WHERE slug = 'acme'")
        _, second = timestamps(conn)
    assert before < first < second


def test_update_that_changes_nothing_keeps_updated_at(conn: Conn) -> None:
    insert(conn, settings='{"plan": "pro"}')
    before = timestamps(conn)
    conn.execute(
        'UPDATE tenants SET name = name, status = status, settings = \'{"plan": "pro"}\' '
        "WHERE slug = 'acme'"
    )
    assert timestamps(conn) == before


def test_updated_at_cannot_be_written_by_hand(conn: Conn) -> None:
    insert(conn)
    before = timestamps(conn)
    conn.execute("UPDATE tenants SET updated_at = '2000-01-01' WHERE slug = 'acme'")
    assert timestamps(conn) == before
    conn.execute("UPDATE tenants SET name = 'B', updated_at = '2000-01-01' WHERE slug = 'acme'")
    assert timestamps(conn)[1] > before[1]


@pytest.mark.parametrize(
    ("assignment", "constraint"),
    [
        ("id = gen_random_uuid()", "tenants_id_immutable"),
        ("created_at = now() - interval '1 day'", "tenants_created_at_immutable"),
    ],
)
def test_id_and_created_at_cannot_change(conn: Conn, assignment: str, constraint: str) -> None:
    row = insert(conn)
    violates(
        conn,
        errors.CheckViolation,
        constraint,
        f"UPDATE tenants SET {assignment} WHERE slug = 'acme'",
        None,
    )
    assert conn.execute("SELECT * FROM tenants").fetchone() == row


def test_schema_documents_itself(conn: Conn) -> None:
    undocumented = conn.execute(
        """
        SELECT a.attname
        FROM pg_attribute a
        WHERE a.attrelid = 'tenants'::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND col_description(a.attrelid, a.attnum) IS NULL
        """
    ).fetchall()
    assert undocumented == []
    comments = conn.execute(
        """
        SELECT obj_description('tenants'::regclass, 'pg_class'),
               obj_description('tenant_status'::regtype, 'pg_type'),
               obj_description('tg_tenants__timestamps'::regproc, 'pg_proc'),
               obj_description('tg_tenants__reserved_slug'::regproc, 'pg_proc'),
               obj_description('reserved_slugs'::regclass, 'pg_class')
        """
    ).fetchone()
    assert comments is not None
    assert all(comments)


def test_every_constraint_and_the_trigger_say_their_rule(conn: Conn) -> None:
    """What a DBA sees with \\dd tenants* in psql: each rule, from the catalog."""
    rows = conn.execute(
        """
        SELECT conname, obj_description(oid, 'pg_constraint')
        FROM pg_constraint WHERE conrelid = 'tenants'::regclass
        UNION ALL
        SELECT tgname, obj_description(oid, 'pg_trigger')
        FROM pg_trigger WHERE tgrelid = 'tenants'::regclass AND NOT tgisinternal
        """
    ).fetchall()
    # 9 constraints; triggers tenants_timestamps, _reserved_slug, _admit_insert, _audit,
    # _audit_insert and the four _notify_*
    assert len(rows) == 18
    assert [name for name, comment in rows if not comment] == []
    comments = dict(rows)
    assert comments["tenants_slug_key"] == "No two tenants share a slug."


# --- reserved slugs (sql/0003) -----------------------------------------------------------------

RESERVED = "tenants_slug_reserved"


@pytest.mark.parametrize("slug", ["www", "api", "admin", "support"])
def test_a_reserved_slug_cannot_be_inserted(conn: Conn, slug: str) -> None:
    violates(conn, errors.CheckViolation, RESERVED, INSERT, (slug, "X", "active", "{}"))


def test_demo_is_not_reserved(conn: Conn) -> None:
    assert insert(conn, "demo", "Demo Tenant")[1] == "demo"


def test_a_tenant_cannot_be_renamed_to_a_reserved_slug(conn: Conn) -> None:
    row = insert(conn, "acme")
    violates(conn, errors.CheckViolation, RESERVED, "UPDATE tenants SET slug = 'www'", None)
    assert conn.execute("SELECT * FROM tenants").fetchone() == row


def test_a_dba_can_reserve_more_and_an_existing_holder_keeps_its_slug(conn: Conn) -> None:
    insert(conn, "acme")
    conn.execute(
        "INSERT INTO reserved_slugs (slug, reason) VALUES ('acme', 'now ours'), "
        "('billing-eu', 'EU billing host')"
    )
    violates(conn, errors.CheckViolation, RESERVED, INSERT, ("billing-eu", "X", "active", "{}"))
    # The tenant that held "acme" before it was reserved is still updated as any other.
    conn.execute("UPDATE tenants SET name = 'Acme 2', slug = slug WHERE slug = 'acme'")
    assert conn.execute("SELECT name FROM tenants WHERE slug = 'acme'").fetchone() == ("Acme 2",)


def test_a_statement_inserting_one_reserved_slug_among_many_inserts_none(conn: Conn) -> None:
    """Inserts are checked per statement (0009): the whole statement is refused, naming the
    first reserved slug in slug order, and leaves no tenant and no event behind."""
    slugs = [f"tenant-{i:03d}" for i in range(300)] + ["www", "api"]
    with pytest.raises(errors.CheckViolation) as caught:
        conn.execute(
            "INSERT INTO tenants (slug, name) SELECT slug, 'X' FROM unnest(%s::text[]) AS slug",
            [slugs],
        )
    diag = caught.value.diag
    assert (diag.constraint_name, diag.table_name, diag.column_name) == (
        RESERVED,
        "tenants",
        "slug",
    )
    assert diag.message_primary == 'the slug "api" is reserved for the platform'
    assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM tenant_events").fetchone() == (0,)


def copy_tenants(conn: Conn, rows: list[tuple[str, str]]) -> None:
    with conn.cursor() as cur, cur.copy("COPY tenants (slug, name) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def test_a_refused_insert_writes_no_audit_trail_before_it_is_refused(conn: Conn) -> None:
    """tenants_admit_insert fires before tenants_audit_insert (name order): a statement it
    refuses has not inserted events first (the sequence of their ids says so)."""
    before = conn.execute("SELECT nextval('tenant_events_id_seq')").fetchone()
    with pytest.raises(errors.CheckViolation):
        conn.execute(
            "INSERT INTO tenants (slug, name) SELECT slug, 'X' FROM unnest(%s::text[]) AS slug",
            [[f"tenant-{i:03d}" for i in range(100)] + ["www"]],
        )
    after = conn.execute("SELECT nextval('tenant_events_id_seq')").fetchone()
    assert before is not None
    assert after == (before[0] + 1,)


@pytest.mark.parametrize("rolled_back", [0, 1], ids=["migrated", "without-0009"])
def test_a_temporary_table_cannot_hide_the_reserved_slugs(
    conn: Conn, target: Target, rolled_back: int
) -> None:
    """The trigger functions read public.reserved_slugs (0008): a temporary table of the same
    name, first on any session's search_path, changes nothing; nor after 0009 is rolled back."""
    if rolled_back:
        migrations.rollback(target, count=rolled_back)
    insert(conn, "acme")
    conn.execute("CREATE TEMPORARY TABLE reserved_slugs (slug text)")
    violates(conn, errors.CheckViolation, RESERVED, "UPDATE tenants SET slug = 'www'", None)
    violates(conn, errors.CheckViolation, RESERVED, INSERT, ("admin", "X", "active", "{}"))


def test_a_slug_both_taken_and_reserved_is_refused_as_taken(conn: Conn) -> None:
    insert(conn, "acme")
    conn.execute("INSERT INTO reserved_slugs (slug, reason) VALUES ('acme', 'now ours')")
    violates(
        conn, errors.UniqueViolation, "tenants_slug_key", INSERT, ("acme", "X", "active", "{}")
    )


def test_copy_of_a_reserved_slug_is_refused(conn: Conn) -> None:
    with pytest.raises(errors.CheckViolation) as caught:
        copy_tenants(conn, [("acme", "Acme"), ("admin", "Admin")])
    assert caught.value.diag.constraint_name == RESERVED
    assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (0,)


def test_an_upsert_of_a_slug_held_before_it_was_reserved_leaves_its_holder_be(
    conn: Conn,
) -> None:
    """ON CONFLICT (slug) inserts nothing for a slug a tenant holds, so it takes nothing."""
    row = insert(conn, "acme")
    conn.execute("INSERT INTO reserved_slugs (slug, reason) VALUES ('acme', 'now ours')")
    conn.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'X') ON CONFLICT DO NOTHING")
    assert conn.execute("SELECT * FROM tenants").fetchall() == [row]
    conn.execute(
        "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme 2') "
        "ON CONFLICT (slug) DO UPDATE SET name = excluded.name"
    )
    assert conn.execute("SELECT slug, name FROM tenants").fetchall() == [("acme", "Acme 2")]
    violates(
        conn,
        errors.CheckViolation,
        RESERVED,
        "INSERT INTO tenants (slug, name) VALUES ('www', 'X') ON CONFLICT DO NOTHING",
        None,
    )


def test_renaming_many_tenants_stops_at_a_reserved_slug(conn: Conn) -> None:
    for slug in ("acme", "globex"):
        insert(conn, slug)
    conn.execute("INSERT INTO reserved_slugs (slug, reason) VALUES ('acme-x', 'kept')")
    violates(conn, errors.CheckViolation, RESERVED, "UPDATE tenants SET slug = slug || '-x'", None)
    assert conn.execute("SELECT slug FROM tenants ORDER BY 1").fetchall() == [
        ("acme",),
        ("globex",),
    ]


@pytest.mark.parametrize(
    ("slug", "reason", "constraint"),
    [
        ("Not A Slug", "x", "reserved_slugs_slug_format_check"),
        ("fine", " ", "reserved_slugs_reason_not_blank_check"),
    ],
)
def test_a_reservation_is_a_slug_with_a_reason(
    conn: Conn, slug: str, reason: str, constraint: str
) -> None:
    violates(
        conn,
        errors.CheckViolation,
        constraint,
        "INSERT INTO reserved_slugs (slug, reason) VALUES (%s, %s)",
        (slug, reason),
    )


# --- names: no control characters, at least one visible character -------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Evil\x1b[2J\x1b]0;owned\x07\rFake active", id="esc-bel-cr"),
        pytest.param("tab\tname", id="tab"),
        pytest.param("new\nline", id="newline"),
        pytest.param("del\x7f", id="del"),
        pytest.param("csi\x9b31m", id="c1-csi"),
    ],
)
def test_a_name_with_a_control_character_is_rejected(conn: Conn, name: str) -> None:
    violates(
        conn,
        errors.CheckViolation,
        "tenants_name_control_check",
        INSERT,
        ("acme", name, "active", "{}"),
    )


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("\u200b", id="zero-width-space"),
        pytest.param("\ufeff", id="byte-order-mark"),
        pytest.param("\u3164", id="hangul-filler"),
        pytest.param("\u2800", id="braille-blank"),
        pytest.param("\u200b\ufeff\u3164\u2800 \u00a0\u2060\u00ad", id="all-of-them"),
        pytest.param("\U000e0041\U000e0042", id="tag-characters"),
    ],
)
def test_a_name_of_invisible_characters_only_is_rejected(conn: Conn, name: str) -> None:
    violates(
        conn,
        errors.CheckViolation,
        "tenants_name_visible_check",
        INSERT,
        ("acme", name, "active", "{}"),
    )


def test_a_name_with_invisible_characters_and_a_visible_one_is_accepted(conn: Conn) -> None:
    assert insert(conn, "acme", "\u200bAcme\u2800")[2] == "\u200bAcme\u2800"


def test_the_name_checks_are_validated(conn: Conn) -> None:
    rows = conn.execute(
        "SELECT conname, convalidated FROM pg_constraint"
        " WHERE conrelid = 'tenants'::regclass AND conname LIKE 'tenants_name_%%'"
    ).fetchall()
    assert dict(rows) == {
        "tenants_name_not_blank_check": True,
        "tenants_name_length_check": True,
        "tenants_name_control_check": True,
        "tenants_name_visible_check": True,
    }
