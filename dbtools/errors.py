"""Every exception dbtools raises: one base class, one subclass for each failure a caller handles.

The tree, and what the ``dbtools`` command exits with for each branch (``dbtools.cli.EXIT_CODES``
is the one table that maps them)::

    DbToolsError
    ├── ConfigurationError        2  a malformed URL or setting
    ├── PermissionDenied          5  the role lacks a privilege
    ├── TryAgain                  4  nothing is wrong with the input: retrying may succeed
    │   ├── Timeout                  lock_timeout or statement_timeout expired
    │   ├── Conflict                 a serialization failure, a deadlock, a racing writer
    │   ├── PoolExhausted            every connection of the pool is busy
    │   └── MigrationLocked          another process holds the migration lock
    ├── DatabaseUnavailable       3  the server cannot be reached, or the connection was lost
    │   ├── NotMigrated              the tables are missing: run ``dbtools migrate``
    │   └── ReadOnlyDatabase         a write reached a standby or a read-only session
    ├── MigrationError            3  a migration cannot be read, applied or rolled back
    │   └── MigrationEdited          an applied migration's file was changed
    ├── LocalDatabaseError        3  the embedded PostgreSQL cannot be set up, started or stopped
    ├── ExternalToolError         3  a PostgreSQL program (pg_dump) is missing or failed
    ├── CacheClosed               1  a closed TenantCache was asked for a tenant
    └── (domain errors)           1  InvalidSlug (ReservedSlug), InvalidTenant, DuplicateSlug,
                                     TenantNotFound, TenantInUse, Refused, ImportFailed,
                                     SchemaDrift, InvalidActor

Messages name the offending value and the rule it broke, in one line; they never contain a
password. Errors that carry a value keep it whole as an attribute. A message quotes a value that
may be long or hostile (a slug as typed, a line of a CSV file) through :func:`excerpt`: a 100 KB
value, or the first line of some unrelated file, shows as a short cut, control characters escaped.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from datetime import datetime

# How much of a value a message quotes: every valid slug (50 characters) still shows whole.
EXCERPT_LIMIT = 60


def excerpt(value: object, limit: int = EXCERPT_LIMIT) -> str:
    """``value`` quoted for a message: ``repr(value)`` when that is short, else the repr of its
    first characters, ``...`` and its length. Control characters come out escaped (``\\n``,
    ``\\x1b``), and the result is about ``limit`` characters at most, however long the value."""
    if not isinstance(value, str):
        text = reprlib.repr(value)  # bounded already for containers, but not for every __repr__
        shown = text if text.isprintable() else repr(text)[1:-1]
        return shown if len(shown) <= limit else f"{shown[:limit]}..."
    width = kept = 0
    for char in value[:limit]:  # escaped, one character can take up to 10 (\U0001f600)
        width += 1 if char.isprintable() else len(repr(char)) - 2
        if width > limit:
            break
        kept += 1
    if kept == len(value):
        return repr(value)
    return f"{value[:kept]!r}... ({len(value)} characters)"


class DbToolsError(Exception):
    """Base class of every error dbtools raises on purpose."""


class ConfigurationError(DbToolsError):
    """The configuration (``DATABASE_URL``, a libpq parameter, a setting) is malformed."""


class PermissionDenied(DbToolsError):
    """The database role lacks a privilege the operation needs."""

    def __init__(
        self, reason: str, *, user: str | None = None, database: str | None = None
    ) -> None:
        who = ", ".join(
            part
            for part in (
                f"user {user!r}" if user else "",
                f"database {database!r}" if database else "",
            )
            if part
        )
        super().__init__(f"{reason} ({who})" if who else reason)
        self.reason = reason
        self.user = user
        self.database = database


class TryAgain(DbToolsError):
    """Nothing is wrong with the request: the same call may succeed if it is made again."""


class Timeout(TryAgain):
    """A statement gave up waiting: ``kind`` is ``"lock"`` (lock_timeout) or ``"statement"``
    (statement_timeout, or a cancel request)."""

    def __init__(self, kind: str, reason: str, *, database: str | None = None) -> None:
        setting = "lock_timeout" if kind == "lock" else "statement_timeout"
        where = f" on database {database!r}" if database else ""
        super().__init__(f"timed out{where} ({setting}): {reason}; try again")
        self.kind = kind
        self.setting = setting
        self.reason = reason
        self.database = database


class Conflict(TryAgain):
    """A concurrent change got in the way: a serialization failure, a deadlock, or a row that
    kept changing under a read-then-write."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; try again")
        self.reason = reason


class PoolExhausted(TryAgain):
    """Every connection of the pool stayed busy for the whole wait."""


