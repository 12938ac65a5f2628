"""The tenants data-access layer (dbtools.tenants) against a real database: reads, writes, errors,
transactions owned by the caller, pagination and concurrency.

Each test gets a fresh database, which is the expensive part, so a test that checks one rule over
many values loops over them in that one database, naming the value in each assertion message.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import tempfile
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import pq
from pydantic import ValidationError

from dbtools import db
from dbtools.aio import tenants as aio_tenants
from dbtools.config import Target
from dbtools.errors import (
    DatabaseUnavailable,
    DbToolsError,
    DuplicateSlug,
    InvalidSlug,
    InvalidTenant,
    ReadOnlyDatabase,
    ReservedSlug,
    TenantInUse,
    TenantNotFound,
)
from dbtools.tenants import Tenant, TenantStatus
from tests.helpers import INJECTION, AsyncBridge, row_count, tenants

# Every test that takes conn or connect runs twice: on dbtools.tenants, and on
# dbtools.aio.tenants through an AsyncBridge (tests/helpers.py, conftest.py).
pytestmark = pytest.mark.both_sides

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]
T = TypeVar("T")

THREADS = 16
IDLE = pq.TransactionStatus.IDLE
INTRANS = pq.TransactionStatus.INTRANS


def seed(conn: Conn, *slugs: str) -> list[Tenant]:
    """Create one tenant for each slug (committed when ``conn`` is autocommit)."""
    return [tenants.create(conn, slug, f"Tenant {slug}") for slug in slugs]


def all_tenants(conn: Conn) -> list[Tenant]:
    return tenants.list_tenants(conn, limit=1000)


def slugs_of(listed: list[Tenant]) -> list[str]:
    return [tenant.slug for tenant in listed]


def closed_connection(connect: Connect) -> Conn:
    connection = connect(autocommit=True)
    connection.close()
    return connection


def walk(
    conn: Conn, *, limit: int, status: TenantStatus | None = None, max_pages: int = 100
) -> Iterator[list[Tenant]]:
    """Every page of ``list_tenants``, following the keyset until an empty page."""
    after: str | None = None
    for _ in range(max_pages):
        page = tenants.list_tenants(conn, status=status, after=after, limit=limit)
        if not page:
            return
        yield page
        after = page[-1].slug
    pytest.fail(f"no empty page after {max_pages} pages: the keyset does not advance")


def count_round_trips(conn: Conn, action: Callable[[], T]) -> tuple[T, int]:
    """Run ``action`` with libpq tracing on; return its result and how many requests it sent."""
    with tempfile.TemporaryFile(mode="w+") as trace:
        # libpq closes the descriptor it is given when tracing stops, so it gets a duplicate.
        conn.pgconn.trace(os.dup(trace.fileno()))
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            result = action()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        fields = [line.split("\t") for line in trace.read().splitlines()]
    # A request ends with Sync (extended protocol) or is one Query message (simple protocol).
    requests = sum(1 for f in fields if len(f) > 2 and f[0] == "F" and f[2] in ("Sync", "Query"))
    return result, requests


# --- the model ---------------------------------------------------------------------------------


def test_tenant_status_labels_match_the_database_enum(conn: Conn) -> None:
    row = conn.execute("SELECT enum_range(NULL::tenant_status)::text[]").fetchone()
    assert row == ([status.value for status in TenantStatus],)


def test_create_returns_the_new_tenant_with_defaults(conn: Conn) -> None:
    tenant = tenants.create(conn, "acme", "Acme Corp")
    assert isinstance(tenant.id, uuid.UUID)
    assert (tenant.slug, tenant.name, tenant.status, tenant.settings) == (
        "acme",
        "Acme Corp",
        TenantStatus.ACTIVE,
        {},
    )
    assert tenant.created_at == tenant.updated_at
    assert tenants.get_by_slug(conn, "acme") == tenant


def test_timestamps_are_the_stored_instants_whatever_the_session_time_zone(conn: Conn) -> None:
    conn.execute("SET TimeZone = 'Asia/Kathmandu'")  # +05:45: an offset no default would guess
    tenant = tenants.create(conn, "acme", "Acme Corp")
    stored = conn.execute(
        "SELECT created_at AT TIME ZONE 'UTC', updated_at AT TIME ZONE 'UTC' FROM tenants"
    ).fetchone()
    assert stored is not None
    assert (
        tenant.created_at.astimezone(UTC).replace(tzinfo=None),
        tenant.updated_at.astimezone(UTC).replace(tzinfo=None),
    ) == stored


def test_tenant_is_frozen(conn: Conn) -> None:
    tenant = tenants.create(conn, "acme", "Acme Corp")
    with pytest.raises(ValidationError, match="frozen"):
        tenant.name = "Changed"
    assert tenant.name == "Acme Corp"


def test_create_stores_the_given_settings(conn: Conn) -> None:
    created = tenants.create(conn, "acme", "Acme", settings={"plan": "pro", "seats": 5})
    assert created.settings == {"plan": "pro", "seats": 5}
    assert tenants.get_by_slug(conn, "acme") == created


# --- reads -------------------------------------------------------------------------------------


def test_get_by_slug_returns_the_stored_tenant(conn: Conn) -> None:
    created, _ = seed(conn, "acme", "other")
    assert tenants.get_by_slug(conn, "acme") == created


def test_get_by_slug_of_unknown_slug_is_none(conn: Conn) -> None:
    seed(conn, "acme")
    assert tenants.get_by_slug(conn, "ghost") is None


def test_get_by_slug_of_invalid_slug_is_none_without_the_database(connect: Connect) -> None:
    # The connection is closed: any attempt to use it would raise (see the next test).
    closed = closed_connection(connect)
    for slug in ["", "ab", "Acme", "acme\n", "a" * 51, INJECTION, "acme_corp", "\u212acme"]:
        assert tenants.get_by_slug(closed, slug) is None, repr(slug)


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(lambda c: tenants.get_by_slug(c, "acme"), id="get_by_slug"),
        pytest.param(lambda c: tenants.list_tenants(c), id="list_tenants"),
        pytest.param(lambda c: tenants.create(c, "acme", "Acme"), id="create"),
    ],
)
def test_closed_connection_raises_database_unavailable(
    connect: Connect, use: Callable[[Conn], object]
) -> None:
    with pytest.raises(DatabaseUnavailable):
        use(closed_connection(connect))


@pytest.mark.direct  # ends its own server session, which a pooler would hide
def test_session_ended_by_the_server_raises_database_unavailable(
    conn: Conn, connect: Connect
) -> None:
    victim = connect(autocommit=True)
    conn.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
    with pytest.raises(DatabaseUnavailable):
        tenants.get_by_slug(victim, "acme")
    with pytest.raises(DatabaseUnavailable):
        tenants.create(victim, "acme", "Acme")


def test_get_by_id_returns_the_stored_tenant(conn: Conn) -> None:
    created, _ = seed(conn, "acme", "other")
    assert tenants.get_by_id(conn, created.id) == created


def test_get_by_id_of_unknown_id_is_none(conn: Conn) -> None:
    seed(conn, "acme")
    assert tenants.get_by_id(conn, uuid.uuid4()) is None


def test_get_many_returns_the_tenants_by_slug(conn: Conn) -> None:
    first, _, third = seed(conn, "aaa", "bbb", "ccc")
    assert tenants.get_many(conn, ["ccc", "aaa"]) == {"aaa": first, "ccc": third}


def test_get_many_leaves_out_unknown_and_invalid_slugs(conn: Conn) -> None:
    (acme,) = seed(conn, "acme")
    found = tenants.get_many(conn, ["acme", "ghost", "Not Valid", "", INJECTION, "acme"])
    assert found == {"acme": acme}


def test_get_many_accepts_any_iterable(conn: Conn) -> None:
    first, second = seed(conn, "aaa", "bbb")
    found = tenants.get_many(conn, (slug for slug in ("aaa", "bbb")))
    assert found == {"aaa": first, "bbb": second}


def test_get_many_without_valid_slugs_is_empty_without_the_database(connect: Connect) -> None:
    closed = closed_connection(connect)
    assert tenants.get_many(closed, []) == {}
    assert tenants.get_many(closed, ["Bad", "x", INJECTION]) == {}


def test_get_many_takes_one_round_trip(conn: Conn) -> None:
    seed(conn, "aaa", "bbb", "ccc", "ddd")
    found, requests = count_round_trips(
        conn, lambda: tenants.get_many(conn, ["aaa", "bbb", "ccc", "ddd", "ghost"])
    )
    assert sorted(found) == ["aaa", "bbb", "ccc", "ddd"]
    assert requests == 1


def test_get_by_slug_takes_one_round_trip(conn: Conn) -> None:
    seed(conn, "aaa")
    found, requests = count_round_trips(conn, lambda: tenants.get_by_slug(conn, "aaa"))
    assert found is not None
    assert requests == 1


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda c: tenants.create(c, "new", "New"), id="create"),
        pytest.param(lambda c: tenants.update(c, "aaa", name="A"), id="update"),
        pytest.param(lambda c: tenants.suspend(c, "aaa"), id="suspend"),
        pytest.param(lambda c: tenants.delete(c, "aaa"), id="delete"),
    ],
)
def test_a_write_in_autocommit_takes_one_round_trip(
    conn: Conn, write: Callable[[Conn], Any]
) -> None:
    seed(conn, "aaa")
    _, requests = count_round_trips(conn, lambda: write(conn))
    assert requests == 1


# --- list_tenants ------------------------------------------------------------------------------


def test_list_tenants_of_empty_table_is_empty(conn: Conn) -> None:
    assert tenants.list_tenants(conn) == []


def test_list_tenants_orders_by_slug(conn: Conn) -> None:
    slugs = ["m-b1", "a-z", "a9z", "abz", "zz9", "000", "a-a", "baz", "a-z-0"]
    seed(conn, *slugs)
    assert slugs_of(tenants.list_tenants(conn)) == sorted(slugs)


def test_list_tenants_returns_at_most_limit(conn: Conn) -> None:
    seed(conn, "eee", "ddd", "ccc", "bbb", "aaa")
    assert slugs_of(tenants.list_tenants(conn, limit=2)) == ["aaa", "bbb"]


def test_list_tenants_accepts_the_limit_bounds(conn: Conn) -> None:
    seed(conn, "aaa", "bbb")
    assert slugs_of(tenants.list_tenants(conn, limit=1)) == ["aaa"]
    assert slugs_of(tenants.list_tenants(conn, limit=1000)) == ["aaa", "bbb"]


def test_list_tenants_rejects_a_limit_outside_1_to_1000(conn: Conn) -> None:
    limit: Any
    for limit in [0, -1, 1001, True, 2.5, "10", None]:
        with pytest.raises(ValueError, match="limit must be an integer from 1 to 1000"):
            tenants.list_tenants(conn, limit=limit)


def test_list_tenants_starts_after_the_given_slug(conn: Conn) -> None:
    seed(conn, "aaa", "bbb", "ccc", "ddd")
    assert slugs_of(tenants.list_tenants(conn, after="bbb")) == ["ccc", "ddd"]


def test_list_tenants_after_a_slug_that_does_not_exist(conn: Conn) -> None:
    seed(conn, "aaa", "bbb", "ccc")
    assert slugs_of(tenants.list_tenants(conn, after="b")) == ["bbb", "ccc"]


def test_page_after_the_last_slug_is_empty(conn: Conn) -> None:
    seed(conn, "aaa", "bbb")
    assert tenants.list_tenants(conn, after="bbb") == []


def test_list_tenants_filters_by_status(conn: Conn) -> None:
    seed(conn, "aaa", "bbb", "ccc")
    tenants.suspend(conn, "bbb")
    suspended = [("bbb", TenantStatus.SUSPENDED)]
    assert [(t.slug, t.status) for t in tenants.list_tenants(conn, status="suspended")] == suspended
    assert slugs_of(tenants.list_tenants(conn, status=TenantStatus.ACTIVE)) == ["aaa", "ccc"]


@pytest.mark.parametrize("status", list(TenantStatus))
def test_status_filter_works_across_pages(conn: Conn, status: TenantStatus) -> None:
    slugs = [f"t-{i:02d}" for i in range(12)]
    seed(conn, *slugs)
    suspended = slugs[::3]
    for slug in suspended:
        tenants.suspend(conn, slug)
    active = sorted(set(slugs) - set(suspended))
    expected = suspended if status is TenantStatus.SUSPENDED else active
    listed = [t for page in walk(conn, limit=2, status=status) for t in page]
    assert slugs_of(listed) == expected
    assert {t.status for t in listed} == {status}


def test_pagination_visits_every_tenant_once_while_rows_are_inserted(
    conn: Conn, connect: Connect
) -> None:
    initial = [f"m-{i:02d}" for i in range(20)]
    seed(conn, *initial)
    writer = connect(autocommit=True)
    behind: list[str] = []
    ahead: list[str] = []
    seen: list[str] = []
    for number, page in enumerate(walk(conn, limit=3)):
        seen += slugs_of(page)
        if number >= 10:
            continue
        # Between pages another connection inserts rows on both sides of the current position:
        # right behind it (between slugs already seen) and far behind it, which must not show
        # up; right after it (the next page's first slug) and far ahead, which must.
        new_behind = [f"a-{number:02d}"] + ([f"{page[0].slug}x"] if len(page) > 1 else [])
        new_ahead = [f"{page[-1].slug}x", f"z-{number:02d}"]
        for slug in new_behind + new_ahead:
            tenants.create(writer, slug, "Inserted between pages")
        behind += new_behind
        ahead += new_ahead
    assert len(seen) == len(set(seen)), "a tenant was listed twice"
    assert seen == sorted(seen)
    assert set(seen) == set(initial) | set(ahead)
    assert not set(seen) & set(behind)
    assert row_count(conn) == len(initial) + len(behind) + len(ahead)


# --- create ------------------------------------------------------------------------------------


def test_create_of_a_taken_slug_raises_duplicate_slug(conn: Conn) -> None:
    seed(conn, "acme")
    with pytest.raises(DuplicateSlug) as caught:
        tenants.create(conn, "acme", "Another Acme")
    assert caught.value.slug == "acme"


def test_create_of_a_taken_slug_keeps_the_existing_tenant(conn: Conn) -> None:
    (existing,) = seed(conn, "acme")
    with pytest.raises(DuplicateSlug):
        tenants.create(conn, "acme", "Another Acme", settings={"plan": "pro"})
    assert all_tenants(conn) == [existing]


def test_concurrent_creates_of_one_slug_make_exactly_one_tenant(
    conn: Conn, connect: Connect
) -> None:
    # No pre-check can see the other inserts here: the unique index decides, and its
    # violation must still come out as DuplicateSlug.
    connections = [connect(autocommit=True) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS, timeout=60)

    def attempt(connection: Conn) -> Tenant | Exception:
        barrier.wait()
        try:
            return tenants.create(connection, "race", "Race")
        except Exception as exc:  # every outcome is collected and checked below
            return exc

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        outcomes = list(pool.map(attempt, connections))
    created = [o for o in outcomes if isinstance(o, Tenant)]
    duplicates = [o for o in outcomes if isinstance(o, DuplicateSlug)]
    assert (len(created), len(duplicates)) == (1, THREADS - 1), outcomes
    assert {d.slug for d in duplicates} == {"race"}
    assert all_tenants(conn) == created


def test_create_with_invalid_slug_raises_invalid_slug(conn: Conn) -> None:
    for slug in ["", "ab", "Acme", "acme\n", "-acme", "a" * 51, INJECTION]:
        with pytest.raises(InvalidSlug) as caught:
            tenants.create(conn, slug, "Acme")
        assert caught.value.slug == slug
    assert row_count(conn) == 0


def test_create_with_invalid_name_raises_invalid_tenant(conn: Conn) -> None:
    names = {
        "empty": "",
        "spaces": "   ",
        "control-whitespace": "\t\n\r\v\f",
        "unicode-whitespace": "\u3000\u00a0\u2003\u2028\u0085",
        "256-chars": "n" * 256,
        "256-emoji": "\U0001f600" * 256,
        "nul": "Ac\x00me",
        "escape-bell-return": "Evil\x1b[2J\x1b]0;owned\x07\rFake active",
        "tab-newline": "tab\tnew\nline",
        "c1-csi": "Evil\x9b31m",
        "invisible-only": "\u200b\ufeff\u3164\u2800",
        "tags-only": "\U000e0041\U000e0042",
    }
    for case, name in names.items():
        with pytest.raises(InvalidTenant) as caught:
            tenants.create(conn, "acme", name)
        assert (caught.value.slug, caught.value.field) == ("acme", "name"), case
    assert row_count(conn) == 0


def test_create_accepts_names_up_to_255_characters(conn: Conn) -> None:
    for slug, name in [("ascii", "n" * 255), ("emoji", "\U0001f600" * 255), ("one", "x")]:
        assert tenants.create(conn, slug, name).name == name, slug


def test_create_with_invalid_settings_raises_invalid_tenant(conn: Conn) -> None:
    circular: dict[str, Any] = {}
    circular["self"] = circular
    settings: dict[str, Any] = {
        "list": [],
        "string": "text",
        "number": 42,
        "nan": {"x": math.nan},
        "nested-infinity": {"x": {"y": [math.inf]}},
        "minus-infinity": {"x": -math.inf},
        "object": {"x": object()},
        "set": {"x": {1, 2}},
        "datetime": {"x": datetime(2024, 1, 1, tzinfo=UTC)},
        "tuple-key": {(1, 2): "x"},
        "nul-in-value": {"x": "a\x00b"},
        "nul-in-key": {"a\x00b": "x"},
        "circular": circular,
    }
    for case, value in settings.items():
        with pytest.raises(InvalidTenant) as caught:
            tenants.create(conn, "acme", "Acme", settings=value)
        assert (caught.value.slug, caught.value.field) == ("acme", "settings"), case
    assert row_count(conn) == 0


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        pytest.param("Ac\ud800me", None, id="surrogate-in-name"),
        pytest.param("Acme", {"x": "\udfff"}, id="surrogate-in-settings"),
    ],
)
def test_text_that_utf8_cannot_encode_raises_invalid_tenant(
    conn: Conn, name: str, settings: dict[str, Any] | None
) -> None:
    with pytest.raises(InvalidTenant):
        tenants.create(conn, "acme", name, settings=settings)


def test_create_accepts_any_mapping_as_settings(conn: Conn) -> None:
    # The signature promises Mapping[str, Any], not only dict.
    settings = types.MappingProxyType({"plan": "pro"})
    assert tenants.create(conn, "acme", "Acme", settings=settings).settings == {"plan": "pro"}


ODD_NAMES = [
    'O\'Brien & "Sons"',
    "semi; colons; everywhere;",
    "back\\slash \\n \\\\ \\u0000",
    "emoji \U0001f389 \U0001f469\u200d\U0001f4bb",
    INJECTION,
    "Robert'); DROP TABLE tenants;--",
    "%(slug)s %s {} $1",
    "  padded  ",
    "zero\u200bwidth \u2800 braille",
    "\u00fcn\u00efc\u00f8d\u00e9 \u0131\u017f\u212a",
]

ODD_SETTINGS: list[dict[str, Any]] = [
    {"quote": 'it\'s "quoted"', "it's": "key"},
    {"sql": INJECTION, INJECTION: "as a key"},
    {"semi;colon": "a;b;c"},
    {"back\\slash": "C:\\path\\new", "escape": "\\n\\t\\\\"},
    {"emoji": "\U0001f389", "\U0001f511": "value"},
    {"nested": {"list": [1, 2.5, None, True, {"deep": ["x", {"y": "z"}]}], "empty": {}}},
    {"numbers": [0, -1, 10**20, 1.5e-7, -0.25]},
    {"%(slug)s": "%s", "$1": "{}"},
]


def test_odd_names_are_stored_verbatim(conn: Conn) -> None:
    for number, name in enumerate(ODD_NAMES):
        slug = f"odd-{number}"
        tenants.create(conn, slug, name)
        stored = conn.execute("SELECT name FROM tenants WHERE slug = %s", (slug,)).fetchone()
        assert stored == (name,), repr(name)
        tenant = tenants.get_by_slug(conn, slug)
        assert tenant is not None
        assert tenant.name == name, repr(name)
    assert row_count(conn) == len(ODD_NAMES)


def test_odd_settings_are_stored_verbatim(conn: Conn) -> None:
    for number, settings in enumerate(ODD_SETTINGS):
        slug = f"odd-{number}"
        assert tenants.create(conn, slug, "Odd", settings=settings).settings == settings
        stored = conn.execute("SELECT settings FROM tenants WHERE slug = %s", (slug,)).fetchone()
        assert stored == (settings,), repr(settings)
    assert row_count(conn) == len(ODD_SETTINGS)


def test_update_stores_odd_names_and_settings_verbatim(conn: Conn) -> None:
    seed(conn, "acme")
    for name, settings in zip(ODD_NAMES, ODD_SETTINGS, strict=False):
        tenants.update(conn, "acme", name=name, settings=settings)
        stored = tenants.get_by_slug(conn, "acme")
        assert stored is not None
        assert (stored.name, stored.settings) == (name, settings)


def test_settings_with_a_literal_backslash_u0000_are_stored_verbatim(conn: Conn) -> None:
    # Six ordinary characters (a backslash, then "u0000"), not a NUL: JSON and jsonb hold them.
    settings = {"escape": "\\u0000", "path": "C:\\u0000dir"}
    stored = tenants.create(conn, "acme", "Acme", settings=settings)
    assert stored.settings == settings


# --- update ------------------------------------------------------------------------------------


def test_update_with_nothing_given_returns_the_tenant_unchanged(conn: Conn) -> None:
    before = tenants.create(conn, "acme", "Acme", settings={"plan": "pro"})
    assert tenants.update(conn, "acme") == before
    assert tenants.get_by_slug(conn, "acme") == before


def test_update_of_name_only_keeps_the_settings(conn: Conn) -> None:
    tenants.create(conn, "acme", "Acme", settings={"plan": "pro"})
    updated = tenants.update(conn, "acme", name="Acme Corp")
    assert (updated.name, updated.settings) == ("Acme Corp", {"plan": "pro"})
    assert tenants.get_by_slug(conn, "acme") == updated


def test_update_of_settings_only_keeps_the_name(conn: Conn) -> None:
    tenants.create(conn, "acme", "Acme", settings={"plan": "pro"})
    updated = tenants.update(conn, "acme", settings={"plan": "free"})
    assert (updated.name, updated.settings) == ("Acme", {"plan": "free"})
    assert tenants.get_by_slug(conn, "acme") == updated


def test_update_of_settings_replaces_the_whole_object(conn: Conn) -> None:
    tenants.create(conn, "acme", "Acme", settings={"plan": "pro", "seats": 5})
    assert tenants.update(conn, "acme", settings={"region": "eu"}).settings == {"region": "eu"}


def test_update_with_empty_settings_clears_them(conn: Conn) -> None:
    tenants.create(conn, "acme", "Acme", settings={"plan": "pro"})
    assert tenants.update(conn, "acme", settings={}).settings == {}


def test_update_that_changes_something_advances_updated_at(conn: Conn) -> None:
    before = tenants.create(conn, "acme", "Acme")
    after = tenants.update(conn, "acme", name="Acme Corp")
    assert after.updated_at > before.updated_at
    assert (after.id, after.created_at) == (before.id, before.created_at)


def test_update_to_the_same_values_keeps_updated_at(conn: Conn) -> None:
    before = tenants.create(conn, "acme", "Acme", settings={"plan": "pro"})
    assert tenants.update(conn, "acme", name="Acme", settings={"plan": "pro"}) == before


def test_update_with_invalid_values_changes_nothing(conn: Conn) -> None:
    before = tenants.create(conn, "acme", "Acme", settings={"plan": "pro"})
    changes: list[tuple[dict[str, Any], str]] = [
        ({"name": " "}, "name"),
        ({"name": "n" * 256}, "name"),
        ({"name": "Fine", "settings": ["plan"]}, "settings"),
        ({"settings": {"x": math.nan}}, "settings"),
    ]
    for change, field in changes:
        with pytest.raises(InvalidTenant) as caught:
            tenants.update(conn, "acme", **change)
        assert (caught.value.slug, caught.value.field) == ("acme", field), change
    assert tenants.get_by_slug(conn, "acme") == before


# --- suspend, activate, delete -----------------------------------------------------------------


def test_suspend_suspends_the_tenant(conn: Conn) -> None:
    before = tenants.create(conn, "acme", "Acme")
    suspended = tenants.suspend(conn, "acme")
    assert suspended.status is TenantStatus.SUSPENDED
    assert suspended.updated_at > before.updated_at
    assert tenants.get_by_slug(conn, "acme") == suspended


def test_suspend_of_a_suspended_tenant_returns_it_unchanged(conn: Conn) -> None:
    seed(conn, "acme")
    suspended = tenants.suspend(conn, "acme")
    assert tenants.suspend(conn, "acme") == suspended
    assert tenants.get_by_slug(conn, "acme") == suspended


def test_activate_reactivates_a_suspended_tenant(conn: Conn) -> None:
    seed(conn, "acme")
    suspended = tenants.suspend(conn, "acme")
    activated = tenants.activate(conn, "acme")
    assert activated.status is TenantStatus.ACTIVE
    assert activated.updated_at > suspended.updated_at
    assert tenants.get_by_slug(conn, "acme") == activated


def test_activate_of_an_active_tenant_returns_it_unchanged(conn: Conn) -> None:
    (active,) = seed(conn, "acme")
    assert tenants.activate(conn, "acme") == active
    assert tenants.get_by_slug(conn, "acme") == active


def test_delete_removes_only_that_tenant(conn: Conn) -> None:
    _, other = seed(conn, "acme", "other")
    assert tenants.delete(conn, "acme") is None  # type: ignore[func-returns-value]
    assert all_tenants(conn) == [other]


def test_delete_of_a_deleted_tenant_raises_tenant_not_found(conn: Conn) -> None:
    seed(conn, "acme")
    tenants.delete(conn, "acme")
    with pytest.raises(TenantNotFound):
        tenants.delete(conn, "acme")


def test_writes_check_the_slug_before_the_database(connect: Connect) -> None:
    closed = closed_connection(connect)
    writes: dict[str, Callable[[Conn, str], object]] = {
        "create": lambda c, s: tenants.create(c, s, "X"),
        "get_or_create": lambda c, s: tenants.get_or_create(c, s, "X"),
        "update": lambda c, s: tenants.update(c, s, name="X"),
        "suspend": tenants.suspend,
        "activate": tenants.activate,
        "delete": tenants.delete,
    }
    for operation, write in writes.items():
        with pytest.raises(InvalidSlug) as caught:
            write(closed, "Not A Slug")
        assert caught.value.slug == "Not A Slug", operation


# --- get_or_create -----------------------------------------------------------------------------


def test_get_or_create_creates_an_absent_tenant(conn: Conn) -> None:
    tenant, created = tenants.get_or_create(conn, "acme", "Acme", settings={"plan": "pro"})
    assert created is True
    assert (tenant.slug, tenant.name, tenant.settings) == ("acme", "Acme", {"plan": "pro"})
    assert all_tenants(conn) == [tenant]


def test_get_or_create_returns_an_existing_tenant_untouched(conn: Conn) -> None:
    existing = tenants.create(conn, "acme", "Acme", settings={"plan": "pro"})
    tenant, created = tenants.get_or_create(conn, "acme", "Other", settings={"plan": "free"})
    assert created is False
    assert tenant == existing
    assert all_tenants(conn) == [existing]


def test_concurrent_get_or_create_inserts_exactly_once(conn: Conn, connect: Connect) -> None:
    connections = [connect(autocommit=True) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS, timeout=60)

    def attempt(connection: Conn) -> tuple[Tenant, bool]:
        barrier.wait()
        return tenants.get_or_create(connection, "race", "Race")

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        outcomes = list(pool.map(attempt, connections))
    assert sorted(created for _, created in outcomes) == [False] * (THREADS - 1) + [True]
    stored = all_tenants(conn)
    assert len(stored) == 1
    assert all(tenant == stored[0] for tenant, _ in outcomes)


# --- errors ------------------------------------------------------------------------------------


def test_error_classes() -> None:
    for error in (InvalidSlug, InvalidTenant, DuplicateSlug, TenantNotFound):
        assert issubclass(error, DbToolsError), error
        assert not issubclass(error, psycopg.Error), error
    assert issubclass(InvalidSlug, ValueError)
    assert issubclass(InvalidTenant, ValueError)


def test_every_error_carries_and_names_the_slug(conn: Conn) -> None:
    seed(conn, "acme")
    not_a_mapping: Any = [1]
    failures: list[tuple[Callable[[], object], type[DbToolsError], str]] = [
        (lambda: tenants.create(conn, "acme", "Again"), DuplicateSlug, "acme"),
        (lambda: tenants.get_or_create(conn, "Not Valid", "X"), InvalidSlug, "Not Valid"),
        (lambda: tenants.update(conn, "ghost", name="G"), TenantNotFound, "ghost"),
        (lambda: tenants.update(conn, "ghost"), TenantNotFound, "ghost"),
        (lambda: tenants.suspend(conn, "ghost"), TenantNotFound, "ghost"),
        (lambda: tenants.activate(conn, "ghost"), TenantNotFound, "ghost"),
        (lambda: tenants.delete(conn, "ghost"), TenantNotFound, "ghost"),
        (lambda: tenants.create(conn, "fresh", " "), InvalidTenant, "fresh"),
        (lambda: tenants.update(conn, "acme", name="n" * 256), InvalidTenant, "acme"),
        (
            lambda: tenants.get_or_create(conn, "fresh", "F", settings=not_a_mapping),
            InvalidTenant,
            "fresh",
        ),
    ]
    for fail, error, slug in failures:
        with pytest.raises(error) as caught:
            fail()
        assert getattr(caught.value, "slug", None) == slug, caught.value
        assert repr(slug) in str(caught.value)


# One failing call for each error class, run where the database holds the tenant "acme".
FAILURES = [
    pytest.param(lambda c: tenants.create(c, "acme", "Again"), DuplicateSlug, id="DuplicateSlug"),
    pytest.param(
        lambda c: tenants.update(c, "ghost", name="G"), TenantNotFound, id="TenantNotFound"
    ),
    pytest.param(lambda c: tenants.create(c, "Not Valid", "X"), InvalidSlug, id="InvalidSlug"),
    pytest.param(
        lambda c: tenants.create(c, "fresh", "F", settings={"x": math.nan}),
        InvalidTenant,
        id="InvalidTenant",
    ),
]
Failure = Callable[[Conn], object]


@pytest.mark.parametrize(("fail", "error"), FAILURES)
def test_error_leaves_an_autocommit_connection_usable(
    conn: Conn, fail: Failure, error: type[DbToolsError]
) -> None:
    seed(conn, "acme")
    with pytest.raises(error):
        fail(conn)
    assert conn.info.transaction_status == IDLE
    assert slugs_of(seed(conn, "after")) == ["after"]


@pytest.mark.parametrize(("fail", "error"), FAILURES)
def test_error_on_an_idle_connection_leaves_it_idle_and_usable(
    conn: Conn, connect: Connect, fail: Failure, error: type[DbToolsError]
) -> None:
    seed(conn, "acme")
    caller = connect()
    assert caller.info.transaction_status == IDLE
    with pytest.raises(error):
        fail(caller)
    assert caller.info.transaction_status == IDLE
    tenants.create(caller, "after", "After")
    caller.commit()
    assert slugs_of(all_tenants(conn)) == ["acme", "after"]


@pytest.mark.parametrize(("fail", "error"), FAILURES)
def test_error_inside_a_transaction_block_keeps_the_transaction(
    conn: Conn, fail: Failure, error: type[DbToolsError]
) -> None:
    seed(conn, "acme")
    with conn.transaction():
        tenants.create(conn, "before", "Before")
        with pytest.raises(error):
            fail(conn)
        tenants.create(conn, "after", "After")
    assert slugs_of(all_tenants(conn)) == ["acme", "after", "before"]


@pytest.mark.parametrize(("fail", "error"), FAILURES)
def test_error_inside_an_implicit_transaction_keeps_the_transaction(
    conn: Conn, connect: Connect, fail: Failure, error: type[DbToolsError]
) -> None:
    seed(conn, "acme")
    caller = connect()
    tenants.create(caller, "before", "Before")
    with pytest.raises(error):
        fail(caller)
    assert caller.info.transaction_status == INTRANS
    tenants.create(caller, "after", "After")
    caller.commit()
    assert slugs_of(all_tenants(conn)) == ["acme", "after", "before"]


# --- the caller owns the transaction -----------------------------------------------------------

WRITES = [
    pytest.param(lambda c: tenants.create(c, "fresh", "Fresh"), id="create"),
    pytest.param(lambda c: tenants.get_or_create(c, "fresh", "Fresh"), id="get_or_create"),
    pytest.param(
        lambda c: tenants.update(c, "acme", name="Renamed", settings={"plan": "pro"}), id="update"
    ),
    pytest.param(lambda c: tenants.suspend(c, "acme"), id="suspend"),
    pytest.param(lambda c: tenants.activate(c, "paused"), id="activate"),
    pytest.param(lambda c: tenants.delete(c, "acme"), id="delete"),
]


@pytest.mark.parametrize("write", WRITES)
def test_write_is_the_callers_to_commit_or_roll_back(
    conn: Conn, connect: Connect, write: Callable[[Conn], object]
) -> None:
    seed(conn, "acme", "paused")
    tenants.suspend(conn, "paused")
    before = all_tenants(conn)
    caller = connect()
    write(caller)
    assert caller.info.transaction_status == INTRANS
    assert all_tenants(caller) != before, "the write did nothing"
    assert all_tenants(conn) == before, "the write was committed"
    caller.rollback()
    assert all_tenants(caller) == before
    assert all_tenants(conn) == before


def test_create_then_rollback_leaves_no_tenant(connect: Connect) -> None:
    caller = connect()
    tenants.create(caller, "acme", "Acme")
    caller.rollback()
    assert tenants.get_by_slug(caller, "acme") is None


def test_duplicate_in_a_transaction_block_keeps_earlier_writes(conn: Conn) -> None:
    seed(conn, "acme")
    with conn.transaction():
        first = tenants.create(conn, "first", "First")
        with pytest.raises(DuplicateSlug):
            tenants.create(conn, "acme", "Acme again")
        assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (2,)
    assert tenants.get_by_slug(conn, "first") == first


def test_delete_of_a_tenant_still_referenced_is_tenant_in_use(conn: Conn) -> None:
    """A service's own table may refer to tenants; the delete then fails as a domain error."""
    seed(conn, "acme")
    conn.execute("CREATE TABLE orders (tenant_id uuid REFERENCES tenants (id))")
    conn.execute("INSERT INTO orders SELECT id FROM tenants")
    with pytest.raises(TenantInUse) as caught:
        tenants.delete(conn, "acme")
    assert (caught.value.slug, caught.value.constraint) == ("acme", "orders_tenant_id_fkey")
    assert tenants.get_by_slug(conn, "acme") is not None


