"""The ``dbtools`` command: the one face of the project at the shell (the Makefile calls it too).

Every command is a thin call of a :mod:`dbtools` function. ``--json`` makes every command print
one JSON document on stdout. Errors are one line on stderr, passwords masked, with an exit code a
script can act on: 0 success, 1 a domain error (a tenant not found, a duplicate slug, invalid
input, a schema that drifted), 2 a usage or configuration error, 3 the database cannot be reached
or is not migrated. ``--debug`` adds the traceback. Heavy modules (psycopg, pydantic, yoyo) are
imported by the commands that need them, so ``dbtools --help`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from dbtools import __version__
from dbtools.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    DbToolsError,
    LocalDatabaseError,
    MigrationError,
)

if TYPE_CHECKING:
    from dbtools.tenants import Tenant

EXIT_OK = 0
EXIT_DOMAIN = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

Handler = Callable[[argparse.Namespace], int]

_MAIN_EPILOG = """\
examples:
  dbtools migrate                    create dbtools_system if missing, apply pending migrations
  dbtools status                     applied and pending migrations (exit 3 while any is pending)
  dbtools tenants create acme "Acme Corp" --settings '{"plan": "pro"}'
  dbtools --json tenants list --status active --limit 50
  dbtools --database-url postgresql://app@db.internal/dbtools_system status
  psql "$(dbtools db url)"           open psql on the embedded cluster

