"""Concurrency and faults: many writers racing on a few slugs, the server restarted under a pool,
and bad input fuzzed (hypothesis) through ``create``, ``update`` and ``tenants import``.

Each test asserts what a caller may rely on: only documented errors (the classes of
``dbtools.errors``) reach the caller, nothing is ever half written, and the rows left behind
satisfy every constraint of the schema.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg import pq

from dbtools import db, importing, localdb, migrations, tenants
from dbtools.config import Target
from dbtools.errors import (
    DatabaseUnavailable,
    DbToolsError,
    DuplicateSlug,
    ImportFailed,
    TenantNotFound,
)
from dbtools.slugs import RESERVED_SLUGS, SLUG_PATTERN, validate_slug
from dbtools.tenants import Tenant, TenantStatus
from tests.helpers import remove_cluster, replay, row_count

Conn = psycopg.Connection[Any]
T = TypeVar("T")
V = TypeVar("V")

# --- 32 writers racing on 8 slugs -----------------------------------------------------------

WRITERS = 32
RACE_SLUGS = [f"race-{n}" for n in range(8)]
RACE_SECONDS = 3.0
RACE_SEED = 20260401
OPERATIONS = ("create", "rename", "suspend", "activate", "delete")
# What each operation documents, and all that a lost race can give under READ COMMITTED with
# one statement per call: a create finds the slug taken, the others find the tenant gone.
EXPECTED_ERRORS: dict[str, tuple[type[DbToolsError], ...]] = {
    "create": (DuplicateSlug,),
    "rename": (TenantNotFound,),
    "suspend": (TenantNotFound,),
    "activate": (TenantNotFound,),
    "delete": (TenantNotFound,),
}


@dataclass(frozen=True)
class Outcome:
    """One call of one writer: what it asked, when, and what came back."""

    writer: int
    op: str
    slug: str
    name: str | None  # the name a create or rename asked for
    started: float
    ended: float
    tenant: Tenant | None  # what a successful create, rename, suspend or activate returned
    error: BaseException | None

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        shown = "".join(traceback.format_exception(self.error)) if self.error else "ok"
        return f"writer {self.writer}: {self.op}({self.slug!r}) -> {shown}"


def _write(conn: Conn, op: str, slug: str, name: str) -> Tenant | None:
    if op == "create":
        return tenants.create(conn, slug, name, settings={"created_as": name})
    if op == "rename":
        return tenants.update(conn, slug, name=name)
    if op == "suspend":
        return tenants.suspend(conn, slug)
    if op == "activate":
        return tenants.activate(conn, slug)
    tenants.delete(conn, slug)
    return None


def _writer(
    number: int,
    conn: Conn,
    start: threading.Barrier,
    deadline: list[float],
    outcomes: list[Outcome],
) -> None:
    rng = random.Random(RACE_SEED + number)  # noqa: S311 - reproducible test data, not secrets
    start.wait()
    calls = 0
    while time.monotonic() < deadline[0]:
        calls += 1
        op, slug = rng.choice(OPERATIONS), rng.choice(RACE_SLUGS)
        name = f"Writer {number} call {calls}" if op in ("create", "rename") else None
        began = time.monotonic()
        try:
            tenant = _write(conn, op, slug, name or "")
        except Exception as exc:  # every failure is recorded, and judged below
            outcomes.append(Outcome(number, op, slug, name, began, time.monotonic(), None, exc))
        else:
            outcomes.append(Outcome(number, op, slug, name, began, time.monotonic(), tenant, None))


def _final_value(candidates: Sequence[tuple[Outcome, V]]) -> set[V]:
    """The values one of these successful writes may have left behind: a write that ended
    before another one began committed before it, so it cannot be the last."""
    latest_start = max(outcome.started for outcome, _ in candidates)
    return {value for outcome, value in candidates if outcome.ended >= latest_start}


def assert_rows_satisfy_every_constraint(conn: Conn) -> list[Tenant]:
    """Every row, inserted again into a copy of the table with the same constraints and unique
    indexes, is accepted; and the Python rules accept every row too."""
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TEMPORARY TABLE tenants_copy (LIKE tenants INCLUDING ALL)")
        copied = conn.execute("INSERT INTO tenants_copy SELECT * FROM tenants").rowcount
        assert copied == row_count(conn)
        reserved = conn.execute(
            "SELECT slug FROM tenants JOIN reserved_slugs USING (slug)"
        ).fetchall()
        assert reserved == []
    rows = tenants.list_tenants(conn, limit=1000)
    assert len({row.slug for row in rows}) == len(rows) == row_count(conn)
    for row in rows:
        assert validate_slug(row.slug) == row.slug
        assert tenants.validate_name(row.slug, row.name) == row.name
        assert json.loads(tenants.settings_json(row.slug, row.settings)) == row.settings
        assert row.updated_at >= row.created_at
    return rows


def test_racing_writers_leave_consistent_rows_and_see_only_documented_errors(
    conn: Conn, connect: Callable[..., Conn]
) -> None:
    """32 writers, each on its own autocommit connection, create, rename, suspend, activate and
    delete 8 slugs at random for a few seconds. Every failure is the error the call documents,
    every row satisfies every constraint, and the final rows are what some serial order of the
    successful calls leaves: per slug, creates and deletes alternate, and the final row's id,
    name, status and settings come from successful calls on that very tenant that were not
    followed, in real time, by another successful call setting the same thing; and the audit
    trail of each slug, replayed, gives its final row."""
    connections = [connect(autocommit=True) for _ in range(WRITERS)]
    start = threading.Barrier(WRITERS + 1)
    deadline = [math.inf]
    outcomes: list[list[Outcome]] = [[] for _ in range(WRITERS)]
    threads = [
        threading.Thread(target=_writer, args=(n, connections[n], start, deadline, outcomes[n]))
        for n in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + RACE_SECONDS
    start.wait()
    for thread in threads:
        thread.join(timeout=RACE_SECONDS + 30)
        assert not thread.is_alive(), "a writer hung"
    history = [outcome for per_writer in outcomes for outcome in per_writer]

    undocumented = [o for o in history if o.error and not isinstance(o.error, DbToolsError)]
    assert not undocumented, "\n".join(o.describe() for o in undocumented[:5])
    unexpected = [o for o in history if o.error and not isinstance(o.error, EXPECTED_ERRORS[o.op])]
    assert not unexpected, "\n".join(o.describe() for o in unexpected[:5])
    for per_writer in outcomes:  # each connection is still usable
        assert per_writer, "a writer made no call at all"
    for connection in connections:
        assert connection.info.transaction_status == pq.TransactionStatus.IDLE
        assert connection.execute("SELECT 1").fetchone() == (1,)

    # The race was a race: every operation both succeeded and lost at least once.
    for op in OPERATIONS:
        assert any(o.ok for o in history if o.op == op), f"no {op} ever succeeded"
        assert any(not o.ok for o in history if o.op == op), f"no {op} ever failed"

    final = {row.slug: row for row in assert_rows_satisfy_every_constraint(conn)}
    assert set(final) <= set(RACE_SLUGS)
    for o in history:  # what each successful call returned is what it asked for
        if o.tenant is not None:
            assert o.tenant.slug == o.slug
            if o.name is not None:
                assert o.tenant.name == o.name
            if o.op == "suspend":
                assert o.tenant.status is TenantStatus.SUSPENDED
            if o.op in ("create", "activate"):
                assert o.tenant.status is TenantStatus.ACTIVE
    for slug in RACE_SLUGS:
        ok = [o for o in history if o.slug == slug and o.ok]
        created = [o for o in ok if o.op == "create"]
        deleted = [o for o in ok if o.op == "delete"]
        # A create succeeds only on an absent slug, a delete only on a present one.
        assert len(created) - len(deleted) == (1 if slug in final else 0), slug
        if slug not in final:
            continue
        row = final[slug]
        on_row = [o for o in ok if o.tenant is not None and o.tenant.id == row.id]
        [creation] = [o for o in on_row if o.op == "create"]
        assert creation.tenant is not None
        assert row.created_at == creation.tenant.created_at
        assert row.settings == {"created_as": creation.name}
        named = [(o, o.name) for o in on_row if o.name is not None]
        assert row.name in _final_value(named), slug
        statuses = [(o, o.tenant.status) for o in on_row if o.tenant and o.op != "rename"]
        assert row.status in _final_value(statuses), slug
    for slug in RACE_SLUGS:  # the audit trail, replayed, gives each slug's final row
        replayed = [r for r in replay(tenants.history(conn, slug)).values() if r["slug"] == slug]
        if slug not in final:
            assert replayed == [], slug
            continue
        [event_row] = replayed
        tenant = final[slug]
        assert (
            UUID(event_row["id"]),
            event_row["name"],
            event_row["status"],
            event_row["settings"],
        ) == (tenant.id, tenant.name, tenant.status.value, tenant.settings), slug


# --- the server restarted under a pool ------------------------------------------------------

POOL_SIZE = 3
POOL_TIMEOUT = 0.5
OUTAGE_SECONDS = 2.0
RECOVERY_BOUND = 10.0  # after the server is back: psycopg_pool's reconnection backoff included


@dataclass(frozen=True)
class Call:
    """One ``get_by_slug`` through the pool: when, and its error if it failed."""

    started: float
    ended: float
    error: BaseException | None


def _reader(pool: db.Pool, stop: threading.Event, calls: list[Call]) -> None:
    while not stop.is_set():
        began = time.monotonic()
        try:
            with pool.connection() as conn:
                tenant = tenants.get_by_slug(conn, "acme")
            assert tenant is not None
            assert tenant.name == "Acme"
        except Exception as exc:  # every failure is recorded, and judged below
            calls.append(Call(began, time.monotonic(), exc))
            time.sleep(0.01)  # as a service retrying would: not a busy loop
        else:
            calls.append(Call(began, time.monotonic(), None))


def _migrated_cluster(local_dir: Path) -> tuple[localdb.Cluster, Target]:
    cluster = localdb.cluster("restarted", durable=False, base=local_dir)
    cluster.start()
    target = cluster.target("dbtools_system")
    migrations.ensure_database(target)
    migrations.apply(target)
    with db.connect(target, autocommit=True) as conn:
        tenants.create(conn, "acme", "Acme")
    return cluster, target


def test_a_pool_recovers_from_a_server_restart(local_dir: Path) -> None:
    """Readers use a pool while its server stops for a while and starts again. Every request
    that fails, fails with DatabaseUnavailable, as ``db.Pool`` documents for an outage (not
    PoolExhausted: there are as many connections as readers, so none is ever busy for another
    reader); after the restart the pool reconnects by itself and every call succeeds again
    within a bounded time."""
    cluster, target = _migrated_cluster(local_dir)
    try:
        with db.create_pool(
            target, min_size=POOL_SIZE, max_size=POOL_SIZE, timeout=POOL_TIMEOUT
        ) as pool:
            stop = threading.Event()
            calls: list[list[Call]] = [[] for _ in range(POOL_SIZE)]
            readers = [
                threading.Thread(target=_reader, args=(pool, stop, calls[n]))
                for n in range(POOL_SIZE)
            ]
            for reader in readers:
                reader.start()
            try:
                time.sleep(0.3)
                down = time.monotonic()
                assert cluster.stop() is True
                time.sleep(OUTAGE_SECONDS)
                assert cluster.start() is True
                up = time.monotonic()
                # Run on until every reader has succeeded for a while after the restart.
                while time.monotonic() < up + RECOVERY_BOUND + 1:
                    time.sleep(0.2)
                    recovered = [
                        [c for c in per_reader if c.started > up and c.error is None]
                        for per_reader in calls
                    ]
                    if all(len(r) >= 50 for r in recovered):
                        break
            finally:
                stop.set()
                for reader in readers:
                    reader.join(timeout=30)
            assert not any(reader.is_alive() for reader in readers), "a reader hung"
            with pool.connection() as conn:
                assert tenants.get_by_slug(conn, "acme") is not None
    finally:
        remove_cluster(cluster)

    history = sorted((call for per_reader in calls for call in per_reader), key=lambda c: c.started)
    failures = [call for call in history if call.error is not None]
    wrong: dict[str, list[BaseException]] = {}
    for call in failures:
        if type(call.error) is not DatabaseUnavailable:
            assert call.error is not None
            wrong.setdefault(type(call.error).__qualname__, []).append(call.error)
    assert not wrong, f"of {len(failures)} failures, not DatabaseUnavailable: " + "\n".join(
        f"{len(errors)} x {kind}, the first:\n" + "".join(traceback.format_exception(errors[0]))
        for kind, errors in wrong.items()
    )
    assert failures, "no request failed: the outage was not seen"
    assert all(call.error is None for call in history if call.ended < down), "failed before"
    assert all(call.ended >= down for call in failures), "failed before the outage"
    last_failure = max(call.ended for call in failures)
    assert last_failure < up + RECOVERY_BOUND, f"still failing {last_failure - up:.1f} s after"
    for per_reader in calls:
        after = [call for call in per_reader if call.started > last_failure]
        assert len(after) >= 50, "a reader did not recover"
        assert all(call.error is None for call in after)


# --- bad input, fuzzed ----------------------------------------------------------------------

FUZZ = settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BASE = "base-tenant"
BASE_NAME = "Base Tenant"
BASE_SETTINGS = {"plan": "pro", "limits": {"users": 10}}
MARKER = "marker-tenant"  # the work a caller did in its transaction before the call

# Characters that break rules: NUL and other controls, blanks, format and invisible characters,
# lone surrogates, a byte order mark, and quotes and separators that matter to CSV and JSON.
ODD_CHARACTERS = st.sampled_from(
    "\x00\x01\x1b\x7f\x85\x9f \t\n\r\v\f\xa0\xad\u200b\u2028\u3164\u2800\ufeff\ufffe\uffff"
    '\ud800\udfff",;\\{}[]'
)
CHARACTERS = st.one_of(st.characters(), ODD_CHARACTERS, st.characters(codec="utf-8"))
TEXT = st.text(CHARACTERS, max_size=40)
VALID_SLUGS = st.from_regex(f"\\A{SLUG_PATTERN}\\Z", fullmatch=True)
SLUG_LIKE = st.text(st.sampled_from("abz09-_.A \n\x00é"), max_size=55)
SLUGS: st.SearchStrategy[Any] = st.one_of(
    VALID_SLUGS,
    SLUG_LIKE,
    TEXT,
    st.sampled_from([BASE, "demo", *sorted(RESERVED_SLUGS), f"{BASE}\n", BASE.upper()]),
    st.sampled_from([None, 42, b"acme", 1.5, ["acme"]]),
)
NAMES: st.SearchStrategy[Any] = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20),
    TEXT,
    st.text(CHARACTERS, min_size=250, max_size=260),
    st.sampled_from(["x" * 255, "x" * 256, "y" * 100_000, " ", "\u200b\ufeff", "A\x00B"]),
    st.sampled_from([None, 0, b"Acme", ["Acme"], 3.5]),
)
ODD_KEYS: st.SearchStrategy[Any] = st.one_of(
    TEXT, st.integers(), st.none(), st.booleans(), st.floats(), st.tuples(st.integers())
)


def _huge_int() -> int:
    """More digits than int's str() converts (hypothesis could not even show it as a constant)."""
    return 10**5000