@pytest.mark.direct  # a session setting (default_transaction_read_only) of its own
def test_a_write_to_a_read_only_session_is_read_only_database(connect: Connect) -> None:
    read_only = connect(autocommit=True, options="-c default_transaction_read_only=on")
    with pytest.raises(ReadOnlyDatabase, match="is read-only"):
        tenants.create(read_only, "acme", "Acme")
    assert tenants.get_by_slug(read_only, "acme") is None  # reads still work


def test_settings_nested_deeper_than_the_limit_are_refused(conn: Conn) -> None:
    def nested(depth: int) -> dict[str, Any]:
        value: dict[str, Any] = {"leaf": '[{"not": "counted"}]'}
        for _ in range(depth - 1):
            value = {"a": value}
        return value

    deepest = tenants.create(conn, "deep", "Deep", settings=nested(tenants.SETTINGS_MAX_DEPTH))
    assert tenants.get_by_slug(conn, "deep") == deepest
    with pytest.raises(InvalidTenant, match="nested more than 100 levels deep"):
        tenants.create(conn, "deeper", "Deeper", settings=nested(tenants.SETTINGS_MAX_DEPTH + 1))
    assert tenants.get_by_slug(conn, "deeper") is None


# --- reserved slugs, faithful settings, every stored row readable ---------------------------------


