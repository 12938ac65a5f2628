"""The exceptions dbtools raises: one base class, and one subclass for each thing a caller handles.

Messages name the offending value and the rule it broke; they never contain a password.
"""

from __future__ import annotations


class DbToolsError(Exception):
    """Base class of every error dbtools raises on purpose."""


class ConfigurationError(DbToolsError):
    """The configuration (``DATABASE_URL``, a setting) is malformed."""


class DatabaseUnavailable(DbToolsError):
    """The database server cannot be reached, or refused the connection."""


class NotMigrated(DatabaseUnavailable):
    """The database exists but lacks the schema: ``dbtools migrate`` has not been run."""


class LocalDatabaseError(DbToolsError):
    """The embedded PostgreSQL cluster cannot be found, initialised, started or stopped."""


class MigrationError(DbToolsError):
    """A migration could not be read, applied or rolled back."""


class InvalidSlug(DbToolsError, ValueError):
    """A string is not a valid tenant slug."""

    def __init__(self, slug: object, reason: str) -> None:
        super().__init__(f"invalid tenant slug {slug!r}: {reason}")
        self.slug = slug
        self.reason = reason


class InvalidTenant(DbToolsError, ValueError):
    """A tenant's name or settings break a rule of the schema."""

    def __init__(self, slug: str, field: str, reason: str) -> None:
        super().__init__(f"invalid {field} for tenant {slug!r}: {reason}")
        self.slug = slug
        self.field = field
        self.reason = reason


class DuplicateSlug(DbToolsError):
    """Another tenant already has this slug."""

    def __init__(self, slug: str) -> None:
        super().__init__(f"a tenant with slug {slug!r} already exists")
        self.slug = slug


class TenantNotFound(DbToolsError, LookupError):
    """No tenant has this slug."""

    def __init__(self, slug: str) -> None:
        super().__init__(f"no tenant with slug {slug!r}")
        self.slug = slug