def _duration(seconds: float) -> str:
    """``seconds`` as a person says it: 42 s, 7 min, 3 h, 12 days."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


class MigrationLocked(TryAgain):
    """Another process holds the migration lock of this database: another ``dbtools`` (its
    server process ``pid``, holding it for ``held`` seconds), or the ``yoyo`` command (whose
    lock outlives a dead process: ``yoyo break-lock`` removes it)."""

    def __init__(
        self,
        database: str,
        *,
        pid: int | None = None,
        since: datetime | None = None,
        held: float | None = None,
        by_yoyo: bool = False,
    ) -> None:
        if by_yoyo:
            holder = f"the yoyo command (process {pid})" if pid is not None else "the yoyo command"
        else:
            holder = f"server process {pid}" if pid is not None else "another process"
        how_long = f" for {_duration(held)}" if held is not None else ""
        when = f" (since {since:%Y-%m-%d %H:%M:%S} UTC)" if since is not None else ""
        advice = (
            " (if that process is dead, remove its lock with `yoyo break-lock`)" if by_yoyo else ""
        )
        super().__init__(
            f"{holder} has held the migration lock of database {database!r}{how_long}{when}; "
            f"try again when it is done{advice}"
        )
        self.database = database
        self.pid = pid
        self.since = since
        self.held = held
        self.by_yoyo = by_yoyo


class DatabaseUnavailable(DbToolsError):
    """The database server cannot be reached, refused the connection, or the connection was lost."""


class NotMigrated(DatabaseUnavailable):
    """The database exists but lacks the schema: ``dbtools migrate`` has not been run."""


class ReadOnlyDatabase(DatabaseUnavailable):
    """A write reached a server that only reads: a standby, or a session with
    ``default_transaction_read_only``. Writes need the primary."""


class CacheClosed(DbToolsError):
    """A :class:`~dbtools.cache.TenantCache` was used after ``close()``: make a new one."""


class MigrationError(DbToolsError):
    """A migration could not be read, applied or rolled back."""


class MigrationEdited(MigrationError):
    """A migration's file changed after it was applied (its sha256 no longer matches)."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} was edited after it was applied (its sha256 no longer matches the one "
            "recorded): never edit an applied migration, add a new one. If the edit is "
            "deliberate and harmless, delete its row from _dbtools_migration_checksum"
        )
        self.path = path


class LocalDatabaseError(DbToolsError):
    """The embedded PostgreSQL cluster cannot be found, initialised, started or stopped."""


class ExternalToolError(DbToolsError):
    """A PostgreSQL program that dbtools runs (``pg_dump``) is missing or failed."""


class InvalidSlug(DbToolsError, ValueError):
    """A string is not a valid tenant slug."""

    def __init__(self, slug: object, reason: str) -> None:
        super().__init__(f"invalid tenant slug {excerpt(slug)}: {reason}")
        self.slug = slug
        self.reason = reason


class ReservedSlug(InvalidSlug):
    """A slug is well formed but reserved for the platform itself (``www``, ``api``...): no new
    tenant may take it. ``constraint`` is the rule that refused it when the database did."""

    def __init__(self, slug: str, *, constraint: str | None = None) -> None:
        rule = f" ({constraint})" if constraint else ""
        super().__init__(slug, f"the slug is reserved for the platform{rule}")
        self.constraint = constraint


class InvalidTenant(DbToolsError, ValueError):
    """A tenant's name or settings break a rule of the schema."""

    def __init__(self, slug: str, field: str, reason: str) -> None:
        super().__init__(f"invalid {field} for tenant {excerpt(slug)}: {reason}")
        self.slug = slug
        self.field = field
        self.reason = reason


class InvalidActor(DbToolsError, ValueError):
    """An actor (who an application says makes a change, recorded in ``tenant_events``) that the
    schema would refuse: not a string, empty, longer than 255 characters, or holding control
    characters."""

    def __init__(self, actor: object, reason: str) -> None:
        super().__init__(f"invalid actor {excerpt(actor)}: {reason}")
        self.actor = actor
        self.reason = reason


class DuplicateSlug(DbToolsError):
    """Another tenant already has this slug."""

    def __init__(self, slug: str) -> None:
        super().__init__(f"a tenant with slug {excerpt(slug)} already exists")
        self.slug = slug


class TenantNotFound(DbToolsError, LookupError):
    """No tenant has this slug."""

    def __init__(self, slug: str) -> None:
        super().__init__(f"no tenant with slug {excerpt(slug)}")
        self.slug = slug


class Refused(DbToolsError):
    """The database refused a change for a rule dbtools does not know: a constraint or trigger
    added by someone else (a DBA's CHECK, a service's foreign key...)."""

    def __init__(self, reason: str, *, constraint: str | None = None) -> None:
        rule = f" ({constraint})" if constraint else ""
        super().__init__(f"the database refused the change: {reason}{rule}")
        self.reason = reason
        self.constraint = constraint


class TenantInUse(DbToolsError):
    """A tenant cannot be deleted: rows of another table still refer to it."""

    def __init__(self, slug: str, constraint: str | None) -> None:
        by = f" (foreign key {constraint})" if constraint else ""
        super().__init__(f"tenant {excerpt(slug)} is still referenced by other rows{by}")
        self.slug = slug
        self.constraint = constraint


@dataclass(frozen=True)
class RowError:
    """One bad row of an import: its line in the file (the header is line 1; None: the whole
    file) and what is wrong with it."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


class ImportFailed(DbToolsError):
    """A CSV file has bad rows; nothing was imported. ``errors`` lists every one."""

    def __init__(self, source: str, errors: list[RowError]) -> None:
        count = f"{len(errors)} bad row{'s' if len(errors) != 1 else ''}"
        super().__init__(f"{source}: {count}, nothing imported")
        self.source = source
        self.errors = errors


@dataclass(frozen=True)
class Difference:
    """One schema that differs from what the migrations build: what it is, and the unified diff."""

    subject: str
    diff: str


class SchemaDrift(DbToolsError):
    """A schema (the committed file, or a live database) differs from what the migrations build."""

    def __init__(self, differences: list[Difference]) -> None:
        names = ", ".join(d.subject for d in differences)
        super().__init__(f"the schema differs from what the migrations produce: {names}")
        self.differences = differences
