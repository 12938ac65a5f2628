"""Reading and changing tenants: parameterised SQL in, frozen :class:`Tenant` records out.

Every function takes a psycopg connection first and leaves its transaction to the caller: nothing
here commits, rolls back a caller's work, or closes the connection. Each operation is one SQL
statement, so one round trip, and writes are decided by the database (``ON CONFLICT``,
``RETURNING``), never by a read followed by a write::

    import psycopg
    from dbtools import db, tenants

    with db.connect(autocommit=True) as conn:           # each call is its own transaction
        acme = tenants.create(conn, "acme", "Acme Corp")
        tenants.get_by_slug(conn, "acme")                # -> Tenant | None

    with db.connect() as conn, conn.transaction():      # or group calls in your transaction
        tenants.suspend(conn, "acme")
        tenants.update(conn, "acme", settings={"plan": "pro"})

When an error is raised, the connection is still usable: inside a transaction the write ran in a
savepoint that was rolled back; outside one, the failed statement was its own transaction. The
errors are those of :mod:`dbtools.errors`; nothing documented surfaces as a raw psycopg error.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, LiteralString, TypeVar
from uuid import UUID

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.rows import tuple_row
from pydantic import AwareDatetime, BaseModel, ConfigDict

from dbtools.db import Scope, opens_transaction, raise_failure, roll_back_opened, scope
from dbtools.errors import (
    Conflict,
    DbToolsError,
    DuplicateSlug,
    InvalidActor,
    InvalidSlug,
    InvalidTenant,
    ReservedSlug,
    TenantInUse,
    TenantNotFound,
    excerpt,
)
from dbtools.jsonnumbers import exact, exact_float, exact_int, fits_numeric, marked, unmarked
from dbtools.slugs import is_valid_slug, validate_new_slug, validate_slug

__all__ = [
    "ACTOR_MAX_LENGTH",
    "NAME_MAX_LENGTH",
    "SETTINGS_MAX_DEPTH",
    "Tenant",
    "TenantEvent",
    "TenantEventKind",
    "TenantStatus",
    "acting_as",
    "activate",
    "create",
    "delete",
    "get_by_id",
    "get_by_slug",
    "get_many",
    "get_or_create",
    "history",
    "list_tenants",
    "load_settings",
    "settings_json",
    "suspend",
    "update",
    "validate_actor",
    "validate_name",
]

NAME_MAX_LENGTH = 255
# Settings are configuration, not documents: deeper nesting is refused, so that every reader
# (Pydantic, json, the CLI) can handle every stored tenant.
SETTINGS_MAX_DEPTH = 100
# \u0000 written by json.dumps, i.e. not preceded by an escaped backslash of the content.
_escaped_nul = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
LIST_LIMIT_MAX = 1000
# What a name may not be made of only, as spelled out in the tenants_name_visible_check
# constraint (sql/0003_reserve-slugs-and-check-names.sql), code point ranges in the same order:
# Unicode's White_Space, every format character (Cf), every Default_Ignorable_Code_Point and the
# Braille blank U+2800, as of Unicode 15.1. A test compares the two for every code point.
NAME_BLANK_RANGES: tuple[tuple[int, int], ...] = (
    (0x09, 0x0D),  # \t \n \v \f \r
    (0x20, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0xAD, 0xAD),
    (0x034F, 0x034F),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x115F, 0x1160),
    (0x1680, 0x1680),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x206F),
    (0x2800, 0x2800),
    (0x3000, 0x3000),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Control characters, as the tenants_name_control_check constraint lists them (NUL apart: text
# cannot hold it, and validate_name says so on its own).
NAME_CONTROL_RANGES: tuple[tuple[int, int], ...] = ((0x01, 0x1F), (0x7F, 0x9F))


def _character_class(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(
        re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
        for low, high in ranges
    )


_has_visible = re.compile(f"[^{_character_class(NAME_BLANK_RANGES)}]").search
_has_control = re.compile(f"[{_character_class(NAME_CONTROL_RANGES)}]").search

# Constraint names, equal to those in sql/: errors are mapped by name, never by message text.
SLUG_KEY = "tenants_slug_key"
SLUG_FORMAT_CHECK = "tenants_slug_format_check"
NAME_NOT_BLANK_CHECK = "tenants_name_not_blank_check"
NAME_VISIBLE_CHECK = "tenants_name_visible_check"
NAME_CONTROL_CHECK = "tenants_name_control_check"
# Not a constraint: the name the trigger functions tg_tenants__reserved_slug(_insert) report
# (SQLSTATE check_violation) when a new or renamed tenant takes a slug listed in reserved_slugs.
SLUG_RESERVED = "tenants_slug_reserved"
NAME_LENGTH_CHECK = "tenants_name_length_check"
SETTINGS_OBJECT_CHECK = "tenants_settings_object_check"


class TenantStatus(enum.StrEnum):
    """Lifecycle of a tenant; the labels of the SQL enum ``tenant_status``."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


