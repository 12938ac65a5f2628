"""The dbtools command as a whole: the command table, global options, the exit-code table, one-line
errors, and passwords that never show. Run in-process (``cli.main``); see test_console.py for the
few things only a real process shows."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbtools import config, errors
from dbtools.cli import MODULES
from dbtools.cli.base import Command, argument
from dbtools.cli.exits import EXIT_CODES, MEANINGS, Exit, exit_code
from dbtools.config import Target
from tests.helpers import PROJECT, Cli

Conn = psycopg.Connection[Any]
DECLARED = [command for module in MODULES for command in module.commands.commands]
GROUPS = [group for module in MODULES for group in module.commands.groups]


def one_error_line(result: Any) -> str:
    """The one line a failed command prints on stderr, after checking there is only one."""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("dbtools: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return str(result.stderr.strip())


# --- the command table -------------------------------------------------------------------------


@pytest.mark.parametrize("command", DECLARED, ids=lambda c: c.path)
def test_every_command_shows_its_help_and_example(cli: Cli, command: Command) -> None:
    result = cli(*command.path.split(), "--help")
    assert result.returncode == 0
    assert command.help.split("(")[0].strip() in " ".join(result.stdout.split())
    assert f"example:\n  {command.example}" in result.stdout


def test_every_group_lists_its_commands_with_an_example(cli: Cli) -> None:
    for group in GROUPS:
        result = cli(group.name, "--help")
        assert result.returncode == 0
        assert f"example:\n  {group.example}" in result.stdout
        members = [c.path.split()[-1] for c in DECLARED if c.path.startswith(f"{group.name} ")]
        assert members, group.name
        assert all(f"    {name} " in result.stdout for name in members), group.name


def test_main_help_lists_every_command_and_the_exit_codes(cli: Cli) -> None:
    result = cli("--help")
    assert result.returncode == 0
    for word in {command.path.split()[0] for command in DECLARED}:
        assert f"    {word} " in result.stdout, word
    for code, meaning in MEANINGS.items():
        assert f"  {int(code):<4} {meaning[:40]}" in result.stdout


def test_a_group_without_a_command_shows_its_help_and_exits_2(cli: Cli) -> None:
    result = cli("tenants")
    assert result.returncode == 2
    assert "list, show and change tenants" in result.stderr


def test_global_options_work_before_and_after_the_command(
    cli: Cli, db_url: str, conn: Conn
) -> None:
    conn.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')")
    before = cli("--json", "--database-url", db_url, "tenants", "list")
    after = cli("tenants", "list", "--json", "--database-url", db_url)
    between = cli("tenants", "--json", "list", "--database-url", db_url)
    assert before.returncode == after.returncode == between.returncode == 0, after.stderr
    assert json.loads(before.stdout)["tenants"][0]["slug"] == "acme"
    assert before.stdout == after.stdout == between.stdout


def test_a_mistake_in_a_declaration_is_one_line_with_the_bug_exit_code(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parser is built inside main's error handling: even --help fails in one line."""
    from dbtools.cli import tenants

    clash = Command("tenants clash", "x", "x", lambda ctx: 0, (argument("--json"),))
    monkeypatch.setattr(tenants.commands, "commands", [*tenants.commands.commands, clash])
    result = cli("--help")
    assert result.returncode == Exit.BUG
    assert one_error_line(result).startswith("dbtools: error: internal error: ArgumentError: ")