LEAVES: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # nan and the infinities included
    TEXT,
    st.sampled_from([-(2**64), 1e308, 5e-324, -0.0, 1e23]),
    st.builds(_huge_int),
    st.decimals(),
    st.binary(max_size=4),
    st.sampled_from([set(), frozenset({1}), object(), ...]),
)
VALUES: st.SearchStrategy[Any] = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(ODD_KEYS, children, max_size=4),
        st.dictionaries(TEXT, children, max_size=4).map(types.MappingProxyType),
    ),
    max_leaves=20,
)


def _nested(depth: int) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for _ in range(depth - 1):
        settings = {"n": settings}
    return settings


def _circular() -> dict[str, Any]:
    settings: dict[str, Any] = {"plan": "pro"}
    settings["self"] = settings
    return settings


SETTINGS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.dictionaries(TEXT, VALUES, max_size=5),
    st.dictionaries(ODD_KEYS, VALUES, max_size=5),
    VALUES,  # mostly not a mapping at all
    st.integers(min_value=95, max_value=105).map(_nested),  # about SETTINGS_MAX_DEPTH
    st.sampled_from([10_000, 100_000]).map(_nested),  # deeper than Python's recursion limit
    st.builds(_circular),
    st.sampled_from([{"blob": "z" * 2_000_000}, {"k" * 100_000: 1}, {"a": [0] * 100_000}]),
)


