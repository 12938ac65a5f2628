"""`dbtools tenants ...` as an operator or a script runs it: output, JSON shape, exit codes."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from dbtools import tenants

TENANT_KEYS = {"id", "slug", "name", "status", "settings", "created_at", "updated_at"}


def cli(run_cli: Any, db_url: str, *args: str) -> Any:
    return run_cli("--database-url", db_url, *args)


def cli_json(run_cli: Any, db_url: str, *args: str) -> Any:
    result = run_cli("--database-url", db_url, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_create_then_show(run_cli: Any, db_url: str) -> None:
    created = cli(
        run_cli, db_url, "tenants", "create", "acme", "Acme Corp", "--settings", '{"a": 1}'
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout == "created tenant 'acme' (Acme Corp)\n"

    shown = cli(run_cli, db_url, "tenants", "show", "acme")
    assert shown.returncode == 0
    assert "name        Acme Corp" in shown.stdout
    assert 'settings    {"a": 1}' in shown.stdout


def test_json_tenant_document(run_cli: Any, db_url: str, conn: psycopg.Connection[Any]) -> None:
    document = cli_json(
        run_cli, db_url, "tenants", "create", "acme", "Acme", "--settings", '{"a": 1}'
    )
    assert set(document) == TENANT_KEYS
    stored = tenants.get_by_slug(conn, "acme")
    assert stored is not None
    assert document == stored.model_dump(mode="json")
    assert document["created_at"].endswith("Z")
    assert cli_json(run_cli, db_url, "tenants", "show", "acme") == document


def test_list_pages_with_next_after(
    run_cli: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    for slug in ("aaa", "bbb", "ccc"):
        tenants.create(conn, slug, slug.upper())
    tenants.suspend(conn, "bbb")

    first = cli_json(run_cli, db_url, "tenants", "list", "--limit", "2")
    assert [t["slug"] for t in first["tenants"]] == ["aaa", "bbb"]
    assert first["next_after"] == "bbb"
    second = cli_json(run_cli, db_url, "tenants", "list", "--limit", "2", "--after", "bbb")
    assert [t["slug"] for t in second["tenants"]] == ["ccc"]
    assert second["next_after"] is None

    suspended = cli_json(run_cli, db_url, "tenants", "list", "--status", "suspended")
    assert [t["slug"] for t in suspended["tenants"]] == ["bbb"]

    table = cli(run_cli, db_url, "tenants", "list").stdout.splitlines()
    assert table[0].split() == ["SLUG", "NAME", "STATUS", "CREATED"]
    assert [line.split()[:3] for line in table[1:]] == [
        ["aaa", "AAA", "active"],
        ["bbb", "BBB", "suspended"],
        ["ccc", "CCC", "active"],
    ]
    assert len({line.index("active") for line in table[1:] if " active" in line}) == 1  # aligned


def test_rename_suspend_activate(run_cli: Any, db_url: str, conn: psycopg.Connection[Any]) -> None:
    tenants.create(conn, "acme", "Acme")
    assert cli_json(run_cli, db_url, "tenants", "rename", "acme", "ACME Inc")["name"] == "ACME Inc"
    suspended = cli_json(run_cli, db_url, "tenants", "suspend", "acme")
    assert suspended["status"] == "suspended"
    again = cli_json(run_cli, db_url, "tenants", "suspend", "acme")
    assert again == suspended  # idempotent: updated_at unchanged too
    assert cli_json(run_cli, db_url, "tenants", "activate", "acme")["status"] == "active"


def test_delete_needs_yes_without_a_terminal(
    run_cli: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    tenants.create(conn, "acme", "Acme")
    refused = cli(run_cli, db_url, "tenants", "delete", "acme")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert tenants.get_by_slug(conn, "acme") is not None

    deleted = cli(run_cli, db_url, "--json", "tenants", "delete", "acme", "--yes")
    assert deleted.returncode == 0
    assert json.loads(deleted.stdout) == {"deleted": "acme"}
    assert tenants.get_by_slug(conn, "acme") is None


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("tenants", "show", "ghost"), "no tenant with slug 'ghost'"),
        (("tenants", "suspend", "ghost"), "no tenant with slug 'ghost'"),
        (("tenants", "rename", "ghost", "G"), "no tenant with slug 'ghost'"),
        (("tenants", "delete", "ghost", "--yes"), "no tenant with slug 'ghost'"),
        (("tenants", "create", "Bad_Slug", "X"), "invalid tenant slug 'Bad_Slug'"),
        (("tenants", "create", "taken", "X"), "a tenant with slug 'taken' already exists"),
        (
            ("tenants", "create", "blank", "   "),
            "invalid name for tenant 'blank': must not be blank",
        ),
    ],
)
def test_domain_errors_exit_1(
    run_cli: Any, db_url: str, conn: psycopg.Connection[Any], args: tuple[str, ...], complaint: str
) -> None:
    tenants.create(conn, "taken", "Taken")
    result = cli(run_cli, db_url, "--json", *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"dbtools: error: {complaint}")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [
        ("tenants", "list", "--limit", "0"),
        ("tenants", "list", "--limit", "1001"),
        ("tenants", "list", "--status", "deleted"),
        ("tenants", "create", "acme", "Acme", "--settings", "[1, 2]"),
        ("tenants", "create", "acme", "Acme", "--settings", "{not json"),
        ("tenants", "show"),
        ("tenants", "frobnicate"),
    ],
)
def test_usage_errors_exit_2(run_cli: Any, db_url: str, args: tuple[str, ...]) -> None:
    result = cli(run_cli, db_url, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("dbtools: error: ")
    assert result.stderr.count("\n") == 1  # one line, no usage dump, no traceback
    assert result.stdout == ""


def test_not_migrated_database_exits_3(run_cli: Any, db_url: str) -> None:
    assert cli(run_cli, db_url, "rollback").returncode == 0
    result = cli(run_cli, db_url, "tenants", "list")
    assert result.returncode == 3
    assert 'is not migrated (relation "tenants" does not exist)' in result.stderr
    assert result.stderr.rstrip().endswith("run `dbtools migrate`")


def test_password_never_appears(run_cli: Any) -> None:
    url = "postgresql://admin:Sw0rdfish@127.0.0.1:1/dbtools_system"
    for args in (("tenants", "list"), ("--debug", "tenants", "list"), ("schema", "check")):
        result = run_cli("--database-url", url, *args)
        assert result.returncode == 3
        assert "Sw0rdfish" not in result.stdout + result.stderr


def test_debug_shows_the_traceback(run_cli: Any) -> None:
    result = run_cli(
        "--debug", "--database-url", "postgresql://u@127.0.0.1:1/db", "tenants", "list"
    )
    assert result.returncode == 3
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("dbtools: error: cannot connect")


def test_help_has_examples_at_every_level(run_cli: Any) -> None:
    for args in ((), ("tenants",), ("tenants", "import"), ("db", "url"), ("schema", "check")):
        result = run_cli(*args, "--help")
        assert result.returncode == 0
        assert "example" in result.stdout


def test_help_imports_nothing_heavy(run_cli: Any) -> None:
    script = (
        "import sys\n"
        "from dbtools import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('psycopg', 'pydantic', 'yoyo', 'dotenv') if m in sys.modules)\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
    )
    result = run_cli_python(script)
    assert "heavy: []" in result.stderr


def test_version(run_cli: Any) -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("dbtools ")


def run_cli_python(script: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