class Tenant(BaseModel):
    """One tenant of the platform: a row of the ``tenants`` table."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    slug: str
    name: str
    status: TenantStatus
    settings: dict[str, Any]
    created_at: AwareDatetime
    updated_at: AwareDatetime


class TenantEventKind(enum.StrEnum):
    """What happened to a tenant; the labels of the SQL enum ``tenant_event_kind``."""

    CREATED = "created"
    RENAMED = "renamed"
    SLUG_CHANGED = "slug_changed"
    SETTINGS_CHANGED = "settings_changed"
    SUSPENDED = "suspended"
    ACTIVATED = "activated"
    DELETED = "deleted"


class TenantEvent(BaseModel):
    """One recorded change of a tenant: a row of the ``tenant_events`` table.

    ``old_values`` and ``new_values`` hold the changed columns by name, as JSON (``id`` and
    the times are strings): the whole row for a creation (``new_values``) and a deletion
    (``old_values``), else only the column the event is about (``name``, ``slug``,
    ``settings`` or ``status``). ``db_user`` is the role that logged in; ``actor`` is who the
    application said made the change (:func:`acting_as`), or None."""

    model_config = ConfigDict(frozen=True)

    id: int
    tenant_id: UUID
    slug: str
    kind: TenantEventKind
    old_values: dict[str, Any] | None
    new_values: dict[str, Any] | None
    occurred_at: AwareDatetime
    db_user: str
    actor: str | None


EVENT_COLUMNS = tuple(TenantEvent.model_fields)
# The setting the trigger tg_tenants__audit reads the actor from (sql/0005_audit-*.sql).
ACTOR_SETTING = "dbtools.actor"
# As the tenant_events_actor_length_check constraint says.
ACTOR_MAX_LENGTH = 255


# Every query below selects exactly these columns in this order, the fields of Tenant (a test
# checks it), so rows map by position: psycopg's class_row would rebuild the column names from
# the cursor description on every call, measurably slower on the hot path (bench/). Settings
# come as jsonb's text and are parsed by load_settings, which reads every jsonb value (psycopg's
# loader, json.loads, fails on a number of more than 4300 digits), at the cost of json.loads.
COLUMNS = tuple(Tenant.model_fields)


_validate_tenant = Tenant.__pydantic_validator__.validate_python


def _make_tenant(values: Sequence[Any]) -> Tenant:
    """A row of COLUMNS as a Tenant, validated. Written out rather than dict(zip(...)) and
    Tenant(**fields): about 2 us a row less. The queries select COLUMNS in this order
    (tests/test_queries.py)."""
    id_, slug, name, status, settings, created_at, updated_at = values
    tenant: Tenant = _validate_tenant(
        {
            "id": id_,
            "slug": slug,
            "name": name,
            "status": status,
            "settings": load_settings(settings),
            "created_at": created_at,
            "updated_at": updated_at,
        }
    )
    return tenant


# jsonb numbers are PostgreSQL numerics: up to 131072 digits before the point. json.loads would
# raise ValueError on an integer of more than 4300 digits (Python's int/str limit) and turn a
# fraction beyond a float's range into inf or 0.0; such numbers come back as Decimal, exactly
# (jsonnumbers.exact, which also parses the JSON users give).
_settings_decoder = exact


def load_settings(text: str) -> dict[str, Any]:
    """Settings as the ``tenants`` queries return them (``settings::text``), parsed. Every
    ``jsonb`` object loads: numbers that neither int nor float holds exactly are Decimal, and
    nesting deeper than Python's recursion limit (jsonb allows thousands of levels) is parsed
    without recursion."""
    try:
        value: dict[str, Any] = _settings_decoder.decode(text)
    except RecursionError:
        value = _decode_deep(text)
    return value


# One JSON token of jsonb's text output: punctuation, a string, a number, or a literal.
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<punct>[][{}:,])
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<number>-?(?:0|[1-9][0-9]*)(?P<fraction>(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?))
      | (?P<literal>true|false|null)
    )""",
    re.VERBOSE | re.DOTALL,
)
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


