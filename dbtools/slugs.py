"""The tenant slug rule, identical to the ``tenants_slug_format_check`` constraint in SQL.

A slug is 3 to 50 characters: lowercase ASCII letters, digits and hyphens, starting and ending
with a letter or digit. ``re.fullmatch`` is used on purpose: ``re.match`` with ``$`` accepts a
trailing newline (``"abc\\n"``), which PostgreSQL's ``$`` rejects.

Some slugs are reserved: the names the platform needs for itself (``www``, ``api``, ``admin``...).
The database keeps them in the ``reserved_slugs`` table, seeded with :data:`RESERVED_SLUGS`, and
its triggers ``tenants_admit_insert`` and ``tenants_reserved_slug`` refuse them for new tenants
and renames; a DBA may reserve more there. :func:`validate_new_slug` checks the seed list before
a tenant is created; a slug a DBA reserved later is refused by the database, and raises the same
:class:`ReservedSlug`.
Reading, suspending or deleting a tenant that held a slug before it was reserved still works:
:func:`is_valid_slug` and :func:`validate_slug` are the format rule only.
"""

from __future__ import annotations

import re

from dbtools.errors import InvalidSlug, ReservedSlug

MIN_LENGTH = 3
MAX_LENGTH = 50

# The same pattern as the CHECK constraint in sql/0001_create-tenants.sql; the tests prove that
# both accept exactly the same strings.
SLUG_PATTERN = r"[a-z0-9][a-z0-9-]{1,48}[a-z0-9]"
_slug_fullmatch = re.compile(SLUG_PATTERN, re.ASCII).fullmatch

# The rows sql/0003_reserve-slugs-and-check-names.sql seeds reserved_slugs with (a test compares
# them). ``demo`` is not among them: it is the demo tenant's.
RESERVED_SLUGS = frozenset(
    {
        "admin",
        "api",
        "app",
        "assets",
        "auth",
        "billing",
        "blog",
        "cdn",
        "dashboard",
        "docs",
        "help",
        "login",
        "mail",
        "static",
        "status",
        "support",
        "www",
    }
)


def is_valid_slug(value: object) -> bool:
    """Whether ``value`` is a string that the database accepts as a slug."""
    return isinstance(value, str) and _slug_fullmatch(value) is not None


def validate_slug(value: object) -> str:
    """Return ``value`` if it is a valid slug, else raise :class:`InvalidSlug` saying why."""
    if isinstance(value, str) and _slug_fullmatch(value) is not None:
        return value
    raise InvalidSlug(value, _reason(value))


def is_reserved(value: object) -> bool:
    """Whether ``value`` is one of the slugs the platform keeps for itself (the seed list)."""
    return value in RESERVED_SLUGS


def validate_new_slug(value: object) -> str:
    """Return ``value`` if a new tenant may take it: a valid slug, and not a reserved one.
    Raises :class:`InvalidSlug`, or :class:`ReservedSlug` (a subclass) for a reserved slug."""
    slug = validate_slug(value)
    if slug in RESERVED_SLUGS:
        raise ReservedSlug(slug)
    return slug


def _reason(value: object) -> str:
    if not isinstance(value, str):
        return f"a slug is a string, not {type(value).__name__}"
    if not MIN_LENGTH <= len(value) <= MAX_LENGTH:
        return f"must be {MIN_LENGTH} to {MAX_LENGTH} characters long, not {len(value)}"
    if value.startswith("-") or value.endswith("-"):
        return "must not start or end with a hyphen"
    bad = sorted({c for c in value if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-")})
    shown = ", ".join(repr(c) for c in bad)
    return f"only lowercase letters a-z, digits and hyphens are allowed, not {shown}"