# Good values, so that each hostile argument is also tried next to good ones (and successes are
# checked too): three draws in four are good.
GOOD_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
GOOD_SLUGS = VALID_SLUGS.filter(lambda slug: slug not in RESERVED_SLUGS and slug != MARKER)
GOOD_NAMES = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 .&'-]{0,30}", fullmatch=True),
    st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=30),
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        GOOD_TEXT,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(GOOD_TEXT, children, max_size=3)
    ),
    max_leaves=10,
)
GOOD_SETTINGS = st.dictionaries(GOOD_TEXT, JSON_VALUES, max_size=4)


@st.composite
def _mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """A good value three times in four, else a hostile one."""
    return draw(hostile) if draw(st.integers(0, 3)) == 0 else draw(good)


def _reset(conn: Conn) -> Tenant:
    """An empty table but for the base tenant (each example starts from the same state)."""
    conn.execute("DELETE FROM tenants")
    return tenants.create(conn, BASE, BASE_NAME, settings=BASE_SETTINGS)


def _snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    """Every row of the table but the marker, whole."""
    return conn.execute(
        "SELECT id, slug, name, status, settings::text, created_at, updated_at"
        " FROM tenants WHERE slug <> %s ORDER BY id",
        (MARKER,),
    ).fetchall()


