"""The tenant cache (dbtools.cache, dbtools.aio.cache) against a real database: what it serves,
how changes from any client reach it, listener loss, races, bounds and the pooler rule.

Each behavioural test runs on both caches: the thread-based one on a ConnectionPool, and the
asyncio one on an AsyncConnectionPool driven on an event loop thread (tests/helpers.py). Changes
are made on a separate connection, or by a separate psql process, as another service would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from dbtools import db, migrations, tenants
from dbtools.aio import cache as aio_cache
from dbtools.aio import db as aio_db
from dbtools.cache import (
    LISTENER_CHECK,
    MISS,
    CacheCore,
    CacheStats,
    Relay,
    TenantCache,
    listen_target,
)
from dbtools.config import Target
from dbtools.errors import (
    CacheClosed,
    ConfigurationError,
    DatabaseUnavailable,
    DbToolsError,
    NotMigrated,
)
from dbtools.tenants import Tenant
from tests.helpers import (
    INJECTION,
    SERVER,
    EventLoopThread,
    Forwarder,
    PgBouncer,
    Standby,
    run_psql,
)

# Every test takes a direct session: LISTEN needs one (a test below checks the refusal).
pytestmark = pytest.mark.direct

Conn = psycopg.Connection[Any]
# How long a change may take to reach the cache before a test calls it lost (the benchmark
# measures the real figure: milliseconds).
WITHIN = 5.0
LISTENER = "dbtools tenant cache"  # the listening session's application_name


@dataclass
class Cache:
    """One cache under test, used synchronously whatever its kind."""

    get: Callable[[Any], Tenant | None]
    stats: Callable[[], CacheStats]
    close: Callable[[], None]
    close_pool: Callable[[], None]
    core: CacheCore


MakeCache = Callable[..., Cache]


@pytest.fixture(params=["sync", "async"])
def make_cache(request: pytest.FixtureRequest, target: Target) -> Iterator[MakeCache]:
    """Make caches of the parametrised kind on pools to this test's database (``pool_target``
    and ``pool_kwargs`` change the pool's); all are closed afterwards."""
    closers: list[Callable[[], None]] = []

    def sync(pool_target: Target | None = None, pool_kwargs: Any = None, **options: Any) -> Cache:
        pool = db.create_pool(pool_target or target, kwargs=pool_kwargs or {})
        closers.append(pool.close)
        try:
            cache = TenantCache(pool, **options)
        except BaseException:
            pool.close()
            raise
        closers.append(cache.close)
        return Cache(cache.get_by_slug, cache.stats, cache.close, pool.close, cache)

    def asynchronous(
        pool_target: Target | None = None, pool_kwargs: Any = None, **options: Any
    ) -> Cache:
        loop = EventLoopThread()
        closers.append(loop.stop)
        pool = loop.run(aio_db.create_pool(pool_target or target, kwargs=pool_kwargs or {}))
        closers.append(lambda: loop.run(pool.close()))
        cache = aio_cache.TenantCache(pool, **options)
        loop.run(cache.open())
        closers.append(lambda: loop.run(cache.close()))
        return Cache(
            lambda slug: loop.run(cache.get_by_slug(slug)),
            cache.stats,
            lambda: loop.run(cache.close()),
            lambda: loop.run(pool.close()),
            cache,
        )

    yield sync if request.param == "sync" else asynchronous
    for close in reversed(closers):
        close()


