"""`dbtools tenants ...` as an operator or a script runs it (in-process): output, JSON shape,
exit codes."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbtools import tenants
from tests.helpers import Cli

TENANT_KEYS = {"id", "slug", "name", "status", "settings", "created_at", "updated_at"}


def on(cli: Cli, db_url: str, *args: str) -> Any:
    return cli("--database-url", db_url, *args)


def on_json(cli: Cli, db_url: str, *args: str) -> Any:
    result = cli("--database-url", db_url, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_create_then_show(cli: Cli, db_url: str) -> None:
    created = on(cli, db_url, "tenants", "create", "acme", "Acme Corp", "--settings", '{"a": 1}')
    assert created.returncode == 0, created.stderr
    assert created.stdout == "created tenant 'acme' (Acme Corp)\n"

    shown = on(cli, db_url, "tenants", "show", "acme")
    assert shown.returncode == 0
    assert "name        Acme Corp" in shown.stdout
    assert 'settings    {"a": 1}' in shown.stdout


def test_json_tenant_document(cli: Cli, db_url: str, conn: psycopg.Connection[Any]) -> None:
    document = on_json(cli, db_url, "tenants", "create", "acme", "Acme", "--settings", '{"a": 1}')
    assert set(document) == TENANT_KEYS
    stored = tenants.get_by_slug(conn, "acme")
    assert stored is not None
    assert document == stored.model_dump(mode="json")
    assert document["created_at"].endswith("Z")
    assert on_json(cli, db_url, "tenants", "show", "acme") == document


def test_list_pages_with_next_after(cli: Cli, db_url: str, conn: psycopg.Connection[Any]) -> None:
    for slug in ("aaa", "bbb", "ccc"):
        tenants.create(conn, slug, slug.upper())
    tenants.suspend(conn, "bbb")

    first = on_json(cli, db_url, "tenants", "list", "--limit", "2")
    assert [t["slug"] for t in first["tenants"]] == ["aaa", "bbb"]
    assert first["next_after"] == "bbb"
    second = on_json(cli, db_url, "tenants", "list", "--limit", "2", "--after", "bbb")
    assert [t["slug"] for t in second["tenants"]] == ["ccc"]
    assert second["next_after"] is None

    suspended = on_json(cli, db_url, "tenants", "list", "--status", "suspended")
    assert [t["slug"] for t in suspended["tenants"]] == ["bbb"]

    table = on(cli, db_url, "tenants", "list").stdout.splitlines()
    assert table[0].split() == ["SLUG", "NAME", "STATUS", "CREATED"]
    assert [line.split()[:3] for line in table[1:]] == [
        ["aaa", "AAA", "active"],
        ["bbb", "BBB", "suspended"],
        ["ccc", "CCC", "active"],
    ]
    assert len({line.index("active") for line in table[1:] if " active" in line}) == 1  # aligned


def test_rename_suspend_activate(cli: Cli, db_url: str, conn: psycopg.Connection[Any]) -> None:
    tenants.create(conn, "acme", "Acme")
    assert on_json(cli, db_url, "tenants", "rename", "acme", "ACME Inc")["name"] == "ACME Inc"
    suspended = on_json(cli, db_url, "tenants", "suspend", "acme")
    assert suspended["status"] == "suspended"
    again = on_json(cli, db_url, "tenants", "suspend", "acme")
    assert again == suspended  # idempotent: updated_at unchanged too
    assert on_json(cli, db_url, "tenants", "activate", "acme")["status"] == "active"


def test_delete_needs_yes_without_a_terminal(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    tenants.create(conn, "acme", "Acme")
    refused = on(cli, db_url, "tenants", "delete", "acme")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert tenants.get_by_slug(conn, "acme") is not None

    deleted = on(cli, db_url, "--json", "tenants", "delete", "acme", "--yes")
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
    cli: Cli, db_url: str, conn: psycopg.Connection[Any], args: tuple[str, ...], complaint: str
) -> None:
    tenants.create(conn, "taken", "Taken")
    result = on(cli, db_url, "--json", *args)
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
def test_usage_errors_exit_2(cli: Cli, db_url: str, args: tuple[str, ...]) -> None:
    result = on(cli, db_url, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("dbtools: error: ")
    assert result.stderr.count("\n") == 1  # one line, no usage dump, no traceback
    assert result.stdout == ""


@pytest.mark.direct  # rolls the migrations back, which refuse a pooler
def test_not_migrated_database_exits_3(cli: Cli, db_url: str) -> None:
    assert on(cli, db_url, "rollback", "--count", "1000").returncode == 0  # every one
    result = on(cli, db_url, "tenants", "list")
    assert result.returncode == 3
    assert 'is not migrated (relation "tenants" does not exist)' in result.stderr
    assert result.stderr.rstrip().endswith("run `dbtools migrate`")


def test_debug_shows_the_traceback(cli: Cli) -> None:
    result = cli("--debug", "--database-url", "postgresql://u@127.0.0.1:1/db", "tenants", "list")
    assert result.returncode == 3
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("dbtools: error: cannot connect")


def test_names_cannot_drive_the_terminal(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """Control characters in a name are shown escaped in human output, and kept in JSON. The
    database refuses them now; the row stands for one written before the rule (its constraint
    dropped here, as on a database that was never migrated to 0004)."""
    conn.execute("ALTER TABLE tenants DROP CONSTRAINT tenants_name_control_check")
    name = "Evil\x1b[2J\nCorp"
    conn.execute("INSERT INTO tenants (slug, name) VALUES ('evil', %s)", (name,))
    for args in (
        ("tenants", "list"),
        ("tenants", "show", "evil"),
    ):
        result = on(cli, db_url, *args)
        assert result.returncode == 0, args
        assert "\x1b" not in result.stdout, args
        assert "Evil\\x1b[2J\\nCorp" in result.stdout, args
    assert on_json(cli, db_url, "tenants", "show", "evil")["name"] == name


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (
            ("tenants", "create", "deep", "D", "--settings", '{"a":' * 3000 + "1" + "}" * 3000),
            "nested too deeply",
        ),
        (("tenants", "import", "."), ". is a directory, not a CSV file"),
    ],
)
def test_more_bad_arguments_are_usage_errors(
    cli: Cli, db_url: str, args: tuple[str, ...], complaint: str
) -> None:
    result = on(cli, db_url, *args)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert result.stderr.count("\n") == 1


def test_ctrl_d_at_the_delete_prompt_deletes_nothing(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    class EmptyTerminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tenants.create(conn, "acme", "Acme")
    monkeypatch.setattr("sys.stdin", EmptyTerminal(""))
    result = on(cli, db_url, "tenants", "delete", "acme")
    assert result.returncode == 1
    assert result.stderr.endswith("[y/N] \nnot deleted: 'acme'\n")
    assert tenants.get_by_slug(conn, "acme") is not None


def test_the_delete_question_stays_out_of_stdout(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tenants.create(conn, "acme", "Acme")
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    result = on(cli, db_url, "--json", "tenants", "delete", "acme")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"deleted": "acme"}  # the question is on stderr
    assert result.stderr == "delete tenant 'acme' and everything it owns? [y/N] "


def test_a_rule_someone_else_added_is_a_domain_error(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn.execute("ALTER TABLE tenants ADD CONSTRAINT tenants_no_admin CHECK (slug <> 'boss')")
    conn.execute(
        "CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'tenant % is kept', OLD.slug; END $$"
    )
    conn.execute(
        "CREATE TRIGGER keep BEFORE DELETE ON tenants FOR EACH ROW EXECUTE FUNCTION keep()"
    )
    tenants.create(conn, "kept", "Kept")
    (tmp_path / "admins.csv").write_text("slug,name\nboss,Boss\n")
    for args, message in [
        (("tenants", "create", "boss", "Boss"), "(tenants_no_admin)"),
        (("tenants", "import", str(tmp_path / "admins.csv")), "(tenants_no_admin)"),
        (("tenants", "delete", "kept", "--yes"), "tenant kept is kept"),
    ]:
        result = on(cli, db_url, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith("dbtools: error: the database refused the change: ")
        assert message in result.stderr, args


def test_a_deep_row_written_in_psql_does_not_break_list_or_show(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    deep = '{"a":' * 500 + "1" + "}" * 500
    conn.execute("INSERT INTO tenants (slug, name, settings) VALUES ('deep', 'Deep', %s)", (deep,))
    assert on(cli, db_url, "tenants", "list").returncode == 0
    for args in (("tenants", "show", "deep"), ("tenants", "list")):
        assert on(cli, db_url, "--json", *args).returncode == 0, args


# --- tenants import: streams -------------------------------------------------------------------

CSV = "slug,name\nacme,Acme Café 🚀\nbeta,Beta\n"


def _feed(fd: int, data: bytes) -> None:
    """Write ``data`` to ``fd`` and close it; a reader that went away early is not our failure."""
    with suppress(OSError), open(fd, "wb") as pipe:
        pipe.write(data)


@contextmanager
def feeding(data: bytes) -> Iterator[int]:
    """The read end of a pipe that yields ``data`` then ends, written by a thread so that data
    larger than the pipe's buffer works too."""
    read, write = os.pipe()
    writer = threading.Thread(target=_feed, args=(write, data))
    writer.start()
    try:
        yield read
    finally:
        os.close(read)
        writer.join(timeout=30)