def _decode_deep(text: str) -> Any:
    """``_settings_decoder.decode(text)`` with an explicit stack instead of recursion."""
    open_values: list[dict[str, Any] | list[Any]] = []
    keys: list[str | None] = []  # per open object: the key awaiting its value
    pos = 0
    while True:
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"not JSON at character {pos}")
        pos = match.end()
        punct, string, number, literal = match.group("punct", "string", "number", "literal")
        if punct in ("{", "["):
            open_values.append({} if punct == "{" else [])
            keys.append(None)
            continue
        if punct in (":", ","):
            continue
        if punct is not None:  # } or ]: the open value is complete
            value: Any = open_values.pop()
            keys.pop()
        elif string is not None:
            value = json.loads(string)  # one string: its escapes, no nesting
            if open_values and isinstance(open_values[-1], dict) and keys[-1] is None:
                keys[-1] = value
                continue
        elif number is not None:
            value = exact_float(number) if match.group("fraction") else exact_int(number)
        else:
            value = _LITERALS[literal]
        if not open_values:
            if text[pos:].strip():
                raise ValueError(f"extra data at character {pos}")
            return value
        parent = open_values[-1]
        if isinstance(parent, dict):
            parent[str(keys[-1])] = value
            keys[-1] = None
        else:
            parent.append(value)


def _tenant_row(cursor: Any) -> Callable[[Sequence[Any]], Tenant]:
    """psycopg row factory: rows of a tenants query become Tenant records."""
    return _make_tenant


GET_BY_SLUG: LiteralString = """
    SELECT id, slug, name, status, settings::text AS settings, created_at, updated_at
    FROM tenants
    WHERE slug = %(slug)s
"""

GET_BY_ID: LiteralString = """
    SELECT id, slug, name, status, settings::text AS settings, created_at, updated_at
    FROM tenants
    WHERE id = %(id)s
"""

# The many-row reads ask for binary results (_Call.binary): psycopg loads a uuid and a
# timestamptz faster from their binary form, and these queries load thousands. The enum's
# binary form would load as bytes (psycopg knows no tenant_status), hence status::text.
GET_MANY: LiteralString = """
    SELECT id, slug, name, status::text AS status, settings::text AS settings, created_at,
           updated_at
    FROM tenants
    WHERE slug = ANY(%(slugs)s::text[])
"""

# Keyset pagination: the unique index on slug serves both the range and the order, so every page
# costs the same. '' sorts before every slug, and an empty status filter means "any status", so
# one statement (and one cached plan) serves every combination of arguments.
LIST: LiteralString = """
    SELECT id, slug, name, status::text AS status, settings::text AS settings, created_at,
           updated_at
    FROM tenants
    WHERE slug > %(after)s
      AND (cardinality(%(statuses)s::tenant_status[]) = 0
           OR status = ANY(%(statuses)s::tenant_status[]))
    ORDER BY slug
    LIMIT %(limit)s
"""

INSERT: LiteralString = """
    INSERT INTO tenants (slug, name, settings)
    VALUES (%(slug)s, %(name)s, %(settings)s::jsonb)
    RETURNING id, slug, name, status, settings::text AS settings, created_at, updated_at
"""

INSERT_IF_ABSENT: LiteralString = """
    INSERT INTO tenants (slug, name, settings)
    VALUES (%(slug)s, %(name)s, %(settings)s::jsonb)
    ON CONFLICT (slug) DO NOTHING
    RETURNING id, slug, name, status, settings::text AS settings, created_at, updated_at
"""

# NULL means "leave as it is"; the trigger keeps updated_at when nothing actually changes.
UPDATE: LiteralString = """
    UPDATE tenants
    SET name = coalesce(%(name)s::text, name),
        settings = coalesce(%(settings)s::jsonb, settings)
    WHERE slug = %(slug)s
    RETURNING id, slug, name, status, settings::text AS settings, created_at, updated_at
"""

