"""Tenants by slug from memory, kept true by the database itself: :class:`TenantCache`.

::

    from dbtools import db
    from dbtools.cache import TenantCache

    with db.create_pool() as pool, TenantCache(pool) as cache:
        tenant = cache.get_by_slug("acme")      # what tenants.get_by_slug would return

How it stays true:

- Migration 0006 makes PostgreSQL announce every committed change of ``tenants`` (insert, update,
  delete, truncate; from any client, psql included) with ``NOTIFY dbtools_tenants``, the changed
  slugs in the payload. The cache ``LISTEN`` s on a connection of its own, from a thread of its
  own, and drops the entries named.
- A load that a change races is not kept: a slug is registered as loading before its query is
  sent, and a notification for it that arrives before the answer voids the load.
- A silent channel is not trusted: while the listening connection is down (noticed at once when
  the server ends it, and within ``heartbeat`` seconds when the network goes quiet) the cache is
  empty and every lookup goes to the database; it listens again with a backoff, and empties
  itself once more when it does. Entries also expire ``ttl`` seconds after they were loaded.
- The listening connection must be a session of its own: ``LISTEN`` does nothing useful through a
  transaction pooler. When the pool goes through one (PgBouncer in transaction mode), pass the
  server's own address as ``listen=``; the cache refuses to start otherwise.

Records are shared: every caller of a cached slug gets the same frozen :class:`Tenant`, so treat
its ``settings`` as read-only (a copy per hit would cost more than the lookup).

:class:`CacheCore` is the part without I/O, shared with :class:`dbtools.aio.cache.TenantCache`.
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import socket
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, LiteralString

import psycopg
from psycopg.pq import ConnStatus, ExecStatus
from psycopg.pq.abc import PGconn
from psycopg.rows import tuple_row

from dbtools import db, tenants
from dbtools.config import Target, resolve
from dbtools.errors import CacheClosed, ConfigurationError, DatabaseUnavailable, NotMigrated
from dbtools.slugs import is_valid_slug
from dbtools.tenants import Tenant

__all__ = ["CacheCore", "CacheStats", "TenantCache"]

# The protocol of migration 0006_notify-tenant-changes (see the comment there).
CHANNEL: Final = "dbtools_tenants"
EVERY_TENANT: Final = "*"
NOTIFY_TRIGGERS: Final = (
    "tenants_notify_insert",
    "tenants_notify_update",
    "tenants_notify_delete",
    "tenants_notify_truncate",
)
LISTEN: LiteralString = "LISTEN dbtools_tenants"
# What the listener checks when it connects, and again with each heartbeat: how many of the
# notify triggers are on the tenants table the search path finds, enabled for ordinary sessions
# (not only for replication); and which database, of which cluster (a standby shares its
# primary's system identifier), it is in.
LISTENER_CHECK: LiteralString = """
    SELECT (SELECT count(*)
            FROM pg_catalog.pg_trigger
            WHERE tgrelid = 'tenants'::regclass
              AND tgname IN ('tenants_notify_insert', 'tenants_notify_update',
                             'tenants_notify_delete', 'tenants_notify_truncate')
              AND tgenabled IN ('O', 'A')),
           current_database(),
           (SELECT system_identifier FROM pg_catalog.pg_control_system())::text,
           'tenants'::regclass::oid::text,
           pg_catalog.pg_relation_filenode('tenants')::text
"""
# Which tenants table the pool's connections read (database, cluster, table): the listener
# must hear that one's changes.
POOL_CHECK: LiteralString = """
    SELECT current_database(),
           (SELECT system_identifier FROM pg_catalog.pg_control_system())::text,
           'tenants'::regclass::oid::text
