"""dbtools.sqlalchemy: the mirror is exactly the table the migrations build, and works as a client.

Two comparisons keep the mirror exact: Alembic's autogenerate (what services run), and a stricter
one of the catalog, because Alembic compares neither CHECK constraints, nor enum labels, nor
constraint comments. The catalog of the migrated database is compared with that of a scratch
database built by ``metadata.create_all``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any, LiteralString

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg import errors as pg_errors
from psycopg import sql
from sqlalchemy import (
    URL,
    Column,
    Engine,
    ForeignKey,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    create_engine,
    select,
)
from sqlalchemy.dialects.postgresql import ENUM
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError
from sqlalchemy.orm import Session

from dbtools import db, tenants
from dbtools.config import Target
from dbtools.sqlalchemy import (
    CREATED_AT_IMMUTABLE,
    MIGRATION_OWNED_TABLES,
    SLUG_FORMAT_CHECK,
    SLUG_KEY,
    TABLE,
    Tenant,
    TenantStatus,
    include_object,
    metadata,
)
from tests.helpers import SERVER, run_python

Conn = psycopg.Connection[Any]
# One catalog entry ("column slug", "constraint tenants_pkey"...) and what the catalog says of it.
Description = dict[str, tuple[Any, ...]]

# Each column in order: type, collation, NOT NULL, default, identity, generated, comment, and
# the labels of its type when that is an enum.
COLUMNS = sql.SQL("""
    SELECT a.attname, row_number() OVER (ORDER BY a.attnum), format_type(a.atttypid, a.atttypmod),
           co.collname, a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity,
           a.attgenerated, col_description(a.attrelid, a.attnum),
           (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
            FROM pg_enum e WHERE e.enumtypid = a.atttypid)
    FROM pg_attribute a
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = {table}::regclass AND a.attnum > 0 AND NOT a.attisdropped
""")
# Every constraint as PostgreSQL prints it back (CHECK expressions normalised), and its comment.
CONSTRAINTS = sql.SQL("""
    SELECT conname, contype, pg_get_constraintdef(oid), obj_description(oid, 'pg_constraint')
    FROM pg_constraint
    WHERE conrelid = {table}::regclass
""")
INDEXES = sql.SQL("""
    SELECT i.relname, pg_get_indexdef(x.indexrelid)
    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
    WHERE x.indrelid = {table}::regclass
""")
TABLE_ITSELF = sql.SQL("""
    SELECT relname, relkind, relpersistence, reloptions, relrowsecurity,
           obj_description(oid, 'pg_class')
    FROM pg_class
    WHERE oid = {table}::regclass
""")
# What the catalog description holds at least, for the tenants table of sql/: were it empty on
# both sides, the comparison would prove nothing.
DESCRIBED = {
    f"table {TABLE}",
    *(f"column {name}" for name in tenants.COLUMNS),
    *(
        f"constraint tenants_{name}"
        for name in (
            "pkey",
            "slug_key",
            "slug_format_check",
            "name_not_blank_check",
            "name_control_check",
            "name_visible_check",
            "name_length_check",
            "settings_object_check",
            "updated_at_check",
        )
    ),
    "index tenants_pkey",
    "index tenants_slug_key",
}


def engine_for(target: Target) -> Engine:
    """An engine on ``target``'s database through psycopg 3, as a service would make one.

    The password goes where SQLAlchemy masks it; host and port stay libpq parameters, which
    also carry a socket folder or several hosts.
    """
    params = target.connect_kwargs()
    url = URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        database=params.pop("dbname"),
        query=params,
    )
    return create_engine(url)


def describe(conn: Conn) -> Description:
    """The catalog's description of the tenants table in the database of ``conn``.

    Triggers are left out: the mirror does not model them (its docstring says so).
    """
    table = sql.Literal(TABLE)
    described: Description = {}
    for kind, query in (
        ("table", TABLE_ITSELF),
        ("column", COLUMNS),
        ("constraint", CONSTRAINTS),
        ("index", INDEXES),
    ):
        for name, *rest in conn.execute(query.format(table=table)).fetchall():
            described[f"{kind} {name}"] = tuple(rest)
    return described


def differences(have: Description, want: Description) -> dict[str, tuple[Any, Any]]:
    """Each entry that differs: what the migrated database has, what the mirror builds."""
    return {
        key: (have.get(key), want.get(key))
        for key in sorted(have.keys() | want.keys())
        if have.get(key) != want.get(key)
    }


def alembic_differences(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate would change in the database to match ``metadata``."""

    def only_tenants(name: str | None, type_: str, parent_names: Any) -> bool:
        return type_ != "table" or name == TABLE  # yoyo's tables are none of the mirror's

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_name": only_tenants,
            },
        )
        return list(compare_metadata(context, metadata))


@pytest.fixture
def engine(target: Target) -> Iterator[Engine]:
    """An engine on this test's freshly migrated database."""
    engine = engine_for(target)
    yield engine
    engine.dispose()