SET_STATUS: LiteralString = """
    UPDATE tenants
    SET status = %(status)s::tenant_status
    WHERE slug = %(slug)s
    RETURNING id, slug, name, status, settings::text AS settings, created_at, updated_at
"""

DELETE: LiteralString = """
    DELETE FROM tenants
    WHERE slug = %(slug)s
"""

# Every event of every tenant that ever had the slug, even for a moment: a tenant renamed from
# or to it, one deleted and one created again under it. The columns are TenantEvent's fields.
HISTORY: LiteralString = """
    SELECT id, tenant_id, slug, kind, old_values::text AS old_values,
           new_values::text AS new_values, occurred_at, db_user, actor
    FROM tenant_events
    WHERE tenant_id IN (SELECT e.tenant_id FROM tenant_events e WHERE e.slug = %(slug)s)
    ORDER BY id
"""

# set_config(..., true) lasts until the end of the transaction, even behind a transaction
# pooler; the previous value comes back so that the block can restore it. The select list is
# evaluated in order: the setting is read before it is set.
# The actor is marked with the id of the transaction it is set in: the audit trigger takes
# only a value of its own transaction, never one left on a pooled session by another client.
SET_ACTOR: LiteralString = """
    SELECT current_setting('dbtools.actor', true),
           set_config('dbtools.actor', pg_current_xact_id()::text || ':' || %(actor)s, true)
"""
RESTORE_ACTOR: LiteralString = "SELECT set_config('dbtools.actor', %(actor)s, true)"


def get_by_slug(conn: psycopg.Connection[Any], slug: str) -> Tenant | None:
    """The tenant with ``slug``, or None; a string that cannot be a slug is not looked up."""
    if not is_valid_slug(slug):
        return None
    # The hot path: a READ _Call written out, without building one or entering a context-manager
    # generator (bench/). dbtools.aio.tenants mirrors it.
    opened = opens_transaction(conn)
    try:
        with conn.cursor(row_factory=_tenant_row) as cur:
            cur.execute(GET_BY_SLUG, {"slug": slug})
            return cur.fetchone()
    except psycopg.Error as exc:
        raise_failure(conn, exc, opened)
    except BaseException:  # interrupted: Ctrl-C, a signal's exception
        roll_back_opened(conn, opened)
        raise


def get_by_id(conn: psycopg.Connection[Any], tenant_id: UUID) -> Tenant | None:
    """The tenant with ``tenant_id``, or None."""
    return _run(conn, _get_by_id_call(tenant_id))


def get_many(conn: psycopg.Connection[Any], slugs: Iterable[str]) -> dict[str, Tenant]:
    """The tenants with these slugs, by slug, in one round trip; unknown and invalid ones are
    absent. ``slugs`` is a collection of slugs: a single string is a TypeError."""
    return _run(conn, _get_many_call(slugs))