def _same_json(stored: object, given: object) -> bool:
    """Whether ``stored`` (read back) is the JSON value ``given`` (as json.loads reads it): a
    float may come back as the int or Decimal of the same JSON number."""
    if isinstance(given, bool) or given is None or isinstance(given, str):
        return stored == given and type(stored) is type(given)
    if isinstance(given, float) or isinstance(stored, float | Decimal):
        return (
            isinstance(stored, int | float | Decimal)
            and not isinstance(stored, bool)
            and float(stored) == float(given)  # type: ignore[arg-type]
        )
    if isinstance(given, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(given)
            and all(_same_json(s, g) for s, g in zip(stored, given, strict=True))
        )
    if isinstance(given, dict):
        return (
            isinstance(stored, dict)
            and stored.keys() == given.keys()
            and all(_same_json(stored[key], value) for key, value in given.items())
        )
    return stored == given


def _expected_settings(slug: str, settings: object) -> object:
    return json.loads(tenants.settings_json(slug, settings))


def _still_usable(conn: Conn, *, in_transaction: bool) -> None:
    status = conn.info.transaction_status
    expected = pq.TransactionStatus.INTRANS if in_transaction else pq.TransactionStatus.IDLE
    assert status == expected, f"the connection is left {status.name}"
    assert conn.execute("SELECT 1").fetchone() == (1,)