@pytest.fixture
def mirror(missing_db: Target) -> Iterator[Conn]:
    """A connection to a scratch database holding what the mirror builds: first the enum type
    (from the mirror's ENUM, as the migrations create it before the table), then
    ``metadata.create_all``. The database is dropped afterwards."""
    with db.maintenance_connection(SERVER) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(missing_db.dbname)))
    engine = engine_for(missing_db)
    try:
        status = metadata.tables[TABLE].c.status.type
        assert isinstance(status, ENUM)
        with engine.begin() as connection:
            status.create(connection, checkfirst=False)
            metadata.create_all(connection)
    finally:
        engine.dispose()
    with db.connect(missing_db, autocommit=True) as conn:
        yield conn


# -- the mirror is the table -----------------------------------------------------------------


def test_alembic_finds_no_difference_with_the_migrated_database(engine: Engine) -> None:
    assert alembic_differences(engine) == []


def test_the_catalog_of_the_mirror_is_that_of_the_migrations(conn: Conn, mirror: Conn) -> None:
    migrated = describe(conn)
    assert set(migrated) >= DESCRIBED
    assert differences(migrated, describe(mirror)) == {}


@pytest.mark.parametrize(
    ("change", "entry", "alembic_sees_it"),
    [
        pytest.param("ALTER TABLE tenants ADD COLUMN plan text", "column plan", True, id="column"),
        pytest.param(
            "ALTER TABLE tenants DROP CONSTRAINT tenants_slug_format_check, "
            "ADD CONSTRAINT tenants_slug_format_check "
            "CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$'); "
            "COMMENT ON CONSTRAINT tenants_slug_format_check ON tenants IS "
            "'A slug is 3 to 50 lowercase ASCII letters, digits and hyphens, starting and ending "
            "with a letter or digit.'",
            "constraint tenants_slug_format_check",
            False,
            id="check",
        ),
        pytest.param(
            "ALTER TYPE tenant_status ADD VALUE 'archived'", "column status", False, id="enum"
        ),
        pytest.param(
            "CREATE INDEX tenants_created_at_idx ON tenants (created_at)",
            "index tenants_created_at_idx",
            True,
            id="index",
        ),
        pytest.param(
            "COMMENT ON COLUMN tenants.name IS 'The name.'", "column name", True, id="comment"
        ),
        pytest.param(
            "COMMENT ON CONSTRAINT tenants_slug_key ON tenants IS NULL",
            "constraint tenants_slug_key",
            False,
            id="constraint-comment",
        ),
    ],
)
def test_a_migration_the_mirror_does_not_follow_fails_the_comparison(
    conn: Conn,
    mirror: Conn,
    engine: Engine,
    change: LiteralString,
    entry: str,
    alembic_sees_it: bool,
) -> None:
    """What makes a forgotten update of dbtools/sqlalchemy.py fail CI."""
    conn.execute(change)
    assert list(differences(describe(conn), describe(mirror))) == [entry]
    if alembic_sees_it:
        assert alembic_differences(engine) != []


# -- the story through a Session ---------------------------------------------------------------


def test_the_story_runs_through_a_session(engine: Engine, conn: Conn) -> None:
    with Session(engine) as session:
        acme = Tenant(slug="acme", name="Acme Corp")
        session.add_all([acme, Tenant(slug="globex", name="Globex", settings={"plan": "pro"})])
        session.flush()  # the server's defaults come back with the INSERT
        assert acme.status is TenantStatus.ACTIVE
        assert acme.settings == {}
        assert acme.created_at == acme.updated_at
        assert acme.created_at.tzinfo is not None
        session.commit()
        acme_id, created_at = acme.id, acme.created_at

    # The psycopg data-access layer reads the same row.
    record = tenants.get_by_slug(conn, "acme")
    assert record is not None
    assert (record.id, record.name, record.created_at) == (acme_id, "Acme Corp", created_at)

    with Session(engine) as session:
        acme = session.scalars(select(Tenant).where(Tenant.slug == "acme")).one()
        assert (acme.id, acme.status) == (acme_id, TenantStatus.ACTIVE)

        acme.name = "Acme Inc"
        session.flush()  # the trigger's updated_at comes back with the UPDATE
        assert acme.updated_at > created_at
        acme.status = TenantStatus.SUSPENDED
        session.commit()
        suspended_records = tenants.list_tenants(conn, status=TenantStatus.SUSPENDED)
        assert [(t.slug, t.name) for t in suspended_records] == [("acme", "Acme Inc")]

        suspended = select(Tenant.slug).where(Tenant.status == TenantStatus.SUSPENDED)
        assert session.scalars(suspended).all() == ["acme"]
        active = select(Tenant.slug).where(Tenant.status == TenantStatus.ACTIVE)
        assert session.scalars(active).all() == ["globex"]

        session.delete(acme)
        session.commit()
        assert session.scalars(select(Tenant.slug)).all() == ["globex"]

    assert tenants.get_by_slug(conn, "acme") is None
    globex = tenants.get_by_slug(conn, "globex")
    assert globex is not None
    assert globex.settings == {"plan": "pro"}