def test_an_unexpected_exception_is_a_bug_not_a_domain_error(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbtools.cli import db as db_commands

    def broken(ctx: Any) -> int:
        raise RuntimeError("something nobody mapped\nsecond line")

    [url_command] = [c for c in db_commands.commands.commands if c.path == "db url"]
    patched = [
        c if c is not url_command else Command("db url", "h", "e", broken)
        for c in db_commands.commands.commands
    ]
    monkeypatch.setattr(db_commands.commands, "commands", patched)
    result = cli("db", "url")
    assert result.returncode == int(Exit.BUG) == 70
    assert one_error_line(result) == (
        "dbtools: error: internal error: RuntimeError: something nobody mapped "
        "(a bug in dbtools: run with --debug and report it)"
    )
    debug = cli("--debug", "db", "url")
    assert "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("dbtools: error: internal error:")


# --- the exit-code table -----------------------------------------------------------------------

EXAMPLES: list[tuple[errors.DbToolsError, Exit]] = [
    (errors.ConfigurationError("x"), Exit.USAGE),
    (errors.PermissionDenied("permission denied for schema public"), Exit.PERMISSION),
    (errors.Timeout("lock", "canceling statement due to lock timeout"), Exit.TRY_AGAIN),
    (errors.Conflict("could not serialize access"), Exit.TRY_AGAIN),
    (errors.PoolExhausted("busy"), Exit.TRY_AGAIN),
    (errors.MigrationLocked("db", pid=1), Exit.TRY_AGAIN),
    (errors.DatabaseUnavailable("x"), Exit.UNAVAILABLE),
    (errors.NotMigrated("x"), Exit.UNAVAILABLE),
    (errors.ReadOnlyDatabase("x"), Exit.UNAVAILABLE),
    (errors.MigrationError("x"), Exit.UNAVAILABLE),
    (errors.MigrationEdited("sql/0001_x.sql"), Exit.UNAVAILABLE),
    (errors.LocalDatabaseError("x"), Exit.UNAVAILABLE),
    (errors.ExternalToolError("x"), Exit.UNAVAILABLE),
    (errors.InvalidSlug("X", "x"), Exit.DOMAIN),
    (errors.ReservedSlug("www"), Exit.DOMAIN),
    (errors.InvalidTenant("x", "name", "x"), Exit.DOMAIN),
    (errors.InvalidActor("", "x"), Exit.DOMAIN),
    (errors.DuplicateSlug("x"), Exit.DOMAIN),
    (errors.TenantNotFound("x"), Exit.DOMAIN),
    (errors.TenantInUse("x", "orders_tenant_fkey"), Exit.DOMAIN),
    (errors.Refused("new row violates check constraint", constraint="x_check"), Exit.DOMAIN),
    (errors.ImportFailed("x.csv", []), Exit.DOMAIN),
    (errors.SchemaDrift([]), Exit.DOMAIN),
    (errors.CacheClosed("x"), Exit.DOMAIN),
]


def test_every_error_class_has_its_exit_code() -> None:
    classes = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.DbToolsError)
    }
    examples = {type(error) for error, _ in EXAMPLES}
    assert classes - {errors.DbToolsError, errors.TryAgain} == examples, "add it to EXAMPLES"
    assert {error: exit_code(error) for error, _ in EXAMPLES} == dict(EXAMPLES)
    assert {code for _, code in EXIT_CODES} <= set(MEANINGS)


def test_the_readme_documents_every_exit_code() -> None:
    readme = (PROJECT / "README.md").read_text()
    for code, meaning in MEANINGS.items():
        assert f"| {int(code)} | {meaning} |" in readme, code


# --- timeouts, conflicts, privileges: their own codes ------------------------------------------


@pytest.fixture
def locked_tenants(connect: Any) -> Iterator[None]:
    holder = connect()
    holder.execute("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
    yield
    holder.rollback()


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ("-c lock_timeout=100ms", "lock_timeout"),
        ("-c lock_timeout=0 -c statement_timeout=100ms", "statement_timeout"),
    ],
)
def test_a_timeout_says_try_again_with_its_own_exit_code(
    cli: Cli, target: Target, locked_tenants: None, options: str, setting: str
) -> None:
    url = target.url()
    result = cli("--database-url", url, "tenants", "show", "acme", env={"PGOPTIONS": options})
    assert result.returncode == int(Exit.TRY_AGAIN) == 4
    line = one_error_line(result)
    assert line.startswith(f"dbtools: error: timed out on database {target.dbname!r} ({setting}): ")
    assert line.endswith("; try again")