@contextmanager
def stdin_of_children(data: bytes) -> Iterator[None]:
    """Processes started in the block read ``data`` on their standard input, from a pipe."""
    saved = os.dup(0)
    with feeding(data) as read:
        os.dup2(read, 0)
        try:
            yield
        finally:
            os.dup2(saved, 0)
            os.close(saved)


def _feed_fifo(path: Path, data: bytes) -> None:
    """Open the FIFO ``path`` for writing once a reader has it open (without blocking for ever
    if none comes), then write ``data``."""
    deadline = time.monotonic() + 60
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:  # ENXIO: no reader yet
                return
            time.sleep(0.01)
        else:
            break
    os.set_blocking(fd, True)
    _feed(fd, data)


def test_import_dash_reads_standard_input_as_utf8_and_leaves_it_open(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decoded as Latin-1 by its own wrapper, as in a process started under some locale: the
    # import reads the bytes beneath as UTF-8 (a BOM allowed), whatever the locale.
    stdin = io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbf" + CSV.encode()), encoding="latin-1")
    monkeypatch.setattr("sys.stdin", stdin)
    result = on(cli, db_url, "tenants", "import", "-")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "imported 2 tenants from standard input\n"
    acme = tenants.get_by_slug(conn, "acme")
    assert acme is not None
    assert acme.name == "Acme Café 🚀"
    assert not sys.stdin.closed
    assert not sys.stdin.buffer.closed


def test_bad_rows_from_standard_input_name_it(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"slug,name\nBad,Bad\n")))
    result = on(cli, db_url, "tenants", "import", "-")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "<stdin>: line 2: invalid tenant slug 'Bad': only lowercase letters a-z, digits and "
        "hyphens are allowed, not 'B'",
        "dbtools: error: <stdin>: 1 bad row, nothing imported",
    ]
    assert tenants.list_tenants(conn) == []