@contextmanager
def _caller(conn: Conn, *, in_transaction: bool) -> Iterator[None]:
    """Autocommit, or a transaction of the caller's that did some work first (a marker tenant)
    and must still have it afterwards; rolled back at the end."""
    if not in_transaction:
        yield
        return
    with conn.transaction(force_rollback=True):
        marker = tenants.create(conn, MARKER, "Marker")
        yield
        assert tenants.get_by_slug(conn, MARKER) == marker, "the caller's work is lost"


def _attempt(
    conn: Conn, call: Callable[[], T], *, in_transaction: bool
) -> tuple[T | None, DbToolsError | None]:
    """The result of ``call``, or the dbtools error it raised, after which the connection must
    still be usable. Anything else raised fails the test, with its traceback."""
    try:
        result = call()
    except DbToolsError as exc:
        event(f"raised {type(exc).__name__}")  # --hypothesis-show-statistics lists the mix
        _still_usable(conn, in_transaction=in_transaction)
        return None, exc
    event("succeeded")
    return result, None


@FUZZ
@given(
    slug=_mostly(GOOD_SLUGS, SLUGS),
    name=_mostly(GOOD_NAMES, NAMES),
    settings=_mostly(st.one_of(st.none(), GOOD_SETTINGS), SETTINGS),
    in_transaction=st.booleans(),
)
def test_fuzzed_create_raises_only_documented_errors_and_writes_all_or_nothing(
    conn: Conn, slug: Any, name: Any, settings: Any, in_transaction: bool
) -> None:
    _reset(conn)
    with _caller(conn, in_transaction=in_transaction):
        before = _snapshot(conn)
        created, error = _attempt(
            conn,
            lambda: tenants.create(conn, slug, name, settings=settings),
            in_transaction=in_transaction,
        )
        after = _snapshot(conn)
        if error is not None:
            assert after == before, f"{error!r} left a change behind"
            return
        assert created is not None
        assert (created.slug, created.name, created.status) == (slug, name, TenantStatus.ACTIVE)
        given = {} if settings is None else settings
        assert _same_json(created.settings, _expected_settings(slug, given))
        assert len(after) == len(before) + 1
        assert set(before) < set(after)
        assert tenants.get_by_slug(conn, slug) == created
        assert_rows_satisfy_every_constraint(conn)