def test_migrate_as_a_role_that_may_not_create_tables_is_permission_denied(
    cli: Cli, conn: Conn, target: Target
) -> None:
    conn.execute("CREATE ROLE dbtools_cli_ro LOGIN")
    conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        as_role = Target.from_params(**(target.params | {"user": "dbtools_cli_ro"}))
        result = cli("--database-url", as_role.url(), "migrate")
    finally:
        conn.execute("DROP ROLE dbtools_cli_ro")
    assert result.returncode == int(Exit.PERMISSION) == 5
    assert one_error_line(result).startswith(
        "dbtools: error: permission denied for schema public: migrating needs CREATE on it"
    )


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("postgresql://u@127.0.0.1:1/db?connect_timeout=abc", "connect_timeout must be a whole"),
        ("postgresql://u@127.0.0.1:1/db?sslmode=bogus", "sslmode must be one of"),
        ("postgresql://u@127.0.0.1:port/db", "invalid port"),
        ("", "--database-url is empty"),
    ],
)
def test_configuration_errors_exit_2_wherever_they_are_found(
    cli: Cli, url: str, complaint: str
) -> None:
    for command in (("status",), ("tenants", "list"), ("migrate",), ("schema", "check")):
        result = cli("--database-url", url, *command)
        assert result.returncode == Exit.USAGE, command
        assert complaint in one_error_line(result), command


def test_a_bad_libpq_environment_variable_exits_2(cli: Cli, db_url: str) -> None:
    result = cli("--database-url", db_url, "status", env={"PGSSLMODE": "bogus"})
    assert result.returncode == Exit.USAGE
    assert "PGSSLMODE: sslmode must be one of" in one_error_line(result)


def test_a_server_that_never_answers_times_out_instead_of_hanging(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "CONNECT_TIMEOUT", 2)  # libpq's minimum; the default is 10
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        result = cli("--database-url", f"postgresql://u@127.0.0.1:{port}/x", "status")
    assert result.returncode == Exit.UNAVAILABLE
    assert one_error_line(result) == (
        f"dbtools: error: cannot connect to database 'x' on 127.0.0.1:{port}: "
        "connection timeout expired"
    )