def test_a_bad_slug_is_refused_by_its_check(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Tenant(slug="Not A Slug", name="Acme Corp"))
        with pytest.raises(IntegrityError) as caught:
            session.flush()
    assert isinstance(caught.value.orig, pg_errors.CheckViolation)
    assert caught.value.orig.diag.constraint_name == SLUG_FORMAT_CHECK


def test_a_taken_slug_is_refused_by_its_unique_constraint(engine: Engine, conn: Conn) -> None:
    tenants.create(conn, "acme", "Acme Corp")
    with Session(engine) as session:
        session.add(Tenant(slug="acme", name="Another Acme"))
        with pytest.raises(IntegrityError) as caught:
            session.flush()
    assert isinstance(caught.value.orig, pg_errors.UniqueViolation)
    assert caught.value.orig.diag.constraint_name == SLUG_KEY


def test_a_bogus_status_is_refused_by_the_enum(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Tenant(slug="acme", name="Acme Corp", status="bogus"))
        with pytest.raises(DataError) as caught:
            session.flush()
    assert isinstance(caught.value.orig, pg_errors.InvalidTextRepresentation)
    assert "tenant_status" in (caught.value.orig.diag.message_primary or "")


def test_created_at_cannot_be_changed(engine: Engine, conn: Conn) -> None:
    tenants.create(conn, "acme", "Acme Corp")
    with Session(engine) as session:
        acme = session.scalars(select(Tenant).where(Tenant.slug == "acme")).one()
        acme.created_at -= datetime.timedelta(days=1)
        with pytest.raises(IntegrityError) as caught:
            session.flush()
    assert isinstance(caught.value.orig, pg_errors.CheckViolation)
    assert caught.value.orig.diag.constraint_name == CREATED_AT_IMMUTABLE


def test_a_plain_string_status_column_is_refused_by_the_native_enum(engine: Engine) -> None:
    """Why the mirror uses the native ENUM: psycopg sends a String as varchar, and PostgreSQL
    casts no varchar to an enum on its own."""
    plain = Table(
        TABLE, MetaData(), Column("slug", Text), Column("name", Text), Column("status", String)
    )
    insert = plain.insert().values(slug="acme", name="Acme Corp", status="active")
    with engine.connect() as connection, pytest.raises(ProgrammingError) as caught:
        connection.execute(insert)
    assert isinstance(caught.value.orig, pg_errors.DatatypeMismatch)


# -- importing ---------------------------------------------------------------------------------


def test_dbtools_and_its_data_access_layer_do_not_import_sqlalchemy() -> None:
    script = (
        "import sys, dbtools, dbtools.tenants, dbtools.db\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'sqlalchemy'))"
    )
    result = run_python("-c", script)
    assert (result.returncode, result.stdout, result.stderr) == (0, "[]\n", "")


def test_without_sqlalchemy_the_import_error_says_what_to_install() -> None:
    script = "import sys\nsys.modules['sqlalchemy'] = None\nimport dbtools.sqlalchemy"
    result = run_python("-c", script)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "ImportError: dbtools.sqlalchemy needs SQLAlchemy 2: install it with "
        "pip install 'dbtools[sqlalchemy]'"
    )


def a_service_metadata() -> MetaData:
    """Another service's own models: a table of its own that references tenants."""
    service = MetaData()
    Table(
        "invoices",
        service,
        Column("id", Text, primary_key=True),
        Column("tenant_id", Uuid, ForeignKey(Tenant.id), nullable=False),
    )
    return service


def service_autogenerate(engine: Engine, **opts: Any) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, **opts})
        return list(compare_metadata(context, a_service_metadata()))


def test_include_object_keeps_a_service_autogenerate_off_the_migrations_tables(
    engine: Engine,
) -> None:
    """Without it, the service's autogenerate would drop tenants, yoyo's history and the
    checksums; with it, it only creates the service's own table."""
    unfiltered = {
        diff[1].name for diff in service_autogenerate(engine) if diff[0] == "remove_table"
    }
    assert unfiltered == MIGRATION_OWNED_TABLES
    filtered = service_autogenerate(engine, include_object=include_object)
    assert [(diff[0], diff[1].name) for diff in filtered] == [("add_table", "invoices")]


def test_the_owned_tables_are_every_table_the_migrations_make(conn: Conn) -> None:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    assert {row[0] for row in rows} == MIGRATION_OWNED_TABLES


def test_include_object_leaves_a_service_table_of_the_same_name_in_its_own_schema() -> None:
    service = MetaData(schema="billing")
    own_tenants = Table("tenants", service, Column("id", Text, primary_key=True))
    assert include_object(own_tenants, "tenants", "table", False, None) is True
    ours = metadata.tables[TABLE]
    assert include_object(ours, "tenants", "table", False, None) is False
    constraint_of_ours = next(iter(ours.constraints))
    assert include_object(constraint_of_ours, "any", "unique_constraint", False, None) is False