def test_create_of_a_reserved_slug_raises_reserved_slug(conn: Conn) -> None:
    for slug in ["www", "api", "admin", "status"]:
        with pytest.raises(ReservedSlug) as caught:
            tenants.create(conn, slug, "Mine")
        assert isinstance(caught.value, InvalidSlug), slug
        assert caught.value.slug == slug
        with pytest.raises(ReservedSlug):
            tenants.get_or_create(conn, slug, "Mine")
    assert row_count(conn) == 0
    assert tenants.create(conn, "demo", "Demo Tenant").slug == "demo"


def test_a_slug_a_dba_reserved_is_refused_by_the_database_as_reserved_slug(conn: Conn) -> None:
    seed(conn, "acme")
    conn.execute("INSERT INTO reserved_slugs (slug, reason) VALUES ('acme', 'x'), ('beta', 'y')")
    with pytest.raises(ReservedSlug) as caught:
        tenants.create(conn, "beta", "Beta")
    assert (caught.value.slug, caught.value.constraint) == ("beta", tenants.SLUG_RESERVED)
    # The tenant that held "acme" before it was reserved is read and changed as any other, and
    # get_or_create gets it: nothing is inserted, so nothing is taken (0009).
    held, created = tenants.get_or_create(conn, "acme", "Someone Else")
    assert (held.name, created) == ("Tenant acme", False)
    with pytest.raises(ReservedSlug):
        tenants.get_or_create(conn, "beta", "Beta")
    assert tenants.update(conn, "acme", name="Acme 2").name == "Acme 2"
    assert tenants.suspend(conn, "acme").status is TenantStatus.SUSPENDED
    tenants.delete(conn, "acme")
    assert row_count(conn) == 0


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({1: "a", "1": "b"}, id="int-and-string"),
        pytest.param({None: 1}, id="none"),
        pytest.param({True: 1}, id="bool"),
        pytest.param({1.5: 1}, id="float"),
        pytest.param({"a": [{"b": {2: "deep"}}]}, id="nested-in-a-list"),
        pytest.param({"a": {"b": {"c": {None: "deeper"}}}}, id="nested"),
    ],
)
def test_settings_with_a_key_that_is_not_a_string_are_refused(
    conn: Conn, settings: dict[Any, Any]
) -> None:
    with pytest.raises(InvalidTenant, match="keys must be strings") as caught:
        tenants.create(conn, "acme", "Acme", settings=settings)
    assert caught.value.field == "settings"
    seed(conn, "beta")
    with pytest.raises(InvalidTenant, match="keys must be strings"):
        tenants.update(conn, "beta", settings=settings)
    assert [t.settings for t in all_tenants(conn)] == [{}]