def eventually(check: Callable[[], bool], what: str, within: float = WITHIN) -> None:
    """Wait until ``check()`` holds, polling; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within:g} s: {what}")
        time.sleep(0.002)


def served(cache: Cache, conn: Conn, slug: str) -> None:
    """Wait until the cache serves what the database holds for ``slug``."""
    eventually(
        lambda: cache.get(slug) == tenants.get_by_slug(conn, slug),
        f"the cache serves the stored tenant {slug!r}",
    )


def cached(cache: Cache, slug: str) -> Tenant | None:
    """The cache's answer for ``slug`` once it holds it: asked until an answer comes from
    memory (a load that a notification overtakes is not kept, and is asked again)."""
    deadline = time.monotonic() + WITHIN
    while time.monotonic() < deadline:
        cache.get(slug)
        before = cache.stats().loads
        answer = cache.get(slug)
        if cache.stats().loads == before:
            return answer
    pytest.fail(f"{slug!r} is never kept")


def listener_pid(conn: Conn) -> int:
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = "
        "current_database()",
        (LISTENER,),
    ).fetchone()
    assert row is not None, "no listening session"
    return int(row[0])


# --- what it serves ---------------------------------------------------------------------------


def test_it_serves_what_get_by_slug_returns(conn: Conn, make_cache: MakeCache) -> None:
    acme = tenants.create(conn, "acme", "Acme", settings={"plan": "pro"})
    cache = make_cache()
    assert cache.get("acme") == acme == tenants.get_by_slug(conn, "acme")
    assert cached(cache, "acme") == acme
    assert cache.get("ghost") is None
    assert cached(cache, "ghost") is None


def test_hits_and_misses_need_no_database(conn: Conn, make_cache: MakeCache) -> None:
    """A flood of lookups of a known or an unknown slug costs no round trip: with the pool
    closed they are still answered, from memory."""
    acme = tenants.create(conn, "acme", "Acme")
    cache = make_cache()
    cache.get("acme")
    cache.get("ghost")
    cache.close_pool()
    for _ in range(1000):
        assert cache.get("acme") == acme
        assert cache.get("ghost") is None
    assert cache.stats().loads == 2


def test_invalid_slugs_never_reach_the_database(make_cache: MakeCache) -> None:
    cache = make_cache()
    cache.close_pool()  # any lookup in the database would fail now
    for slug in ["", "ab", "Acme", "acme\n", "a" * 51, INJECTION, 42, None, b"acme", ["acme"]]:
        assert cache.get(slug) is None, repr(slug)
    assert cache.stats().loads == 0


def test_a_str_subclass_is_answered_but_not_kept(conn: Conn, make_cache: MakeCache) -> None:
    class Slug(str):
        __slots__ = ()

    acme = tenants.create(conn, "acme", "Acme")
    cache = make_cache()
    assert cache.get(Slug("acme")) == acme
    assert cache.stats().size == 0


# --- changes from anywhere reach it ----------------------------------------------------------


CHANGES = ["create", "rename", "name", "settings", "suspend", "activate", "delete", "truncate"]


def change(conn: Conn, kind: str) -> None:
    """Make one kind of change, on the tenants set up by the test below."""
    if kind == "create":
        tenants.create(conn, "ghost", "Ghost")
    elif kind == "rename":
        conn.execute("UPDATE tenants SET slug = 'acme-corp' WHERE slug = 'acme'")
    elif kind == "name":
        tenants.update(conn, "acme", name="Acme Corp")
    elif kind == "settings":
        tenants.update(conn, "acme", settings={"plan": "pro"})
    elif kind == "suspend":
        tenants.suspend(conn, "acme")
    elif kind == "activate":
        tenants.activate(conn, "sleepy")
    elif kind == "delete":
        tenants.delete(conn, "acme")
    else:
        conn.execute("TRUNCATE tenants")


@pytest.mark.parametrize("kind", CHANGES)
def test_each_kind_of_change_reaches_the_cache(
    conn: Conn, make_cache: MakeCache, kind: str
) -> None:
    tenants.create(conn, "acme", "Acme")
    tenants.create(conn, "sleepy", "Sleepy")
    tenants.suspend(conn, "sleepy")
    cache = make_cache()
    slugs = ["acme", "acme-corp", "ghost", "sleepy"]
    before = {slug: cached(cache, slug) for slug in slugs}  # held, found or missing
    change(conn, kind)
    now = {slug: tenants.get_by_slug(conn, slug) for slug in slugs}
    assert now != before, "the change changed nothing"
    for slug in slugs:
        served(cache, conn, slug)


def test_a_change_made_by_psql_reaches_the_cache(
    conn: Conn, target: Target, make_cache: MakeCache
) -> None:
    tenants.create(conn, "acme", "Acme")
    cache = make_cache()
    assert cached(cache, "acme") is not None
    assert cached(cache, "ghost") is None
    result = run_psql(
        target,
        "UPDATE tenants SET name = 'From psql' WHERE slug = 'acme'",
        "INSERT INTO tenants (slug, name) VALUES ('ghost', 'Ghost')",
    )
    assert result.returncode == 0, result.stderr
    eventually(lambda: getattr(cache.get("acme"), "name", None) == "From psql", "psql's update")
    eventually(lambda: cache.get("ghost") is not None, "psql's insert")


def heard_after(conn: Conn, cache: Cache) -> None:
    """Make a change that the cache hears of, and wait until it has: notifications arrive in
    commit order, so whatever was announced before has been heard too."""
    heard = cache.stats().notifications
    marker = tenants.get_by_slug(conn, "marker")
    if marker is None:
        tenants.create(conn, "marker", "Marker")
    else:
        tenants.update(conn, "marker", name=f"Marker {heard}")
    eventually(lambda: cache.stats().notifications > heard, "the marker's change is heard")


def test_a_change_that_changes_nothing_keeps_the_entry(conn: Conn, make_cache: MakeCache) -> None:
    tenants.create(conn, "acme", "Acme")
    tenants.suspend(conn, "acme")
    cache = make_cache()
    acme = cached(cache, "acme")
    tenants.update(conn, "acme", name="Acme")  # the same name: nothing is announced
    tenants.suspend(conn, "acme")  # suspended already: nothing either
    heard_after(conn, cache)
    loads = cache.stats().loads
    assert cache.get("acme") == acme == tenants.get_by_slug(conn, "acme")
    assert cache.stats().loads == loads  # kept all along


def test_a_rolled_back_change_keeps_the_entry(conn: Conn, make_cache: MakeCache) -> None:
    tenants.create(conn, "acme", "Acme")
    cache = make_cache()
    acme = cached(cache, "acme")
    conn.execute("BEGIN")
    tenants.update(conn, "acme", name="Never")
    conn.execute("ROLLBACK")
    tenants.update(conn, "acme", name="Acme")  # changes nothing: announces nothing
    heard_after(conn, cache)
    loads = cache.stats().loads
    assert cache.get("acme") == acme
    assert cache.stats().loads == loads  # kept all along


# --- the silent channel ------------------------------------------------------------------------


def test_a_lost_listener_empties_the_cache_until_it_listens_again(
    conn: Conn, make_cache: MakeCache
) -> None:
    tenants.create(conn, "acme", "Acme")
    cache = make_cache()
    cached(cache, "acme")
    first = listener_pid(conn)
    conn.execute("SELECT pg_terminate_backend(%s)", (first,))
    # While it is down (or just back) nothing stale is served: the change below is visible at
    # once, without waiting for any notification.
    tenants.update(conn, "acme", name="Changed while deaf")
    eventually(lambda: cache.stats().listener_losses == 1, "the loss is noticed")
    assert cache.get("acme") == tenants.get_by_slug(conn, "acme")
    eventually(lambda: cache.stats().listening, "listening again")
    assert listener_pid(conn) != first
    cached(cache, "acme")
    tenants.update(conn, "acme", name="Heard again")  # invalidation works on the new session
    served(cache, conn, "acme")


def test_a_listener_that_cannot_come_back_leaves_the_cache_serving_the_database(
    conn: Conn, target: Target, make_cache: MakeCache
) -> None:
    tenants.create(conn, "acme", "Acme")
    cache = make_cache()
    cached(cache, "acme")
    conn.execute("ALTER TABLE tenants DISABLE TRIGGER tenants_notify_update")
    conn.execute("SELECT pg_terminate_backend(%s)", (listener_pid(conn),))
    eventually(lambda: not cache.stats().listening, "the loss is noticed")
    time.sleep(0.5)  # several attempts to listen again, each refused
    assert not cache.stats().listening
    for name in ["One", "Two"]:
        tenants.update(conn, "acme", name=name)  # not announced: the trigger is disabled
        assert getattr(cache.get("acme"), "name", None) == name
    assert cache.stats().size == 0
    conn.execute("ALTER TABLE tenants ENABLE TRIGGER tenants_notify_update")
    eventually(lambda: cache.stats().listening, "listening once the trigger is back")


def test_the_ttl_catches_a_change_that_was_never_announced(
    conn: Conn, make_cache: MakeCache
) -> None:
    tenants.create(conn, "acme", "Acme")
    cache = make_cache(ttl=0.3)
    cached(cache, "acme")
    # A session in replica mode (logical replication applying changes) fires no triggers.
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE tenants SET name = 'Unannounced' WHERE slug = 'acme'")
    assert getattr(cache.get("acme"), "name", None) == "Acme"  # stale, within the ttl
    time.sleep(0.35)
    assert getattr(cache.get("acme"), "name", None) == "Unannounced"


def test_a_change_racing_a_load_is_not_kept(
    conn: Conn, target: Target, make_cache: MakeCache
) -> None:
    """The pool reaches the server through a forwarder that holds the answers back: the load
    has read the old row, a change commits and is announced to the listener (connected
    directly) while that answer is on its way. The old row is returned (it was, when the load
    began), but must not be kept."""
    tenants.create(conn, "acme", "Acme")
    forwarder = Forwarder(SERVER)
    try:
        # Autocommit: the query goes at once, not after a BEGIN whose answer would be held.
        cache = make_cache(
            pool_target=forwarder.target(target.dbname),
            pool_kwargs={"autocommit": True},
            listen=target,
        )
        heard = cache.stats().notifications
        forwarder.pause(replies=True)
        loaded: list[Tenant | None] = []
        loader = threading.Thread(target=lambda: loaded.append(cache.get("acme")))
        loader.start()
        time.sleep(0.3)  # the query ran on the server; its answer waits in the forwarder
        tenants.update(conn, "acme", name="Changed during the load")
        eventually(lambda: cache.stats().notifications > heard, "the change is heard")
        forwarder.resume()
        loader.join()
        assert getattr(loaded[0], "name", None) == "Acme"  # the old row: read before the change
        assert getattr(cache.get("acme"), "name", None) == "Changed during the load"
    finally:
        forwarder.close()


def test_the_core_keeps_no_load_that_a_change_overtook() -> None:
    """The protocol itself, step by step: a load registered before a change was announced is
    void; one registered after it is kept; a listener loss voids both kinds."""
    core = CacheCore(object(), listen="postgresql:///x", max_size=10, max_missing=10, ttl=60)
    core.listening_started()
    stale = core.begin_load("acme")
    core.invalidate("other acme")
    fresh = core.begin_load("acme")
    core.end_load(stale, None)
    assert core.stats().missing == 0
    core.end_load(fresh, None)
    assert core.stats().missing == 1
    lost = core.begin_load("beta")
    core.listening_lost()
    core.listening_started()
    core.end_load(lost, None)
    assert core.stats().missing == 0


def test_truncate_empties_the_cache(conn: Conn, make_cache: MakeCache) -> None:
    for slug in ["acme", "beta"]:
        tenants.create(conn, slug, slug.title())
    cache = make_cache()
    for slug in ["acme", "beta", "ghost"]:
        cached(cache, slug)
    conn.execute("TRUNCATE tenants")
    eventually(lambda: cache.stats().size + cache.stats().missing == 0, "everything dropped")
    assert cache.get("acme") is None


# --- concurrency, bounds ---------------------------------------------------------------------


def test_readers_and_a_writer_agree_with_the_database_in_the_end(
    conn: Conn, make_cache: MakeCache
) -> None:
    slugs = [f"tenant-{n}" for n in range(5)]
    for slug in slugs:
        tenants.create(conn, slug, "v0")
    cache = make_cache()
    seen: dict[str, set[str]] = {slug: set() for slug in slugs}
    stop = threading.Event()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                for slug in slugs:
                    tenant = cache.get(slug)
                    assert tenant is not None
                    seen[slug].add(tenant.name)
        except BaseException as exc:
            failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(8)]
    for reader in readers:
        reader.start()
    for version in range(1, 31):
        tenants.update(conn, slugs[version % len(slugs)], name=f"v{version}")
    for slug in slugs:
        served(cache, conn, slug)
    stop.set()
    for reader in readers:
        reader.join()
    assert failures == []
    written = {f"v{n}" for n in range(31)}
    assert all(names <= written for names in seen.values())  # nothing made up


def test_size_is_bounded_and_the_least_recently_used_go_first(
    conn: Conn, make_cache: MakeCache
) -> None:
    for n in range(30):
        tenants.create(conn, f"tenant-{n}", "T")
    cache = make_cache(max_size=10, max_missing=5)
    for n in range(30):
        cache.get(f"tenant-{n}")
        cache.get("tenant-0")  # used all along: kept
        cache.get(f"ghost-{n}")
    stats = cache.stats()
    assert (stats.size, stats.missing) == (10, 5)
    assert cached(cache, "tenant-0") is not None
    assert cached(cache, "tenant-29") is not None
    loads = cache.stats().loads
    cache.get("tenant-1")  # dropped long ago
    assert cache.stats().loads == loads + 1


@pytest.mark.parametrize(
    "options",
    [
        {"max_size": 0},
        {"max_missing": -1},
        {"ttl": 0},
        {"ttl": float("inf")},
        {"heartbeat": "1"},
        {"heartbeat": 0.01},  # a catalog query every 5 ms, and a loss at every hiccup
        {"heartbeat": 1e10},  # beyond what a wait can take
    ],
)
def test_bad_options_are_refused(make_cache: MakeCache, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        make_cache(**options)


# --- where it listens --------------------------------------------------------------------------


def test_a_pool_through_pgbouncer_needs_a_direct_listen_target(
    conn: Conn, target: Target, pgbouncer: PgBouncer, make_cache: MakeCache
) -> None:
    pooled = pgbouncer.target(target.dbname)
    with pytest.raises(ConfigurationError, match="listen="):
        make_cache(pool_target=pooled)
    with pytest.raises(ConfigurationError, match="pooler"):
        make_cache(listen=pooled)
    tenants.create(conn, "acme", "Acme")
    cache = make_cache(pool_target=pooled, listen=target)
    cached(cache, "acme")
    tenants.update(conn, "acme", name="Through the pooler")
    served(cache, conn, "acme")


def test_a_database_that_does_not_announce_changes_is_refused(
    conn: Conn, make_cache: MakeCache
) -> None:
    conn.execute("ALTER TABLE tenants DISABLE TRIGGER tenants_notify_delete")
    with pytest.raises(NotMigrated, match="3 of the 4 triggers"):
        make_cache()


def test_an_unreachable_listen_target_is_database_unavailable(
    target: Target, make_cache: MakeCache
) -> None:
    nowhere = Target.from_params(**(target.params | {"dbname": "dbtools_no_such_db"}))
    with pytest.raises(DatabaseUnavailable):
        make_cache(listen=nowhere)


def test_close_stops_the_listener_and_refuses_lookups(conn: Conn, make_cache: MakeCache) -> None:
    tenants.create(conn, "acme", "Acme")
    cache = make_cache()
    cached(cache, "acme")
    listener_pid(conn)
    cache.close()
    cache.close()  # again: nothing
    eventually(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (LISTENER,)
            ).fetchone()
            == (0,)
        ),
        "the listening session ends",
    )
    for slug in ["acme", "Not A Slug", None]:  # whatever is asked, the answer is the same
        with pytest.raises(CacheClosed):
            cache.get(slug)


def test_a_child_process_does_not_trust_a_cache_made_before_fork(
    conn: Conn, make_cache: MakeCache
) -> None:
    """The listener and the pool stay the parent's: in the child the cache holds nothing and
    refuses lookups (on the parent's pool, answers get mixed up), and closing it there leaves
    the parent's listening."""
    tenants.create(conn, "acme", "Acme")
    cache = make_cache()
    cached(cache, "acme")
    listening = listener_pid(conn)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never return into pytest
        code = 1
        try:
            stats = cache.stats()
            if not stats.listening and stats.size == 0 and cache.core.lookup("acme") is MISS:
                try:  # the pool is the parent's too: a lookup is refused, not sent on it
                    if isinstance(cache.core, aio_cache.TenantCache):  # its loop is the parent's
                        asyncio.run(cache.core.get_by_slug("acme"))
                    else:
                        cache.get("acme")
                    code = 3
                except CacheClosed:
                    code = 0
            else:
                code = 2
            if isinstance(cache.core, TenantCache):  # the async one's loop stayed in the parent
                cache.core.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    time.sleep(0.3)  # what the parent's listener would take to notice, and to reconnect
    assert listener_pid(conn) == listening  # untouched by the child's close()
    tenants.update(conn, "acme", name="Heard by the parent")
    served(cache, conn, "acme")


# --- found by an outside probe ------------------------------------------------------------------


def test_a_process_with_many_open_files_still_hears_changes(
    conn: Conn, make_cache: MakeCache
) -> None:
    """select() cannot watch a descriptor above 1023, which a busy server process has: the
    listener died at once, and the cache went stale while saying it listened."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))
    padding = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        tenants.create(conn, "acme", "Acme")
        cache = make_cache()
        cached(cache, "acme")
        tenants.update(conn, "acme", name="Heard")
        served(cache, conn, "acme")
        assert cache.stats().listening
    finally:
        for fd in padding:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_triggers_disabled_while_it_listens_are_noticed_within_a_heartbeat(
    conn: Conn, make_cache: MakeCache, caplog: pytest.LogCaptureFixture
) -> None:
    tenants.create(conn, "acme", "Acme")
    cache = make_cache(heartbeat=0.5)
    cached(cache, "acme")
    conn.execute("ALTER TABLE tenants DISABLE TRIGGER tenants_notify_update")
    tenants.update(conn, "acme", name="Unannounced")
    served(cache, conn, "acme")  # the heartbeat finds the trigger off: the cache stops trusting
    assert not cache.stats().listening
    eventually(
        lambda: (
            ("cannot listen" in caplog.text and "tenants_notify" not in caplog.text)
            or "0006" in caplog.text
        ),
        "a warning says why it cannot listen again",
    )


def test_a_listen_target_in_another_database_is_refused(
    make_cache: MakeCache, missing_db: Target
) -> None:
    migrations.ensure_database(missing_db)
    migrations.apply(missing_db)  # migrated too: only which database it is tells them apart
    with pytest.raises(ConfigurationError, match="listen= must reach the tenants table the pool"):
        make_cache(listen=missing_db)


def test_a_listen_target_that_is_not_migrated_is_not_migrated(
    make_cache: MakeCache, missing_db: Target
) -> None:
    migrations.ensure_database(missing_db)
    with pytest.raises(NotMigrated):
        make_cache(listen=missing_db)


def test_several_listen_hosts_mean_the_writable_one() -> None:
    for listen in ["postgresql://a,b/x", "host=a,b dbname=x target_session_attrs=any"]:
        assert listen_target(None, listen).params["target_session_attrs"] == "read-write"
    kept = "postgresql://a,b/x?target_session_attrs=primary"
    assert listen_target(None, kept).params["target_session_attrs"] == "primary"
    assert "target_session_attrs" not in listen_target(None, "postgresql://a/x").params


def test_a_network_gone_silent_is_noticed_and_close_does_not_hang(
    conn: Conn, target: Target, make_cache: MakeCache
) -> None:
    """Through a forwarder that turns into a black hole: the heartbeat finds the listener
    deaf, and close() returns though the listener is stuck connecting."""
    tenants.create(conn, "acme", "Acme")
    forwarder = Forwarder(SERVER)
    try:
        cache = make_cache(listen=forwarder.target(target.dbname), heartbeat=0.5)
        cached(cache, "acme")
        forwarder.pause()
        tenants.update(conn, "acme", name="Sent into the void")
        eventually(lambda: not cache.stats().listening, "the silence is noticed")
        served(cache, conn, "acme")
        time.sleep(0.3)  # a reconnection is under way, and hangs in the black hole
        started = time.monotonic()
        cache.close()
        assert time.monotonic() - started < WITHIN, "close() hung"
    finally:
        forwarder.close()


def test_a_str_subclass_is_looked_up_by_its_text(conn: Conn, make_cache: MakeCache) -> None:
    class Disguised(str):
        __slots__ = ()

        def __str__(self) -> str:
            return "other"

    acme = tenants.create(conn, "acme", "Acme")
    tenants.create(conn, "other", "Other")
    cache = make_cache()
    assert cache.get(Disguised("acme")) == acme


def test_answers_from_a_lagging_standby_are_served_but_never_kept(
    conn: Conn, target: Target, standby: Standby, make_cache: MakeCache
) -> None:
    """The primary announces a change before the standby replays it: a reload from the
    standby then would keep the old row, and serve it until the ttl."""
    acme = tenants.create(conn, "acme", "Acme")
    replica = standby.target(target.dbname)
    # This very tenant: the standby may still hold the last test's database of the same name.
    eventually(lambda: _on(replica, "acme") == acme, "the standby has the tenant", within=30)
    cache = make_cache(pool_target=replica, listen=target)
    assert getattr(cache.get("acme"), "name", None) == "Acme"
    tenants.update(conn, "acme", name="Changed")
    heard_after(conn, cache)  # the change is announced; the standby replays it a second later
    eventually(
        lambda: getattr(cache.get("acme"), "name", None) == "Changed", "the standby's new row"
    )
    stats = cache.stats()
    assert stats.size == 0  # nothing was kept
    assert stats.loads >= 2  # but each answer counts as a load
    assert getattr(_on(replica, "acme"), "name", None) == "Changed"


def _on(replica: Target, slug: str) -> Tenant | None:
    """``slug`` as the standby has it, or None (also while it lacks the database)."""
    try:
        with db.connect(replica, autocommit=True) as standby_conn:
            return tenants.get_by_slug(standby_conn, slug)
    except DatabaseUnavailable:
        return None


# --- found by a second outside probe ---------------------------------------------------------


def test_a_notification_right_behind_a_heartbeat_answer_is_relayed_at_once(
    conn: Conn, target: Target
) -> None:
    """libpq stops parsing at the end of the heartbeat's answer; a notification that arrived
    in the same read must still be relayed by that step, not one heartbeat later."""
    core = CacheCore(object(), listen=target, heartbeat=0.2)
    with db.connect(target, autocommit=True) as listener:
        row = listener.execute(LISTENER_CHECK).fetchone()
        listener.execute("LISTEN dbtools_tenants")
        core.listen_to(core.listener_identity(row), tuple(row or ())[1:4])
        relay = Relay(core, listener.pgconn)
        time.sleep(0.1)
        relay.wait()
        assert relay.sent_at is not None  # the heartbeat went
        time.sleep(0.1)  # its answer is back
        conn.execute("NOTIFY dbtools_tenants, 'acme'")
        time.sleep(0.2)  # the notification is behind it, in the same socket buffer
        relay.step(readable=True)
        assert core.stats().notifications == 1


def test_closing_an_async_cache_with_data_waiting_on_its_socket_ends(
    conn: Conn, target: Target
) -> None:
    """As a benchmark or a test runs it: the event loop idles between runs while a
    notification reaches the listener's socket; close() then cancels the listener as its wait
    ends. asyncio.wait_for dropped that cancellation (Python 3.11) and close() never returned."""
    with asyncio.Runner() as runner:
        pool = runner.run(aio_db.create_pool(target))
        for attempt in range(10):
            cache = aio_cache.TenantCache(pool, heartbeat=0.2)
            runner.run(cache.open())
            conn.execute("SELECT pg_notify('dbtools_tenants', 'acme')")
            time.sleep(0.05)  # the notification waits in the socket; the loop is idle
            closing = runner.run(_closed_within(cache, WITHIN))
            assert closing, f"close() did not return (attempt {attempt})"
        runner.run(pool.close())


async def _closed_within(cache: aio_cache.TenantCache, seconds: float) -> bool:
    """Whether ``cache.close()`` returned within ``seconds`` (it is left running if not)."""
    done, _ = await asyncio.wait({asyncio.ensure_future(cache.close())}, timeout=seconds)
    return bool(done)


def test_an_async_cache_whose_event_loop_ended_stops_serving_from_memory(
    conn: Conn, target: Target
) -> None:
    tenants.create(conn, "acme", "Acme")
    holder: dict[str, Any] = {}

    async def first() -> None:  # asyncio.run cancels the listener task when it returns
        pool = await aio_db.create_pool(target)
        cache = aio_cache.TenantCache(pool)
        await cache.open()
        await cache.get_by_slug("acme")
        holder["cache"] = cache
        await pool.close()

    asyncio.run(first())
    cache = holder["cache"]
    tenants.update(conn, "acme", name="Changed while nobody listened")
    assert not cache.stats().listening
    assert cache.stats().size == 0
    with pytest.raises(CacheClosed, match="not listening"):
        asyncio.run(cache.get_by_slug("acme"))


def test_racing_opens_make_one_listener(conn: Conn, target: Target) -> None:
    async def open_three_times() -> None:
        async with await aio_db.create_pool(target) as pool:
            cache = aio_cache.TenantCache(pool)
            await asyncio.gather(cache.open(), cache.open(), cache.open())
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (LISTENER,)
            ).fetchone()
            await cache.close()
        assert row == (1,)

    asyncio.run(open_three_times())


def test_a_pool_that_reads_another_tenants_table_is_refused(
    conn: Conn, make_cache: MakeCache
) -> None:
    conn.execute("CREATE SCHEMA other")
    conn.execute("CREATE TABLE other.tenants (LIKE public.tenants INCLUDING ALL)")
    with pytest.raises(ConfigurationError, match="search_path"):
        make_cache(pool_kwargs={"options": "-c search_path=other,public"})


def test_a_rewrite_of_the_table_is_noticed_within_a_heartbeat(
    conn: Conn, make_cache: MakeCache
) -> None:
    """ALTER TABLE ... USING rewrites rows and fires no trigger: the heartbeat sees the table's
    file node change, and the cache stops trusting what it holds."""
    tenants.create(conn, "acme", "Acme")
    cache = make_cache(heartbeat=0.3)
    cached(cache, "acme")
    conn.execute("ALTER TABLE tenants ALTER COLUMN name TYPE text USING name || ' (rewritten)'")
    served(cache, conn, "acme")
    eventually(lambda: cache.stats().listening, "listening again on the rewritten table")


def test_pools_that_return_dicts_work(conn: Conn, target: Target, make_cache: MakeCache) -> None:
    tenants.create(conn, "acme", "Acme")
    cache = make_cache(pool_kwargs={"row_factory": dict_row})
    assert cached(cache, "acme") == tenants.get_by_slug(conn, "acme")

    async def connect_with_dicts() -> bool:
        async with await aio_db.connect(target, row_factory=dict_row) as aconn:
            return aconn.closed is False

    assert asyncio.run(connect_with_dicts())


def test_a_read_pool_listens_on_the_primary() -> None:
    for attrs in ["prefer-standby", "read-only", "standby", "any"]:
        pool = Target.from_url(f"postgresql://a,b/x?target_session_attrs={attrs}")
        assert listen_target(pool, None).params["target_session_attrs"] == "read-write"


# --- the property --------------------------------------------------------------------------------

SLUGS = ["acme", "beta", "gamma"]
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["create", "rename", "name", "settings", "suspend", "activate", "delete"]),
        st.sampled_from(SLUGS),
        st.sampled_from(SLUGS),
        st.integers(0, 3),
    ),
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=OPERATIONS)
def test_the_cached_answer_is_the_uncached_one_after_any_changes(
    conn: Conn, make_cache: MakeCache, operations: list[tuple[str, str, str, int]]
) -> None:
    conn.execute("TRUNCATE tenants")
    cache = make_cache()
    for kind, slug, other, number in operations:
        for each in SLUGS:
            cache.get(each)  # hold every slug, found or missing, before each change
        # Refused changes (a duplicate, a missing tenant) leave the connection usable.
        with contextlib.suppress(DbToolsError, psycopg.Error):
            _apply(conn, kind, slug, other, number)
        for each in SLUGS:
            served(cache, conn, each)
    cache.close()


def _apply(conn: Conn, kind: str, slug: str, other: str, number: int) -> None:
    if kind == "create":
        tenants.create(conn, slug, f"Tenant {number}")
    elif kind == "rename":
        conn.execute("UPDATE tenants SET slug = %s WHERE slug = %s", (other, slug))
    elif kind == "name":
        tenants.update(conn, slug, name=f"Name {number}")
    elif kind == "settings":
        tenants.update(conn, slug, settings={"n": number})
    elif kind == "suspend":
        tenants.suspend(conn, slug)
    elif kind == "activate":
        tenants.activate(conn, slug)
    else:
        tenants.delete(conn, slug)


def test_an_async_cache_that_was_never_opened_says_so(target: Target) -> None:
    """Without ``async with`` (or open()) nothing listens: lookups are refused, not silently
    served uncached."""
    loop = EventLoopThread()
    try:
        pool = loop.run(aio_db.create_pool(target))
        cache = aio_cache.TenantCache(pool)
        for slug in ["acme", "Not A Slug"]:
            with pytest.raises(CacheClosed, match="not listening"):
                loop.run(cache.get_by_slug(slug))
        loop.run(pool.close())
    finally:
        loop.stop()
