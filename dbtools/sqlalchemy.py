"""The ``tenants`` table for services that use SQLAlchemy: ``metadata`` and the mapped ``Tenant``.

The SQL migrations in ``sql/`` are the source of truth of the table; this module is a mirror of
what they build, for SQLAlchemy 2 code (``pip install 'dbtools[sqlalchemy]'``)::

    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session
    from dbtools.sqlalchemy import Tenant

    engine = create_engine("postgresql+psycopg://app@db.internal/dbtools_system")
    with Session(engine) as session, session.begin():
        session.add(Tenant(slug="acme", name="Acme Corp"))       # status, id, times: the server's
        acme = session.scalars(select(Tenant).where(Tenant.slug == "acme")).one()

A test (``tests/test_sqlalchemy.py``) keeps the mirror exact: Alembic's autogenerate finds no
difference between ``metadata`` and a migrated database, and the catalog of a database built by
``metadata.create_all`` (every column, type, collation, default, constraint with its definition,
and every comment) equals that of the migrated one. A migration that changes the table fails that
test until this module is changed to match.

What the mirror does not model: the triggers ``tenants_timestamps``, ``tenants_admit_insert``
and ``tenants_reserved_slug`` and their functions, so nor the rules they enforce (``id`` and
``created_at`` never change, raising check_violation naming ``tenants_id_immutable`` /
``tenants_created_at_immutable``; ``updated_at`` is kept by the server whatever an UPDATE writes;
a new or renamed tenant may not take a slug listed in ``reserved_slugs``, raising check_violation
naming ``tenants_slug_reserved``), and the comments on the enum type and on the triggers.
The ``reserved_slugs`` table gets no mapped class: it is the DBA's list, read only by the trigger;
a service has no reason to write it through an ORM, and a mapped class would invite
``metadata.create_all`` or an autogenerate to create or alter it. It is in
:data:`MIGRATION_OWNED_TABLES`, so :func:`include_object` keeps a service's autogenerate off it.
Nor does ``tenant_events``, the audit trail (``sql/0005_audit-tenant-changes.sql``), nor the
triggers ``tenants_audit`` and ``tenants_audit_insert`` (0007) that write it: no client writes
events (the triggers do, as the migration owner; the runtime role may only read them, and a
trigger refuses every UPDATE and DELETE), so a mapped class would only offer writes that fail;
read it with
``dbtools.tenants.history``. It is in :data:`MIGRATION_OWNED_TABLES` too.
Nor the four statement-level triggers ``tenants_notify_insert``, ``_update``, ``_delete`` and
``_truncate`` and their function ``tg_tenants__notify`` (``sql/0006_notify-tenant-changes.sql``),
which announce each committed change on channel ``dbtools_tenants``: a flush is plain SQL, so
the changes of SQLAlchemy clients are announced too.
The rules of the triggers still hold for SQLAlchemy clients, because the database applies them;
``updated_at`` is declared server-updated, so the ORM reads it back after every flush.

SQLAlchemy must never create or drop this table, nor its type: it belongs to the migrations.
``tenant_status`` has ``create_type=False``; a service that runs Alembic autogenerate keeps
``tenants`` and the migrations' bookkeeping tables out of it with :func:`include_object` (see the
README, "Using the table from SQLAlchemy").
``settings`` is a plain JSONB column: assign a new dict to change it, as in-place mutation of the
dict is not tracked.

The constraint names are those of :mod:`dbtools.tenants` where it has them, so an
``IntegrityError`` maps with ``exc.orig.diag.constraint_name == SLUG_FORMAT_CHECK``.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Any

try:
    from sqlalchemy import (
        CheckConstraint,
        DateTime,
        FetchedValue,
        MetaData,
        PrimaryKeyConstraint,
        Text,
        UniqueConstraint,
        Uuid,
        text,
    )
    from sqlalchemy.dialects.postgresql import ENUM, JSONB
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
except ModuleNotFoundError as exc:  # only a missing SQLAlchemy; a broken install is re-raised
    if (exc.name or "").partition(".")[0] != "sqlalchemy":
        raise
    raise ImportError(
        "dbtools.sqlalchemy needs SQLAlchemy 2: install it with pip install 'dbtools[sqlalchemy]'"
    ) from exc

from dbtools.tenants import (
    NAME_CONTROL_CHECK,
    NAME_LENGTH_CHECK,
    NAME_NOT_BLANK_CHECK,
    NAME_VISIBLE_CHECK,
    SETTINGS_OBJECT_CHECK,
    SLUG_FORMAT_CHECK,
    SLUG_KEY,
    SLUG_RESERVED,
    TenantStatus,
)

__all__ = [
    "CREATED_AT_IMMUTABLE",
    "ID_IMMUTABLE",
    "MIGRATION_OWNED_TABLES",
    "NAME_CONTROL_CHECK",
    "NAME_LENGTH_CHECK",
    "NAME_NOT_BLANK_CHECK",
    "NAME_VISIBLE_CHECK",
    "PKEY",
    "RESERVED_SLUGS_TABLE",
    "SETTINGS_OBJECT_CHECK",
    "SLUG_FORMAT_CHECK",
    "SLUG_KEY",
    "SLUG_RESERVED",
    "TABLE",
    "UPDATED_AT_CHECK",
    "Base",
    "Tenant",
    "TenantStatus",
    "include_object",
    "metadata",
]

TABLE = "tenants"
# The slugs no tenant may take (sql/0003_reserve-slugs-and-check-names.sql); not mapped.
RESERVED_SLUGS_TABLE = "reserved_slugs"
# The constraint names tenants.py does not need, equal to those in sql/.
PKEY = "tenants_pkey"
UPDATED_AT_CHECK = "tenants_updated_at_check"
# Not constraints of the table: the names the trigger tg_tenants__timestamps reports (SQLSTATE
# check_violation) when an UPDATE changes id or created_at.
ID_IMMUTABLE = "tenants_id_immutable"
CREATED_AT_IMMUTABLE = "tenants_created_at_immutable"
# Every table the dbtools migrations own: tenants, the reserved slugs, the audit trail, yoyo's
# bookkeeping, dbtools' checksums.
MIGRATION_OWNED_TABLES = frozenset(
    {
        TABLE,
        RESERVED_SLUGS_TABLE,
        "tenant_events",
        "_yoyo_migration",
        "_yoyo_log",
        "_yoyo_version",
        "yoyo_lock",
        "_dbtools_migration_checksum",
    }
)


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """An Alembic ``include_object`` hook for another service's ``env.py``: leaves out every
    table the dbtools migrations own, and what belongs to them (columns, indexes, constraints),
    so that the service's autogenerate neither alters nor drops them."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    if getattr(table, "schema", None) not in (None, "public"):
        return True  # a service's own table of the same name, in a schema of its own
    return getattr(table, "name", None) not in MIGRATION_OWNED_TABLES


