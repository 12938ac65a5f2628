"""`dbtools tenants import FILE.csv` and dbtools.importing.import_csv: all rows or none.

The command runs in-process (``cli.main``), against a fresh migrated database per test. Each
bad-row test mixes one kind of bad row with good ones and checks three things: the exact line
reported (the header is line 1), exit code 1, and that nothing was written.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import pq

from dbtools import importing, jsonnumbers, tenants
from dbtools.errors import DbToolsError, InvalidSlug, excerpt
from dbtools.importing import MAX_LINE, ImportFailed, Phase, RowError, import_csv
from dbtools.slugs import validate_slug
from tests.helpers import INJECTION, Cli, CliResult, row_count

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]
Result = CliResult

FILE_NAME = "tenants.csv"
INTRANS = pq.TransactionStatus.INTRANS
BAD_ROW = re.compile(rf"{re.escape(FILE_NAME)}: line (\d+): (.*)")


# --- helpers -----------------------------------------------------------------------------------


def write_file(tmp_path: Path, text: str, *, bom: bool = False, name: str = FILE_NAME) -> Path:
    """Write ``text`` byte for byte (UTF-8, no newline translation) and return its path."""
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def write_rows(tmp_path: Path, rows: Sequence[Sequence[str]], *, name: str = FILE_NAME) -> Path:
    """Write ``rows`` (the header first) with the csv module, quoting what needs quoting."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return write_file(tmp_path, buffer.getvalue(), name=name)


def run_import(cli: Cli, db_url: str, path: Path, *options: str) -> Result:
    """Import ``path`` as a user in its folder would: by its name (``cli`` runs in tmp_path),
    which is how messages then name it."""
    given = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    return cli("--database-url", db_url, *options, "tenants", "import", str(given))


def slugs_in(conn: Conn) -> list[str]:
    return [row[0] for row in conn.execute("SELECT slug FROM tenants ORDER BY slug")]


def stored(conn: Conn, slug: str) -> tenants.Tenant:
    tenant = tenants.get_by_slug(conn, slug)
    assert tenant is not None, f"tenant {slug!r} was not imported"
    return tenant


