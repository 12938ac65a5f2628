"""Exit codes of the ``dbtools`` command: one table from error classes to codes.

A new error class gets its row in :data:`EXIT_CODES` (the first row it is an instance of wins);
the README's table and ``dbtools --help`` are made from, or checked against, :data:`MEANINGS`.
"""

from __future__ import annotations

import enum
import textwrap

from dbtools.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    DbToolsError,
    ExternalToolError,
    LocalDatabaseError,
    MigrationError,
    PermissionDenied,
    TryAgain,
)


class Exit(enum.IntEnum):
    """What the process exit code tells a script."""

    OK = 0
    DOMAIN = 1
    USAGE = 2
    UNAVAILABLE = 3
    TRY_AGAIN = 4
    PERMISSION = 5
    BUG = 70  # sysexits.h EX_SOFTWARE
    HUNG_UP = 129  # 128 + SIGHUP: the terminal or the ssh session went away
    INTERRUPTED = 130  # 128 + SIGINT, as shells report it
    TERMINATED = 143  # 128 + SIGTERM
    BROKEN_PIPE = 141  # 128 + SIGPIPE, as `cat` ends when its reader goes away


MEANINGS = {
    Exit.OK: "success",
    Exit.DOMAIN: "domain error: tenant not found, duplicate slug, invalid input, bad CSV rows, "
    "schema drift",
    Exit.USAGE: "usage or configuration error: a bad option, a malformed or missing "
    "DATABASE_URL, a missing, unreadable or empty migrations folder",
    Exit.UNAVAILABLE: "the database cannot be reached, the connection was lost, it is not "
    "migrated (or status: migrations are pending), a migration failed or was edited, the "
    "embedded cluster or pg_dump failed",
    Exit.TRY_AGAIN: "temporary: a lock or statement timeout, a serialization failure or "
    "deadlock, the migration lock is held; the same command may succeed if run again",
    Exit.PERMISSION: "permission denied: the database role lacks a privilege",
    Exit.BUG: "internal error: a bug in dbtools (run with --debug and report it)",
    Exit.HUNG_UP: "hung up (SIGHUP: the terminal or ssh session closed); released like SIGTERM",
    Exit.INTERRUPTED: "interrupted (Ctrl-C)",
    Exit.TERMINATED: "terminated (SIGTERM, as sent on a CI or Kubernetes timeout); what it "
    "held, the migration lock included, was released",
    Exit.BROKEN_PIPE: "the output was closed early (piped into head, say)",
}

EXIT_CODES: tuple[tuple[type[DbToolsError], Exit], ...] = (
    (ConfigurationError, Exit.USAGE),
    (PermissionDenied, Exit.PERMISSION),
    (TryAgain, Exit.TRY_AGAIN),
    (DatabaseUnavailable, Exit.UNAVAILABLE),
    (MigrationError, Exit.UNAVAILABLE),
    (LocalDatabaseError, Exit.UNAVAILABLE),
    (ExternalToolError, Exit.UNAVAILABLE),
    (DbToolsError, Exit.DOMAIN),
)


def exit_code(error: DbToolsError) -> Exit:
    """The exit code for ``error``: its class's row in :data:`EXIT_CODES`."""
    return next(code for cls, code in EXIT_CODES if isinstance(error, cls))


def help_text() -> str:
    """The exit codes, as ``--help`` lists them."""
    return "exit codes:\n" + "\n".join(
        textwrap.fill(meaning, 78, initial_indent=f"  {int(code):<4} ", subsequent_indent=" " * 7)
        for code, meaning in MEANINGS.items()
    )