def test_settings_postgresql_cannot_store_are_invalid_tenant(conn: Conn) -> None:
    """ProgramLimitExceeded, cheaply: a DBA's index on a setting, and a value too big for a
    btree row (2704 bytes), as a jsonb string over 256 MB would raise it too."""
    conn.execute("CREATE INDEX tenants_plan_idx ON tenants ((settings ->> 'plan'))")
    huge = {"plan": secrets.token_urlsafe(12_000)}  # random: not compressed below the limit
    with pytest.raises(InvalidTenant, match="too large to store") as caught:
        tenants.create(conn, "acme", "Acme", settings=huge)
    assert (caught.value.slug, caught.value.field) == ("acme", "settings")
    assert len(str(caught.value)) < 300
    seed(conn, "beta")
    with pytest.raises(InvalidTenant, match="too large to store"):
        tenants.update(conn, "beta", settings=huge)
    assert tenants.get_by_slug(conn, "beta") is not None  # the connection is still usable


BIG_NUMBERS = '{"n": 1e5000, "neg": -1e400, "tiny": 1.5e-400, "f": 1.5, "i": 42, "deep": [7e4400]}'


def test_every_jsonb_number_written_in_sql_is_read(conn: Conn) -> None:
    conn.execute(
        "INSERT INTO tenants (slug, name, settings) VALUES ('big', 'Big', %s), ('zed', 'Z', '{}')",
        (BIG_NUMBERS,),
    )
    expected = {
        "n": Decimal("1e5000"),
        "neg": Decimal("-1e400"),
        "tiny": Decimal("1.5e-400"),
        "f": 1.5,
        "i": 42,
        "deep": [Decimal("7e4400")],
    }
    big = tenants.get_by_slug(conn, "big")
    assert big is not None
    assert big.settings == expected
    assert (type(big.settings["f"]), type(big.settings["i"])) == (float, int)
    assert [t.slug for t in all_tenants(conn)] == ["big", "zed"]
    assert tenants.get_many(conn, ["big"])["big"] == big
    assert tenants.get_by_id(conn, big.id) == big
    assert tenants.list_tenants(conn, limit=1)[0].settings == expected


