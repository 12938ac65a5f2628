"""The ``dbtools`` command: the one face of the project at the shell (the Makefile calls it too).

The dispatcher knows no command: each module in :data:`MODULES` declares its own (see
:mod:`dbtools.cli.base`), and :mod:`dbtools.cli.exits` maps errors to exit codes. Global options
(``--database-url``, ``--json``, ``--debug``) work before and after the command. Errors are one
line on stderr, passwords never shown; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, NoReturn

from dbtools import __version__
from dbtools.cli import db, migrations, roles, schema, seed, tenants
from dbtools.cli.base import Command, Context, Group, printable
from dbtools.cli.exits import Exit, exit_code, help_text
from dbtools.errors import DbToolsError

MODULES = (db, migrations, seed, schema, tenants, roles)

_DESCRIPTION = "Create, migrate and query the tenant system database (dbtools_system)."
_EXAMPLES = """\
examples:
  dbtools migrate                    create dbtools_system if missing, apply pending migrations
  dbtools status                     applied and pending migrations (exit 3 while any is pending)
  dbtools tenants create acme "Acme Corp" --settings '{"plan": "pro"}'
  dbtools tenants list --status active --limit 50 --json
  dbtools --database-url postgresql://app@db.internal/dbtools_system status
  psql "$(dbtools db url)"           open psql on the embedded cluster

Without DATABASE_URL (environment or .env) commands use the embedded PostgreSQL in .dbtools/.
Global options work before or after the command.
"""


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what CI and Kubernetes send on a timeout) or SIGHUP (a closed terminal), raised
    as a kind of Ctrl-C, so that psycopg cancels the running query and every ``finally`` runs:
    yoyo's lock row is removed, a server tool's process group is killed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated(signum)


_HANDLED = (signal.SIGTERM, signal.SIGHUP)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = [(s, signal.signal(s, _terminate)) for s in _HANDLED] if on_main_thread else []
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    finally:
        for signum, handler in previous:
            signal.signal(signum, handler)


def _run(words: list[str]) -> int:
    debug = "--debug" in words
    _secret_looking[:] = [word for word in words if _may_hold_a_secret(word)]
    try:
        try:
            args = build_parser().parse_args(words)
        except SystemExit as exit_:  # --help, --version, or a usage error already printed
            return exit_.code if isinstance(exit_.code, int) else Exit.USAGE
        command: Command | None = getattr(args, "command", None)
        if command is None:
            args.help_parser.print_help(sys.stderr)
            return Exit.USAGE
        context = Context(json=args.json, debug=args.debug, database_url=args.database_url)
        return int(command.handler(context, **{dest: getattr(args, dest) for dest in args.dests}))
    except DbToolsError as exc:
        return _fail(str(exc), exit_code(exc), debug)
    except _Terminated as signalled:
        if signalled.signum == signal.SIGHUP:
            return _fail("hung up", Exit.HUNG_UP, debug)
        return _fail("terminated", Exit.TERMINATED, debug)
    except KeyboardInterrupt:
        return _fail("interrupted", Exit.INTERRUPTED, debug)
    except BrokenPipeError:  # nobody reads stdout any more: stop quietly, as cat does
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.BROKEN_PIPE
    except Exception as exc:  # a bug: an error nobody mapped. Still one line, with its own code.
        first_line = (str(exc).strip().splitlines() or [""])[0]
        message = (
            f"internal error: {type(exc).__name__}: {first_line} "
            "(a bug in dbtools: run with --debug and report it)"
        )
        return _fail(message, Exit.BUG, debug)


def _fail(message: str, code: Exit, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    # Escaped: a message may quote a host name or a tenant's name holding terminal controls.
    print(f"dbtools: error: {printable(message)}", file=sys.stderr, flush=True)
    return int(code)


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in one line like every other error, and without echoing an
    argument that may hold a password (a URL or connection string in the wrong place)."""

    def error(self, message: str) -> NoReturn:
        for word in sorted(_secret_looking, key=len, reverse=True):
            message = message.replace(word, "<a URL or connection string: not shown>")
        print(f"dbtools: error: {printable(message)} (try: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(Exit.USAGE)


# The words of the command line that could hold a secret; set by main() before parsing.
_secret_looking: list[str] = []


def _may_hold_a_secret(word: str) -> bool:
    return "://" in word or "=" in word or "@" in word


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, built from the declarations of :data:`MODULES`."""
    parser = _Parser(
        prog="dbtools",
        description=_DESCRIPTION,
        epilog=f"{_EXAMPLES}\n{help_text()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(help_parser=parser)
    _global_options(parser, default=None)
    parser.add_argument("--version", action="version", version=f"dbtools {__version__}")
    # The same options on every subcommand, with no default there, so that given after the
    # command they count, and not given they leave the main parser's value alone.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, default=argparse.SUPPRESS)

    children: dict[str, Any] = {"": parser.add_subparsers(title="commands", metavar="COMMAND")}
    groups = [group for module in MODULES for group in module.commands.groups]
    for group in groups:
        child = _add(children[""], group.name, group, common)
        child.set_defaults(help_parser=child)
        children[group.name] = child.add_subparsers(title="commands", metavar="COMMAND")
    for module in MODULES:
        for command in module.commands.commands:
            prefix, _, name = command.path.rpartition(" ")
            child = _add(children[prefix], name, command, common)
            dests = [child.add_argument(*a.flags, **a.options).dest for a in command.arguments]
            child.set_defaults(command=command, dests=dests)
    return parser


def _add(subparsers: Any, name: str, declared: Command | Group, common: Any) -> Any:
    return subparsers.add_parser(
        name,
        help=declared.help,
        description=declared.help,
        epilog=f"example:\n  {declared.example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )


def _global_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    flag_default = default if default is argparse.SUPPRESS else False
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=default,
        help="database to use (default: $DATABASE_URL, then .env, then the embedded cluster)",
    )
    parser.add_argument(
        "--json", action="store_true", default=flag_default, help="print one JSON document"
    )
    parser.add_argument(
        "--debug", action="store_true", default=flag_default, help="show the traceback of errors"
    )