# --- one target, parsed once -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [("migrate",), ("schema", "check"), ("status",), ("demo",), ("tenants", "list")]
)
def test_the_url_is_parsed_once_per_invocation(
    cli: Cli, db_url: str, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    parses: list[str] = []
    real = Target.from_url.__func__  # type: ignore[attr-defined]

    def counted(cls: type[Target], /, url: str, **kwargs: Any) -> Target:
        parses.append(url)
        result: Target = real(cls, url, **kwargs)
        return result

    monkeypatch.setattr(Target, "from_url", classmethod(counted))
    result = cli(*command, env={"DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr
    assert parses == [db_url]


# --- a password never shows --------------------------------------------------------------------

# Every piece of every password starts with "Zq": no output may contain "Zq" at all.
PASSWORD_URLS = [
    pytest.param(
        "postgresql://app:Zq1%40Zq2%3AZq3%2FZq4%23Zq5%3FZq6%25Zq7%26Zq8%20Zq9@127.0.0.1:1/db",
        id="percent-encoded",
    ),
    pytest.param("postgresql://app@127.0.0.1:1/db?password=Zq1@Zq2", id="query-string"),
    pytest.param("postgresql://app@127.0.0.1:1?password=Zq1@Zq2", id="query-no-database"),
    pytest.param("postgresql://app@127.0.0.1:1/db?password=Zq1@Zq2%zz", id="broken-escape"),
    pytest.param("postgresql://app:Zq1/Zq2@127.0.0.1:1/db", id="slash"),
    pytest.param("postgresql://app:12/Zq2@127.0.0.1:1/db", id="slash-digits"),
    pytest.param("postgresql://app:Zq1#Zq2@127.0.0.1:1/db", id="hash"),
    pytest.param("postgresql://app:Zq1?Zq2@127.0.0.1:1/db", id="question-mark"),
    pytest.param("postgresql://app:Zq1@Zq2@127.0.0.1:1/db", id="at-sign"),
    pytest.param("postgresql://app:Zq1 Zq2@127.0.0.1:1/db", id="space"),
    pytest.param("postgresql://app:Zq1:Zq2@127.0.0.1:1/db", id="colon"),
    pytest.param("postgresql+psycopg://app:Zq1&Zq2%25@127.0.0.1:1/db", id="yoyo-scheme"),
    pytest.param("postgresql://app@127.0.0.1:1/db?sslpassword=Zq1&password=Zq2", id="sslpassword"),
    pytest.param("postgresql://app:Zq1@127.0.0.1:1,127.0.0.1:2/db", id="several-hosts"),
    pytest.param("host=127.0.0.1 port=1 dbname=db user=app password='Zq1 Zq2'", id="conninfo"),
    pytest.param("host=127.0.0.1 port=1 dbname=db password='Zq1 Zq2", id="conninfo-unclosed"),
    pytest.param("host=127.0.0.1 port=1 dbname=db password=Zq1=Zq2 x", id="conninfo-garbage"),
    pytest.param(
        "password=Zq1 host=127.0.0.1 port=1 dbname=db application_name=https://ci.example/x",
        id="conninfo-with-a-url-in-a-value",
    ),
    pytest.param(
        "Zq1=Zq2 host=127.0.0.1 port=1 dbname=db application_name=https://ci.example/x",
        id="conninfo-garbage-with-a-url",
    ),
]
COMMANDS = [
    ("migrate",),
    ("migrate", "--dry-run"),
    ("rollback",),
    ("status",),
    ("seed",),
    ("demo",),
    ("schema", "dump", "--file", "schema.sql"),
    ("schema", "check"),
    ("tenants", "list"),
    ("tenants", "show", "acme"),
    ("tenants", "create", "acme", "Acme"),
    ("tenants", "suspend", "acme"),
    ("tenants", "delete", "acme", "--yes"),
    ("tenants", "import", "tenants.csv"),
]


@pytest.mark.parametrize("url", PASSWORD_URLS)
def test_no_part_of_a_password_ever_shows(cli: Cli, url: str, tmp_path: Path) -> None:
    (tmp_path / "tenants.csv").write_text("slug,name\nacme,Acme\n")
    for command in COMMANDS:
        for mode in ((), ("--json",), ("--debug",)):
            result = cli(*mode, *command, env={"DATABASE_URL": url})
            shown = result.stdout + result.stderr
            assert result.returncode in (Exit.USAGE, Exit.UNAVAILABLE), (command, mode, shown)
            assert "Zq" not in shown, (command, mode, shown)
            assert shown.rstrip().splitlines()[-1].startswith("dbtools: error: "), shown


def test_no_password_shows_when_commands_succeed(cli: Cli, target: Target) -> None:
    """The embedded server trusts the socket, so the password is sent and ignored."""
    url = Target.from_params(**(target.params | {"password": "Zq1@Zq2:Zq3/Zq4 Zq5"})).url()
    for command in COMMANDS[:2] + COMMANDS[3:5] + COMMANDS[7:11]:
        for mode in ((), ("--json",), ("--debug",)):
            result = cli(*mode, *command, env={"DATABASE_URL": url})
            assert result.returncode in (0, 1), (command, result.stderr)
            assert "Zq" not in result.stdout + result.stderr, command


@pytest.mark.parametrize(
    "argv",
    [
        ("status", "postgresql://app:Zq1@h/db"),
        ("postgresql://app:Zq1@h/db",),
        ("tenants", "list", "--limit", "password=Zq1"),
    ],
)
def test_a_url_in_the_wrong_place_is_not_echoed(cli: Cli, argv: tuple[str, ...]) -> None:
    result = cli(*argv)
    assert result.returncode == 2
    assert "Zq" not in result.stderr
    assert "<a URL or connection string: not shown>" in one_error_line(result)


def test_control_characters_in_an_error_are_escaped(cli: Cli) -> None:
    """A host name could otherwise clear the operator's screen."""
    result = cli("--database-url", "postgresql://u@/db?host=/no/%1B%5B2J&port=1", "status")
    assert result.returncode == 3
    assert "\x1b" not in result.stderr
    assert "/no/\\x1b[2J:1" in one_error_line(result)