@pytest.mark.parametrize("slugs", ["demo", b"demo"], ids=["str", "bytes"])
def test_get_many_of_one_string_is_a_type_error(conn: Conn, slugs: Any) -> None:
    seed(conn, "demo")
    with pytest.raises(TypeError, match="not one"):
        tenants.get_many(conn, slugs)


def test_messages_quote_only_an_excerpt_of_a_huge_slug() -> None:
    slug = "x" * 10_000_000
    for error in (
        InvalidTenant(slug, "name", "must not be blank"),
        DuplicateSlug(slug),
        TenantNotFound(slug),
        TenantInUse(slug, "orders_tenant_fkey"),
    ):
        assert len(str(error)) < 200, type(error).__name__
        assert error.slug == slug  # kept whole
    with pytest.raises(InvalidTenant) as caught:
        tenants.validate_name(slug, " ")
    assert len(str(caught.value)) < 200, str(caught.value)


DEPTH = 5000  # jsonb takes it; Python's json recursion stops near 1000


def test_settings_nested_deeper_than_python_recursion_read_back(conn: Conn) -> None:
    deep = '{"a": ' + "[" * DEPTH + '{"b": 1}' + "]" * DEPTH + "}"
    conn.execute(
        "INSERT INTO tenants (slug, name, settings) VALUES ('deep', 'Deep', %s::jsonb)", (deep,)
    )
    for tenant in (
        tenants.get_by_slug(conn, "deep"),
        tenants.get_many(conn, ["deep"])["deep"],
        tenants.list_tenants(conn)[0],
    ):
        assert tenant is not None
        inner: Any = tenant.settings["a"]
        for _ in range(DEPTH):
            [inner] = inner
        assert inner == {"b": 1}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(value=st.dictionaries(st.text(), json_values))