def _labels(enum_class: type[enum.Enum]) -> list[str]:
    """The SQL labels of an enum class: its values (SQLAlchemy would store the names)."""
    return [str(member.value) for member in enum_class]


class Base(DeclarativeBase):
    """The declarative base of the mirror; its ``metadata`` holds the ``tenants`` table only."""

    metadata = MetaData()


metadata = Base.metadata


class Tenant(Base):
    """One tenant of the platform: a row of the ``tenants`` table (as ``sql/`` defines it)."""

    __tablename__ = TABLE
    __table_args__ = (
        PrimaryKeyConstraint(
            "id",
            name=PKEY,
            comment="A tenant is identified by a generated UUID that never changes.",
        ),
        UniqueConstraint("slug", name=SLUG_KEY, comment="No two tenants share a slug."),
        CheckConstraint(
            "slug ~ '^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$'",
            name=SLUG_FORMAT_CHECK,
            comment=(
                "A slug is 3 to 50 lowercase ASCII letters, digits and hyphens, starting and "
                "ending with a letter or digit."
            ),
        ),
        CheckConstraint(
            r"name ~ '[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f"
            r"\u205f\u3000]'",
            name=NAME_NOT_BLANK_CHECK,
            comment=(
                "A name is not blank: it holds at least one character outside Unicode's "
                "White_Space set."
            ),
        ),
        CheckConstraint(
            r"name !~ '[\u0001-\u001f\u007f-\u009f]'",
            name=NAME_CONTROL_CHECK,
            comment="A name holds no control characters (U+0001-U+001F, U+007F-U+009F).",
        ),
        CheckConstraint(
            "name ~ '"
            r"[^\t\n\u000b\f\r \u0085\u00a0\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890"
            r"-\u0891\u08e2\u115f-\u1160\u1680\u17b4-\u17b5\u180b-\u180f\u2000-\u200f\u2028-"
            r"\u202f\u205f-\u206f\u2800\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U0"
            r"00110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d1"
            r"7a\U000e0000-\U000e0fff]"
            "'",
            name=NAME_VISIBLE_CHECK,
            comment=(
                "A name holds at least one visible character: not only White_Space, format or "
                "invisible characters."
            ),
        ),
        CheckConstraint(
            "char_length(name) <= 255",
            name=NAME_LENGTH_CHECK,
            comment="A name is at most 255 characters long.",
        ),
        CheckConstraint(
            "jsonb_typeof(settings) = 'object'",
            name=SETTINGS_OBJECT_CHECK,
            comment="Settings are a JSON object: never an array, a string, a number, a boolean "
            "or null.",
        ),
        CheckConstraint(
            "updated_at >= created_at",
            name=UPDATED_AT_CHECK,
            comment="A row is never updated before it was created.",
        ),
        {
            "comment": (
                "Every customer (tenant) of the platform; application code looks a tenant up by "
                "slug on every request."
            )
        },
    )
    # Server defaults and the trigger's updated_at come back with the INSERT or UPDATE itself
    # (RETURNING), not with a SELECT on first access.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy's own convention

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid,
        server_default=text("gen_random_uuid()"),
        comment="Stable identifier, generated on insert and never changed.",
    )
    slug: Mapped[str] = mapped_column(
        Text(collation="C"),
        comment="URL-safe handle: 3-50 of a-z, 0-9 and -, no leading or trailing hyphen. Unique.",
    )
    name: Mapped[str] = mapped_column(
        Text,
        comment=(
            "Display name: at least one visible character, no control characters, at most 255 "
            "characters."
        ),
    )
    status: Mapped[TenantStatus] = mapped_column(
        # The type belongs to the migrations: never created or dropped by SQLAlchemy.
        ENUM(TenantStatus, name="tenant_status", create_type=False, values_callable=_labels),
        server_default=text("'active'"),
        comment="Whether the tenant is served (active) or refused service (suspended).",
    )
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONB,
        server_default=text("'{}'"),
        comment="Per-tenant configuration, always a JSON object.",
    )
    created_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True),
        server_default=text("now()"),
        comment="When the row was inserted; never changed by an update.",
    )
    updated_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True),
        server_default=text("now()"),
        server_onupdate=FetchedValue(),  # set by the trigger on every UPDATE that changes the row
        comment=(
            "When the row last changed; kept by trigger tenants_timestamps, untouched by updates "
            "that change nothing."
        ),
    )