def list_tenants(
    conn: psycopg.Connection[Any],
    *,
    status: TenantStatus | str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[Tenant]:
    """Up to ``limit`` (1-1000) tenants ordered by slug, those after slug ``after`` when given.

    Pass the last slug of a page as ``after`` to get the next page; an empty list is the end.
    """
    return _run(conn, _list_call(status, after, limit))


def create(
    conn: psycopg.Connection[Any],
    slug: str,
    name: str,
    *,
    settings: Mapping[str, Any] | None = None,
) -> Tenant:
    """Insert a new tenant; raises :class:`DuplicateSlug` if the slug is taken and
    :class:`ReservedSlug` if the platform keeps it for itself."""
    return _run(conn, _create_call(slug, name, settings))


def get_or_create(
    conn: psycopg.Connection[Any],
    slug: str,
    name: str,
    *,
    settings: Mapping[str, Any] | None = None,
) -> tuple[Tenant, bool]:
    """The tenant with ``slug``, inserted with ``name`` and ``settings`` if absent, and whether
    it was inserted.

    Safe under concurrency: of several callers racing on one slug exactly one inserts, and an
    existing tenant is returned untouched (``updated_at`` included).
    """
    insert = _insert_if_absent_call(slug, name, settings)
    opened = opens_transaction(conn)  # by the first statement: the second finds it open
    try:
        for _ in range(GET_OR_CREATE_TRIES):  # retried only if the tenant is deleted in between
            inserted = _run(conn, insert)
            if inserted is not None:
                return inserted, True
            existing = get_by_slug(conn, slug)
            if existing is not None:
                return existing, False
        raise _deleted_each_time(slug)
    except BaseException:
        roll_back_opened(conn, opened)
        raise


def update(
    conn: psycopg.Connection[Any],
    slug: str,
    *,
    name: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Tenant:
    """Change the name and/or replace the settings of a tenant; what is not given stays."""
    return _run(conn, _update_call(slug, name, settings))


def suspend(conn: psycopg.Connection[Any], slug: str) -> Tenant:
    """Suspend a tenant; suspending a suspended tenant changes nothing and returns it."""
    return _run(conn, _set_status_call(slug, TenantStatus.SUSPENDED))


def activate(conn: psycopg.Connection[Any], slug: str) -> Tenant:
    """Activate a tenant; activating an active tenant changes nothing and returns it."""
    return _run(conn, _set_status_call(slug, TenantStatus.ACTIVE))


def delete(conn: psycopg.Connection[Any], slug: str) -> None:
    """Delete a tenant; raises :class:`TenantNotFound` if there is none with ``slug``."""
    _run(conn, _delete_call(slug))


def history(conn: psycopg.Connection[Any], slug: str) -> list[TenantEvent]:
    """Every recorded change of the tenants that ever had ``slug``, oldest first; also after
    their deletion. Empty when no tenant ever had it (a string that cannot be a slug is not
    looked up)."""
    return _run(conn, _history_call(slug))


@contextmanager
def acting_as(conn: psycopg.Connection[Any], actor: str) -> Iterator[None]:
    """Record ``actor`` (a user name, a service, a ticket: 1 to 255 characters) as who makes
    the changes of tenants in the block, in ``tenant_events.actor``::

        with db.connect(autocommit=True) as conn, tenants.acting_as(conn, "alice"):
            tenants.suspend(conn, "acme")

    The actor is set for the current transaction only (``set_config(..., true)``), so it never
    leaks to the next transaction, nor to another client behind a transaction pooler. In
    autocommit mode the block runs in one transaction of its own, committed when the block ends
    (and rolled back if it raises). Inside the caller's transaction (or opening it, when not in
    autocommit mode) the caller still owns the transaction: the block sets the actor and, at its
    end, puts back the one that was set before. Do not end the transaction inside the block:
    later changes there would have no actor.
    """
    set_actor = _set_actor_call(actor)
    if _acts_in_a_transaction_of_its_own(conn):
        with conn.transaction():
            _run(conn, set_actor)
            yield
        return
    previous = _run(conn, set_actor)
    try:
        yield
    finally:
        if _restores_actor(conn):
            _run(conn, _restore_actor_call(previous))


# -- one statement of an operation, without I/O ----------------------------------------------
#
# Each operation but the two hot or multi-statement ones above (get_by_slug, get_or_create,
# acting_as) is one Call: the validation runs when the Call is built, then _run here, or the
# awaited twin in dbtools.aio.tenants, sends it and hands the rows to its result function.

R = TypeVar("R")
GET_OR_CREATE_TRIES = 3


@dataclass(frozen=True, slots=True)
class _Call(Generic[R]):
    """One statement of an operation on tenants, validated, and what its rows mean."""

    scope: Scope
    sql: LiteralString | None  # None: the answer is known without asking the database
    params: Mapping[str, Any]
    rows: Callable[[Any], Callable[[Sequence[Any]], Any]]  # a psycopg row factory
    result: Callable[[list[Any], int, str], R]  # (rows, rowcount, slug) -> the answer
    slug: str = ""  # what the errors of a write name
    binary: bool = False  # rows in binary format: for the many-row reads (see GET_MANY)


def _run(conn: psycopg.Connection[Any], call: _Call[R]) -> R:
    """Send ``call`` on ``conn`` in its scope; its answer, or the dbtools error it maps to."""
    if call.sql is None:
        return call.result([], 0, call.slug)
    try:
        with scope(conn, call.scope), conn.cursor(row_factory=call.rows, binary=call.binary) as cur:
            cur.execute(call.sql, call.params)
            rows = cur.fetchall() if _has_rows(cur) else []
            return call.result(rows, cur.rowcount, call.slug)
    except psycopg.Error as exc:
        mapped = None if call.scope is Scope.READ else write_error(exc, call.slug)
        if mapped is None:
            raise
        raise mapped from exc


def _has_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether the statement just run returned rows (not a DELETE). Asked of libpq's result:
    ``cur.description`` would build a Column object per column on every call."""
    result = cur.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def _answer(value: R) -> _Call[R]:
    """A Call that needs no statement: the answer is ``value``."""
    return _Call(Scope.READ, None, {}, tuple_row, lambda rows, count, slug: value)


def _first_or_none(rows: list[Any], count: int, slug: str) -> Any:
    return rows[0] if rows else None


def _all_rows(rows: list[Any], count: int, slug: str) -> list[Any]:
    return rows


def _by_slug(rows: list[Tenant], count: int, slug: str) -> dict[str, Tenant]:
    return {tenant.slug: tenant for tenant in rows}


def _the_tenant(rows: list[Tenant], count: int, slug: str) -> Tenant:
    if not rows:
        raise TenantNotFound(slug)
    return rows[0]


def _one_deleted(rows: list[Any], count: int, slug: str) -> None:
    if count == 0:
        raise TenantNotFound(slug)


def _first_value(rows: list[Any], count: int, slug: str) -> Any:
    return rows[0][0] if rows else None


def _deleted_each_time(slug: str) -> Conflict:
    tries = GET_OR_CREATE_TRIES
    return Conflict(f"tenant {slug!r} was deleted each time it was about to be read, {tries} times")


def _get_by_id_call(tenant_id: UUID) -> _Call[Tenant | None]:
    if not isinstance(tenant_id, UUID):
        raise TypeError(f"tenant_id must be a uuid.UUID, not {type(tenant_id).__name__}")
    return _Call(Scope.READ, GET_BY_ID, {"id": tenant_id}, _tenant_row, _first_or_none)


def _get_many_call(slugs: Iterable[str]) -> _Call[dict[str, Tenant]]:
    if isinstance(slugs, str | bytes):
        raise TypeError(f"slugs must be an iterable of slugs, not one {type(slugs).__name__}")
    wanted = list({slug for slug in slugs if is_valid_slug(slug)})
    if not wanted:
        return _answer({})
    return _Call(Scope.READ, GET_MANY, {"slugs": wanted}, _tenant_row, _by_slug, binary=True)


def _list_call(
    status: TenantStatus | str | None, after: str | None, limit: int
) -> _Call[list[Tenant]]:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit must be an integer from 1 to {LIST_LIMIT_MAX}, not {limit!r}")
    statuses = [] if status is None else [TenantStatus(status).value]
    if after is not None and not (
        isinstance(after, str) and "\x00" not in after and encodable(after)
    ):
        raise InvalidSlug(after, "`after` must be text without NUL characters or lone surrogates")
    params = {"after": after or "", "statuses": statuses, "limit": limit}
    return _Call(Scope.READ, LIST, params, _tenant_row, _all_rows, binary=True)


def _create_call(slug: str, name: str, settings: Mapping[str, Any] | None) -> _Call[Tenant]:
    params = _new_tenant_params(slug, name, settings)
    return _Call(Scope.WRITE, INSERT, params, _tenant_row, _the_tenant, slug)


def _insert_if_absent_call(
    slug: str, name: str, settings: Mapping[str, Any] | None
) -> _Call[Tenant | None]:
    params = _new_tenant_params(slug, name, settings)
    return _Call(Scope.WRITE, INSERT_IF_ABSENT, params, _tenant_row, _first_or_none, slug)


def _update_call(slug: str, name: str | None, settings: Mapping[str, Any] | None) -> _Call[Tenant]:
    validate_slug(slug)
    params = {
        "slug": slug,
        "name": None if name is None else validate_name(slug, name),
        "settings": None if settings is None else settings_json(slug, settings),
    }
    return _Call(Scope.WRITE, UPDATE, params, _tenant_row, _the_tenant, slug)


def _set_status_call(slug: str, status: TenantStatus) -> _Call[Tenant]:
    validate_slug(slug)
    params = {"slug": slug, "status": status.value}
    return _Call(Scope.WRITE, SET_STATUS, params, _tenant_row, _the_tenant, slug)


def _delete_call(slug: str) -> _Call[None]:
    validate_slug(slug)
    return _Call(Scope.WRITE, DELETE, {"slug": slug}, tuple_row, _one_deleted, slug)


def _history_call(slug: str) -> _Call[list[TenantEvent]]:
    if not is_valid_slug(slug):
        return _answer([])
    return _Call(Scope.READ, HISTORY, {"slug": slug}, _event_row, _all_rows)


def _set_actor_call(actor: str) -> _Call[str | None]:
    """Set the actor for the rest of the transaction; the answer is the value it had before."""
    validate_actor(actor)
    return _Call(Scope.READ, SET_ACTOR, {"actor": actor}, tuple_row, _first_value)


def _restore_actor_call(previous: str | None) -> _Call[str | None]:
    return _Call(Scope.READ, RESTORE_ACTOR, {"actor": previous or ""}, tuple_row, _first_value)


def _acts_in_a_transaction_of_its_own(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether :func:`acting_as` opens a transaction for its block: autocommit, and idle."""
    return conn.autocommit and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE


def _restores_actor(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether :func:`acting_as` puts the previous actor back: the transaction is still open."""
    return not conn.closed and conn.pgconn.transaction_status == pq.TransactionStatus.INTRANS


def validate_actor(actor: object) -> str:
    """Return ``actor`` if ``tenant_events`` accepts it, else raise :class:`InvalidActor`."""
    if not isinstance(actor, str):
        raise InvalidActor(actor, f"must be a string, not {type(actor).__name__}")
    if not 1 <= len(actor) <= ACTOR_MAX_LENGTH:
        raise InvalidActor(actor, f"must be 1 to {ACTOR_MAX_LENGTH} characters, not {len(actor)}")
    if not actor.isprintable():
        raise InvalidActor(actor, "must not contain control characters")
    if not actor.strip():  # it would look like no actor at all in the history
        raise InvalidActor(actor, "must not be blank")
    if not encodable(actor):
        raise InvalidActor(actor, "must be valid Unicode (it holds a lone surrogate)")
    return actor


def _make_event(values: Sequence[Any]) -> TenantEvent:
    fields = dict(zip(EVENT_COLUMNS, values, strict=True))
    for column in ("old_values", "new_values"):
        if fields[column] is not None:
            fields[column] = load_settings(fields[column])
    return TenantEvent(**fields)


def _event_row(cursor: Any) -> Callable[[Sequence[Any]], TenantEvent]:
    """psycopg row factory: rows of the history query become TenantEvent records."""
    return _make_event


def _new_tenant_params(slug: str, name: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    validate_new_slug(slug)
    return {
        "slug": slug,
        "name": validate_name(slug, name),
        "settings": settings_json(slug, {} if settings is None else settings),
    }


def validate_name(slug: str, name: object) -> str:
    """Return ``name`` if the schema accepts it for tenant ``slug``, else raise InvalidTenant."""
    if not isinstance(name, str):
        raise InvalidTenant(slug, "name", f"must be a string, not {type(name).__name__}")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidTenant(
            slug, "name", f"must be at most {NAME_MAX_LENGTH} characters, not {len(name)}"
        )
    if _has_visible(name) is None:
        reason = "must not be blank (spaces, format or invisible characters only)"
        raise InvalidTenant(slug, "name", reason)
    if "\x00" in name:
        raise InvalidTenant(slug, "name", "must not contain NUL characters")
    control = _has_control(name)
    if control is not None:
        shown = repr(control.group())
        raise InvalidTenant(slug, "name", f"must not contain control characters ({shown})")
    if not encodable(name):
        raise InvalidTenant(slug, "name", "must be valid Unicode (it holds a lone surrogate)")
    return name


def settings_json(slug: str, settings: object) -> str:
    """``settings`` as the JSON text of an object, or InvalidTenant saying why it cannot be."""
    if not isinstance(settings, Mapping):
        raise InvalidTenant(
            slug, "settings", f"must be a JSON object (a mapping), not {type(settings).__name__}"
        )
    bad_keys = _non_string_keys(settings)
    if bad_keys:  # json.dumps would write 1, None, True as "1", "null", "true"
        bad_key = bad_keys[0]
        raise InvalidTenant(
            slug,
            "settings",
            f"keys must be strings, not {type(bad_key).__name__} ({excerpt(bad_key)})",
        )
    decimals = 0

    def default(value: object) -> object:
        nonlocal decimals
        number = marked(value)  # a Decimal, as settings read back: written exactly
        if number is None:
            return _json_default(value)
        if isinstance(value, Decimal) and not fits_numeric(value):
            raise ValueError(f"the number {excerpt(str(value))} is beyond PostgreSQL's numeric")
        decimals += 1
        return number

    try:
        text = json.dumps(settings, allow_nan=False, ensure_ascii=False, default=default)
    except (TypeError, ValueError) as exc:
        raise InvalidTenant(slug, "settings", f"cannot be stored as JSON: {exc}") from None
    except RecursionError:
        raise InvalidTenant(slug, "settings", "are nested too deeply to store") from None
    if _nesting(text) > SETTINGS_MAX_DEPTH:
        raise InvalidTenant(
            slug, "settings", f"must not be nested more than {SETTINGS_MAX_DEPTH} levels deep"
        )
    if len(_escaped_nul.findall(text)) > decimals:  # json.dumps writes NUL as \u0000
        raise InvalidTenant(slug, "settings", "must not contain NUL characters")
    text = unmarked(text)
    if not encodable(text):
        raise InvalidTenant(slug, "settings", "must be valid Unicode (they hold a lone surrogate)")
    return text


def _non_string_keys(settings: Mapping[Any, Any]) -> list[object]:
    """The first key, at any depth, that is not a string, in a list (empty if none). Walks no
    deeper than SETTINGS_MAX_DEPTH + 1 levels: deeper settings are refused anyway, and a
    circular one is left to json.dumps to report."""
    stack: list[tuple[object, int]] = [(settings, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > SETTINGS_MAX_DEPTH + 1:
            continue
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    return [key]
                stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)
    return []


def _nesting(text: str) -> int:
    """How deeply the objects and arrays of the JSON ``text`` nest."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):  # MappingProxyType and friends: stored as the object they are
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode for PostgreSQL: no lone surrogate (UTF-8 has none)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_error(exc: psycopg.Error, slug: str) -> DbToolsError | None:
    """The dbtools error a failed write of tenant ``slug`` means (a constraint, a trigger, a
    limit of PostgreSQL), or None for one that is not about the tenant's values."""
    if isinstance(exc, pg_errors.UniqueViolation):
        return DuplicateSlug(slug) if exc.diag.constraint_name == SLUG_KEY else None
    if isinstance(exc, pg_errors.ForeignKeyViolation):  # a row of another table refers to it
        return TenantInUse(slug, exc.diag.constraint_name)
    if isinstance(exc, pg_errors.CheckViolation):
        return _check_error(exc.diag.constraint_name, slug)
    if isinstance(exc, pg_errors.ProgramLimitExceeded):
        # Of a tenant's values only the settings are unbounded: slug and name are a few hundred
        # bytes at most, far below any limit (a jsonb string of 256 MB, an index row of 2704 B).
        reason = exc.diag.message_primary or "exceeds a limit of PostgreSQL"
        return InvalidTenant(slug, "settings", f"too large to store: {reason}")
    return None


def _check_error(constraint: str | None, slug: str) -> InvalidSlug | InvalidTenant | None:
    if constraint == SLUG_FORMAT_CHECK:
        return InvalidSlug(slug, f"rejected by {SLUG_FORMAT_CHECK}")
    if constraint == SLUG_RESERVED:
        return ReservedSlug(slug, constraint=constraint)
    if constraint in (NAME_NOT_BLANK_CHECK, NAME_VISIBLE_CHECK):
        return InvalidTenant(slug, "name", f"must not be blank ({constraint})")
    if constraint == NAME_CONTROL_CHECK:
        return InvalidTenant(slug, "name", f"must not contain control characters ({constraint})")
    if constraint == NAME_LENGTH_CHECK:
        reason = f"must be at most {NAME_MAX_LENGTH} characters ({constraint})"
        return InvalidTenant(slug, "name", reason)
    if constraint == SETTINGS_OBJECT_CHECK:
        return InvalidTenant(slug, "settings", f"must be a JSON object ({constraint})")
    return None