@pytest.mark.parametrize("file", ["-", "/dev/stdin"])
def test_import_reads_the_real_standard_input(
    console: Cli, db_url: str, conn: psycopg.Connection[Any], file: str
) -> None:
    with stdin_of_children(CSV.encode()):
        result = console("--database-url", db_url, "tenants", "import", file)
    assert result.returncode == 0, result.stderr
    assert [t.name for t in tenants.list_tenants(conn)] == ["Acme Café 🚀", "Beta"]


def test_import_reads_a_fifo(
    console: Cli, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    fifo = tmp_path / "tenants.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=_feed_fifo, args=(fifo, CSV.encode()))
    writer.start()
    try:
        result = console("--database-url", db_url, "tenants", "import", str(fifo))
    finally:
        writer.join(timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"imported 2 tenants from {fifo}\n"
    assert [t.slug for t in tenants.list_tenants(conn)] == ["acme", "beta"]


def test_import_reads_a_pipe_by_its_dev_fd_path_as_process_substitution_gives_it(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    with feeding(CSV.encode()) as read:  # what `dbtools tenants import <(cat tenants.csv)` gets
        result = on(cli, db_url, "tenants", "import", f"/dev/fd/{read}")
    assert result.returncode == 0, result.stderr
    assert [t.slug for t in tenants.list_tenants(conn)] == ["acme", "beta"]


def test_importing_a_directory_is_a_clear_usage_error(
    cli: Cli, db_url: str, tmp_path: Path
) -> None:
    result = on(cli, db_url, "tenants", "import", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == (
        f"dbtools: error: argument FILE.csv: {tmp_path} is a directory, not a CSV file "
        "(try: dbtools tenants import --help)\n"
    )


def test_importing_from_a_closed_standard_input_is_a_usage_error(db_url: str) -> None:
    """`dbtools tenants import - <&-`: Python sees no sys.stdin at all."""
    result = subprocess.run(
        [sys.executable, "-m", "dbtools", "--database-url", db_url, "tenants", "import", "-"],
        preexec_fn=lambda: os.close(0),  # closes the child's stdin
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (
        2,
        "dbtools: error: standard input is closed: there is nothing to import from -\n",
    )


def test_an_empty_file_name_is_a_usage_error(cli: Cli, db_url: str) -> None:
    result = on(cli, db_url, "tenants", "import", "")
    assert result.returncode == 2
    assert "no file given (- reads standard input)" in result.stderr


def test_bad_rows_are_named_by_the_path_as_given(
    cli: Cli, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.csv").write_text("slug,name\nBad,Bad\n")
    monkeypatch.chdir(tmp_path)
    result = on(cli, db_url, "tenants", "import", "in/bad.csv")
    assert result.returncode == 1
    assert result.stderr.startswith("in/bad.csv: line 2: invalid tenant slug 'Bad'")


# --- reserved slugs, names, settings that cannot lie -------------------------------------------


def test_creating_a_reserved_slug_is_a_domain_error(cli: Cli, db_url: str) -> None:
    result = on(cli, db_url, "tenants", "create", "www", "Mine")
    assert result.returncode == 1
    assert result.stderr == (
        "dbtools: error: invalid tenant slug 'www': the slug is reserved for the platform\n"
    )
    assert on(cli, db_url, "tenants", "create", "demo", "Demo Tenant").returncode == 0


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Evil\x1b[2J\x1b]0;owned\x07\rFake active", id="escape-sequences"),
        pytest.param("\u200b\ufeff\u3164\u2800", id="invisible-only"),
    ],
)
def test_creating_or_renaming_to_a_lying_name_is_a_domain_error(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any], name: str
) -> None:
    tenants.create(conn, "acme", "Acme")
    for args in (("tenants", "create", "evil", name), ("tenants", "rename", "acme", name)):
        result = on(cli, db_url, *args)
        assert result.returncode == 1, args
        assert result.stderr.startswith("dbtools: error: invalid name for tenant "), args
        assert "\x1b" not in result.stderr
    assert [t.name for t in tenants.list_tenants(conn)] == ["Acme"]


def test_control_characters_in_settings_never_reach_the_terminal(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """Settings may hold any text; JSON output escapes C0 and C1 controls alike (U+009B is an
    8-bit CSI), and the human output escapes them too."""
    settings = {"c0": "\x1b[2J\x07\r", "c1": "\x9b31m\x85", "\x1b]0;key\x07": "v"}
    tenants.create(conn, "acme", "Acme", settings=settings)
    for args in (("tenants", "show", "acme"), ("tenants", "list")):
        for json_flag in ((), ("--json",)):
            result = on(cli, db_url, *json_flag, *args)
            assert result.returncode == 0, (args, json_flag)
            bad = [
                c for c in result.stdout if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F
            ]
            assert bad == [], (args, json_flag)
    assert on_json(cli, db_url, "tenants", "show", "acme")["settings"] == settings


def test_numbers_no_python_float_or_int_holds_are_listed_and_shown_exactly(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO tenants (slug, name, settings) VALUES ('big', 'Big', %s)",
        ('{"n": 1e5000, "tiny": 1.5e-400, "f": 0.5}',),
    )
    assert on(cli, db_url, "tenants", "list").returncode == 0
    shown = on(cli, db_url, "tenants", "show", "big")
    assert shown.returncode == 0, shown.stderr
    assert '"n": 1' + "0" * 5000 in shown.stdout
    for args in (("tenants", "show", "big"), ("tenants", "list")):
        result = on(cli, db_url, "--json", *args)
        assert result.returncode == 0, (args, result.stderr)
        document = json.loads(result.stdout, parse_int=Decimal, parse_float=Decimal)
        tenant = document if "settings" in document else document["tenants"][0]
        assert tenant["settings"] == {
            "n": Decimal("1e5000"),
            "tiny": Decimal("1.5e-400"),
            "f": Decimal("0.5"),
        }


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ('{"a": {"1": 1}, "b": [{"x": 1}]}', None),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_settings_argument_round_trips_or_is_refused(
    cli: Cli, db_url: str, settings: str, complaint: str | None
) -> None:
    result = on(cli, db_url, "--json", "tenants", "create", "acme", "Acme", "--settings", settings)
    if complaint is None:
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["settings"] == json.loads(settings)
    else:
        assert result.returncode == 2
        assert complaint in result.stderr
        assert "Traceback" not in result.stderr


def test_settings_argument_keeps_every_number_as_written(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """jsonb holds these exactly; json.loads would store 0.1, 0.0, a rounded 1e41, or refuse."""
    written = (
        '{"fine": 0.1000000000000000000001, "tiny": 1e-400, "huge": 1e400, '
        '"half": 100000000000000000000000000000000000000000.5, "plain": 2.5, "n": 7}'
    )
    result = on(cli, db_url, "tenants", "create", "acme", "Acme", "--settings", written)
    assert result.returncode == 0, result.stderr
    same = conn.execute(
        "SELECT settings = %s::jsonb FROM tenants WHERE slug = 'acme'", [written]
    ).fetchone()
    assert same == (True,)
    assert tenants.get_by_slug(conn, "acme").settings == {  # type: ignore[union-attr]
        "fine": Decimal("0.1000000000000000000001"),
        "tiny": Decimal("1e-400"),
        "huge": Decimal("1e400"),
        "half": Decimal("100000000000000000000000000000000000000000.5"),
        "plain": 2.5,
        "n": 7,
    }
    refused = on(cli, db_url, "tenants", "create", "beta", "B", "--settings", '{"x": NaN}')
    assert refused.returncode == 2
    assert "NaN is not JSON" in refused.stderr


def test_a_latin1_client_encoding_in_the_environment_does_not_reach_dbtools(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbtools asks for UTF8 unless the URL says otherwise: PGCLIENTENCODING=LATIN1, set for
    some other program, would leave an emoji or a CJK name nothing to travel as."""
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    result = on(
        cli, db_url, "tenants", "create", "rocket", "Rocket 🚀 東京", "--settings", '{"a": "✨"}'
    )
    assert result.returncode == 0, result.stderr
    found = conn.execute("SELECT name, settings ->> 'a' FROM tenants").fetchone()
    assert found == ("Rocket 🚀 東京", "✨")


def test_settings_nested_thousands_deep_are_shown(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    deep = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"
    conn.execute(
        "INSERT INTO tenants (slug, name, settings) VALUES ('deep', 'Deep', %s::jsonb)", (deep,)
    )
    shown = on(cli, db_url, "tenants", "show", "deep")
    assert shown.returncode == 0, shown.stderr
    assert 'settings    {"a": [[[' in shown.stdout
    as_json = on(cli, db_url, "--json", "tenants", "show", "deep")
    assert as_json.returncode == 0, as_json.stderr
    assert '"settings": {"a": ' + "[" * 5000 + "]" * 5000 + "}" in as_json.stdout