Without DATABASE_URL (environment or .env) commands use the embedded PostgreSQL in .dbtools/.
Exit codes: 0 success, 1 domain error, 2 usage error, 3 database unreachable or not migrated.
"""

_EXAMPLES = {
    "db": 'dbtools db start\n  dbtools db status\n  psql "$(dbtools db url)"',
    "db start": "dbtools db start",
    "db stop": "dbtools db stop",
    "db status": "dbtools db status || dbtools db start",
    "db url": 'psql "$(dbtools db url)"',
    "migrate": "dbtools migrate\n  dbtools migrate --dry-run > pending.sql",
    "rollback": "dbtools rollback\n  dbtools rollback --count 2",
    "status": "dbtools status && echo up to date",
    "seed": "dbtools seed",
    "demo": "dbtools demo",
    "schema": "dbtools schema dump\n  dbtools schema check",
    "schema dump": "dbtools schema dump && git diff sql/schema/schema.sql",
    "schema check": 'dbtools --database-url "$PROD_URL" schema check',
    "tenants": "dbtools tenants list\n  dbtools tenants show acme",
    "tenants list": "dbtools tenants list --status suspended\n"
    "  dbtools tenants list --after acme --limit 20",
    "tenants show": "dbtools --json tenants show acme",
    "tenants create": 'dbtools tenants create acme "Acme Corp" --settings \'{"plan": "pro"}\'',
    "tenants rename": 'dbtools tenants rename acme "ACME Corporation"',
    "tenants suspend": "dbtools tenants suspend acme",
    "tenants activate": "dbtools tenants activate acme",
    "tenants delete": "dbtools tenants delete acme --yes",
    "tenants import": "dbtools tenants import tenants.csv\n\n"
    "The file's header is slug,name or slug,name,settings (settings: a JSON object).",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        args.help_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
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


# -- the parser ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in one line like every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"dbtools: error: {message} (try: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dbtools",
        description="Create, migrate and query the tenant system database (dbtools_system).",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(help_parser=parser)
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="database to use (default: $DATABASE_URL, then .env, then the embedded cluster)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action="version", version=f"dbtools {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db = _group(commands, "db", "the embedded PostgreSQL cluster")
    _command(db, "db start", _db_start, "initialise (once) and start the embedded cluster")
    _command(db, "db stop", _db_stop, "stop the embedded cluster")
    _command(db, "db status", _db_status, "whether it runs, and where (exit 3 if not)")
    _command(db, "db url", _db_url, "print the URL of dbtools_system in the embedded cluster")

    migrate = _command(commands, "migrate", _migrate, "create the database, apply migrations")
    migrate.add_argument(
        "--dry-run", action="store_true", help="print the SQL that would run; change nothing"
    )
    rollback = _command(commands, "rollback", _rollback, "roll back the newest migration(s)")
    rollback.add_argument(
        "--count", type=_positive_int, default=1, metavar="N", help="how many (default: 1)"
    )
    _command(commands, "status", _status, "applied and pending migrations (exit 3 if pending)")
    _command(commands, "seed", _seed, "create the demo tenant unless it exists")
    _command(commands, "demo", _demo, "migrate, seed, and print the demo tenant read back")

    schema = _group(commands, "schema", "the schema the migrations produce (sql/schema/)")
    for name, handler, text in (
        ("schema dump", _schema_dump, "write the migrations' schema to sql/schema/schema.sql"),
        ("schema check", _schema_check, "fail with a diff if the file or database differs"),
    ):
        command = _command(schema, name, handler, text)
        command.add_argument("--file", type=Path, help="schema file (default: %(default)s)")

    tenants = _group(commands, "tenants", "list, show and change tenants")
    listing = _command(tenants, "tenants list", _tenants_list, "tenants ordered by slug")
    listing.add_argument("--status", choices=("active", "suspended"), help="only this status")
    listing.add_argument("--after", metavar="SLUG", help="start after this slug (next page)")
    listing.add_argument(
        "--limit", type=_limit, default=100, metavar="N", help="at most N (1-1000, default 100)"
    )
    _command(tenants, "tenants show", _tenants_show, "one tenant").add_argument("slug")
    create = _command(tenants, "tenants create", _tenants_create, "create a tenant")
    create.add_argument("slug")
    create.add_argument("name")
    create.add_argument("--settings", type=_json_object, metavar="JSON", help="a JSON object")
    rename = _command(tenants, "tenants rename", _tenants_rename, "change a tenant's name")
    rename.add_argument("slug")
    rename.add_argument("name")
    for name, handler, text in (
        ("tenants suspend", _tenants_suspend, "suspend a tenant (idempotent)"),
        ("tenants activate", _tenants_activate, "activate a tenant (idempotent)"),
    ):
        _command(tenants, name, handler, text).add_argument("slug")
    delete = _command(tenants, "tenants delete", _tenants_delete, "delete a tenant")
    delete.add_argument("slug")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    importing = _command(tenants, "tenants import", _tenants_import, "create tenants from CSV")
    importing.add_argument("file", type=_readable_file, metavar="FILE.csv")
    return parser


def _group(commands: Any, name: str, help_text: str) -> Any:
    group: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text, **_epilog(name)
    )
    group.set_defaults(help_parser=group)
    return group.add_subparsers(title="commands", metavar="COMMAND")


def _command(commands: Any, path: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    name = path.rsplit(" ", 1)[-1]
    command: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text, **_epilog(path)
    )
    command.set_defaults(handler=handler)
    return command


def _epilog(path: str) -> dict[str, Any]:
    return {
        "epilog": f"example:\n  {_EXAMPLES[path]}",
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _limit(text: str) -> int:
    value = _positive_int(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"must be at most 1000, not {value}")
    return value


def _readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, not {type(value).__name__}")
    return value


# -- output -------------------------------------------------------------------------------------


def _say(message: str = "", *, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


def _emit(args: argparse.Namespace, document: Any, human: str) -> None:
    """Print ``document`` as JSON with ``--json``, else the human text."""
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False), flush=True)
    elif human:
        _say(human)


def _note(args: argparse.Namespace, message: str) -> None:
    """Progress for people (to stdout); silent with ``--json`` so stdout stays one document."""
    if not args.json:
        _say(message)


def _tenant_document(tenant: Tenant) -> dict[str, Any]:
    document: dict[str, Any] = tenant.model_dump(mode="json")
    return document


def _tenant_text(tenant: Tenant) -> str:
    return "\n".join(
        f"{field:<11} {json.dumps(value, ensure_ascii=False) if field == 'settings' else value}"
        for field, value in _tenant_document(tenant).items()
    )


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


# -- where the database is ----------------------------------------------------------------------


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
        _note(args, f"started the embedded PostgreSQL (socket in {cluster.socket_dir})")
    return cluster.url(config.DEFAULT_DBNAME)


def _connect(args: argparse.Namespace) -> Any:
    from dbtools import db

    return db.connect(_target_url(args), autocommit=True)


# -- db -----------------------------------------------------------------------------------------


def _cluster_document() -> dict[str, Any]:
    from dbtools import config, localdb

    cluster = localdb.default_cluster()
    initialised = cluster.is_initialised()
    return {
        "initialised": initialised,
        "running": cluster.is_running(),
        "version": cluster.server_version() if initialised else None,
        "data_dir": str(cluster.data_dir),
        "socket_dir": str(cluster.socket_dir),
        "url": cluster.url(config.DEFAULT_DBNAME),
    }


def _db_start(args: argparse.Namespace) -> int:
    from dbtools import localdb

    started = localdb.default_cluster().start()
    document = {"started": started, **_cluster_document()}
    verb = "started" if started else "already running:"
    human = f"{verb} embedded PostgreSQL {document['version']} (socket in {document['socket_dir']})"
    _emit(args, document, human)
    return EXIT_OK


def _db_stop(args: argparse.Namespace) -> int:
    from dbtools import localdb

    stopped = localdb.default_cluster().stop()
    human = (
        "stopped the embedded PostgreSQL" if stopped else "the embedded PostgreSQL is not running"
    )
    _emit(args, {"stopped": stopped}, human)
    return EXIT_OK


def _db_status(args: argparse.Namespace) -> int:
    document = _cluster_document()
    if not document["initialised"]:
        human = (
            f"not initialised (would live in {document['data_dir']}); `dbtools db start` makes it"
        )
    elif not document["running"]:
        human = f"stopped (data in {document['data_dir']})"
    else:
        human = (
            f"running: PostgreSQL {document['version']}, socket in {document['socket_dir']}, "
            f"data in {document['data_dir']}"
        )
    _emit(args, document, human)
    return EXIT_OK if document["running"] else EXIT_UNAVAILABLE


def _db_url(args: argparse.Namespace) -> int:
    url = _cluster_document()["url"]
    _emit(args, {"url": url}, url)
    return EXIT_OK


# -- migrations ---------------------------------------------------------------------------------


def _migrate(args: argparse.Namespace) -> int:
    from dbtools import config

    url = _target_url(args)
    dbname = config.parse_url(url)["dbname"]
    if args.dry_run:
        return _migrate_dry_run(args, url, dbname)
    created, applied = _create_and_apply(args, url)
    human = "\n".join(f"applied {migration_id}" for migration_id in applied)
    document = {"database": dbname, "created_database": created, "applied": applied}
    _emit(args, document, human or f"no pending migrations: {dbname!r} is up to date")
    return EXIT_OK


def _create_and_apply(args: argparse.Namespace, url: str) -> tuple[bool, list[str]]:
    """Create the database if missing (saying so), apply what is pending; what `migrate` and
    `demo` share."""
    from dbtools import config, migrations

    created = migrations.ensure_database(url)
    if created:
        _note(args, f"created database {config.parse_url(url)['dbname']!r}")
    return created, migrations.apply(url)


def _migrate_dry_run(args: argparse.Namespace, url: str, dbname: str) -> int:
    from dbtools import migrations

    exists = migrations.database_exists(url)
    if exists:
        pending = [s for s in migrations.status(url) if s.applied_at is None]
    else:
        pending = migrations.listed()
    parts = [] if exists else [f"-- would create database {dbname!r}"]
    for state in pending:
        parts.append(f"-- {state.id} ({state.path})\n{state.path.read_text().rstrip()}\n")
    if not pending:
        parts.append(f"-- no pending migrations: {dbname!r} is up to date")
    document = {
        "database": dbname,
        "would_create_database": not exists,
        "pending": [{"id": s.id, "file": str(s.path), "sql": s.path.read_text()} for s in pending],
    }
    _emit(args, document, "\n".join(parts))
    return EXIT_OK


def _rollback(args: argparse.Namespace) -> int:
    from dbtools import migrations

    rolled_back = migrations.rollback(_target_url(args), count=args.count)
    human = "\n".join(f"rolled back {migration_id}" for migration_id in rolled_back)
    _emit(args, {"rolled_back": rolled_back}, human or "nothing to roll back")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from dbtools import migrations

    states = migrations.status(_target_url(args))
    pending = sum(state.applied_at is None for state in states)
    lines = []
    for state in states:
        when = state.applied_at.strftime("%Y-%m-%d %H:%M:%S UTC") if state.applied_at else ""
        lines.append(f"{'applied' if when else 'pending':<8} {when:<23} {state.id}")
    lines.append(f"{len(states) - pending} applied, {pending} pending")
    document = {
        "migrations": [
            {"id": s.id, "applied_at": s.applied_at.isoformat() if s.applied_at else None}
            for s in states
        ],
        "applied": len(states) - pending,
        "pending": pending,
    }
    _emit(args, document, "\n".join(lines))
    return EXIT_UNAVAILABLE if pending else EXIT_OK


# -- seed and demo ------------------------------------------------------------------------------


def _seed(args: argparse.Namespace) -> int:
    from dbtools import seed

    with _connect(args) as conn:
        tenant, created = seed.seed(conn)
    if created:
        human = f"created tenant {tenant.slug!r} ({tenant.name})"
    else:
        human = f"tenant {tenant.slug!r} already exists; left unchanged"
    _emit(args, {"created": created, "tenant": _tenant_document(tenant)}, human)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from dbtools import seed, tenants

    args.database_url = _target_url(args)
    _, applied = _create_and_apply(args, args.database_url)
    for migration_id in applied:
        _note(args, f"applied {migration_id}")
    with _connect(args) as conn:
        _, created = seed.seed(conn)
        tenant = tenants.get_by_slug(conn, seed.DEMO_SLUG)
    if tenant is None:
        raise DbToolsError("the demo tenant was seeded but cannot be read back")
    if created:
        _note(args, f"created tenant {tenant.slug!r} ({tenant.name})")
    else:
        _note(args, f"tenant {tenant.slug!r} already exists; left unchanged")
    human = "\nthe demo tenant, read back from the database:\n" + _tenant_text(tenant)
    document = {"applied": applied, "created": created, "tenant": _tenant_document(tenant)}
    _emit(args, document, human)
    return EXIT_OK


# -- schema -------------------------------------------------------------------------------------


def _schema_dump(args: argparse.Namespace) -> int:
    from dbtools import schema

    path = args.file or schema.SCHEMA_FILE
    changed = schema.write(_target_url(args), path)
    human = f"wrote {path}" if changed else f"{path} is up to date"
    _emit(args, {"file": str(path), "changed": changed}, human)
    return EXIT_OK


def _schema_check(args: argparse.Namespace) -> int:
    from dbtools import schema

    path = args.file or schema.SCHEMA_FILE
    try:
        schema.check(_target_url(args), path)
    except schema.SchemaDrift as drift:
        differences = [{"subject": d.subject, "diff": d.diff} for d in drift.differences]
        _emit(
            args,
            {"ok": False, "differences": differences},
            "".join(d.diff for d in drift.differences),
        )
        raise
    _emit(args, {"ok": True, "differences": []}, f"{path} and the database match the migrations")
    return EXIT_OK


# -- tenants ------------------------------------------------------------------------------------


def _tenants_list(args: argparse.Namespace) -> int:
    from dbtools import tenants

    with _connect(args) as conn:
        page = tenants.list_tenants(conn, status=args.status, after=args.after, limit=args.limit)
    next_after = page[-1].slug if len(page) == args.limit else None
    document = {"tenants": [_tenant_document(t) for t in page], "next_after": next_after}
    rows = [["SLUG", "NAME", "STATUS", "CREATED"]]
    rows += [[t.slug, t.name, t.status.value, f"{t.created_at:%Y-%m-%d %H:%M}"] for t in page]
    human = _table(rows) if page else "no tenants"
    if next_after:
        human += f"\n(more: --after {next_after})"
    _emit(args, document, human)
    return EXIT_OK


def _tenants_show(args: argparse.Namespace) -> int:
    from dbtools import tenants
    from dbtools.errors import TenantNotFound
    from dbtools.slugs import validate_slug

    validate_slug(args.slug)
    with _connect(args) as conn:
        tenant = tenants.get_by_slug(conn, args.slug)
    if tenant is None:
        raise TenantNotFound(args.slug)
    _emit(args, _tenant_document(tenant), _tenant_text(tenant))
    return EXIT_OK


def _tenants_create(args: argparse.Namespace) -> int:
    from dbtools import tenants

    with _connect(args) as conn:
        tenant = tenants.create(conn, args.slug, args.name, settings=args.settings)
    _emit(args, _tenant_document(tenant), f"created tenant {tenant.slug!r} ({tenant.name})")
    return EXIT_OK


def _tenants_rename(args: argparse.Namespace) -> int:
    from dbtools import tenants

    with _connect(args) as conn:
        tenant = tenants.update(conn, args.slug, name=args.name)
    _emit(args, _tenant_document(tenant), f"renamed tenant {tenant.slug!r} to {tenant.name!r}")
    return EXIT_OK


def _tenants_suspend(args: argparse.Namespace) -> int:
    from dbtools import tenants

    with _connect(args) as conn:
        tenant = tenants.suspend(conn, args.slug)
    _emit(args, _tenant_document(tenant), f"tenant {tenant.slug!r} is suspended")
    return EXIT_OK


def _tenants_activate(args: argparse.Namespace) -> int:
    from dbtools import tenants

    with _connect(args) as conn:
        tenant = tenants.activate(conn, args.slug)
    _emit(args, _tenant_document(tenant), f"tenant {tenant.slug!r} is active")
    return EXIT_OK


def _tenants_delete(args: argparse.Namespace) -> int:
    from dbtools import tenants
    from dbtools.slugs import validate_slug

    validate_slug(args.slug)
    if not args.yes:
        if not sys.stdin.isatty():
            _say(
                f"dbtools: error: not deleting {args.slug!r}: add --yes (no terminal to ask on)",
                err=True,
            )
            return EXIT_USAGE
        answer = input(f"delete tenant {args.slug!r} and everything it owns? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            _say(f"not deleted: {args.slug!r}", err=True)
            return EXIT_DOMAIN
    with _connect(args) as conn:
        tenants.delete(conn, args.slug)
    _emit(args, {"deleted": args.slug}, f"deleted tenant {args.slug!r}")
    return EXIT_OK


def _tenants_import(args: argparse.Namespace) -> int:
    from dbtools import importing

    progress = None
    if sys.stderr.isatty() and not args.json:

        def progress(rows: int) -> None:
            print(f"\rread {rows:,} rows", end="", file=sys.stderr, flush=True)

    with _connect(args) as conn:
        try:
            imported = importing.import_csv(conn, args.file, progress=progress)
        except importing.ImportFailed as failure:
            if progress is not None:
                print(file=sys.stderr)
            errors = [{"line": e.line, "message": e.message} for e in failure.errors]
            if args.json:
                _emit(args, {"imported": 0, "errors": errors}, "")
            else:
                for error in failure.errors:
                    _say(f"{failure.source}: {error}", err=True)
            raise
    if progress is not None:
        print(file=sys.stderr)
    _emit(
        args, {"imported": imported, "errors": []}, f"imported {imported} tenants from {args.file}"
    )
    return EXIT_OK