def test_the_deep_decoder_reads_what_json_reads(value: dict[str, Any]) -> None:
    text = json.dumps(value)
    assert tenants._decode_deep(text) == tenants.load_settings(text) == json.loads(text)


def test_numbers_a_float_cannot_hold_survive_a_read_modify_write(conn: Conn) -> None:
    written = '{"p": 0.1000000000000000000001, "r": 12345678901234567.5, "f": 1.5, "n": 1e5000}'
    conn.execute(
        "INSERT INTO tenants (slug, name, settings) VALUES ('exact', 'Exact', %s::jsonb)",
        (written,),
    )
    tenant = tenants.get_by_slug(conn, "exact")
    assert tenant is not None
    assert tenant.settings["p"] == Decimal("0.1000000000000000000001")
    assert tenant.settings["f"] == 1.5
    assert isinstance(tenant.settings["f"], float)
    tenants.update(conn, "exact", settings={**tenant.settings, "plan": "pro"})
    same = "SELECT settings - 'plan' = %s::jsonb FROM tenants WHERE slug = 'exact'"
    assert conn.execute(same, (written,)).fetchone() == (True,)


@pytest.mark.parametrize("call", ["get_by_slug", "get_many", "update"])
def test_a_cancelled_async_call_leaves_the_connection_idle(target: Target, call: str) -> None:
    """asyncio.wait_for cancels a call blocked behind a lock: the transaction it opened is
    rolled back, as after an error, and the connection works (the hot path left it failed)."""
    calls: dict[str, Callable[[Any], Any]] = {
        "get_by_slug": lambda c: aio_tenants.get_by_slug(c, "acme"),
        "get_many": lambda c: aio_tenants.get_many(c, ["acme"]),
        "update": lambda c: aio_tenants.update(c, "acme", name="Changed"),
    }
    with db.connect(target, autocommit=True) as owner, AsyncBridge.connect(target) as bridge:
        tenants.create(owner, "acme", "Acme")
        with owner.transaction():
            owner.execute("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(TimeoutError):
                bridge.run(asyncio.wait_for(calls[call](bridge.aconn), 0.3))
        assert bridge.pgconn.transaction_status == IDLE
        assert bridge.run(aio_tenants.get_by_slug(bridge.aconn, "acme")) is not None