def reported(result: Result) -> list[tuple[int, str]]:
    """The bad rows on stderr as (line, message), after checking the shape of the whole stderr:
    one ``FILE: line N: message`` line per bad row, then the final ``dbtools: error:`` line."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    *rows, last = result.stderr.splitlines()
    assert last.startswith(f"dbtools: error: {FILE_NAME}: "), result.stderr
    assert last.endswith("nothing imported"), result.stderr
    matches = [BAD_ROW.fullmatch(row) for row in rows]
    assert all(matches), f"not one 'FILE: line N: message' line per bad row:\n{result.stderr}"
    return [(int(m[1]), m[2]) for m in matches if m]


def reported_lines(result: Result) -> list[int]:
    return [line for line, _ in reported(result)]


def only_error(result: Result) -> tuple[int, str]:
    errors = reported(result)
    assert len(errors) == 1, result.stderr
    return errors[0]


# --- success -----------------------------------------------------------------------------------


def test_ten_thousand_rows_are_all_imported(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    rows = [["slug", "name", "settings"]]
    rows += [
        [f"tenant-{i:05d}", f"Tenant number {i}", json.dumps({"n": i, "plan": "pro"})]
        for i in range(10_000)
    ]
    result = run_import(cli, db_url, write_rows(tmp_path, rows))
    assert result.returncode == 0, result.stderr
    assert "imported 10000" in result.stdout
    assert result.stderr == ""
    assert row_count(conn) == 10_000
    sample = stored(conn, "tenant-04242")
    assert sample.name == "Tenant number 4242"
    assert sample.settings == {"n": 4242, "plan": "pro"}


@pytest.mark.parametrize(
    ("content", "bom"),
    [
        pytest.param("slug,name\nacme,Acme Corp\nbeta,Beta\n", False, id="slug-name"),
        pytest.param(
            'slug,name,settings\nacme,Acme Corp,"{""plan"": ""pro""}"\nbeta,Beta,\n',
            False,
            id="slug-name-settings",
        ),
        pytest.param("slug,name\nacme,Acme Corp\nbeta,Beta\n", True, id="utf8-bom"),
        pytest.param(
            'slug,name,settings\r\nacme,Acme Corp,"{""plan"": ""pro""}"\r\nbeta,Beta,\r\n',
            False,
            id="crlf",
        ),
        pytest.param(
            'slug,name,settings\r\nacme,Acme Corp,"{""plan"": ""pro""}"\r\nbeta,Beta,\r\n',
            True,
            id="crlf-and-bom",
        ),
    ],
)
def test_accepted_file_layouts(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path, content: str, bom: bool
) -> None:
    result = run_import(cli, db_url, write_file(tmp_path, content, bom=bom))
    assert result.returncode == 0, result.stderr
    assert "imported 2 tenants" in result.stdout
    acme, beta = stored(conn, "acme"), stored(conn, "beta")
    assert acme.name == "Acme Corp"  # no stray \r, no BOM glued to anything
    assert beta.name == "Beta"
    assert acme.settings == ({"plan": "pro"} if "settings" in content else {})
    assert beta.settings == {}  # no settings column, or an empty field: {}


def test_settings_column_may_be_left_off_a_row(conn: Conn, tmp_path: Path) -> None:
    path = write_file(tmp_path, 'slug,name,settings\nacme,Acme\nbeta,Beta,"{""a"": 1}"\n')
    assert import_csv(conn, path) == 2
    assert stored(conn, "acme").settings == {}
    assert stored(conn, "beta").settings == {"a": 1}


def test_a_file_with_only_the_header_imports_nothing(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    result = run_import(cli, db_url, write_file(tmp_path, "slug,name\n"))
    assert result.returncode == 0, result.stderr
    assert "imported 0 tenants" in result.stdout
    assert row_count(conn) == 0


def test_odd_names_and_settings_are_stored_verbatim(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    names = {
        "quotes": "He said \"hi\" and 'bye'",
        "commas": "Smith, Jones; and Partners",
        "emoji": "Rocket 🚀 Ltd ✨",
        "injection": INJECTION,
        "backslash": "C:\\new\\table \\N \\. and \\t",
        "spaces": "  padded  ",
    }
    settings = {
        "quote": '"',
        "sql": INJECTION,
        "emoji": "🚀",
        "punctuation": "a,b;c",
        "backslash": "\\N\\.",
        "control": "Line one\nLine two\ttabbed",  # names may not hold these; settings may
        "nested": {"list": [1, 2.5, None, True]},
    }
    rows = [["slug", "name", "settings"]]
    rows += [[slug, name, json.dumps(settings)] for slug, name in names.items()]
    result = run_import(cli, db_url, write_rows(tmp_path, rows))
    assert result.returncode == 0, result.stderr
    for slug, name in names.items():
        tenant = stored(conn, slug)
        assert tenant.name == name, slug
        assert tenant.settings == settings, slug
    assert row_count(conn) == len(names)


# JSON as people and programs write it: any nesting of objects, lists and scalars, floats and
# big integers, text with escapes, NUL, lone surrogates and non-ASCII characters.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=()), max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
# Numbers as any program may write them, which Python may read back otherwise (0.1000...01,
# 1e400): JSON's grammar.
NUMBER_LITERALS = st.from_regex(
    r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][-+]?[0-9]{1,3})?", fullmatch=True
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=4),
    numbers=st.lists(NUMBER_LITERALS, max_size=3),
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
)
def test_imported_settings_are_stored_as_tenants_create_stores_them(
    conn: Conn, value: dict[str, Any], numbers: list[str], ensure_ascii: bool, indent: int | None
) -> None:
    """The import stores the settings text as written when it can (no \\u escape, no float)
    and writes it again otherwise: either way jsonb holds what tenants.create would store from
    the same JSON, every number as written (0.1000000000000000000001, 1e400), and a row create
    refuses is refused, with the same reason."""
    written = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent).strip()[1:-1].strip()
    members = [written] if written else []
    members += [f'"#{index}": {number}' for index, number in enumerate(numbers)]
    raw = "{" + ", ".join(members) + "}"
    expected = outcome(lambda: tenants.settings_json("acme", jsonnumbers.exact.decode(raw)))
    got = outcome(lambda: importing._row(2, ["acme", "Acme", raw], 3, {})[3])
    assert got[0] == expected[0], (raw, got, expected)
    if got[0] == "refused":
        assert got == expected
    else:
        same = conn.execute(
            "SELECT %s::jsonb = %s::jsonb AND %s::jsonb = %s::jsonb",
            (got[1], expected[1], got[1], raw),
        ).fetchone()
        assert same == (True,), (raw, got, expected)


def outcome(call: Callable[[], str]) -> tuple[str, str]:
    """("stored", the settings text) or ("refused", why)."""
    try:
        return "stored", call()
    except (DbToolsError, ValueError) as exc:
        return "refused", str(exc)


# --- the whole file refused --------------------------------------------------------------------


def test_wrong_header_fails_on_line_1(cli: Cli, db_url: str, conn: Conn, tmp_path: Path) -> None:
    path = write_file(tmp_path, "slug,title\nacme,Acme\n")
    line, message = only_error(run_import(cli, db_url, path))
    assert line == 1
    assert "slug,title" in message
    assert row_count(conn) == 0


def test_empty_file_fails_on_line_1(cli: Cli, db_url: str, conn: Conn, tmp_path: Path) -> None:
    line, message = only_error(run_import(cli, db_url, write_file(tmp_path, "")))
    assert line == 1
    assert "empty" in message
    assert row_count(conn) == 0


def test_missing_file_is_one_line_and_nonzero(cli: Cli, db_url: str, tmp_path: Path) -> None:
    result = run_import(cli, db_url, tmp_path / "no-such-file.csv")
    assert result.returncode == 2, result.stderr  # a bad argument: a usage error
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("dbtools: error: ")
    assert "no-such-file.csv" in result.stderr
    assert "no such file" in result.stderr


# --- one kind of bad row per file --------------------------------------------------------------

GOOD = "good-one,Good One\n"
GOOD_2 = "good-two,Good Two\n"


@pytest.mark.parametrize(
    ("content", "line", "complaint"),
    [
        pytest.param(f"slug,name\n{GOOD}Acme,Acme\n{GOOD_2}", 3, "'Acme'", id="uppercase-slug"),
        pytest.param(f"slug,name\n{GOOD}{GOOD_2}ab,Ab\n", 4, "'ab'", id="too-short-slug"),
        pytest.param(f"slug,name\nacme-,Acme\n{GOOD}", 2, "'acme-'", id="trailing-hyphen"),
        pytest.param(f"slug,name\n{GOOD}   ,Nameless\n", 3, "slug", id="blank-slug"),
        pytest.param(f"slug,name\n{GOOD}acme,   \n{GOOD_2}", 3, "blank", id="blank-name"),
        pytest.param(f"slug,name\n{GOOD}acme,\n", 3, "blank", id="empty-name"),
        pytest.param(f"slug,name\n{GOOD}{GOOD_2}acme,{'x' * 256}\n", 4, "255", id="name-over-255"),
        pytest.param(
            f'slug,name,settings\n{GOOD}acme,Acme,"{{""plan"": pro}}"\n{GOOD_2}',
            3,
            "JSON",
            id="settings-not-json",
        ),
        pytest.param(
            f'slug,name,settings\n{GOOD}acme,Acme,"[1,2]"\n{GOOD_2}',
            3,
            "object",
            id="settings-an-array",
        ),
        pytest.param(
            f"slug,name,settings\n{GOOD}{GOOD_2}acme,Acme,42\n", 4, "object", id="settings-a-number"
        ),
        pytest.param(
            f'slug,name,settings\n{GOOD}acme,Acme,"{{""x"": NaN}}"\n{GOOD_2}',
            3,
            "NaN",
            id="settings-with-nan",
        ),
        pytest.param(
            f'slug,name,settings\n{GOOD}acme,Acme,"{{""x"": ""\\u0000""}}"\n{GOOD_2}',
            3,
            "NUL",
            id="settings-with-nul",
        ),
        pytest.param(
            f"slug,name\n{GOOD}acme,Acme,extra\n{GOOD_2}", 3, "found 3", id="too-many-fields"
        ),
        pytest.param(
            f"slug,name,settings\n{GOOD}acme,Acme,{{}},extra\n", 3, "found 4", id="four-fields"
        ),
        pytest.param(f"slug,name\n{GOOD}acme\n{GOOD_2}", 3, "found 1", id="too-few-fields"),
    ],
)
def test_bad_row_is_reported_with_its_line_and_nothing_is_written(
    cli: Cli,
    db_url: str,
    conn: Conn,
    tmp_path: Path,
    content: str,
    line: int,
    complaint: str,
) -> None:
    result = run_import(cli, db_url, write_file(tmp_path, content))
    reported_line, message = only_error(result)
    assert reported_line == line, result.stderr
    assert complaint in message
    assert (
        result.stderr.splitlines()[-1]
        == f"dbtools: error: {FILE_NAME}: 1 bad row, nothing imported"
    )
    assert result.stdout == ""
    assert row_count(conn) == 0


def test_duplicate_slug_in_the_file_reports_the_second_line_and_names_the_first(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    path = write_file(tmp_path, f"slug,name\n{GOOD}acme,First\n{GOOD_2}acme,Second\n")
    line, message = only_error(run_import(cli, db_url, path))
    assert line == 5
    assert "'acme'" in message
    assert "line 3" in message
    assert row_count(conn) == 0


def test_slug_that_exists_in_the_table_is_reported_and_nothing_is_written(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    existing = tenants.create(conn, "acme", "Acme Original", settings={"keep": True})
    path = write_file(tmp_path, f"slug,name\n{GOOD}{GOOD_2}acme,Acme Again\n")
    line, message = only_error(run_import(cli, db_url, path))
    assert line == 4
    assert "'acme'" in message
    assert "already exists" in message
    assert slugs_in(conn) == ["acme"]
    assert stored(conn, "acme") == existing


def test_malformed_csv_is_reported_with_its_line(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    path = write_file(tmp_path, f'slug,name\n{GOOD}acme,"Acme" Corp\n{GOOD_2}')
    line, _ = only_error(run_import(cli, db_url, path))
    assert line == 3
    assert row_count(conn) == 0


def test_settings_that_utf8_cannot_encode_are_a_bad_row(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    # A lone surrogate, spelled as a JSON escape: valid JSON text, but no UTF-8 encodes it.
    path = write_file(tmp_path, f'slug,name,settings\n{GOOD}acme,Acme,"{{""x"": ""\\ud800""}}"\n')
    line, _ = only_error(run_import(cli, db_url, path))
    assert line == 3
    assert row_count(conn) == 0


def test_deeply_nested_settings_are_a_bad_row(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    nested = "[" * 20_000 + "]" * 20_000  # valid JSON, deeper than Python's recursion limit
    path = write_file(tmp_path, f"slug,name,settings\n{GOOD}acme,Acme,{nested}\n{GOOD_2}")
    line, _ = only_error(run_import(cli, db_url, path))
    assert line == 3
    assert row_count(conn) == 0


# --- line numbers and several errors -----------------------------------------------------------


def test_quoted_newlines_keep_the_following_line_numbers_right(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    content = (
        "slug,name,settings\n"
        'acme,Acme,"{\n""plan"": ""pro""\n}"\n'  # lines 2-4
        "beta,Beta,\n"  # line 5
        "Bad,Bad,\n"  # line 6
    )
    line, _ = only_error(run_import(cli, db_url, write_file(tmp_path, content)))
    assert line == 6
    assert row_count(conn) == 0


def test_a_bad_record_spanning_lines_is_reported_on_the_line_it_starts(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    content = (
        "slug,name,settings\n"
        'acme,Acme,"{\n}"\n'  # lines 2-3
        'Bad,Bad,"{\n\n}"\n'  # lines 4-6
        "beta,Beta,\n"  # line 7
        "beta,Beta again,\n"  # line 8
    )
    result = run_import(cli, db_url, write_file(tmp_path, content))
    assert reported_lines(result) == [4, 8]
    assert row_count(conn) == 0


def test_blank_lines_are_skipped_and_still_counted(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    content = f"slug,name\n\n{GOOD}\n\nBad,Bad\n"
    line, _ = only_error(run_import(cli, db_url, write_file(tmp_path, content)))
    assert line == 6
    assert row_count(conn) == 0


def test_every_bad_row_is_reported_in_line_order(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    tenants.create(conn, "taken", "Taken")
    content = (
        "slug,name,settings\n"
        "UPPER,Upper,\n"  # 2: invalid slug
        "taken,Taken Again,\n"  # 3: exists in the table (found by the database, after COPY)
        f"{GOOD}"  # 4
        "blank,   ,\n"  # 5: blank name
        "json,Json,{oops}\n"  # 6: not JSON
        "good-one,Again,\n"  # 7: duplicate of line 4
        "array,Array,[1]\n"  # 8: not an object
        f"{GOOD_2}"  # 9
    )
    result = run_import(cli, db_url, write_file(tmp_path, content))
    assert reported_lines(result) == [2, 3, 5, 6, 7, 8]
    assert result.stderr.splitlines()[-1] == (
        f"dbtools: error: {FILE_NAME}: 6 bad rows, nothing imported"
    )
    assert slugs_in(conn) == ["taken"]


# --- bounded output ----------------------------------------------------------------------------

HUGE = 100_000
SHADOW_HASH = "Q" * 86
EVIL = "\x1b[2J\x1b]0;pwned\x07"  # clears the screen, sets the terminal's title


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        pytest.param(f"root:$6$saltsalt${SHADOW_HASH}:19000:0:99999:7:::\n", "header", id="shadow"),
        pytest.param(f"{EVIL}{'h' * HUGE},name\nacme,Acme\n", "header", id="huge-header"),
        pytest.param(f"slug,name\n{GOOD}{'x' * HUGE},Long\n", "invalid tenant slug", id="slug"),
        pytest.param(f"slug,name\n{GOOD}{EVIL}abc,Evil\n", "invalid tenant slug", id="evil-slug"),
        pytest.param(f"slug,name\n{GOOD}acme,{EVIL}{'n' * HUGE}\n", "invalid name", id="name"),
        pytest.param(
            f"slug,name,settings\n{GOOD}acme,Acme,{{{EVIL}{'s' * HUGE}}}\n", "JSON", id="json"
        ),
        pytest.param(
            f'slug,name\n{GOOD}acme,"{EVIL}{"q" * HUGE}" trailing\n', "malformed CSV", id="csv"
        ),
        pytest.param(f"slug,name\n{GOOD}{GOOD}", "duplicate slug", id="duplicate"),
        pytest.param(f"slug,name\n{GOOD}taken,Again\n", "already exists", id="existing"),
    ],
)
def test_every_message_quotes_at_most_a_short_escaped_excerpt(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path, content: str, kind: str
) -> None:
    tenants.create(conn, "taken", "Taken")
    path = write_file(tmp_path, content)
    result = run_import(cli, db_url, path)
    (_, message), *_ = reported(result)
    assert kind in message
    assert max(len(line) for line in result.stderr.splitlines()) <= 200, result.stderr[:500]
    assert "\x1b" not in result.stderr
    assert SHADOW_HASH[:20] not in result.stderr
    failure = json.loads(run_import(cli, db_url, path, "--json").stdout)
    assert all(len(error["message"]) <= 200 for error in failure["errors"])
    assert all("\x1b" not in error["message"] for error in failure["errors"])
    assert slugs_in(conn) == ["taken"]


def test_an_invalid_slug_keeps_its_whole_value_and_quotes_an_excerpt() -> None:
    slug = "x" * HUGE
    with pytest.raises(InvalidSlug) as caught:
        validate_slug(slug)
    assert caught.value.slug == slug
    assert str(caught.value).startswith(f"invalid tenant slug {'x' * 60!r}... (100000 characters)")
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        pytest.param("a" * 50, repr("a" * 50), id="longest-valid-slug-whole"),
        pytest.param("it's", '"it\'s"', id="repr-quoting"),
        pytest.param("a\x1bb", "'a\\x1bb'", id="escaped"),
        pytest.param("\x00" * 100, f"{chr(0) * 15!r}... (100 characters)", id="escapes-count"),
        pytest.param(["a" * 1000], "['aaaaaaaaaaaa...aaaaaaaaaaaaa']", id="not-a-string"),
    ],
)
def test_excerpt(value: object, quoted: str) -> None:
    assert excerpt(value) == quoted


@pytest.mark.parametrize(("bad", "shown"), [(20, 20), (21, 20), (1000, 20)])
def test_a_reimport_prints_the_first_20_bad_rows_and_how_many_more(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path, bad: int, shown: int
) -> None:
    rows = [["slug", "name"], *([f"tenant-{i:04d}", f"Tenant {i}"] for i in range(bad))]
    path = write_rows(tmp_path, rows)
    assert run_import(cli, db_url, path).returncode == 0
    result = run_import(cli, db_url, path)
    assert result.returncode == 1
    *lines, last = result.stderr.splitlines()
    assert last == f"dbtools: error: {FILE_NAME}: {bad} bad rows, nothing imported"
    expected = [
        f"{FILE_NAME}: line {i + 2}: a tenant with slug 'tenant-{i:04d}' already exists"
        for i in range(shown)
    ]
    if bad > shown:
        expected.append(f"{FILE_NAME}: ... and {bad - shown} more (--json lists every one)")
    assert lines == expected
    document = json.loads(run_import(cli, db_url, path, "--json").stdout)
    assert [error["line"] for error in document["errors"]] == list(range(2, bad + 2))
    assert row_count(conn) == bad


# --- progress on a terminal --------------------------------------------------------------------


def test_progress_on_a_terminal_covers_read_copy_and_insert(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    rows = [["slug", "name"], *([f"tenant-{i:04d}", f"Tenant {i}"] for i in range(2500))]
    result = run_import(cli, db_url, write_rows(tmp_path, rows))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"imported 2500 tenants from {FILE_NAME}\n"
    steps = [step.rstrip() for step in result.stderr.split("\r")]
    assert steps[0] == ""  # every step rewrites the one line
    assert steps[1:] == [
        "reading: 0 rows",
        "reading: 1,000 rows",
        "reading: 2,000 rows",
        "reading: 2,500 rows",
        "inserting: 0 tenants",
        "inserting: 1,000 tenants",
        "inserting: 2,000 tenants",
        "inserting: 2,500 tenants",
    ]
    assert result.stderr.endswith("\n")  # the line is ended: the shell prompt starts afresh
    assert row_count(conn) == 2500


def test_progress_line_is_ended_before_the_bad_rows(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    result = run_import(cli, db_url, write_file(tmp_path, f"slug,name\n{GOOD}Bad,Bad\n"))
    assert result.returncode == 1
    progress, *errors = result.stderr.split("\n")
    assert progress.startswith("\rreading: 0 rows")
    assert errors[0].startswith(f"{FILE_NAME}: line 3: invalid tenant slug 'Bad'")
    assert errors[1:] == [f"dbtools: error: {FILE_NAME}: 1 bad row, nothing imported", ""]


def test_no_progress_with_json_even_on_a_terminal(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    result = run_import(cli, db_url, write_file(tmp_path, f"slug,name\n{GOOD}"), "--json")
    assert result.returncode == 0
    assert result.stderr == ""
    assert json.loads(result.stdout) == {"imported": 1, "errors": []}


# --- exit codes --------------------------------------------------------------------------------


def test_unreachable_database_exits_3(cli: Cli, tmp_path: Path) -> None:
    path = write_file(tmp_path, f"slug,name\n{GOOD}")
    result = run_import(cli, "postgresql://nobody@127.0.0.1:1/dbtools_system", path)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("dbtools: error: cannot connect")


@pytest.mark.direct  # rolls the migrations back, which refuse a pooler
def test_database_not_migrated_exits_3(cli: Cli, db_url: str, tmp_path: Path) -> None:
    rolled_back = cli("--database-url", db_url, "rollback", "--count", "1000")  # every one
    assert rolled_back.returncode == 0, rolled_back.stderr
    result = run_import(cli, db_url, write_file(tmp_path, f"slug,name\n{GOOD}"))
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("dbtools: error: ")
    assert "migrate" in result.stderr


# --- --json ------------------------------------------------------------------------------------


def test_json_success_document(cli: Cli, db_url: str, conn: Conn, tmp_path: Path) -> None:
    path = write_file(tmp_path, f"slug,name\n{GOOD}{GOOD_2}")
    result = run_import(cli, db_url, path, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"imported": 2, "errors": []}
    assert row_count(conn) == 2


def test_json_failure_document(cli: Cli, db_url: str, conn: Conn, tmp_path: Path) -> None:
    path = write_file(tmp_path, f"slug,name\n{GOOD}Bad,Bad\n{GOOD_2}acme,\n")
    result = run_import(cli, db_url, path, "--json")
    assert result.returncode == 1
    document = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert set(document) == {"imported", "errors"}
    assert document["imported"] == 0
    assert [error["line"] for error in document["errors"]] == [3, 5]
    assert all(set(error) == {"line", "message"} for error in document["errors"])
    assert "invalid tenant slug 'Bad'" in document["errors"][0]["message"]
    assert "blank" in document["errors"][1]["message"]
    assert result.stderr.splitlines() == [
        f"dbtools: error: {FILE_NAME}: 2 bad rows, nothing imported"
    ]
    assert row_count(conn) == 0


# --- the library function ----------------------------------------------------------------------


def test_import_csv_returns_the_number_of_tenants_created(conn: Conn, tmp_path: Path) -> None:
    path = write_file(tmp_path, f'slug,name,settings\n{GOOD}acme,Acme,"{{""a"": [1]}}"\n')
    assert import_csv(conn, path) == 2
    assert slugs_in(conn) == ["acme", "good-one"]
    assert stored(conn, "acme").settings == {"a": [1]}


def test_import_failed_carries_row_errors_with_line_and_message(conn: Conn, tmp_path: Path) -> None:
    tenants.create(conn, "taken", "Taken")
    path = write_file(tmp_path, f"slug,name\nBad,Bad\n{GOOD}taken,Again\n")
    with pytest.raises(ImportFailed) as caught:
        import_csv(conn, path)
    failure = caught.value
    assert isinstance(failure, DbToolsError)
    assert all(isinstance(error, RowError) for error in failure.errors)
    assert [error.line for error in failure.errors] == [2, 4]
    assert "invalid tenant slug 'Bad'" in failure.errors[0].message
    assert "already exists" in failure.errors[1].message
    assert str(failure.errors[0]).startswith("line 2: ")
    assert str(failure) == f"{FILE_NAME}: 2 bad rows, nothing imported"
    assert slugs_in(conn) == ["taken"]


def test_a_slug_another_writer_takes_during_the_import_is_reported_with_its_line(
    conn: Conn, connect: Callable[..., Conn], tmp_path: Path
) -> None:
    """The COPY waits on the other writer's uncommitted row; once it commits, the import is
    refused and the slug named with its line, as if it had been there from the start."""
    rows = [["slug", "name"], *([f"tenant-{i:04d}", f"Tenant {i}"] for i in range(50))]
    path = write_rows(tmp_path, rows)
    other = connect()
    other.execute("INSERT INTO tenants (slug, name) VALUES ('tenant-0005', 'Theirs')")
    observer = connect(autocommit=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        importing_ = pool.submit(import_csv, conn, path)
        try:
            waited = _copy_waits_for_a_lock(observer)
        finally:
            other.commit()  # whatever happened: the import must not wait forever
        assert waited, "the import never waited for the other writer"
        with pytest.raises(ImportFailed) as caught:
            importing_.result(timeout=30)
    assert [str(error) for error in caught.value.errors] == [
        "line 7: a tenant with slug 'tenant-0005' already exists"
    ]
    assert slugs_in(conn) == ["tenant-0005"]


def _copy_waits_for_a_lock(observer: Conn) -> bool:
    """Whether a COPY into tenants in this database comes to wait for a lock within 30 s. Found
    by its statement, not by the importing connection's backend_pid: behind PgBouncer that is
    not the server process that runs it."""
    for _ in range(600):
        waiting = observer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE 'COPY tenants %'"
        ).fetchone()
        if waiting == (1,):
            return True
        time.sleep(0.05)
    return False


def test_a_slug_taken_and_given_back_during_the_import_asks_to_try_again(
    conn: Conn, connect: Callable[..., Conn], tmp_path: Path
) -> None:
    """The database refused the rows for a slug that is free again once the import looks for
    it: no line to name, so the import says what happened."""
    tenants.create(conn, "tenant-0002", "Theirs")
    other = connect(autocommit=True)

    def progress(phase: Phase, count: int) -> None:
        if (phase, count) == (Phase.STAGE, 0):  # refused: the taken slug goes before the lookup
            other.execute("DELETE FROM tenants WHERE slug = 'tenant-0002'")

    rows = [["slug", "name"], *([f"tenant-{i:04d}", f"Tenant {i}"] for i in range(5))]
    with pytest.raises(ImportFailed) as caught:
        import_csv(conn, write_rows(tmp_path, rows), progress=progress)
    assert [str(error) for error in caught.value.errors] == [
        "another writer created one of these slugs meanwhile; try again"
    ]
    assert isinstance(caught.value.__cause__, psycopg.errors.UniqueViolation)
    assert row_count(conn) == 0


def test_progress_follows_every_phase_to_the_end_of_the_insert(conn: Conn, tmp_path: Path) -> None:
    rows = [["slug", "name"], *([f"tenant-{i:04d}", f"Tenant {i}"] for i in range(2500))]
    calls: list[tuple[Phase, int]] = []
    states: list[int] = []

    def progress(phase: Phase, count: int) -> None:
        calls.append((phase, count))
        if phase is Phase.INSERT:
            states.append(conn.pgconn.transaction_status)

    assert import_csv(conn, write_rows(tmp_path, rows), progress=progress) == 2500
    assert calls == [
        (Phase.READ, 0),
        (Phase.READ, 1000),
        (Phase.READ, 2000),
        (Phase.READ, 2500),
        (Phase.INSERT, 0),
        (Phase.INSERT, 1000),
        (Phase.INSERT, 2000),
        (Phase.INSERT, 2500),
    ]
    # Before the COPY, during it, and once the database has inserted every row.
    idle, busy = pq.TransactionStatus.INTRANS, pq.TransactionStatus.ACTIVE
    assert states == [idle, busy, busy, idle]


def test_progress_of_a_refused_import_stops_before_the_insert(conn: Conn, tmp_path: Path) -> None:
    tenants.create(conn, "taken", "Taken")
    calls: list[tuple[Phase, int]] = []
    path = write_file(tmp_path, f"slug,name\n{GOOD}taken,Again\nBad,Bad\n")
    with pytest.raises(ImportFailed):
        import_csv(conn, path, progress=lambda phase, count: calls.append((phase, count)))
    # good-one and taken are staged: the database finds that taken exists
    assert calls == [(Phase.READ, 0), (Phase.READ, 3), (Phase.STAGE, 0), (Phase.STAGE, 2)]


def test_progress_of_a_header_only_file_names_each_of_its_phases_once(
    conn: Conn, tmp_path: Path
) -> None:
    calls: list[tuple[Phase, int]] = []
    path = write_file(tmp_path, "slug,name\n")
    import_csv(conn, path, progress=lambda phase, count: calls.append((phase, count)))
    assert calls == [(Phase.READ, 0), (Phase.INSERT, 0)]


def test_progress_of_an_import_the_database_refuses_ends_looking_up_every_slug(
    conn: Conn, tmp_path: Path
) -> None:
    rows = [["slug", "name"], *([f"tenant-{i:04d}", f"Tenant {i}"] for i in range(1500))]
    tenants.create(conn, "tenant-1499", "Taken")
    calls: list[tuple[Phase, int]] = []
    with pytest.raises(ImportFailed) as caught:
        import_csv(conn, write_rows(tmp_path, rows), progress=lambda *call: calls.append(call))
    assert [str(error) for error in caught.value.errors] == [
        "line 1501: a tenant with slug 'tenant-1499' already exists"
    ]
    assert calls == [
        (Phase.READ, 0),
        (Phase.READ, 1000),
        (Phase.READ, 1500),
        (Phase.INSERT, 0),
        (Phase.INSERT, 1000),
        (Phase.STAGE, 0),
        (Phase.STAGE, 1000),
        (Phase.STAGE, 1500),
    ]
    assert slugs_in(conn) == ["tenant-1499"]


# --- sources: a path or an open text stream ----------------------------------------------------


def test_import_csv_reads_an_open_text_stream_and_leaves_it_open(conn: Conn) -> None:
    stream = io.StringIO(
        'slug,name,settings\r\nacme,Acme Corp,"{\r\n""a"": ""b""}"\r\nbeta,Beta,\r\n'
    )
    assert import_csv(conn, stream) == 2  # a quoted field spans a \r\n, as in a file
    assert stored(conn, "acme").settings == {"a": "b"}
    assert not stream.closed  # the caller's to close


def test_a_stream_decoded_without_utf8_sig_may_still_start_with_a_bom(conn: Conn) -> None:
    stream = io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbfslug,name\nacme,Acme\n"), encoding="utf-8")
    assert import_csv(conn, stream) == 1
    assert slugs_in(conn) == ["acme"]


def test_a_stream_is_named_by_name_or_its_own_name(conn: Conn) -> None:
    with pytest.raises(ImportFailed) as caught:
        import_csv(conn, io.StringIO("slug,name\nBad,Bad\n"), name="upload #7")
    assert str(caught.value) == "upload #7: 1 bad row, nothing imported"
    with pytest.raises(ImportFailed) as caught:
        import_csv(conn, io.StringIO("slug,name\nBad,Bad\n"))
    assert caught.value.source == "<stream>"
    assert row_count(conn) == 0


def test_import_csv_takes_a_path_as_a_string(conn: Conn, tmp_path: Path) -> None:
    assert import_csv(conn, str(write_file(tmp_path, f"slug,name\n{GOOD}"))) == 1
    assert slugs_in(conn) == ["good-one"]


def test_a_path_that_cannot_be_opened_is_one_error_for_the_whole_file(
    conn: Conn, tmp_path: Path
) -> None:
    with pytest.raises(ImportFailed) as caught:
        import_csv(conn, tmp_path)  # a directory
    assert [str(e) for e in caught.value.errors] == ["cannot read the file: Is a directory"]


def test_failure_inside_a_transaction_block_keeps_it_and_its_earlier_writes(
    conn: Conn, tmp_path: Path
) -> None:
    tenants.create(conn, "taken", "Taken")
    path = write_file(tmp_path, f"slug,name\n{GOOD}taken,Again\n")
    with conn.transaction():
        tenants.create(conn, "before", "Before")
        with pytest.raises(ImportFailed):
            import_csv(conn, path)
        assert slugs_in(conn) == ["before", "taken"]  # the transaction is usable
        tenants.create(conn, "after", "After")
    assert slugs_in(conn) == ["after", "before", "taken"]


def test_failure_inside_an_implicit_transaction_keeps_it_and_its_earlier_writes(
    conn: Conn, connect: Connect, tmp_path: Path
) -> None:
    tenants.create(conn, "taken", "Taken")
    caller = connect()  # autocommit off: the first statement opens a transaction
    tenants.create(caller, "before", "Before")
    with pytest.raises(ImportFailed):
        import_csv(caller, write_file(tmp_path, f"slug,name\n{GOOD}taken,Again\n"))
    assert caller.info.transaction_status == INTRANS
    tenants.create(caller, "after", "After")
    caller.commit()
    assert slugs_in(conn) == ["after", "before", "taken"]


def test_import_inside_an_open_transaction_is_the_callers_to_roll_back(
    conn: Conn, connect: Connect, tmp_path: Path
) -> None:
    caller = connect()  # autocommit off
    tenants.create(caller, "before", "Before")  # opens the caller's transaction
    assert import_csv(caller, write_file(tmp_path, f"slug,name\n{GOOD}{GOOD_2}")) == 2
    assert caller.info.transaction_status == INTRANS
    assert row_count(caller) == 3
    assert row_count(conn) == 0, "the import committed the caller's transaction"
    caller.rollback()
    assert row_count(conn) == 0


def test_import_on_an_idle_connection_leaves_the_commit_to_the_caller(
    conn: Conn, connect: Connect, tmp_path: Path
) -> None:
    caller = connect()  # autocommit off, no transaction yet: like tenants.create, the import
    # must run in the transaction its first statement opens, which the caller commits or not
    assert import_csv(caller, write_file(tmp_path, f"slug,name\n{GOOD}{GOOD_2}")) == 2
    assert row_count(caller) == 2
    assert row_count(conn) == 0, "the import committed on its own"
    caller.rollback()
    assert row_count(conn) == 0


def test_two_imports_in_one_transaction_both_succeed(conn: Conn, tmp_path: Path) -> None:
    first = write_file(tmp_path, f"slug,name\n{GOOD}", name="first.csv")
    second = write_file(tmp_path, f"slug,name\n{GOOD_2}", name="second.csv")
    with conn.transaction():
        assert import_csv(conn, first) == 1
        assert import_csv(conn, second) == 1
    assert slugs_in(conn) == ["good-one", "good-two"]


def test_a_file_without_line_ends_is_refused_without_reading_it_all(
    conn: psycopg.Connection[Any],
) -> None:
    """/dev/zero has no end and no line end: the import stops at the first over-long line."""
    with pytest.raises(ImportFailed) as caught:
        import_csv(conn, "/dev/zero")
    [error] = caught.value.errors
    assert (error.line, error.message) == (
        1,
        f"malformed CSV: line 1 is longer than {MAX_LINE:,} characters (the rest was not read)",
    )
    assert row_count(conn) == 0


def test_a_reserved_slug_is_a_bad_row_of_its_own(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    result = run_import(cli, db_url, write_file(tmp_path, "slug,name\nacme,Acme\nwww,The Web\n"))
    line, message = only_error(result)
    assert (line, message) == (
        3,
        "invalid tenant slug 'www': the slug is reserved for the platform",
    )
    assert row_count(conn) == 0


@pytest.mark.parametrize("number", ["1e999999999", "1e-999999999", "1e131072", "1.5e-16383"])
def test_a_number_beyond_postgresqls_numeric_is_a_bad_row_with_its_line(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path, number: str
) -> None:
    """jsonb would refuse the whole COPY, naming no row: the row check refuses it first, and it
    is listed with the other bad rows."""
    content = f'slug,name,settings\nfine,Fine,{{}}\nhuge,Huge,"{{""a"": {number}}}"\nBad,Bad,\n'
    result = run_import(cli, db_url, write_file(tmp_path, content))
    assert reported_lines(result) == [3, 4]
    assert "beyond PostgreSQL's numeric" in reported(result)[0][1]
    assert row_count(conn) == 0


def test_numbers_at_the_edges_of_postgresqls_numeric_are_imported(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    content = 'slug,name,settings\nedge,Edge,"{""big"": 9.9e131071, ""small"": 1e-16383}"\n'
    result = run_import(cli, db_url, write_file(tmp_path, content))
    assert result.returncode == 0, result.stderr
    assert stored(conn, "edge").settings == {
        "big": Decimal("9.9e131071"),
        "small": Decimal("1e-16383"),
    }


def test_a_slug_both_taken_and_reserved_is_one_bad_row(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    tenants.create(conn, "legacy", "Legacy")
    conn.execute("INSERT INTO reserved_slugs (slug, reason) VALUES ('legacy', 'now ours')")
    result = run_import(cli, db_url, write_file(tmp_path, "slug,name\nlegacy,Again\n"))
    assert only_error(result) == (2, "a tenant with slug 'legacy' already exists")
    assert f"{FILE_NAME}: 1 bad row, nothing imported" in result.stderr
    assert slugs_in(conn) == ["legacy"]


def test_a_dbas_own_unique_index_is_not_blamed_on_another_writer(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    """Only tenants_slug_key means a taken slug: another unique index's refusal is reported as
    the database's, naming it, as tenants create reports it."""
    conn.execute("CREATE UNIQUE INDEX dba_name_key ON tenants (lower(name))")
    result = run_import(cli, db_url, write_file(tmp_path, "slug,name\nacme,Same\nbeta,same\n"))
    assert result.returncode != 0
    assert "dba_name_key" in result.stderr
    assert "another writer" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert row_count(conn) == 0


def test_a_slug_a_dba_reserved_is_a_bad_row_too(
    cli: Cli, db_url: str, conn: Conn, tmp_path: Path
) -> None:
    conn.execute("INSERT INTO reserved_slugs (slug, reason) VALUES ('acme-res', 'kept')")
    content = "slug,name\nok-two,Two\nacme-res,Reserved\n"
    line, message = only_error(run_import(cli, db_url, write_file(tmp_path, content)))
    assert (line, message) == (
        3,
        "invalid tenant slug 'acme-res': the slug is reserved for the platform",
    )
    assert row_count(conn) == 0
