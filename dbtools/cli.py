"""The ``dbtools`` command: the one face of the project at the shell (the Makefile calls it too).

Every command is a thin call of a :mod:`dbtools` function. Errors are one line on stderr, with the
password masked, and an exit code a script can act on: 0 success, 1 a domain error (a tenant not
found, a duplicate slug, invalid input), 2 a usage or configuration error, 3 the database cannot
be reached or is not migrated. ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from dbtools import __version__
from dbtools.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    DbToolsError,
    LocalDatabaseError,
    MigrationError,
)

EXIT_OK = 0
EXIT_DOMAIN = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

_EPILOG = """\
examples:
  dbtools migrate                 create dbtools_system if missing, apply pending migrations
  dbtools status                  applied and pending migrations (exit 3 while any is pending)
  dbtools seed                    create the demo tenant (idempotent)
  dbtools db url                  connection URL of the embedded cluster: psql "$(dbtools db url)"
  dbtools --database-url postgresql://app@db.internal/dbtools_system migrate

Without DATABASE_URL (environment or .env), commands use the embedded PostgreSQL in .dbtools/.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except DbToolsError as exc:
        return _fail(args, str(exc), _exit_code(exc))
    except KeyboardInterrupt:
        return _fail(args, "interrupted", 130)
    except Exception as exc:  # a bug, or an error nobody mapped yet: still one line
        first_line = (str(exc).strip().splitlines() or [""])[0]
        message = f"unexpected {type(exc).__name__}: {first_line} (run with --debug for details)"
        return _fail(args, message, EXIT_DOMAIN)


def _exit_code(exc: DbToolsError) -> int:
    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE
    if isinstance(exc, DatabaseUnavailable | LocalDatabaseError | MigrationError):
        return EXIT_UNAVAILABLE
    return EXIT_DOMAIN


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(f"dbtools: error: {message}", file=sys.stderr)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbtools",
        description="Create, migrate and query the tenant system database (dbtools_system).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="database to use (default: $DATABASE_URL, then .env, then the embedded cluster)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"dbtools {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db = commands.add_parser("db", help="the embedded PostgreSQL cluster")
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND")
    _command(db_commands, "start", _db_start, "initialise (once) and start the embedded cluster")
    _command(db_commands, "stop", _db_stop, "stop the embedded cluster")
    _command(db_commands, "status", _db_status, "say whether it runs, and where (exit 3 if not)")
    _command(db_commands, "url", _db_url, "print the URL of dbtools_system in the embedded cluster")

    _command(
        commands, "migrate", _migrate, "create the database if missing, apply pending migrations"
    )
    rollback = _command(
        commands, "rollback", _rollback, "roll back the newest applied migration(s)"
    )
    rollback.add_argument(
        "--count", type=_positive_int, default=1, metavar="N", help="how many (default: 1)"
    )
    _command(commands, "status", _status, "list applied and pending migrations (exit 3 if pending)")
    _command(commands, "seed", _seed, "create the demo tenant unless it exists")
    _command(commands, "demo", _demo, "migrate, seed, and print the demo tenant read back")
    return parser


def _command(
    commands: Any, name: str, handler: Callable[[argparse.Namespace], int], help_text: str
) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text
    )
    command.set_defaults(handler=handler)
    return command


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _say(message: str) -> None:
    print(message, flush=True)


def _target_url(args: argparse.Namespace) -> str:
    """The URL to work on; starts the embedded cluster (saying so) when nothing is configured."""
    from dbtools import config

    url: str | None = args.database_url or config.configured_url()
    if url:
        config.parse_url(url)  # fail early, and clearly, on a malformed URL
        return url
    from dbtools import localdb

    cluster = localdb.default_cluster()
    if cluster.start():
        _say(f"started the embedded PostgreSQL (socket in {cluster.socket_dir})")
    return cluster.url(config.DEFAULT_DBNAME)


def _db_start(args: argparse.Namespace) -> int:
    from dbtools import localdb

    cluster = localdb.default_cluster()
    started = cluster.start()
    verb = "started" if started else "already running:"
    _say(f"{verb} embedded PostgreSQL {cluster.server_version()} (socket in {cluster.socket_dir})")
    return EXIT_OK


def _db_stop(args: argparse.Namespace) -> int:
    from dbtools import localdb

    cluster = localdb.default_cluster()
    _say(
        "stopped the embedded PostgreSQL"
        if cluster.stop()
        else "the embedded PostgreSQL is not running"
    )
    return EXIT_OK


def _db_status(args: argparse.Namespace) -> int:
    from dbtools import localdb

    cluster = localdb.default_cluster()
    if not cluster.is_initialised():
        _say(f"not initialised (would live in {cluster.data_dir}); `dbtools db start` creates it")
        return EXIT_UNAVAILABLE
    if not cluster.is_running():
        _say(f"stopped (data in {cluster.data_dir})")
        return EXIT_UNAVAILABLE
    _say(
        f"running: PostgreSQL {cluster.server_version()}, socket in {cluster.socket_dir}, "
        f"data in {cluster.data_dir}"
    )
    return EXIT_OK


def _db_url(args: argparse.Namespace) -> int:
    from dbtools import config, localdb

    _say(localdb.default_cluster().url(config.DEFAULT_DBNAME))
    return EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    from dbtools import config, migrations

    url = _target_url(args)
    dbname = config.parse_url(url)["dbname"]
    if migrations.ensure_database(url):
        _say(f"created database {dbname!r}")
    applied = migrations.apply(url)
    for migration_id in applied:
        _say(f"applied {migration_id}")
    if not applied:
        _say(f"no pending migrations: {dbname!r} is up to date")
    return EXIT_OK


def _rollback(args: argparse.Namespace) -> int:
    from dbtools import migrations

    rolled_back = migrations.rollback(_target_url(args), count=args.count)
    for migration_id in rolled_back:
        _say(f"rolled back {migration_id}")
    if not rolled_back:
        _say("nothing to roll back: no migration is applied")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from dbtools import migrations

    states = migrations.status(_target_url(args))
    for state in states:
        when = state.applied_at.strftime("%Y-%m-%d %H:%M:%S UTC") if state.applied_at else ""
        _say(f"{'applied' if when else 'pending':<8} {when:<23} {state.id}")
    pending = sum(state.applied_at is None for state in states)
    _say(f"{len(states) - pending} applied, {pending} pending")
    return EXIT_UNAVAILABLE if pending else EXIT_OK


def _seed(args: argparse.Namespace) -> int:
    from dbtools import db, seed

    with db.connect(_target_url(args), autocommit=True) as conn:
        tenant, created = seed.seed(conn)
    if created:
        _say(f"created tenant {tenant.slug!r} ({tenant.name})")
    else:
        _say(f"tenant {tenant.slug!r} already exists; left unchanged")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from dbtools import db, seed, tenants

    args.database_url = _target_url(args)
    _migrate(args)
    _seed(args)
    with db.connect(args.database_url, autocommit=True) as conn:
        tenant = tenants.get_by_slug(conn, seed.DEMO_SLUG)
    if tenant is None:
        raise DbToolsError("the demo tenant was seeded but cannot be read back")
    _say("")
    _say("the demo tenant, read back from the database:")
    for field, value in tenant.model_dump(mode="json").items():
        _say(f"  {field:<11} {value}")
    return EXIT_OK