"""

DEFAULT_MAX_SIZE = 10_000
DEFAULT_MAX_MISSING = 10_000
DEFAULT_TTL = 300.0  # seconds
DEFAULT_HEARTBEAT = 5.0  # seconds
MIN_HEARTBEAT, MAX_HEARTBEAT = 0.1, 3600.0  # seconds
CLOSE_WAIT = 1.0  # seconds close() waits for a listener thread that is busy connecting
COMPLAIN_EVERY = 60.0  # seconds between warnings that the listener still cannot listen
RETRY_FIRST, RETRY_MAX = 0.1, 5.0  # seconds between attempts to listen again, doubling
# TCP keepalives for the listening connection, unless its URL sets them: a peer that vanished
# without closing the connection is noticed by the kernel too, not only by the heartbeat;
# application_name too, so that a DBA sees in pg_stat_activity what the session is for.
LISTENER_DEFAULTS: Final = {
    "application_name": "dbtools tenant cache",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}

_logger = logging.getLogger("dbtools.cache")


@dataclass(frozen=True)
class CacheStats:
    """Counters of a cache since it was made, and what it holds now."""

    hits: int  # answered from memory, a missing tenant included
    loads: int  # answered by the database
    notifications: int  # changes announced by the database, as heard by the listener
    invalidations: int  # entries dropped because the database announced a change
    size: int  # tenants held
    missing: int  # slugs held as having no tenant
    listening: bool  # whether the cache trusts its entries (it listens)
    listener_losses: int  # how many times the listening connection was lost


class _Miss:
    """Not in the cache (as opposed to None: cached as having no tenant)."""


MISS: Final = _Miss()


class _Load:
    """A lookup of ``slug`` in the database, registered before its query is sent."""

    __slots__ = ("answer", "epoch", "keep", "slug", "void")

    def __init__(self, slug: str, epoch: int) -> None:
        self.slug, self.epoch, self.void = slug, epoch, False
        self.answer: Tenant | None = None  # what the database said
        self.keep = True  # False for an answer from a standby


class CacheCore:
    """What a tenant cache holds and when it may trust it, without I/O: bounded LRU maps of
    tenants and of slugs without one, loads in flight, and what the listener reports. Every
    method is thread-safe and quick (one lock, never held across I/O)."""

    def __init__(
        self,
        pool: Any,
        *,
        listen: Target | str | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        max_missing: int = DEFAULT_MAX_MISSING,
        ttl: float = DEFAULT_TTL,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        for name, value in (("max_size", max_size), ("max_missing", max_missing)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name, seconds in (("ttl", ttl), ("heartbeat", heartbeat)):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise ValueError(f"{name} must be a number of seconds, not {seconds!r}")
            if not 0 < seconds < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds, not {seconds!r}")
        if not MIN_HEARTBEAT <= heartbeat <= MAX_HEARTBEAT:
            raise ValueError(
                f"heartbeat must be {MIN_HEARTBEAT:g} to {MAX_HEARTBEAT:g} s, not {heartbeat!r}"
            )
        self.max_size, self.max_missing = max_size, max_missing
        self.ttl, self.heartbeat = float(ttl), float(heartbeat)
        self._pool = pool
        self._listen_derived = listen is None
        self._listen_target = listen_target(getattr(pool, "target", None), listen)
        self._lock = threading.Lock()
        # slug -> (tenant, monotonic expiry); most recently used last.
        self._found: OrderedDict[str, tuple[Tenant, float]] = OrderedDict()
        self._missing: OrderedDict[str, float] = OrderedDict()  # slug -> monotonic expiry
        self._loads: dict[str, list[_Load]] = {}
        self._epoch = 0  # changes whenever what was loaded before can no longer be trusted
        self._listening = False
        self._closed = False
        self._hits = self._loads_done = self._invalidations = self._losses = 0
        self._notifications = 0
        # What the listener hears: database, system identifier, tenants' oid and file node.
        self._heard: tuple[str, ...] = ()
        self._complaint: tuple[str, float] = ("", 0.0)  # the last reason not to listen, when
        self._warned_standby = False
        self._inherited = False  # made in a parent process, before fork()
        _caches.add(self)
        self._start()

    def _start(self) -> None:
        """What a cache does once made: the thread-based one connects and listens here."""

    def lookup(self, slug: str) -> Tenant | _Miss | None:
        """The cached answer for ``slug`` (a Tenant, or None when it has none), else MISS.

        The hot path takes no lock: each dict operation is atomic, and a lookup that runs
        beside an invalidation sees the entry either before it is dropped or not at all, as if
        it had run just before or just after. Only the counter of hits may miss a beat."""
        entry = self._found.get(slug)
        if entry is not None:
            if entry[1] > time.monotonic():
                # try/except, not contextlib.suppress: it would double the cost of a hit.
                try:  # noqa: SIM105
                    self._found.move_to_end(slug)
                except KeyError:  # dropped by another thread meanwhile
                    pass
                self._hits += 1
                return entry[0]
            return MISS  # expired: the load that follows replaces it
        expiry = self._missing.get(slug)
        if expiry is not None and expiry > time.monotonic():
            try:  # noqa: SIM105
                self._missing.move_to_end(slug)
            except KeyError:
                pass
            self._hits += 1
            return None
        return MISS

    def check_open(self) -> None:
        """Raise :class:`CacheClosed` if the cache was closed, or made in another process."""
        if self._closed:
            raise CacheClosed("the tenant cache is closed: make a new one")
        if self._inherited:
            raise CacheClosed(
                "the tenant cache was made before fork(): its listener and its pool belong to "
                "the parent process; make the pool and the cache in each process"
            )

    def begin_load(self, slug: str) -> _Load:
        """Register a lookup of ``slug`` in the database; call before its query is sent."""
        with self._lock:
            self.check_open()
            load = _Load(slug, self._epoch)
            self._loads.setdefault(slug, []).append(load)
        return load

    @contextmanager
    def loading(self, slug: str) -> Iterator[_Load]:
        """Register a load of ``slug`` for the block, which sets its ``answer``; the answer is
        kept after the block if nothing overtook it, and nothing is kept if the block fails."""
        load = self.begin_load(slug)
        try:
            yield load
        except BaseException:
            self.abandon(load)
            raise
        if load.answer is not None and load.answer.slug != slug:
            self.abandon(load)
            raise DatabaseUnavailable(
                f"asked for tenant {slug!r}, the connection answered with {load.answer.slug!r}: "
                "is the pool shared with another process (made before fork())?"
            )
        if load.keep:
            self.end_load(load, load.answer)
        else:
            with self._lock:
                self._forget(load)
                self._loads_done += 1

    def end_load(self, load: _Load, tenant: Tenant | None) -> None:
        """Keep what the database answered for ``load``, unless a change of its slug was
        announced meanwhile, or the listener was lost or restarted."""
        expiry = time.monotonic() + self.ttl
        with self._lock:
            self._forget(load)
            self._loads_done += 1
            if load.void or load.epoch != self._epoch or not self._listening:
                return
            if tenant is None:
                self._missing[load.slug] = expiry
                self._missing.move_to_end(load.slug)
                if len(self._missing) > self.max_missing:
                    self._missing.popitem(last=False)
            else:
                self._found[load.slug] = (tenant, expiry)
                self._found.move_to_end(load.slug)
                if len(self._found) > self.max_size:
                    self._found.popitem(last=False)

    def answered_by(self, load: _Load, pgconn: PGconn) -> None:
        """Note which server answered ``load``: a standby's answer is served, never kept. A
        change is announced by the primary, maybe before the standby replays it; a reload
        from the standby then would keep the old row (PostgreSQL 14 and later say which a
        server is, with every connection: in_hot_standby)."""
        if pgconn.parameter_status(b"in_hot_standby") != b"on":
            return
        load.keep = False
        if not self._warned_standby:
            self._warned_standby = True
            _logger.warning(
                "tenant cache: the pool reads from a standby; its answers are served but not "
                "kept (give the cache a pool on the primary to cache)"
            )

    def abandon(self, load: _Load) -> None:
        """Forget ``load``, which failed."""
        with self._lock:
            self._forget(load)

    def _forget(self, load: _Load) -> None:
        pending = self._loads.get(load.slug)
        if pending is not None:
            pending.remove(load)
            if not pending:
                del self._loads[load.slug]

    def invalidate(self, payload: str) -> None:
        """Drop what a notification of channel dbtools_tenants names: slugs separated by
        spaces, or ``*`` for every tenant."""
        slugs = payload.split()
        with self._lock:
            self._notifications += 1
            if EVERY_TENANT in slugs:
                self._invalidations += len(self._found) + len(self._missing)
                self._reset()
                return
            for slug in slugs:
                held = self._found.pop(slug, None) is not None
                if self._missing.pop(slug, None) is not None or held:
                    self._invalidations += 1
                for load in self._loads.get(slug, ()):
                    load.void = True

    def clear(self) -> None:
        """Drop every entry, and every load in flight."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._found.clear()
        self._missing.clear()
        self._epoch += 1

    def listening_started(self) -> None:
        """The listener listens (again): nothing heard before can be trusted, so start empty."""
        with self._lock:
            self._reset()
            self._listening = not self._closed

    def listening_lost(self) -> None:
        """The listener is gone: forget everything and cache nothing until it is back."""
        with self._lock:
            if self._listening:
                self._losses += 1
            self._listening = False
            self._reset()

    def _mark_closed(self) -> bool:
        """Refuse loads from now on; whether the cache was open."""
        with self._lock:
            was_open, self._closed, self._listening = not self._closed, True, False
            self._reset()
        return was_open

    def _lost(self, exc: BaseException) -> None:
        """The listener lost its connection with ``exc``: say so, and stop trusting entries."""
        self.listening_lost()
        _logger.warning(
            "tenant cache: lost the listening connection to %s (%s); serving tenants from the "
            "database until it listens again",
            self._listen_target.describe(),
            first_line(exc),
        )

    def _back(self) -> None:
        """The listener listens again."""
        self.listening_started()
        _logger.info(
            "tenant cache: listening again on %s (entries dropped)", self._listen_target.describe()
        )

    def _cannot_listen(self, exc: BaseException) -> None:
        """An attempt to listen again failed: a warning when the reason is new, or once a
        minute while it lasts (a changed password, a rolled-back migration do not go away)."""
        if self._closed:
            return
        reason, now = first_line(exc), time.monotonic()
        if reason != self._complaint[0] or now - self._complaint[1] >= COMPLAIN_EVERY:
            self._complaint = (reason, now)
            _logger.warning(
                "tenant cache: cannot listen on %s yet (%s); serving tenants from the database",
                self._listen_target.describe(),
                reason,
            )
        else:
            _logger.debug("tenant cache: cannot listen yet: %s", reason)

    def listener_identity(self, row: Sequence[Any] | None) -> tuple[str, ...]:
        """Check the answer to :data:`LISTENER_CHECK` (every notify trigger there and
        enabled, or NotMigrated); return what it says the listener hears: the database, the
        cluster's system identifier, the tenants table's oid and file node."""
        target = self._listen_target
        count = 0 if row is None else int(row[0])
        if row is None or count != len(NOTIFY_TRIGGERS):
            raise NotMigrated(
                f"{target.describe()} does not announce changes of tenants ({count} of the "
                f"{len(NOTIFY_TRIGGERS)} triggers of migration 0006_notify-tenant-changes are "
                "there and enabled): run `dbtools migrate`, or enable them, before caching tenants"
            )
        return tuple(str(value) for value in row[1:5])

    def listen_to(self, identity: tuple[str, ...], pool_row: Sequence[Any] | None) -> None:
        """The listener hears ``identity``; ``pool_row``, a pool connection's answer to
        :data:`POOL_CHECK`, must name the same tenants table (database, cluster, table), or
        the cache would hear of changes to another one (ConfigurationError)."""
        pool = tuple(str(value) for value in pool_row or ())
        if pool != identity[:3]:
            database, table = (pool or ("?",))[0], ".".join(pool[2:3]) or "?"
            raise ConfigurationError(
                f"the pool reads the tenants table {table} of database {database!r}, but the "
                f"tenant cache would listen to table {identity[2]} of database {identity[0]!r} "
                "(another database, cluster or search_path): listen= must reach the tenants "
                "table the pool reads"
            )
        self._heard = identity

    def check_heartbeat(self, row: Sequence[Any] | None) -> None:
        """Check a heartbeat's answer: the triggers still there and enabled, and the same
        tenants table, not restored, replaced or rewritten since (its file node changes), as
        that changes rows without announcing them."""
        if self.listener_identity(row) != self._heard:
            raise DatabaseUnavailable(
                f"the tenants table of {self._listen_target.describe()} was replaced or "
                "rewritten (a restore, an ALTER TABLE, VACUUM FULL) since the cache listened"
            )

    def _forked(self) -> None:
        """In a child process made by fork(): the listener (a thread, or a task, and its
        connection) stayed in the parent, so nothing here may be trusted or kept; lookups go to
        the database. Make caches after forking (gunicorn: in each worker)."""
        self._lock = threading.Lock()  # the parent's may have been held by another thread
        with self._lock:
            self._listening = False
            self._reset()
            self._loads.clear()
            self._inherited = True

    @property
    def listening(self) -> bool:
        """Whether the cache listens, and so answers from memory."""
        return self._listening

    def stats(self) -> CacheStats:
        """The counters and sizes of the cache, as of now."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                loads=self._loads_done,
                notifications=self._notifications,
                invalidations=self._invalidations,
                size=len(self._found),
                missing=len(self._missing),
                listening=self._listening,
                listener_losses=self._losses,
            )


# Every cache of this process, so that a child made by fork() can stop trusting them.
_caches: weakref.WeakSet[CacheCore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_caches):
        cache._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def listen_target(pool_target: Target | None, listen: Target | str | None) -> Target:
    """Where the listening connection goes: ``listen`` when given, else the pool's target. When
    that names several hosts, the one that is writable: ``NOTIFY`` is not replicated, and a
    standby refuses ``LISTEN``."""
    if listen is not None:
        target = resolve(listen, origin="the listen URL of the tenant cache")
    elif pool_target is not None:
        target = pool_target
    else:
        raise ConfigurationError(
            "the tenant cache cannot tell where the pool connects: give it a pool made by "
            "dbtools.db.create_pool, or the database URL to listen on as listen="
        )
    params = target.params
    if params.get("target_session_attrs", "any") in ("read-write", "primary"):
        return target
    if len(target.hosts) == 1 and "target_session_attrs" not in params:
        return target  # one host: nothing to choose (a standby is refused when LISTEN runs)
    params["target_session_attrs"] = "read-write"
    return Target.from_params(origin=target.origin, **params)


def listener_kwargs(target: Target) -> dict[str, Any]:
    """psycopg keyword arguments of a listening connection to ``target``: autocommit, no
    prepared statements (and so no pooler check of db.connect: the cache makes its own), and
    TCP keepalives and an application_name, unless the URL sets them."""
    params = target.params
    defaults = {key: value for key, value in LISTENER_DEFAULTS.items() if key not in params}
    return {"autocommit": True, "prepare_threshold": None} | defaults


def through_pooler(target: Target, derived: bool) -> ConfigurationError:
    """The error of a listening connection that reached a pooler rather than PostgreSQL."""
    advice = (
        "give the cache the server's own address as listen= (one connection per process)"
        if derived
        else "listen= must name the PostgreSQL server itself, not a pooler"
    )
    return ConfigurationError(
        f"the tenant cache cannot listen through a connection pooler ({target.describe()}): "
        f"LISTEN needs a server session of its own, which transaction pooling does not keep; "
        f"{advice}"
    )


class Relay:
    """The listening connection once it listens, without the waiting (the thread-based cache
    waits with selectors, the asyncio one with the event loop): it hands each notification to
    the cache, and sends :data:`LISTENER_CHECK` as a heartbeat every half ``heartbeat``. A
    heartbeat unanswered for another half, a failed check, or a lost connection raises, so a
    connection that died silently is noticed within ``heartbeat`` seconds."""

    def __init__(self, cache: CacheCore, pgconn: PGconn) -> None:
        self.cache, self.pgconn = cache, pgconn
        self.half = cache.heartbeat / 2
        self.sent_at: float | None = None  # when the heartbeat awaiting its answer was sent
        self.next_beat = time.monotonic() + self.half

    def wait(self) -> float:
        """Send the heartbeat if it is due; how long to wait for the connection to be readable
        before calling :meth:`step`."""
        now = time.monotonic()
        if self.sent_at is None and now >= self.next_beat:
            self.pgconn.send_query(LISTENER_CHECK.encode())
            self.sent_at = now
        if self.sent_at is None:
            return max(0.0, self.next_beat - now)
        self.pgconn.flush()  # nonblocking: what the socket did not take goes now
        return max(0.0, self.sent_at + self.half - now)

    def step(self, readable: bool) -> None:
        """Take what arrived when the connection is ``readable``; raise when it is lost, or
        the heartbeat failed or is overdue."""
        pgconn = self.pgconn
        if readable:
            pgconn.consume_input()  # raises OperationalError once the connection is gone
            self._relay_notices()
            if self.sent_at is not None and not pgconn.is_busy():
                self.cache.check_heartbeat(self._answer())
                self.sent_at, self.next_beat = None, time.monotonic() + self.half
                # libpq stops parsing at the heartbeat's end: what came behind it in the same
                # read is parsed by get_result(), and waits in libpq, not in the socket.
                self._relay_notices()
        if pgconn.status != ConnStatus.OK:
            raise psycopg.OperationalError("the server closed the connection")
        if self.sent_at is not None and time.monotonic() - self.sent_at >= self.half:
            raise psycopg.OperationalError(f"no answer to a heartbeat within {self.half:g} s")

    def _relay_notices(self) -> None:
        while (notice := self.pgconn.notifies()) is not None:
            self.cache.invalidate(notice.extra.decode("utf-8", "replace"))

    def _answer(self) -> tuple[str, ...] | None:
        row: tuple[str, ...] | None = None
        while (result := self.pgconn.get_result()) is not None:
            if result.status != ExecStatus.TUPLES_OK:
                reason = result.error_message.decode("utf-8", "replace").strip()
                raise psycopg.OperationalError(reason or "the heartbeat failed")
            if result.ntuples == 1:
                row = tuple(
                    (result.get_value(0, column) or b"").decode()
                    for column in range(result.nfields)
                )
        return row


class TenantCache(CacheCore):
    """``get_by_slug`` from memory, for threads sharing a ``psycopg_pool.ConnectionPool``.

    ``pool`` serves the lookups the cache cannot answer; ``listen`` is where the listening
    connection goes (default: where the pool goes, which must then be PostgreSQL itself, not a
    transaction pooler; of several hosts, the writable one). At most ``max_size`` tenants and
    ``max_missing`` slugs without a tenant are held, the least recently used dropped first;
    each for ``ttl`` seconds at most. A connection that dies silently is noticed within
    ``heartbeat`` seconds (at most 3600).

    Making the cache connects and listens, or raises: :class:`ConfigurationError` when the
    listening connection goes through a pooler or reaches another database than the pool,
    :class:`NotMigrated` when the database does not announce changes,
    :class:`DatabaseUnavailable` when it cannot be reached. Close it (or use it as a context
    manager) to stop its thread and connection.
    """

    def _start(self) -> None:
        """Connect and listen, then hand the connection to the listener thread."""
        self._pid = os.getpid()
        self._closing = threading.Event()
        # Written to on close(), to wake the listener from its wait on the connection.
        self._wake_reader, self._wake_writer = socket.socketpair()
        try:
            conn = self._open_listener()
        except BaseException:
            self._wake_reader.close()
            self._wake_writer.close()
            raise
        self.listening_started()
        self._thread = threading.Thread(
            target=self._listen, args=(conn,), name="dbtools-tenant-cache", daemon=True
        )
        self._thread.start()

    def get_by_slug(self, slug: str) -> Tenant | None:
        """The tenant with ``slug``, or None: what :func:`dbtools.tenants.get_by_slug` returns,
        from memory when the cache holds it. Raises :class:`CacheClosed` after :meth:`close`."""
        if type(slug) is str:  # a str subclass may hash and compare as it likes: not held
            found = self.lookup(slug)
            if found is not MISS:
                return found  # type: ignore[return-value]
        self.check_open()
        if not is_valid_slug(slug):
            return None
        if type(slug) is not str:
            with self._pool.connection() as conn:
                return tenants.get_by_slug(conn, slug)
        with self.loading(slug) as load, self._pool.connection() as conn:
            load.answer = tenants.get_by_slug(conn, slug)
            self.answered_by(load, conn.pgconn)
        return load.answer

    def close(self) -> None:
        """Stop listening, close the listening connection, drop every entry. Idempotent. Waits
        a second at most: a listener busy connecting to a server that does not answer closes
        its connection, in its daemon thread, once it has one."""
        if not self._mark_closed():
            return
        if self._pid == os.getpid():  # in a child of fork() the listener is the parent's
            self._closing.set()
            self._wake_writer.send(b"x")
            # A thread still connecting after this checks _closing, and never reads again.
            self._thread.join(CLOSE_WAIT)
        self._wake_reader.close()
        self._wake_writer.close()

    def __enter__(self) -> TenantCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the listener thread ------------------------------------------------------------------

    def _open_listener(self) -> psycopg.Connection[Any]:
        target = self._listen_target
        conn = db.connect(target, **listener_kwargs(target))
        try:
            if db.behind_pooler(conn):
                raise through_pooler(target, self._listen_derived)
            identity = self.listener_identity(conn.execute(LISTENER_CHECK).fetchone())
            conn.execute(LISTEN)
            with self._pool.connection() as pooled, pooled.cursor(row_factory=tuple_row) as cur:
                self.listen_to(identity, cur.execute(POOL_CHECK).fetchone())
        except psycopg.Error as exc:
            mapped = db.error_for(exc, conn)  # before closing: it reads the connection
            conn.close()
            if mapped is None:
                raise
            raise mapped from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _listen(self, conn: psycopg.Connection[Any] | None) -> None:
        """The thread: relay notifications; when the connection is lost, listen again. Any
        failure counts as a loss: the thread never ends while the cache trusts its entries."""
        while conn is not None:
            try:
                self._relay(conn)
            except Exception as exc:  # whatever it is, the channel is silent
                self._lost(exc)
            finally:
                conn.close()
            conn = self._reconnect()
            if conn is not None:
                self._back()

    def _reconnect(self) -> psycopg.Connection[Any] | None:
        """A new listening connection, tried with a growing delay; None when closing."""
        delay = RETRY_FIRST
        while not self._closing.wait(delay):
            try:
                conn = self._open_listener()
            except Exception as exc:  # said, and tried again
                self._cannot_listen(exc)
            else:
                if not self._closing.is_set():
                    return conn
                conn.close()
                return None
            delay = min(delay * 2, RETRY_MAX)
        return None

    def _relay(self, conn: psycopg.Connection[Any]) -> None:
        """Relay until close() wakes the thread; raise when the connection fails. libpq is
        driven directly (:class:`Relay`), so that the wait also watches for close()."""
        relay = Relay(self, conn.pgconn)
        with selectors.DefaultSelector() as selector:
            selector.register(conn.pgconn.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._closing.is_set():
                events = selector.select(relay.wait())
                if any(key.fileobj is self._wake_reader for key, _ in events):
                    return
                relay.step(bool(events))


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