@FUZZ
@given(
    slug=_mostly(st.just(BASE), SLUGS),
    name=_mostly(st.one_of(st.none(), GOOD_NAMES), NAMES),
    settings=_mostly(st.one_of(st.none(), GOOD_SETTINGS), SETTINGS),
    in_transaction=st.booleans(),
)
def test_fuzzed_update_raises_only_documented_errors_and_writes_all_or_nothing(
    conn: Conn, slug: Any, name: Any, settings: Any, in_transaction: bool
) -> None:
    base = _reset(conn)
    with _caller(conn, in_transaction=in_transaction):
        before = _snapshot(conn)
        updated, error = _attempt(
            conn,
            lambda: tenants.update(conn, slug, name=name, settings=settings),
            in_transaction=in_transaction,
        )
        after = _snapshot(conn)
        if error is not None:
            assert after == before, f"{error!r} left a change behind"
            return
        assert updated is not None
        assert (updated.id, updated.slug, updated.status) == (base.id, BASE, base.status)
        assert updated.name == (BASE_NAME if name is None else name)
        given = BASE_SETTINGS if settings is None else settings
        assert _same_json(updated.settings, _expected_settings(BASE, given))
        assert updated.created_at == base.created_at
        assert len(after) == len(before)
        assert tenants.get_by_slug(conn, BASE) == updated
        assert_rows_satisfy_every_constraint(conn)


def _json_text(value: object) -> str:
    """``value`` as JSON text where json can write it (odd keys skipped, odd values as str)."""
    try:
        return json.dumps(value, default=str, skipkeys=True)
    except (TypeError, ValueError, RecursionError):
        return "not json"


SETTINGS_TEXT: st.SearchStrategy[str] = st.one_of(
    st.just(""),
    st.one_of(st.dictionaries(TEXT, VALUES, max_size=4), VALUES).map(_json_text),
    st.sampled_from(
        [
            '{"a": NaN}',
            '{"a": 1e999}',
            "[1]",
            '"x"',
            "null",
            '{"a": "\\u0000"}',
            '{"a": "\\ud800"}',
            '{"a": 1',
            "{" * 5000 + "}" * 5000,
            '{"n": ' + "9" * 5000 + "}",
            '{"a":1,"a":2}',
        ]
    ),
    TEXT,
)


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    """CSV files: a header (usually a right one), rows of valid and invalid fields, quoted in
    any of csv's ways, or some text that is not CSV at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(CHARACTERS, max_size=200))
    header: str = draw(
        _mostly(
            st.sampled_from(
                ["slug,name", "slug,name,settings", "\ufeffslug,name", " SLUG , Name "]
            ),
            TEXT,
        )
    )
    field = st.one_of(
        VALID_SLUGS, st.just(BASE), SLUG_LIKE, NAMES.filter(lambda n: isinstance(n, str))
    )
    good_row = st.one_of(
        st.tuples(GOOD_SLUGS, GOOD_NAMES),
        st.tuples(GOOD_SLUGS, GOOD_NAMES, st.one_of(st.just(""), GOOD_SETTINGS.map(json.dumps))),
    )
    hostile_row = st.one_of(
        st.tuples(GOOD_SLUGS, GOOD_NAMES, SETTINGS_TEXT),
        st.lists(st.one_of(field, SETTINGS_TEXT), max_size=4),
    )
    rows = draw(st.lists(_mostly(good_row, hostile_row), max_size=6))
    out = io.StringIO(newline="")
    quote_all = draw(st.booleans())
    line_end = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    writer = csv.writer(
        out, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator=line_end
    )
    for row in rows:
        writer.writerow(row)
    tail: str = draw(_mostly(st.just(""), st.sampled_from(["\n", '"', "\x00", "\r\n\r\n"])))
    return header + line_end + out.getvalue() + tail


@FUZZ
@given(text=csv_texts(), in_transaction=st.booleans())
def test_fuzzed_import_raises_only_documented_errors_and_writes_all_or_nothing(
    conn: Conn, text: str, in_transaction: bool
) -> None:
    _reset(conn)
    with _caller(conn, in_transaction=in_transaction):
        before = _snapshot(conn)
        imported, error = _attempt(
            conn,
            lambda: importing.import_csv(conn, io.StringIO(text, newline=""), name="fuzz.csv"),
            in_transaction=in_transaction,
        )
        after = _snapshot(conn)
        if error is not None:
            assert isinstance(error, ImportFailed), repr(error)
            assert error.errors, "an ImportFailed that names no bad row"
            assert after == before, f"{error!r} left a change behind"
            return
        assert imported is not None
        assert len(after) == len(before) + imported
        assert set(before) <= set(after)
        assert_rows_satisfy_every_constraint(conn)
